"""The pipeline: each stage once, for ``invoke all`` and for every single-stage task.

    guest        boot (or attach to) a guest                      guest.session
    build        push the sources, kbuild them in the guest       module.build
    hello        Step 1: load and unload the Hello World module   module.hello
    verify       the module against /proc for live processes      module.targets
    lookup       find=pid and find=list: same task, their cost    module.lookup
    experiments  the app's scenarios, checked at every checkpoint  experiments
    cycles       insmod/rmmod cycles (and stress cycles)          module.cycles
    fuzz         seeded churn, verified after every step (alone)  fuzz.runner
    log          the whole kernel log, checked for oops/BUG/WARN  module.build.full_dmesg
    report       the PDF, then the hand-in bundle                 report

:func:`run_guest` runs the chosen stages on one guest and returns a
:class:`GuestRun`; :func:`run_all` runs every guest, then the report and the
bundle, and returns a :class:`RunResult`. A stage that cannot run raises a
MemlayoutError; ``run_all`` records it as the guest's failure and goes on, so
the report always renders and shows it.
"""

from __future__ import annotations

import contextlib
import json
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import experiments
from .errors import MemlayoutError, ReportError, UsageError
from .fuzz import runner as fuzz_runner
from .fuzz.ops import Replay
from .guest.console import find_trouble
from .guest.qemu import qemu_version
from .guest.remote import Remote
from .guest.session import GuestOptions, Session, open_session
from .module import build as build_mod
from .module import cycles as cycles_mod
from .module import hello as hello_mod
from .module import lookup as lookup_mod
from .module.build import BuildResult
from .module.capture import Capture, capture
from .module.cycles import CycleStats
from .module.targets import VerifyResult, verify_targets
from .paths import REPO_ROOT
from .progress import Reporter, to_stderr
from .report import render
from .report.submission import Submission, make_bundle
from .rundir import GuestDir, RunDir

STAGES = ("build", "hello", "verify", "lookup", "experiments", "cycles", "log")


@dataclass(frozen=True)
class Plan:
    """Which stages to run on a guest, and their settings."""

    stages: tuple[str, ...] = STAGES
    pids: tuple[int, ...] = ()  # verify: these pids instead of the standard targets
    scenarios: tuple[str, ...] = ()  # experiments: these (default: all)
    cycles: int = 100
    stress: int = 0  # stress cycles after the plain ones (0: none)
    cycle_pid: int | None = None  # cycles: this target instead of an idle app

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise UsageError(f"unknown stages {unknown}; known: {', '.join(STAGES)}")


@dataclass
class GuestRun:
    """What the stages of one guest produced; ``failures`` names every failed check."""

    guest: str
    files: GuestDir
    stages: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    build: BuildResult | None = None
    hello: hello_mod.HelloResult | None = None
    verify: VerifyResult | None = None
    lookup: lookup_mod.LookupResult | None = None
    experiments: experiments.ExperimentsResult | None = None
    cycles: CycleStats | None = None
    stress: CycleStats | None = None
    kernel_trouble: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @contextmanager
    def stage(self, name: str, report: Reporter) -> Iterator[None]:
        report(f"[{self.guest}] {name} ...")
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - started, 2)
            report(f"[{self.guest}] {name}: {self.stages[name]:.1f} s")


@dataclass
class RunResult:
    run: RunDir
    failures: list[str]
    bundle: Path

    @property
    def ok(self) -> bool:
        return not self.failures


def git_commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return proc.stdout.strip()

    return git("rev-parse", "HEAD") or "unknown", bool(git("status", "--porcelain"))


def host_info() -> dict[str, str]:
    os_name = platform.system()
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "qemu": qemu_version(),
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def guest_info(s: Session) -> dict[str, Any]:
    """What the report's environment table shows about the guest."""

    def ask(command: str) -> str:
        return s.remote.run(command).stdout.strip()

    info: dict[str, Any] = dict(s.state.__dict__)
    info.update(
        distro=ask(". /etc/os-release; echo $PRETTY_NAME"),
        clocksource=ask("cat /sys/devices/system/clocksource/clocksource0/current_clocksource"),
        cpu_model_name=ask("grep -m1 'model name' /proc/cpuinfo").partition(":")[2].strip(),
        meltdown=ask("cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null"),
    )
    if s.machine is not None:
        info["cold_boot_seconds"] = round(s.machine.cold_boot_seconds, 2)
    return info


def run_stages(remote: Remote, g: GuestRun, plan: Plan, report: Reporter = to_stderr) -> None:
    """The chosen stages of ``plan``, in order, on a guest that is up."""
    files = g.files
    if "build" in plan.stages:
        with g.stage("build", report):
            g.build = build_mod.build(remote, files)
        report(f"[{g.guest}] {g.build.describe()}")
    if "hello" in plan.stages:
        with g.stage("hello", report):
            g.hello = hello_mod.run(remote, files)
        g.failures += g.hello.failures
    if "verify" in plan.stages:
        with g.stage("verify", report):
            g.verify = verify_targets(remote, files, plan.pids)
        g.failures += g.verify.failures
    if "lookup" in plan.stages:
        with g.stage("lookup", report):
            g.lookup = lookup_mod.run(remote, files)
        g.failures += g.lookup.failures
    if "experiments" in plan.stages:
        with g.stage("experiments", report):
            g.experiments = experiments.run(remote, files, plan.scenarios)
        g.failures += g.experiments.failures
    if "cycles" in plan.stages:
        kernel = remote.run("uname -r").stdout.strip()
        with g.stage("cycles", report):
            if plan.cycles:
                g.cycles = cycles_mod.run_stage(
                    remote, files, plan.cycles, target_pid=plan.cycle_pid, kernel=kernel
                )
                g.failures += g.cycles.failures
            if plan.stress:
                g.stress = cycles_mod.run_stage(remote, files, plan.stress, stress=True)
                g.failures += g.stress.failures
    if "log" in plan.stages:
        dmesg = build_mod.full_dmesg(remote)
        files.dmesg.write_text(dmesg)
        g.kernel_trouble = find_trouble(dmesg)
        if g.kernel_trouble:
            g.failures.append(f"dmesg: {g.kernel_trouble}")


