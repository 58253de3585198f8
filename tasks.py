"""pyinvoke tasks: the command line of the memlayout pipeline.

Every task calls the stage functions of ``memlayout.pipeline`` (the same ones
``invoke all`` runs) and prints their results; no stage logic lives here.
Errors of the pipeline (``MemlayoutError``) are caught once, in ``task``
below: one line, the log's path, and an exit code (memlayout/errors.py):
0 passed, 1 a check failed, 2 bad arguments, 3 a stage could not run,
130 interrupted.

    invoke all          everything, for one or more guests, into one report
    invoke image        build or fetch a guest's base image
    invoke up / ssh / status / down
                        a guest left running to poke at
    invoke build        push and kbuild the module and the app in the guest
    invoke hello        Step 1: load and unload the Hello World module
    invoke lookup       find=pid vs find=list: same task, and their cost
    invoke inspect      load the module for one pid and print its record
    invoke verify       check the module against /proc for one pid (or the standard targets)
    invoke experiments  the app's scenarios with plots
    invoke cycles       insmod/rmmod cycles
    invoke fuzz         random churn, the module verified after every step; shrink a mismatch
    invoke report       render a finished run's report again
    invoke clean        what the cache and runs take; remove parts of them
    invoke submission   bundle a finished run again
"""

from __future__ import annotations

import errno
import functools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from memlayout import pipeline
from memlayout.errors import (
    EXIT_INTERRUPTED,
    EXIT_STAGE,
    ChecksFailed,
    MemlayoutError,
    UsageError,
)
from memlayout.experiments import SCENARIOS
from memlayout.fuzz.ops import read_replay
from memlayout.fuzz.runner import DEFAULT_LENGTH, DEFAULT_SHRINK_SECONDS
from memlayout.guest import keys
from memlayout.guest.cache import ensure_image
from memlayout.guest.profiles import DEFAULT_GUEST, PROFILES, get_profile
from memlayout.guest.qemu import DEFAULT_CPU
from memlayout.guest.session import (
    GuestOptions,
    connect,
    live_state,
    start_detached,
    stop_detached,
)
from memlayout.paths import cache_dir, runs_dir
from memlayout.report import render
from memlayout.report import submission as submission_mod
from memlayout.rundir import RunDir

GUEST_HELP = {"guest": f"guest profile ({', '.join(PROFILES)})"}
VM_HELP = {
    **GUEST_HELP,
    "accel": "auto (probe KVM, else TCG; the default), kvm or tcg [memlayout.accel]",
    "cpu": f"QEMU CPU model (default {DEFAULT_CPU}: Intel, 4-level paging, PTI) [memlayout.cpu]",
    "mirror": "Debian mirror URL for images (default: mmdebstrap's own) [memlayout.mirror]",
}


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def task(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Task[Any]]:
    """invoke's @task; a MemlayoutError becomes one line on stderr and its exit code."""

    def wrap(body: Callable[..., None]) -> Task[Any]:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> None:
            signal.signal(signal.SIGTERM, _on_sigterm)
            try:
                body(c, *a, **kw)
            except MemlayoutError as exc:
                print(f"error: {exc.summary()}", file=sys.stderr)
                detail = exc.message.strip().splitlines()[1:]
                for line in detail[-30:]:
                    print(f"  {line}", file=sys.stderr)
                raise Exit(code=exc.exit_code) from None
            except KeyboardInterrupt:
                print("interrupted; no VM was left running", file=sys.stderr)
                raise Exit(code=EXIT_INTERRUPTED) from None
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                where = exc.filename or "the disk"
                print(
                    f"error: no space left on the device while writing {where} ({exc})",
                    file=sys.stderr,
                )
                raise Exit(code=EXIT_STAGE) from None

        return invoke_task(*args, **kwargs)(run)  # type: ignore[no-any-return]

    return wrap


# Defaults a user sets once instead of on every task: `memlayout: {accel: tcg}` in
# ~/.invoke.yaml (or /etc/invoke.yaml, or invoke.yaml beside tasks.py), or the
# environment (INVOKE_MEMLAYOUT_ACCEL=tcg). An option given on the command line wins.
SETTINGS = {"accel": "auto", "cpu": DEFAULT_CPU, "mirror": ""}


