"""Stage 2b: verify the module against /proc for a set of live processes.

The standard targets are system daemons, init, a shell and two app processes
(3000 mappings; 9 threads); ``invoke verify --pid N`` names its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..experiments import app as app_mod
from ..guest.remote import Remote
from ..rundir import GuestDir
from .capture import capture
from .verify import Verification, verify

DAEMONS = ("sshd", "systemd-journal")
APP_TARGETS = (("maps", 3000, "app (3000 mappings)"), ("threads", 8, "app (9 threads)"))


@dataclass
class Target:
    name: str
    pid: int
    verification: Verification
    record: dict[str, Any] | None
    lines: list[str]
    maps: str
    tools: dict[str, str] = field(default_factory=dict)  # ps aux and top, as printed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "record": self.record,
            "lines": self.lines,
            "maps": self.maps,
            "tools": self.tools,
            "verification": self.verification.to_json(),
        }


@dataclass
class VerifyResult:
    targets: list[Target] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [f"verify {t.name}: {c.name}" for t in self.targets for c in t.verification.failures]

    @property
    def ok(self) -> bool:
        return bool(self.targets) and not self.failures


def _check_pid(remote: Remote, pid: int) -> None:
    if pid <= 0:
        raise UsageError(f"--pid must be a positive number, not {pid}")
    if remote.run(f"test -d /proc/{pid}").status != 0:
        raise UsageError(f"no process {pid} in the guest (invoke ssh --command 'ps -e')")


def verify_one(remote: Remote, name: str, pid: int) -> Target:
    cap = capture(remote, pid)
    return Target(
        name=name,
        pid=pid,
        verification=verify(cap),
        record=cap.record.to_json() if cap.record else None,
        lines=cap.record.lines if cap.record else [],
        maps=cap.sections.get("maps", ""),
        tools={k: cap.sections.get(k, "") for k in ("ps", "top")},
    )


def verify_targets(remote: Remote, files: GuestDir, pids: tuple[int, ...] = ()) -> VerifyResult:
    """Verify ``pids``, or the standard targets; write targets.json and verify.json."""
    result = VerifyResult()
    if pids:
        for pid in pids:
            _check_pid(remote, pid)
            result.targets.append(verify_one(remote, f"pid {pid}", pid))
    else:
        _standard_targets(remote, result)
    files.create()
    files.targets_json.write_text(
        json.dumps([t.to_json() for t in result.targets], indent=1) + "\n"
    )
    files.verify_json.write_text(
        json.dumps([t.verification.to_json() for t in result.targets], indent=1) + "\n"
    )
    return result


def _standard_targets(remote: Remote, result: VerifyResult) -> None:
    targets: list[tuple[str, int]] = []
    for name in DAEMONS:
        pids = remote.run(f"pgrep -o -x {name}").stdout.split()
        if pids:
            targets.append((name, int(pids[0])))
    targets.append(("init", 1))
    shell = int(remote.run("setsid sh -c 'sleep 600' >/dev/null 2>&1 & echo $!").stdout)
    targets.append(("shell", shell))
    started: list[app_mod.AppProcess] = []
    try:
        for scenario, arg, label in APP_TARGETS:
            proc = app_mod.start(remote, scenario, arg)
            started.append(proc)
            proc.next_checkpoint()
            targets.append((label, proc.pid))
        for name, pid in targets:
            result.targets.append(verify_one(remote, name, pid))
    finally:
        remote.run(f"kill {shell}")
        for proc in started:
            proc.stop()
