"""The experiment app (guest/app.c) running in a guest, driven from the host.

At each checkpoint the app prints one ``app key=value ...`` line and waits for
SIGUSR1; ``AppProcess.next_checkpoint`` reads that line, ``go`` lets it on.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from ..errors import RemoteError
from ..guest.remote import Remote
from ..module.build import APP
from ..module.records import convert

_FIELD = re.compile(r"(\w+)=(\S*)")


def parse_checkpoint(line: str) -> dict[str, int | str]:
    """``app scenario=heap step=1 bytes=16 ptr=0x..`` -> fields (numbers converted)."""
    return {k: convert(v) for k, v in _FIELD.findall(line)}


@dataclass
class AppProcess:
    remote: Remote
    scenario: str
    pid: int
    log: str
    seen: int = 0
    checkpoints: list[dict[str, int | str]] = field(default_factory=list)

    def next_checkpoint(self, timeout: float = 60.0) -> dict[str, int | str] | None:
        """Wait for the next checkpoint line; None once the app has exited."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                ln
                for ln in self.remote.run(f"cat {self.log}").stdout.splitlines()
                if ln.startswith("app ")
            ]
            if len(lines) > self.seen:
                point = parse_checkpoint(lines[self.seen])
                self.seen += 1
                self.checkpoints.append(point)
                return point
            if not self.alive():
                return None
            if time.monotonic() > deadline:
                raise RemoteError(f"app {self.scenario}: no checkpoint within {timeout:.0f} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        state = self.remote.run(f"cat /proc/{self.pid}/stat 2>/dev/null").stdout
        return bool(state) and state.rpartition(")")[2].split()[0] not in ("Z", "X")

    def go(self) -> None:
        self.remote.run(f"kill -USR1 {self.pid}")

    def stop(self) -> None:
        self.remote.run(f"kill -KILL {self.pid} 2>/dev/null; rm -f {self.log}")


def start(
    remote: Remote, scenario: str, arg: int | None = None, *, wait: bool = True
) -> AppProcess:
    """Start ``app SCENARIO [ARG]`` in the background; returns its handle."""
    log = f"/tmp/app-{scenario}-{secrets.token_hex(4)}.log"
    env = "" if wait else "APP_NOWAIT=1 "
    extra = f" {arg}" if arg is not None else ""
    out = remote.run(
        f"{env}setsid {APP} {scenario}{extra} >{log} 2>&1 </dev/null & echo $!", check=True
    )
    return AppProcess(remote, scenario, int(out.stdout.split()[-1]), log)
