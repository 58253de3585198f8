#!/usr/bin/env python3
"""Print how long the guest stages take: image build, cold boot, saved-state resume, shutdown.

    .venv/bin/python ci/benchmark.py [--guest debian-bookworm] [--accel auto] [--rebuild]
    .venv/bin/python ci/benchmark.py --all      # also time `invoke all` stage by stage

Numbers, not pass/fail; each is also given as a ratio to the cold boot measured in
the same run, since this machine's speed varies from run to run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memlayout.guest.cache import ensure_image
from memlayout.guest.profiles import get_profile
from memlayout.guest.session import GuestOptions, boot, connect, prepare, saved_state_of
from memlayout.paths import cache_dir
from memlayout.progress import silent
from memlayout.rundir import GuestDir


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


def invoke_all(guest: str) -> dict[str, object]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "all", "--guest", guest], capture_output=True, text=True
    )
    out: dict[str, object] = {
        "invoke_all_s": round(time.monotonic() - started, 1),
        "invoke_all_exit": proc.returncode,
    }
    report = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if report and report.exists():
        out["invoke_all_stages_s"] = json.loads((report.parent / "run.json").read_text())["stages"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--guest", default="debian-bookworm")
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--rebuild", action="store_true", help="time a fresh image build")
    parser.add_argument("--all", action="store_true", help="also time invoke all")
    args = parser.parse_args()
    results: dict[str, object] = {"guest": args.guest}

    started = time.monotonic()
    base = ensure_image(get_profile(args.guest), cache_dir(), rebuild=args.rebuild)
    results["image_s"] = round(time.monotonic() - started, 2)
    results["image_built_s"] = base.build_seconds

    with tempfile.TemporaryDirectory(prefix="memlayout-bench-") as tmp:
        cold_opts = GuestOptions(guest=args.guest, accel=args.accel, resume=False)
        cold = timed_boot(cold_opts, GuestDir(Path(tmp) / "cold"))
        results["cold_boot"] = cold
        # Time saving a state from scratch, then resuming it.
        opts = GuestOptions(guest=args.guest, accel=args.accel)
        saved_state_of(prepare(opts, GuestDir(Path(tmp) / "probe"), report=silent)).discard()
        save_started = time.monotonic()
        timed_boot(opts, GuestDir(Path(tmp) / "save"))
        results["cold_boot_save_and_resume_s"] = round(time.monotonic() - save_started, 2)
        resumes = [timed_boot(opts, GuestDir(Path(tmp) / f"r{i}")) for i in range(3)]
        results["resume"] = resumes
        best = min(float(str(r["to_first_command_s"])) for r in resumes)
        results["resume_vs_cold_boot"] = round(best / float(str(cold["to_first_command_s"])), 3)

    if args.all:
        results.update(invoke_all(args.guest))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
