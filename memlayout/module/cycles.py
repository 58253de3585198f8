"""insmod/rmmod cycles against a live process, looped inside the guest.

Cycles run in chunks: each chunk is one run of guest/cycler, which loads and
unloads the module through finit_module/delete_module and times every pair in
nanoseconds; after it the host reads dmesg once,
checks that every load printed a complete record (or an error record because
the target moved away) and that the kernel printed no oops, BUG or warning,
then moves the log into the guest's keep file. In stress mode the target
maps, unmaps, mprotects and grows
memory on several threads without pause and is restarted between chunks.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecordError, UsageError
from ..experiments import app as app_mod
from ..guest.console import find_trouble
from ..guest.remote import Remote
from ..plotting import new_figure, save_figure
from ..rundir import GuestDir
from .build import CYCLER, KMSG_KEEP, MODULE_KO
from .records import parse

CHUNK = 100
CHUNK_TIMEOUT = 1800.0

# guest/cycler loads and unloads with finit_module/delete_module, the system calls
# insmod and rmmod make, without starting two processes per cycle.
LOOP = "{cycler} {module} procmem {count} 'pid={pid} tag=c{chunk}x%u'"


@dataclass
class CycleStats:
    count: int = 0
    failed_loads: int = 0  # an error record (the target had exited, stress mode) or insmod failed
    incomplete_records: int = 0
    trouble: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    stress: bool = False

    @property
    def failures(self) -> list[str]:
        if self.ok:
            return []
        return [f"{'stress cycles' if self.stress else 'cycles'}: {self.summary()}"]

    @property
    def ok(self) -> bool:
        refused_ok = self.stress or self.failed_loads == 0
        return not self.trouble and self.incomplete_records == 0 and refused_ok

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else 0.0

        return {
            "count": self.count,
            "stress": self.stress,
            "ok": self.ok,
            "failed_loads": self.failed_loads,
            "incomplete_records": self.incomplete_records,
            "trouble": self.trouble[:10],
            "total_s": round(sum(lat) / 1000, 2),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else 0.0,
            "p50_ms": pct(0.5),
            "p90_ms": pct(0.9),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1], 2) if lat else 0.0,
            "min_ms": round(lat[0], 2) if lat else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "latencies_ms": self.latencies_ms} | {
            k: v for k, v in asdict(self).items() if k == "trouble"
        }


_CYCLE = re.compile(r"^cycle (\d+) rc=(\d+) ns=(\d+)$", re.M)


def check_chunk(dmesg: str, chunk: int, stats: CycleStats, refused: set[int] | None = None) -> None:
    """Each load of this chunk left one complete record or one error record.

    ``refused`` are the cycles whose insmod failed; a load that reported an error
    (init still returns 0) counts as failed too, once.
    """
    trouble = find_trouble(dmesg)
    if trouble:
        stats.trouble.append(trouble)
    errors = {int(n) for n in re.findall(rf"procmem: error tag=c{chunk}x(\d+) ", dmesg)}
    stats.failed_loads += len(errors | (refused or set()))
    tags = set(re.findall(rf"procmem: begin tag=(c{chunk}x\d+) ", dmesg))
    for tag in sorted(tags):
        try:
            parse(dmesg, tag=tag)
        except RecordError:
            stats.incomplete_records += 1


def run(
    remote: Remote, count: int, *, stress: bool = False, target_pid: int | None = None
) -> CycleStats:
    """``count`` insmod/rmmod cycles against ``target_pid`` (default: an idle app)."""
    if count < 0:
        raise UsageError(f"the number of cycles must not be negative, not {count}")
    stats = CycleStats(stress=stress)
    remote.run(f"dmesg -c >> {KMSG_KEEP}", check=True)
    proc = None
    chunk = 0
    try:
        while stats.count < count:
            if target_pid is None or stress:
                if proc is not None:
                    proc.stop()  # stress: the target exits and a new one starts
                proc = app_mod.start(remote, "stress" if stress else "idle", wait=not stress)
                if not stress:
                    proc.next_checkpoint()
                pid = proc.pid
            else:
                pid = target_pid
            n = min(CHUNK, count - stats.count)
            loop = LOOP.format(cycler=CYCLER, count=n, module=MODULE_KO, pid=pid, chunk=chunk)
            out = remote.run(loop, timeout=CHUNK_TIMEOUT).stdout
            refused = set()
            for cycle, rc, ns in _CYCLE.findall(out):
                stats.count += 1
                stats.latencies_ms.append(int(ns) / 1e6)
                if rc != "0":
                    refused.add(int(cycle))
            dmesg = remote.run(f"dmesg -c | tee -a {KMSG_KEEP}", check=True).stdout
            check_chunk(dmesg, chunk, stats, refused)
            if not _CYCLE.search(out):
                stats.trouble.append(f"the cycle loop printed nothing: {out[-300:]}")
                break
            chunk += 1
    finally:
        if proc is not None:
            proc.stop()
    return stats


def plot(latencies_ms: list[float], kernel: str, out: Path) -> list[Path]:
    fig, ax = new_figure(height=3.5)
    ax.hist(latencies_ms, bins=40)
    ax.set_xlabel("insmod + rmmod latency (ms)")
    ax.set_ylabel("cycles")
    ax.set_title(f"{len(latencies_ms)} insmod/rmmod cycles — kernel {kernel}")
    return save_figure(fig, out, "cycles")


def run_stage(
    remote: Remote,
    files: GuestDir,
    count: int,
    *,
    stress: bool = False,
    target_pid: int | None = None,
    kernel: str = "",
) -> CycleStats:
    """Run the cycles and write cycles.json (stress.json) and, for plain cycles, the plot."""
    stats = run(remote, count, stress=stress, target_pid=target_pid)
    path = files.create().cycles_json(stress)
    path.write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    if not stress and stats.latencies_ms:
        plot(stats.latencies_ms, kernel or "?", files.plots_dir)
    return stats
