"""``invoke all``: every stage for each guest, into one run directory.

runs/<id>/
  run.json                 host, commit, guests, stage times, overall result
  <guest>/guest.json       accelerator (and why), CPU, kernel, image checksum, boot time
  <guest>/targets.json     module record + /proc/PID/maps + verification per target
  <guest>/verify.json      the verifications alone
  <guest>/experiments/     one JSON per scenario (points, rules, verifications)
  <guest>/plots/           SVG and PNG
  <guest>/cycles.json      insmod/rmmod cycle latencies and checks
  <guest>/dmesg.txt, <guest>/<guest>-console.log, <guest>/build.log
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import app as app_mod
from . import cycles, experiments, kmod, plots, verify
from .accel import qemu_version
from .console import find_trouble
from .paths import REPO_ROOT
from .pipeline import GuestOptions, Session, session
from .progress import Reporter, to_stderr
from .remote import Remote
from .submission import Submission, make_bundle


@dataclass
class GuestRun:
    guest: str
    directory: Path
    stages: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, report: Reporter) -> Iterator[None]:
        report(f"[{self.guest}] {name} ...")
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - started, 2)
            report(f"[{self.guest}] {name}: {self.stages[name]:.1f} s")


def git_commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return proc.stdout.strip()

    return git("rev-parse", "HEAD") or "unknown", bool(git("status", "--porcelain"))


def host_info() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
        if hasattr(platform, "freedesktop_os_release")
        else platform.system(),
        "python": platform.python_version(),
        "qemu": qemu_version(),
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def verify_targets(remote: Remote, out: Path) -> list[dict[str, Any]]:
    """Verify a set of live processes: system daemons, a shell, and app targets."""
    targets: list[tuple[str, int, app_mod.AppProcess | None]] = []
    for name in ("sshd", "systemd-journal"):
        pids = remote.run(f"pgrep -o -x {name}").stdout.split()
        if pids:
            targets.append((name, int(pids[0]), None))
    targets.append(("init", 1, None))
    shell = int(remote.run("setsid sh -c 'sleep 600' >/dev/null 2>&1 & echo $!").stdout)
    targets.append(("shell", shell, None))
    for scenario, arg, label in (
        ("maps", 3000, "app (3000 mappings)"),
        ("threads", 8, "app (9 threads)"),
    ):
        proc = app_mod.start(remote, scenario, arg)
        proc.next_checkpoint()
        targets.append((label, proc.pid, proc))
    results = []
    try:
        for name, pid, _ in targets:
            snap = kmod.snapshot(remote, pid)
            result = verify.verify(snap)
            results.append(
                {
                    "name": name,
                    "pid": pid,
                    "record": snap.record.to_json() if snap.record else None,
                    "lines": snap.record.lines if snap.record else [],
                    "maps": snap.sections.get("maps", ""),
                    "verification": result.to_json(),
                }
            )
    finally:
        remote.run(f"kill {shell}")
        for _, _, started in targets:
            if started is not None:
                started.stop()
    write_json(out / "targets.json", results)
    write_json(out / "verify.json", [r["verification"] for r in results])
    return results


def guest_info(s: Session) -> dict[str, Any]:
    distro = s.remote.run(". /etc/os-release; echo $PRETTY_NAME").stdout.strip()
    clocksource = s.remote.run(
        "cat /sys/devices/system/clocksource/clocksource0/current_clocksource"
    ).stdout.strip()
    cpu = s.remote.run("grep -m1 'model name' /proc/cpuinfo").stdout.partition(":")[2].strip()
    meltdown = s.remote.run(
        "cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null"
    ).stdout.strip()
    info = dict(s.state.__dict__)
    info.update(
        distro=distro,
        clocksource=clocksource,
        cpu_model_name=cpu,
        meltdown=meltdown,
    )
    return info


def run_guest(
    opts: GuestOptions,
    run_dir: Path,
    *,
    cycle_count: int,
    stress_count: int,
    report: Reporter = to_stderr,
) -> GuestRun:
    out = run_dir / opts.guest
    out.mkdir(parents=True, exist_ok=True)
    g = GuestRun(opts.guest, out)
    started = time.monotonic()
    report(f"[{opts.guest}] boot ...")
    with session(opts, out, report, attach=False) as s:
        g.stages["boot"] = round(time.monotonic() - started, 2)
        write_json(out / "guest.json", guest_info(s))
        _run_stages(g, s.remote, cycle_count, stress_count, report)
    g.stages["total"] = round(time.monotonic() - started, 2)
    return g


def _run_stages(
    g: GuestRun, remote: Remote, cycle_count: int, stress_count: int, report: Reporter
) -> None:
    out = g.directory
    with g.stage("build", report):
        kmod.push_sources(remote)
        result = kmod.build(remote, kmod.source_digest())
        (out / "build.log").write_text(result.log)
    with g.stage("verify", report):
        for target in verify_targets(remote, out):
            for check in target["verification"]["checks"]:
                if not check["ok"]:
                    g.failures.append(f"verify {target['name']}: {check['name']}")
    with g.stage("experiments", report):
        done = experiments.run_all(remote, out / "experiments")
        data = {scenario: exp.to_json() for scenario, exp in done.items()}
        for exp in done.values():
            g.failures += exp.failures()
    with g.stage("cycles", report):
        stats = cycles.run(remote, cycle_count)
        write_json(out / "cycles.json", stats.to_json())
        if not stats.ok:
            g.failures.append(f"cycles: {stats.summary()}")
        if stress_count:
            stress = cycles.run(remote, stress_count, stress=True)
            write_json(out / "stress.json", stress.to_json())
            if not stress.ok:
                g.failures.append(f"stress cycles: {stress.summary()}")
    with g.stage("plots", report):
        kernel = next(iter(data.values()))["kernel"] if data else "?"
        plots.all_plots(data, out / "plots")
        plots.cycles_plot(stats.latencies_ms, kernel, out / "plots")
    dmesg = kmod.full_dmesg(remote)
    (out / "dmesg.txt").write_text(dmesg)
    trouble = find_trouble(dmesg)
    if trouble:
        g.failures.append(f"dmesg: {trouble}")


def run_all(
    opts_list: list[GuestOptions],
    run_dir: Path,
    *,
    cycle_count: int = 100,
    stress_count: int = 0,
    submission: Submission | None = None,
    report: Reporter = to_stderr,
) -> dict[str, Any]:
    """Run every guest, render the report (it shows failures, never hides them), bundle it."""
    from . import report as report_mod

    submission = submission or Submission()

    started = time.time()
    commit, dirty = git_commit()
    summary: dict[str, Any] = {
        "run_id": run_dir.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": host_info(),
        "commit": commit,
        "dirty": dirty,
        "guests": [o.guest for o in opts_list],
        "stages": {},
        "failures": [],
        "submission": submission.to_json(),
    }
    for opts in opts_list:
        try:
            g = run_guest(
                opts, run_dir, cycle_count=cycle_count, stress_count=stress_count, report=report
            )
            summary["stages"][opts.guest] = g.stages
            summary["failures"] += [f"{opts.guest}: {f}" for f in g.failures]
        except Exception as exc:
            summary["failures"].append(f"{opts.guest}: {type(exc).__name__}: {exc}")
    summary["ok"] = not summary["failures"]
    summary["seconds"] = round(time.time() - started, 1)
    write_json(run_dir / "run.json", summary)
    report_started = time.monotonic()
    summary["report"] = str(report_mod.render(run_dir))
    summary["stages"]["report"] = round(time.monotonic() - report_started, 2)
    write_json(run_dir / "run.json", summary)
    summary["bundle"] = str(make_bundle(run_dir, submission))
    write_json(run_dir / "run.json", summary)
    return summary
