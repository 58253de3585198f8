#!/usr/bin/env python3
"""Print how long the pipeline's steps take, each beside its target or its peer.

    .venv/bin/python ci/benchmark.py                # image, cold boot, resume, shutdown
    .venv/bin/python ci/benchmark.py --loop         # a student's loop, timed from the shell
    .venv/bin/python ci/benchmark.py --cycles 300   # insmod/rmmod cycle latency percentiles
    .venv/bin/python ci/benchmark.py --all          # warm `invoke all`, stage by stage
    .venv/bin/python ci/benchmark.py --peer         # cold boot beside virtme-ng (see peer.py)

Numbers, never pass/fail. This machine's speed varies from run to run, so a figure is
given as a ratio to a peer or a baseline measured in the same run where there is one.
Everything printed also lands in runs/benchmark-<time>.json (--out to choose).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memlayout.guest.cache import ensure_image
from memlayout.guest.profiles import get_profile
from memlayout.guest.session import (
    GuestOptions,
    boot,
    connect,
    live_state,
    prepare,
    saved_state_of,
)
from memlayout.module.build import CYCLER, MODULE_KO
from memlayout.paths import REPO_ROOT, cache_dir, runs_dir
from memlayout.progress import silent
from memlayout.rundir import GuestDir


@dataclass
class Figure:
    """One measured figure, and what it is held against."""

    name: str
    value: float
    unit: str = "s"
    target: str = ""  # e.g. "<= 2.0 s"; empty when there is none
    ratio: float | None = None  # value / baseline, when there is one
    baseline: str = ""

    def line(self) -> str:
        text = f"{self.name:48} {self.value:10.3f} {self.unit}"
        if self.ratio is not None:
            text += f"   {self.ratio:6.2f}x {self.baseline}"
        if self.target:
            text += f"   (target {self.target})"
        return text


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds ``cmd`` takes from the shell; it must succeed."""
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.monotonic() - started


