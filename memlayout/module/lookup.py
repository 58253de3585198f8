"""Two ways to find the task: the pid lookup (find=pid, the default) and the walk of the
process list from ``current`` that the assignment describes (find=list).

For each target both must find the same task (the module itself also cross-checks
find=list against the pid lookup), and a pid that does not exist must fail the same
way. The cost of each is the module's own ``find_ns`` (ktime_get_ns() around the lookup),
measured on a guest with many extra processes: for init (near the start of the list)
and for the newest process (the list walk goes round the whole list to reach it).
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass, field

from ..experiments import app as app_mod
from ..guest.remote import Remote
from ..rundir import GuestDir
from .build import CYCLER, KMSG_KEEP, MODULE_KO
from .capture import Capture, capture

MODES = ("pid", "list")
EXTRA_PROCESSES = 1000
REPEATS = 5
MISSING_PID = 4_000_000


@dataclass
class Comparison:
    name: str
    pid: int
    found: dict[str, str]  # mode -> "pid comm" or the errno name
    same: bool


@dataclass
class Cost:
    target: str
    pid: int
    processes: int
    median_ns: dict[str, int]


@dataclass
class LookupResult:
    comparisons: list[Comparison] = field(default_factory=list)
    costs: list[Cost] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [
            f"lookup {c.name}: find=pid and find=list differ: {c.found}"
            for c in self.comparisons
            if not c.same
        ]


def load_with(remote: Remote, pid: int, mode: str) -> Capture:
    return capture(remote, pid, raw_args=[f"pid={pid}", f"find={mode}"], stop=False, pid_arg=False)


def what_was_found(cap: Capture) -> str:
    if cap.record is not None and cap.record.begin:
        return f"{cap.record.pid} {cap.record.begin.get('comm')}"
    return f"error {cap.errno_name}"


def compare(remote: Remote, name: str, pid: int) -> Comparison:
    found = {mode: what_was_found(load_with(remote, pid, mode)) for mode in MODES}
    return Comparison(name, pid, found, len(set(found.values())) == 1)


def cost(remote: Remote, name: str, pid: int, processes: int) -> Cost:
    """The median find_ns of REPEATS loads per mode, all in one guest command each.

    guest/cycler loads and unloads the module back to back; the costs are read from
    the ``begin`` lines the loads printed (each tagged with the mode and the load).
    """
    medians = {}
    for mode in MODES:
        tag = f"lk{mode}{pid}x"
        remote.run(f"dmesg -c >> {KMSG_KEEP}", check=True)
        remote.run(f"{CYCLER} {MODULE_KO} procmem {REPEATS} 'pid={pid} find={mode} tag={tag}%u'")
        dmesg = remote.run(f"dmesg -c | tee -a {KMSG_KEEP}", check=True).stdout
        times = [
            int(ns) for ns in re.findall(rf"procmem: begin tag={tag}\d+ .*?\bfind_ns=(\d+)", dmesg)
        ]
        medians[mode] = int(statistics.median(times)) if times else -1
    return Cost(name, pid, processes, medians)


def run(remote: Remote, files: GuestDir) -> LookupResult:
    """Compare the two lookups on init, a shell, a threaded app and a missing pid; time them."""
    result = LookupResult()
    shell = int(remote.run("setsid sh -c 'sleep 600' >/dev/null 2>&1 & echo $!").stdout)
    threads = app_mod.start(remote, "threads", 8)
    try:
        threads.next_checkpoint()
        for name, pid in (
            ("init", 1),
            ("shell", shell),
            ("app (9 threads)", threads.pid),
            ("a pid that does not exist", MISSING_PID),
        ):
            result.comparisons.append(compare(remote, name, pid))
        result.costs = _costs(remote)
    finally:
        remote.run(f"kill {shell}")
        threads.stop()
    files.create().lookup_json.write_text(json.dumps(asdict(result), indent=1) + "\n")
    return result


def _costs(remote: Remote) -> list[Cost]:
    """find_ns of each mode with EXTRA_PROCESSES more processes in the guest."""
    group = int(
        remote.run(
            f"setsid sh -c 'for i in $(seq {EXTRA_PROCESSES}); do sleep 600 & done; wait' "
            ">/dev/null 2>&1 & echo $!"
        ).stdout
    )
    try:
        remote.run(
            f"while [ $(pgrep -c -s {group}) -lt {EXTRA_PROCESSES} ]; do sleep 0.2; done",
            timeout=300,
        )
        processes = len(remote.run("ls -d /proc/[0-9]*").stdout.split())
        newest = int(remote.run(f"pgrep -n -s {group} sleep").stdout.split()[0])
        return [
            cost(remote, "init (first on the list)", 1, processes),
            cost(remote, "the newest process (last on the list)", newest, processes),
        ]
    finally:
        remote.run(f"kill -- -{group} 2>/dev/null; pkill -s {group} 2>/dev/null; true")
