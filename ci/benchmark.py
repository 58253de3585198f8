#!/usr/bin/env python3
"""Print how long the guest stages take: image build, cold boot, saved-state resume, shutdown.

    .venv/bin/python ci/benchmark.py [--guest debian-bookworm] [--accel auto] [--rebuild]
    .venv/bin/python ci/benchmark.py --all      # also time `invoke all` stage by stage

Numbers, not pass/fail: the targets (boot-to-SSH <= 12 s TCG / <= 3 s KVM, resume
<= 2 s, warm `invoke all` <= 3 min TCG) are compared by whoever reads them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memlayout import image
from memlayout.guests import get_profile
from memlayout.paths import cache_dir
from memlayout.pipeline import GuestOptions, boot, connect, warm_state_for
from memlayout.progress import silent


def timed_boot(opts: GuestOptions, run_dir: Path, use_warm: bool) -> dict[str, float]:
    started = time.monotonic()
    vm = boot(opts, run_dir, use_warm=use_warm, report=silent)
    ssh_ready = time.monotonic() - started
    with connect(vm.spec.ssh_port, vm.image.host_key) as remote:
        remote.run("uname -r", check=True)
    to_uname = time.monotonic() - started
    shutdown = vm.shutdown()
    return {
        "to_ssh_banner_s": round(ssh_ready, 2),
        "to_first_command_s": round(to_uname, 2),
        "shutdown_s": round(shutdown, 2),
        "accel": vm.spec.accel,  # type: ignore[dict-item]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", default="debian-bookworm")
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--rebuild", action="store_true", help="time a fresh image build")
    parser.add_argument("--all", action="store_true", help="also time invoke all")
    args = parser.parse_args()
    opts = GuestOptions(guest=args.guest, accel=args.accel)
    results: dict[str, object] = {"guest": args.guest}

    started = time.monotonic()
    base = image.ensure_image(get_profile(args.guest), cache_dir(), rebuild=args.rebuild)
    results["image_s"] = round(time.monotonic() - started, 2)
    results["image_built_s"] = base.build_seconds

    with tempfile.TemporaryDirectory(prefix="memlayout-bench-") as tmp:
        results["cold_boot"] = timed_boot(opts, Path(tmp) / "cold", use_warm=False)
        # Time saving a state from scratch, then resuming it.
        from memlayout.pipeline import prepare_vm

        ws = warm_state_for(prepare_vm(opts, Path(tmp) / "probe", report=silent))
        shutil.rmtree(ws.directory, ignore_errors=True)
        save_started = time.monotonic()
        timed_boot(opts, Path(tmp) / "save", use_warm=True)
        results["cold_boot_save_and_resume_s"] = round(time.monotonic() - save_started, 2)
        results["resume"] = [timed_boot(opts, Path(tmp) / f"r{i}", True) for i in range(3)]

    if args.all:
        import subprocess

        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "all", "--guest", args.guest],
            capture_output=True,
            text=True,
        )
        results["invoke_all_s"] = round(time.monotonic() - started, 1)
        results["invoke_all_exit"] = proc.returncode
        report = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
        if report and report.exists():
            run = json.loads((report.parent / "run.json").read_text())
            results["invoke_all_stages_s"] = run.get("stages")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