def run_guest(
    opts: GuestOptions,
    files: GuestDir,
    plan: Plan,
    *,
    attach: bool = True,
    report: Reporter = to_stderr,
) -> GuestRun:
    """Boot (or attach to) ``opts.guest`` and run ``plan``'s stages on it."""
    g = GuestRun(opts.guest, files.create())
    started = time.monotonic()
    report(f"[{opts.guest}] boot ...")
    with open_session(opts, files, report, attach=attach) as s:
        g.stages["boot"] = round(time.monotonic() - started, 2)
        write_json(files.guest_json, guest_info(s))
        run_stages(s.remote, g, plan, report)
    g.stages["total"] = round(time.monotonic() - started, 2)
    return g


def inspect(
    opts: GuestOptions,
    files: GuestDir,
    pid: int,
    *,
    va: int | None = None,
    walk: bool = False,
    report: Reporter = to_stderr,
) -> Capture:
    """Build, then load the module once for ``pid`` (not frozen); its record and dmesg."""
    with open_session(opts, files.create(), report) as s:
        run_stages(s.remote, GuestRun(opts.guest, files), Plan(stages=("build",)), report)
        cap = capture(s.remote, pid, va=va, walk=walk, stop=False)
    files.dmesg.write_text(cap.sections.get("dmesg", ""))
    if cap.record is not None and cap.failure() is None:
        write_json(files.record_json, cap.record.to_json())
    return cap


@dataclass(frozen=True)
class FuzzPlan:
    """``invoke fuzz``: how long, from which seed, or the sequence to replay."""

    seconds: float = 120.0
    seed: int = 0
    length: int = fuzz_runner.DEFAULT_LENGTH
    every: int = 1  # verify after every EVERY-th operation (and the last)
    shrink_seconds: float = fuzz_runner.DEFAULT_SHRINK_SECONDS
    replay: Replay | None = None


def fuzz_on(
    remote: Remote,
    files: GuestDir,
    guest: str,
    plan: FuzzPlan,
    *,
    corrupt: fuzz_runner.Corrupt | None = None,
    report: Reporter = to_stderr,
) -> fuzz_runner.FuzzResult:
    """Fuzz (or replay) on a guest whose module and app are built; write fuzz.json."""
    ex = fuzz_runner.GuestExecutor(remote, corrupt)
    try:
        prepared = ex.prepare()
        if plan.replay is not None:
            result = fuzz_runner.replay(
                ex, plan.replay, files, guest=guest, every=plan.every, report=report
            )
        else:
            result = fuzz_runner.fuzz(
                ex,
                files,
                guest=guest,
                seconds=plan.seconds,
                seed=plan.seed,
                length=plan.length,
                every=plan.every,
                shrink_seconds=plan.shrink_seconds,
                report=report,
            )
        result.prepared = prepared
    finally:
        ex.cleanup()
    result.kernel_trouble = find_trouble(build_mod.full_dmesg(remote))
    write_json(files.fuzz_json, result.to_json())
    return result


def fuzz(
    opts: GuestOptions, files: GuestDir, plan: FuzzPlan, *, report: Reporter = to_stderr
) -> fuzz_runner.FuzzResult:
    """Boot (or attach to) the guest, build, then fuzz or replay there."""
    with open_session(opts, files.create(), report) as s:
        write_json(files.guest_json, guest_info(s))
        run_stages(s.remote, GuestRun(opts.guest, files), Plan(stages=("build",)), report)
        return fuzz_on(s.remote, files, opts.guest, plan, report=report)


def run_all(
    guests: list[GuestOptions],
    run: RunDir,
    plan: Plan,
    submission: Submission,
    *,
    report: Reporter = to_stderr,
) -> RunResult:
    """Every guest, then the report (it shows failures, never hides them) and the bundle."""
    started = time.time()
    commit, dirty = git_commit()
    summary: dict[str, Any] = {
        "run_id": run.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": host_info(),
        "commit": commit,
        "dirty": dirty,
        "guests": [o.guest for o in guests],
        "stages": {},
        "failures": [],
        "submission": submission.to_json(),
    }
    for opts in guests:
        files = run.guest(opts.guest)
        try:
            g = run_guest(opts, files, plan, attach=False, report=report)
            summary["stages"][opts.guest] = g.stages
            summary["failures"] += [f"{opts.guest}: {f}" for f in g.failures]
        except MemlayoutError as exc:
            summary["failures"].append(f"{opts.guest}: {exc.summary()}")
        except Exception as exc:  # a bug: record it with its traceback, still render
            (files.path / "traceback.txt").write_text(traceback.format_exc())
            summary["failures"].append(f"{opts.guest}: {type(exc).__name__}: {exc}")
    summary["ok"] = not summary["failures"]
    summary["seconds"] = round(time.time() - started, 1)
    write_json(run.run_json, summary)
    report_started = time.monotonic()
    try:
        render(run)
    except ReportError as exc:  # the stages' data are safe on disk; say so and stop
        summary["report_error"] = str(exc)
        write_json(run.run_json, summary)
        raise
    summary["stages"]["report"] = round(time.monotonic() - report_started, 2)
    bundle = make_bundle(run, submission)
    summary["bundle"] = str(bundle)
    write_json(run.run_json, summary)
    return RunResult(run, summary["failures"], bundle)