def invoke(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", *args]


def timed_boot(opts: GuestOptions, files: GuestDir) -> dict[str, object]:
    started = time.monotonic()
    m = boot(opts, files, report=silent)
    ssh_ready = time.monotonic() - started
    assert m.spec is not None
    with connect(m.spec.ssh_port, m.image.host_key) as remote:
        remote.run("uname -r", check=True)
    to_uname = time.monotonic() - started
    stop_started = time.monotonic()
    m.shutdown()
    return {
        "to_ssh_banner_s": round(ssh_ready, 2),
        "to_first_command_s": round(to_uname, 2),
        "shutdown_s": round(time.monotonic() - stop_started, 2),
        "accel": m.config.accel,
    }


def boots(guest: str, accel: str, rebuild: bool) -> list[Figure]:
    """Image, cold boot, saving a state, resuming it: resume as a ratio to the cold boot."""
    started = time.monotonic()
    base = ensure_image(get_profile(guest), cache_dir(), rebuild=rebuild)
    figures = [Figure("image (cached unless --rebuild)", time.monotonic() - started)]
    if base.build_seconds:
        figures.append(Figure("image build, when it was built", base.build_seconds))
    with tempfile.TemporaryDirectory(prefix="memlayout-bench-") as tmp:
        cold = timed_boot(GuestOptions(guest, accel=accel, resume=False), GuestDir(Path(tmp) / "c"))
        cold_s = float(str(cold["to_first_command_s"]))
        figures.append(Figure(f"cold boot -> first command ({cold['accel']})", cold_s))
        opts = GuestOptions(guest, accel=accel)
        saved_state_of(prepare(opts, GuestDir(Path(tmp) / "probe"), report=silent)).discard()
        save_started = time.monotonic()
        timed_boot(opts, GuestDir(Path(tmp) / "save"))
        figures.append(Figure("cold boot + saving the state", time.monotonic() - save_started))
        resumes = [timed_boot(opts, GuestDir(Path(tmp) / f"r{i}")) for i in range(3)]
        resume_s = median([float(str(r["to_first_command_s"])) for r in resumes])
        figures.append(Figure("resume -> first command", resume_s, ratio=resume_s / cold_s,
                              baseline="of the cold boot"))  # fmt: skip
        shut = median([float(str(r["shutdown_s"])) for r in resumes])
        figures.append(Figure("shutdown (QMP power-down)", shut))
    return figures


def guest_inspect_seconds(guest: str) -> float:
    """What one inspect costs inside the guest alone: load, record, unload."""
    script = (
        f"s=$(date +%s%N); insmod {MODULE_KO} pid=1 && rmmod procmem; "
        "e=$(date +%s%N); echo $((e - s))"
    )
    proc = subprocess.run(invoke("ssh", "--guest", guest, "--command", script),
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout.split()[-1]) / 1e9


def loop(guest: str, repeats: int) -> list[Figure]:
    """`invoke up`, then ssh and inspect as a student would, each timed from the shell."""
    if live_state(guest):
        raise SystemExit(f"a {guest} VM is running already: invoke down --guest {guest} first")
    up = wall(invoke("up", "--guest", guest))
    try:
        ssh_first = wall(invoke("ssh", "--guest", guest, "--command", "true"))
        inspect_first = wall(invoke("inspect", "--guest", guest, "--pid", "1"))
        ssh = median([wall(invoke("ssh", "--guest", guest, "--command", "true"))
                      for _ in range(repeats)])  # fmt: skip
        inspects = [wall(invoke("inspect", "--guest", guest, "--pid", "1")) for _ in range(repeats)]
        guest_work = median([guest_inspect_seconds(guest) for _ in range(repeats)])
        status = median([wall(invoke("status", "--guest", guest)) for _ in range(repeats)])
    finally:
        down = wall(invoke("down", "--guest", guest))
    later = median(inspects)
    return [
        Figure("invoke up (warm: resume)", up),
        Figure("invoke up + first invoke ssh --command true", up + ssh_first, target="<= 2.0 s"),
        Figure("invoke ssh --command true (later)", ssh),
        Figure("invoke status (the CLI alone, no guest)", status),
        Figure("first invoke inspect --pid 1 after up", inspect_first, target="<= 3 s"),
        Figure("later invoke inspect --pid 1", later),
        Figure("  of which the guest's own work", guest_work),
        Figure("  overhead over the guest's work", later - guest_work, target="<= 1.0 s"),
        Figure("invoke down", down),
    ]


SHELL_LOOP = (
    "n=0; while [ $n -lt {count} ]; do n=$((n + 1)); s=$(date +%s%N); "
    'insmod {module} pid=1 && rmmod procmem; e=$(date +%s%N); echo "cycle $n ns=$((e - s))"; done'
)


def guest_cycles(guest: str, command: str) -> list[float]:
    """Milliseconds per cycle, from the "ns=" of each line ``command`` prints in the guest."""
    proc = subprocess.run(invoke("ssh", "--guest", guest, "--command", command),
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return [int(word[3:]) / 1e6 for word in proc.stdout.split() if word.startswith("ns=")]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cycles(guest: str, count: int) -> list[Figure]:
    """Cycle latency of guest/cycler beside insmod + rmmod in a shell loop, rounds alternating.

    Both load the same module for pid 1 with the full record; the ratio is the cycler's
    p50 over the shell loop's, measured in the same minutes on the same guest.
    """
    if live_state(guest):
        raise SystemExit(f"a {guest} VM is running already: invoke down --guest {guest} first")
    wall(invoke("up", "--guest", guest))
    try:
        wall(invoke("build", "--guest", guest))
        rounds, per_round = 4, max(1, count // 4)
        driver: list[float] = []
        shell: list[float] = []
        for _ in range(rounds):
            driver += guest_cycles(guest, f"{CYCLER} {MODULE_KO} procmem {per_round} pid=1")
            shell += guest_cycles(guest, SHELL_LOOP.format(count=per_round, module=MODULE_KO))
    finally:
        wall(invoke("down", "--guest", guest))
    figures = []
    for q in (50, 90, 99):
        ours, theirs = percentile(driver, q / 100), percentile(shell, q / 100)
        figures.append(Figure(f"cycle p{q}, guest/cycler ({len(driver)} cycles)", ours, "ms",
                              target="<= 40 ms" if q == 50 else "", ratio=ours / theirs,
                              baseline="of insmod + rmmod"))  # fmt: skip
        figures.append(Figure(f"cycle p{q}, insmod + rmmod in a shell loop", theirs, "ms"))
    return figures


def invoke_all(guest: str) -> list[Figure]:
    """`invoke all` on a warm cache, stage by stage."""
    runs = Path(tempfile.mkdtemp(prefix="memlayout-bench-runs-"))
    env = dict(os.environ, MEMLAYOUT_RUNS=str(runs))
    total = wall(invoke("all", "--guest", guest), env=env)
    run = json.loads((runs / "latest" / "run.json").read_text())
    figures = [Figure("invoke all (warm)", total, target="<= 120 s under TCG, 45 s under KVM")]
    for stage, seconds in (run["stages"].get(guest) or {}).items():
        figures.append(Figure(f"  {stage}", float(seconds)))
    if "report" in run["stages"]:
        figures.append(Figure("  report", float(run["stages"]["report"])))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--guest", default="debian-bookworm")
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--rebuild", action="store_true", help="time a fresh image build")
    parser.add_argument("--no-boots", action="store_true", help="skip the boot figures")
    parser.add_argument("--loop", action="store_true", help="time up/ssh/inspect from the shell")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per loop figure")
    parser.add_argument("--cycles", type=int, default=0, help="time N insmod/rmmod cycles")
    parser.add_argument("--all", action="store_true", help="also time invoke all")
    parser.add_argument("--peer", action="store_true", help="cold boot beside virtme-ng")
    parser.add_argument("--out", type=Path, help="where the JSON goes")
    args = parser.parse_args()

    sections: list[tuple[str, Callable[[], list[Figure]]]] = []
    if not args.no_boots:
        sections.append(("boots", lambda: boots(args.guest, args.accel, args.rebuild)))
    if args.peer:
        from peer import peer_boots  # ci/peer.py, beside this file

        sections.append(("peer", lambda: peer_boots(args.guest, args.repeats)))
    if args.loop:
        sections.append(("loop", lambda: loop(args.guest, args.repeats)))
    if args.cycles:
        sections.append(("cycles", lambda: cycles(args.guest, args.cycles)))
    if args.all:
        sections.append(("invoke all", lambda: invoke_all(args.guest)))

    results: dict[str, Any] = {"guest": args.guest, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for title, measure in sections:
        print(f"== {title}", flush=True)
        figures = measure()
        for figure in figures:
            print(figure.line(), flush=True)
        results[title] = [asdict(f) for f in figures]
    out = args.out or runs_dir() / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