def _setting(c: Context, name: str, given: str | None) -> str | None:
    """The command line's value, else the invoke configuration's, else the default."""
    if given:
        return given
    value = str(c.config.get("memlayout", {}).get(name) or SETTINGS[name])
    return value or None


def _opts(
    c: Context,
    guest: str,
    accel: str | None,
    cpu: str | None,
    mirror: str | None,
    resume: bool = True,
) -> GuestOptions:
    return GuestOptions(
        guest=guest,
        accel=_setting(c, "accel", accel) or "auto",
        cpu=_setting(c, "cpu", cpu) or DEFAULT_CPU,
        mirror=_setting(c, "mirror", mirror),
        resume=resume,
    )


def _number(value: str, what: str) -> int:
    """A decimal or 0x-prefixed number from the command line."""
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"{what} must be a number, not {value!r}") from None


def _run_stages(opts: GuestOptions, prefix: str, plan: pipeline.Plan) -> pipeline.GuestRun:
    run = RunDir.new(f"{prefix}-{opts.guest}")
    return pipeline.run_guest(opts, run.guest(opts.guest), plan)


def _fail_on(g: pipeline.GuestRun) -> None:
    for failure in g.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if g.failures:
        raise ChecksFailed(f"{len(g.failures)} checks failed; {g.files.path}")


@task(
    name="image",
    help={
        **GUEST_HELP,
        "mirror": VM_HELP["mirror"],
        "rebuild": "build even if cached",
        "allow_expired_release": "accept a mirror whose Release file has expired (stale mirror)",
    },
)
def image_(
    c: Context,
    guest: str = DEFAULT_GUEST,
    mirror: str | None = None,
    rebuild: bool = False,
    allow_expired_release: bool = False,
) -> None:
    """Build (Debian) or fetch (cloud) the base image of a guest; print its directory."""
    base = ensure_image(
        get_profile(guest),
        cache_dir(),
        mirror=_setting(c, "mirror", mirror),
        allow_expired=allow_expired_release,
        rebuild=rebuild,
    )
    print(f"{base.guest}: kernel {base.kernel_release}, sha256 {base.sha256[:16]}…")
    print(base.directory)


@task(help={**VM_HELP, "resume": "resume a saved booted state when one matches (default)"})
def up(
    c: Context,
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
    resume: bool = True,
) -> None:
    """Boot a guest and leave it running; its state goes to the run directory."""
    opts = _opts(c, guest, accel, cpu, mirror, resume)
    if live_state(guest):
        raise UsageError(f"a {guest} VM is already running (invoke down --guest {guest})")
    run = RunDir.new(f"up-{guest}")
    state = start_detached(opts, run.guest(guest))
    print(
        f"{guest} is up: pid {state.pid}, ssh 127.0.0.1:{state.ssh_port}, "
        f"accel {state.accel}, boot {state.boot_seconds:.1f} s, run {run.path}"
    )


@task(help={**GUEST_HELP, "command": "run this command and exit with its status"})
def ssh(c: Context, guest: str = DEFAULT_GUEST, command: str | None = None) -> None:
    """Open a shell in the running guest, or run one command there."""
    get_profile(guest)
    state = live_state(guest)
    if state is None:
        raise UsageError(f"no {guest} VM is running: start one with invoke up --guest {guest}")
    if command is not None:
        with connect(state.ssh_port, state.host_key) as remote:
            result = remote.run(command, timeout=None)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        raise Exit(code=result.status)
    if shutil.which("ssh") is None:
        raise UsageError("interactive use needs the OpenSSH client; use --command CMD")
    client = keys.ensure_client_key(cache_dir())
    with tempfile.NamedTemporaryFile("w", suffix="known_hosts") as known:
        known.write(f"[127.0.0.1]:{state.ssh_port} {state.host_key}\n")
        known.flush()
        options = [
            f"UserKnownHostsFile={known.name}",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
        ]
        cmd = ["ssh", "-i", str(client.private), "-p", str(state.ssh_port)]
        for option in options:
            cmd += ["-o", option]
        raise Exit(code=subprocess.call([*cmd, "root@127.0.0.1"]))


