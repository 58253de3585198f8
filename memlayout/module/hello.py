"""Step 1 of the assignment: the Hello World module (kernel-module/hello), loaded and unloaded.

Its lines follow the same shape as procmem's (``hello: <record> key=value ...``):
``init whom=W times=N``, N lines ``hello whom=W n=I``, and ``exit whom=W`` on rmmod.
A bad parameter makes insmod fail with ``error errno=-22 reason=...``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field

from ..guest.remote import Remote
from ..rundir import GuestDir
from .build import HELLO_KO, KMSG_KEEP
from .records import convert

LINE_RE = re.compile(r"hello: (?P<rec>[a-z_]+)(?P<fields>(?: [a-z_0-9]+=\S*)*)$")


@dataclass
class HelloLoad:
    """One insmod (and, when it loaded, rmmod) of hello.ko with some parameters."""

    commands: list[str]
    status: int
    output: str
    lines: list[str]

    def records(self) -> list[tuple[str, dict[str, int | str]]]:
        out = []
        for line in self.lines:
            m = LINE_RE.search(line)
            if m is not None:
                fields = dict(re.findall(r" ([a-z_0-9]+)=(\S*)", m.group("fields")))
                out.append((m.group("rec"), {k: convert(v) for k, v in fields.items()}))
        return out


@dataclass
class HelloResult:
    whom: str
    times: int
    load: HelloLoad
    bad: HelloLoad  # times=0: insmod must refuse
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def load(remote: Remote, params: str) -> HelloLoad:
    """insmod hello.ko PARAMS, rmmod hello when it loaded; the kernel's hello lines."""
    insmod = f"insmod {HELLO_KO} {params}".strip()
    script = (
        f"dmesg -c >> {KMSG_KEEP}; {insmod} 2>&1; rc=$?; echo status=$rc; "
        f"[ $rc -eq 0 ] && rmmod hello; dmesg -c | tee -a {KMSG_KEEP} | grep 'hello: '; true"
    )
    out = remote.run(script, check=True).stdout
    status_m = re.search(r"^status=(\d+)$", out, re.M)
    status = int(status_m.group(1)) if status_m else -1
    lines = [ln[ln.find("hello: ") :] for ln in out.splitlines() if "hello: " in ln]
    before = out[: status_m.start()].strip() if status_m else out
    commands = [insmod] + (["rmmod hello"] if status == 0 else [])
    return HelloLoad(commands, status, before, lines)


def expected_records(whom: str, times: int) -> list[tuple[str, dict[str, int | str]]]:
    """What the module's own rules say it prints, in order."""
    Fields = dict[str, int | str]
    greetings: list[tuple[str, Fields]] = [
        ("hello", {"whom": whom, "n": n}) for n in range(1, times + 1)
    ]
    init: Fields = {"whom": whom, "times": times}
    exit_: Fields = {"whom": whom}
    return [("init", init), *greetings, ("exit", exit_)]


def run(remote: Remote, files: GuestDir, whom: str = "memlayout", times: int = 3) -> HelloResult:
    """Load hello.ko with parameters, unload it, and check every line; then a bad load."""
    good = load(remote, f"whom={shlex.quote(whom)} times={times}")
    bad = load(remote, "times=0")
    result = HelloResult(whom, times, good, bad)
    if good.status != 0:
        result.failures.append(f"hello: insmod failed: {good.output}")
    elif good.records() != expected_records(whom, times):
        result.failures.append(f"hello: unexpected lines: {good.lines}")
    if bad.status == 0 or ("error", {"errno": -22, "reason": "bad_times"}) not in bad.records():
        result.failures.append(f"hello: times=0 was not refused: {bad.lines}")
    files.create().hello_json.write_text(json.dumps(asdict(result), indent=1) + "\n")
    return result