@task(help=GUEST_HELP)
def down(c: Context, guest: str = DEFAULT_GUEST) -> None:
    """Shut down the guest started by invoke up (QMP power-down, then kill)."""
    get_profile(guest)
    print(f"{guest}: {stop_detached(guest)}")


@task(help=GUEST_HELP)
def status(c: Context, guest: str = DEFAULT_GUEST) -> None:
    """Say whether a guest is running, and how to reach it."""
    get_profile(guest)
    state = live_state(guest)
    print(json.dumps(state.__dict__, indent=2) if state else f"{guest}: not running")


@task(help=VM_HELP)
def build(
    c: Context,
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Push kernel-module/ and guest/ to the guest and build them there (warnings fail)."""
    g = _run_stages(_opts(c, guest, accel, cpu, mirror), "build", pipeline.Plan(stages=("build",)))
    print(g.files.build_log)


@task(help=VM_HELP)
def hello(
    c: Context,
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Step 1: build, load and unload the Hello World module; print its kernel log lines."""
    g = _run_stages(
        _opts(c, guest, accel, cpu, mirror), "hello", pipeline.Plan(stages=("build", "hello"))
    )
    assert g.hello is not None
    for load in (g.hello.load, g.hello.bad):
        print("\n".join(f"# {cmd}" for cmd in load.commands))
        print("\n".join(load.lines))
    _fail_on(g)


@task(help=VM_HELP)
def lookup(
    c: Context,
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """find=pid and find=list: the same task for each target, and what each lookup costs."""
    plan = pipeline.Plan(stages=("build", "lookup"))
    g = _run_stages(_opts(c, guest, accel, cpu, mirror), "lookup", plan)
    assert g.lookup is not None
    for comp in g.lookup.comparisons:
        print(f"{comp.name} ({comp.pid}): {comp.found} {'same' if comp.same else 'DIFFERENT'}")
    for cost in g.lookup.costs:
        times = ", ".join(f"find={m} {ns / 1000:.1f} µs" for m, ns in cost.median_ns.items())
        print(f"{cost.target}, {cost.processes} processes: {times}")
    _fail_on(g)


@task(
    help={
        **VM_HELP,
        "pid": "target pid in the guest",
        "json": "print JSON",
        "va": "also translate this user address (0x...)",
        "walk": "count entries per level",
    }
)
def inspect(
    c: Context,
    pid: str = "",
    guest: str = DEFAULT_GUEST,
    json_: bool = False,
    va: str | None = None,
    walk: bool = False,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Load procmem.ko for PID, print its record, unload it."""
    if not pid:
        raise UsageError("inspect: --pid is required")
    target = _number(pid, "--pid")
    address = _number(va, "--va") if va else None
    opts = _opts(c, guest, accel, cpu, mirror)
    run = RunDir.new(f"inspect-{guest}")
    cap = pipeline.inspect(opts, run.guest(guest), target, va=address, walk=walk)
    failure = cap.failure()
    if failure is not None or cap.record is None:
        raise ChecksFailed(f"inspect {target}: {failure}")
    if json_:
        print(json.dumps(cap.record.to_json()))
    else:
        print("\n".join(cap.record.lines))


@task(help={**VM_HELP, "pid": "target pid in the guest (default: the standard targets)"})
def verify(
    c: Context,
    pid: str = "",
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Freeze PID, compare the module's record with /proc; non-zero exit on any mismatch."""
    pids = (_number(pid, "--pid"),) if pid else ()
    plan = pipeline.Plan(stages=("build", "verify"), pids=pids)
    g = _run_stages(_opts(c, guest, accel, cpu, mirror), "verify", plan)
    assert g.verify is not None
    for t in g.verify.targets:
        bad = t.verification.failures
        print(f"== {t.name} (pid {t.pid} {t.verification.comm}) ==")
        print(t.verification.table())
        print(f"{len(t.verification.checks) - len(bad)} passed, {len(bad)} failed")
    print(g.files.verify_json)
    _fail_on(g)


@task(iterable=["scenario"], help={**VM_HELP, "scenario": f"one of {', '.join(SCENARIOS)}; repeat"})
def experiments(
    c: Context,
    guest: str = DEFAULT_GUEST,
    scenario: list[str] | None = None,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Run the app's scenarios with the module at every checkpoint; save data and plots."""
    plan = pipeline.Plan(stages=("build", "experiments"), scenarios=tuple(scenario or ()))
    g = _run_stages(_opts(c, guest, accel, cpu, mirror), "experiments", plan)
    assert g.experiments is not None
    for name, exp in g.experiments.experiments.items():
        bad = [r for r in exp.rules if not r.ok]
        print(f"{name}: {len(exp.points)} checkpoints, {len(exp.rules)} rules, {len(bad)} broken")
    print(g.files.path)
    _fail_on(g)


@task(
    help={
        **VM_HELP,
        "count": "number of insmod/rmmod cycles",
        "stress": "churning target",
        "pid": "target pid (default: an idle app)",
    }
)
def cycles(
    c: Context,
    count: int = 20,
    stress: bool = False,
    pid: str = "",
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Run COUNT insmod/rmmod cycles in one guest loop; fail on any oops, BUG or warning."""
    if count < 0:
        raise UsageError(f"--count must not be negative, not {count}")
    plan = pipeline.Plan(
        stages=("build", "cycles"),
        cycles=0 if stress else count,
        stress=count if stress else 0,
        cycle_pid=_number(pid, "--pid") if pid else None,
    )
    g = _run_stages(_opts(c, guest, accel, cpu, mirror), "cycles", plan)
    stats = g.stress if stress else g.cycles
    assert stats is not None
    s = stats.summary()
    print(
        f"{s['count']} cycles: mean {s['mean_ms']} ms, p50 {s['p50_ms']}, p90 {s['p90_ms']}, "
        f"p99 {s['p99_ms']}, max {s['max_ms']} ms; refused loads {s['failed_loads']}, "
        f"incomplete records {s['incomplete_records']}, kernel trouble {len(stats.trouble)}"
    )
    for line in stats.trouble[:5]:
        print(f"  {line}")
    _fail_on(g)


@task(
    help={
        **VM_HELP,
        "seconds": "fuzz this long (a sequence in progress stops at the deadline)",
        "seed": "the first seed (default: from the clock; printed); then seed+1, ...",
        "length": "operations per sequence",
        "every": "verify after every EVERY-th operation (default 1: every one)",
        "shrink_seconds": "time limit for shrinking a mismatch",
        "replay": "run this sequence file (a mismatch's fuzz/seed-S.ops) instead",
    }
)
def fuzz(
    c: Context,
    seconds: float = 120.0,
    seed: str = "",
    length: int = DEFAULT_LENGTH,
    every: int = 1,
    shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    replay: str = "",
    guest: str = DEFAULT_GUEST,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
) -> None:
    """Seeded mmap/munmap/mprotect/madvise/mremap/fork/thread/touch churn; verify each step."""
    if seconds <= 0 or length < 1 or every < 1 or shrink_seconds < 0:
        raise UsageError(
            "--seconds, --length and --every must be positive; --shrink-seconds not negative"
        )
    first = _number(seed, "--seed") if seed else int(time.time()) % 1_000_000
    saved = read_replay(Path(replay)) if replay else None
    plan = pipeline.FuzzPlan(
        seconds=seconds,
        seed=first,
        length=length,
        every=every,
        shrink_seconds=shrink_seconds,
        replay=saved,
    )
    run = RunDir.new(f"fuzz-{guest}")
    files = run.guest(guest)
    result = pipeline.fuzz(_opts(c, guest, accel, cpu, mirror), files, plan)
    data = result.to_json()
    for s in result.seeds:
        bad = "no mismatch" if s.mismatch is None else f"MISMATCH after op {s.mismatch}"
        print(
            f"seed {s.seed}: {s.ops} ops, {s.checkpoints} checkpoints verified, "
            f"{s.totals.get('refused', 0)} refused, {bad} ({s.seconds:.0f} s)"
        )
    print(
        f"{result.kernel}: {len(result.seeds)} seeds from {result.first_seed}, {result.ops} ops, "
        f"{result.checkpoints} checkpoints verified ({data['checkpoints_per_second']}/s), "
        f"{result.refused} refused, {len(result.mismatches)} mismatches"
    )
    for m in result.mismatches:
        print(f"MISMATCH seed {m.seed} after op {m.index}: {m.op}")
        for f in m.failed:
            print(f"  {f['name']}: /proc {f['expected']!r} | module {f['actual']!r} {f['detail']}")
        if m.shrunk:
            state = "reproduced" if m.reproduced else "NOT reproduced on replay"
            print(f"  {state}; shrunk to {len(m.shrunk)} of {len(m.prefix)} ops:")
            print("".join(f"    {op}\n" for op in m.shrunk), end="")
        if m.replay:
            print(f"  replay: invoke fuzz --guest {guest} --replay {m.replay}")
    print(files.fuzz_json)
    if result.failures:
        raise ChecksFailed(f"{len(result.failures)} fuzz failures; {files.fuzz_json}")


@task(
    iterable=["guest", "author"],
    help={
        **VM_HELP,
        "guest": "guest profile; repeat for several kernels in one report",
        "cycles": "insmod/rmmod cycles per guest",
        "stress": "stress cycles per guest (0: none)",
        "author": 'group member "Name" or "Name:student-id"; repeat (default: submission.toml)',
    },
)
def all(
    c: Context,
    guest: list[str] | None = None,
    accel: str | None = None,
    cpu: str | None = None,
    mirror: str | None = None,
    cycles: int = 100,
    stress: int = 0,
    author: list[str] | None = None,
) -> None:
    """Everything: image, boot, build, verify, experiments, cycles, report, bundle; per guest."""
    if cycles < 0 or stress < 0:
        raise UsageError("--cycles and --stress must not be negative")
    guests = [_opts(c, name, accel, cpu, mirror) for name in guest or [DEFAULT_GUEST]]
    sub = submission_mod.load(cli_authors=author or None)
    result = pipeline.run_all(
        guests, RunDir.new("all"), pipeline.Plan(cycles=cycles, stress=stress), sub
    )
    print(f"bundle: {result.bundle}", file=sys.stderr)
    for failure in result.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(result.run.report_pdf)
    if not result.ok:
        raise ChecksFailed(f"{len(result.failures)} checks failed; the report shows them")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@task(
    help={
        "images": "remove the base images",
        "saved": "remove the saved booted states",
        "builds": "remove the kept module builds",
        "runs": "remove the run directories",
    }
)
def clean(
    c: Context, images: bool = False, saved: bool = False, builds: bool = False, runs: bool = False
) -> None:
    """Show what the cache and the runs take; remove the parts named (nothing by default)."""
    cache = cache_dir()
    parts = {
        "images": (cache / "images", images),
        "saved": (cache / "saved", saved),
        "builds": (cache / "builds", builds),
        "runs": (runs_dir(), runs),
    }
    for name, (path, remove) in parts.items():
        size = _size(path) if path.exists() else 0
        if name == "runs" and remove and any(live_state(g) for g in PROFILES):
            raise UsageError("a VM started by invoke up is running: invoke down first")
        if remove and path.exists():
            shutil.rmtree(path)
        what = "removed" if remove else "kept"
        print(f"{name:7} {size / 2**20:10.1f} MiB  {path}  ({what})")


@task(help={"run": "run directory (default: runs/latest)"})
def report(c: Context, run: str = "") -> None:
    """Render the report of a finished run again (e.g. after editing the template)."""
    print(render(RunDir.existing(run)).report_pdf)


@task(
    iterable=["author"],
    help={"run": "run directory (default: runs/latest)", "author": "as for invoke all"},
)
def submission(c: Context, run: str = "", author: list[str] | None = None) -> None:
    """Bundle a finished run (report, sources, README.txt, logs) for the course."""
    run_dir = RunDir.existing(run)
    if not run_dir.report_pdf.exists():
        raise UsageError(f"{run_dir.path} has no report.pdf: run invoke all or invoke report")
    sub = submission_mod.load(cli_authors=author or None)
    print(submission_mod.make_bundle(run_dir, sub))


# The tasks above, plus the configuration keys invoke reads from its files and from
# INVOKE_MEMLAYOUT_* variables (it only takes variables for keys it knows).
ns = Collection.from_module(sys.modules[__name__])
ns.configure({"memlayout": SETTINGS})
