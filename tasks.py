"""pyinvoke tasks: a thin layer over the memlayout package.

invoke image     build or fetch the base image of a guest
invoke up        boot a guest and leave it running (invoke ssh / down / status)
invoke build     push kernel-module/ and guest/ to the guest, kbuild them there
invoke inspect   load procmem.ko for one pid and print the parsed record
invoke verify    check the module against /proc for one pid
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from invoke import Context, Exit, task

from memlayout import guests, image, keys, kmod, runs
from memlayout import submission as submission_mod
from memlayout import verify as verify_mod
from memlayout.paths import cache_dir
from memlayout.pipeline import GuestOptions, boot, connect, live_state, session, sync_clock
from memlayout.remote import Remote
from memlayout.vm import DEFAULT_CPU, stop_detached

GUEST_HELP = {"guest": f"guest profile ({', '.join(guests.PROFILES)})"}
VM_HELP = {
    **GUEST_HELP,
    "accel": "auto (probe KVM, else TCG), kvm or tcg",
    "cpu": f"QEMU CPU model (default {DEFAULT_CPU}: Intel, 4-level paging, PTI)",
    "mirror": "Debian mirror URL for building images (default: mmdebstrap's own)",
}


def _opts(guest: str, accel: str, cpu: str, mirror: str | None) -> GuestOptions:
    guests.get_profile(guest)  # fail early on an unknown name
    return GuestOptions(guest=guest, accel=accel, cpu=cpu, mirror=mirror)


def _fail(message: str, code: int = 1) -> Exit:
    print(message, file=sys.stderr)
    return Exit(code=code)


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
    guest: str = guests.DEFAULT_GUEST,
    mirror: str | None = None,
    rebuild: bool = False,
    allow_expired_release: bool = False,
) -> None:
    """Build (Debian) or fetch (cloud) the base image of a guest; print its directory."""
    try:
        base = image.ensure_image(
            guests.get_profile(guest),
            cache_dir(),
            mirror=mirror,
            allow_expired=allow_expired_release,
            rebuild=rebuild,
        )
    except (image.ImageError, guests.UnknownGuest) as exc:
        raise _fail(f"image: {exc}") from None
    print(f"{base.guest}: kernel {base.kernel_release}, sha256 {base.sha256[:16]}…")
    print(base.directory)


@task(help={**VM_HELP, "warm": "resume a saved booted state when one matches (default)"})
def up(
    c: Context,
    guest: str = guests.DEFAULT_GUEST,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
    warm: bool = True,
) -> None:
    """Boot a guest and leave it running; its state goes to the run directory."""
    if live_state(guest):
        raise _fail(f"a {guest} VM is already running (invoke down --guest {guest})")
    run_dir = runs.new_run(f"up-{guest}")
    vm = boot(_opts(guest, accel, cpu, mirror), run_dir, detached=True, use_warm=warm)
    if vm.resumed:
        with connect(vm.spec.ssh_port, vm.image.host_key) as remote:
            sync_clock(remote)
    state = vm.state()
    state.save(run_dir / "vm.json")
    state.save(runs.active_state_path(guest))
    print(
        f"{guest} is up: pid {state.pid}, ssh 127.0.0.1:{state.ssh_port}, "
        f"accel {state.accel}, boot {state.boot_seconds:.1f} s, run {run_dir}"
    )


@task(help={**GUEST_HELP, "command": "run this command and exit with its status"})
def ssh(c: Context, guest: str = guests.DEFAULT_GUEST, command: str | None = None) -> None:
    """Open a shell in the running guest, or run one command there."""
    state = live_state(guest)
    if state is None:
        raise _fail(f"no {guest} VM is running: start one with invoke up --guest {guest}")
    if command is not None:
        with connect(state.ssh_port, state.host_key) as remote:
            result = remote.run(command, timeout=None)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        raise Exit(code=result.status)
    if shutil.which("ssh") is None:
        raise _fail("interactive use needs the OpenSSH client; use --command CMD")
    client = keys.ensure_client_key(cache_dir())
    with tempfile.NamedTemporaryFile("w", suffix="known_hosts") as known:
        known.write(f"[127.0.0.1]:{state.ssh_port} {state.host_key}\n")
        known.flush()
        code = subprocess.call(
            [
                "ssh",
                "-i",
                str(client.private),
                "-p",
                str(state.ssh_port),
                "-o",
                f"UserKnownHostsFile={known.name}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "root@127.0.0.1",
            ]
        )
    raise Exit(code=code)


@task(help=GUEST_HELP)
def down(c: Context, guest: str = guests.DEFAULT_GUEST) -> None:
    """Shut down the guest started by invoke up."""
    path = runs.active_state_path(guest)
    state = live_state(guest)
    if state is None:
        print(f"no {guest} VM is running")
        return
    how = stop_detached(state)
    path.unlink(missing_ok=True)
    print(f"{guest} (pid {state.pid}): {how}")


@task(help=GUEST_HELP)
def status(c: Context, guest: str = guests.DEFAULT_GUEST) -> None:
    """Say whether a guest is running, and how to reach it."""
    state = live_state(guest)
    if state is None:
        print(f"{guest}: not running")
        return
    print(json.dumps(state.__dict__, indent=2))


@task(help=VM_HELP)
def build(
    c: Context,
    guest: str = guests.DEFAULT_GUEST,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
) -> None:
    """Push kernel-module/ and guest/ to the guest and build them there (warnings fail)."""
    run_dir = runs.new_run(f"build-{guest}")
    with session(_opts(guest, accel, cpu, mirror), run_dir) as s:
        _push_and_build(s.remote, run_dir)


def _push_and_build(remote: Remote, run_dir: Path) -> kmod.BuildResult:
    digest = kmod.source_digest()
    files = kmod.push_sources(remote)
    try:
        result = kmod.build(remote, digest)
    except kmod.BuildError as exc:
        (run_dir / "build.log").write_text(str(exc))
        raise _fail(str(exc)) from None
    (run_dir / "build.log").write_text(result.log)
    what = (
        "unchanged, build skipped"
        if result.skipped
        else (f"built in {result.seconds:.1f} s, no warnings")
    )
    print(f"pushed {files} files; {what}", file=sys.stderr)
    return result


@task(
    help={
        **VM_HELP,
        "pid": "target pid in the guest",
        "json": "print JSON",
        "va": "also translate this user address",
        "walk": "count entries per level",
    }
)
def inspect(
    c: Context,
    pid: str = "",
    guest: str = guests.DEFAULT_GUEST,
    json_: bool = False,
    va: str | None = None,
    walk: bool = False,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
) -> None:
    """Load procmem.ko for PID, print its record, unload it."""
    if not pid:
        raise _fail("inspect: --pid is required")
    run_dir = runs.new_run(f"inspect-{guest}")
    with session(_opts(guest, accel, cpu, mirror), run_dir) as s:
        _push_and_build(s.remote, run_dir)
        snap = kmod.snapshot(
            s.remote, int(pid), va=int(va, 0) if va else None, walk=walk, stop=False
        )
    (run_dir / "dmesg.txt").write_text(snap.sections.get("dmesg", ""))
    if snap.insmod_status != 0:
        errors = snap.record.errors if snap.record else []
        reason = "; ".join(" ".join(f"{k}={v}" for k, v in e.items()) for e in errors)
        raise _fail(f"insmod failed ({snap.errno_name}): {snap.insmod_output}\n{reason}")
    if snap.record is None:
        raise _fail(f"no record: {snap.record_error}")
    data = snap.record.to_json()
    (run_dir / "record.json").write_text(json.dumps(data, indent=2) + "\n")
    if json_:
        print(json.dumps(data))
    else:
        print("\n".join(snap.record.lines))


@task(help={**VM_HELP, "pid": "target pid in the guest (default: the guest's sshd)"})
def verify(
    c: Context,
    pid: int = 0,
    guest: str = guests.DEFAULT_GUEST,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
) -> None:
    """Freeze PID, compare the module's record with /proc; non-zero exit on any mismatch."""
    run_dir = runs.new_run(f"verify-{guest}")
    with session(_opts(guest, accel, cpu, mirror), run_dir) as s:
        _push_and_build(s.remote, run_dir)
        target = pid or int(s.remote.run("pgrep -o -x sshd", check=True).stdout.split()[0])
        snap = kmod.snapshot(s.remote, target, va=None)
    result = verify_mod.verify(snap)
    verify_mod.write([result], run_dir / "verify.json")
    print(result.table())
    bad = result.failures
    print(
        f"{len(result.checks) - len(bad)} passed, {len(bad)} failed "
        f"(pid {result.pid} {result.comm}); {run_dir / 'verify.json'}"
    )
    if bad:
        raise Exit(code=1)


GUESTS_HELP = {**VM_HELP, "guest": "guest profile; repeat for several kernels in one report"}


def _guest_list(guest: list[str]) -> list[str]:
    names = guest or [guests.DEFAULT_GUEST]
    for name in names:
        guests.get_profile(name)
    return names


@task(help=VM_HELP)
def experiments(
    c: Context,
    guest: str = guests.DEFAULT_GUEST,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
) -> None:
    """Run the app's scenarios with the module at every checkpoint; save data and plots."""
    from memlayout import experiments as exp_mod
    from memlayout import plots

    run_dir = runs.new_run(f"experiments-{guest}")
    with session(_opts(guest, accel, cpu, mirror), run_dir) as s:
        _push_and_build(s.remote, run_dir)
        done = exp_mod.run_all(s.remote, run_dir / "experiments")
    failures = []
    for scenario, exp in done.items():
        bad = [r for r in exp.rules if not r.ok]
        print(f"{scenario}: {len(exp.points)} checkpoints, {len(exp.rules)} rules, "
              f"{len(bad)} broken")  # fmt: skip
        for r in bad:
            print(f"  FAIL {r.name}: {r.detail}")
        failures += exp.failures()
    plots.all_plots({k: e.to_json() for k, e in done.items()}, run_dir / "plots")
    print(run_dir)
    if failures:
        raise Exit(code=1)


@task(help={**VM_HELP, "count": "number of insmod/rmmod cycles", "stress": "churning target",
            "pid": "target pid (default: an idle app)"})  # fmt: skip
def cycles(
    c: Context,
    count: int = 20,
    stress: bool = False,
    pid: int = 0,
    guest: str = guests.DEFAULT_GUEST,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
) -> None:
    """Run COUNT insmod/rmmod cycles in one guest loop; fail on any oops, BUG or warning."""
    from memlayout import cycles as cycles_mod

    run_dir = runs.new_run(f"cycles-{guest}")
    with session(_opts(guest, accel, cpu, mirror), run_dir) as s:
        _push_and_build(s.remote, run_dir)
        stats = cycles_mod.run(s.remote, count, stress=stress, target_pid=pid or None)
    (run_dir / "cycles.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    summary = stats.summary()
    print(
        f"{summary['count']} cycles: mean {summary['mean_ms']} ms, p50 {summary['p50_ms']}, "
        f"p90 {summary['p90_ms']}, p99 {summary['p99_ms']}, max {summary['max_ms']} ms; "
        f"refused loads {summary['failed_loads']}, incomplete records "
        f"{summary['incomplete_records']}, kernel trouble {len(stats.trouble)}"
    )
    for line in stats.trouble[:5]:
        print(f"  {line}")
    if not stats.ok:
        raise Exit(code=1)


@task(
    iterable=["guest", "author"],
    help={
        **GUESTS_HELP,
        "cycles": "insmod/rmmod cycles per guest",
        "stress": "stress cycles per guest (0: none)",
        "author": 'group member "Name" or "Name:student-id"; repeat (default: submission.toml)',
    },
)
def all(
    c: Context,
    guest: list[str] | None = None,
    accel: str = "auto",
    cpu: str = DEFAULT_CPU,
    mirror: str | None = None,
    cycles: int = 100,
    stress: int = 0,
    author: list[str] | None = None,
) -> None:
    """Everything: image, boot, build, verify, experiments, cycles, report, bundle; per guest."""
    from memlayout import allrun

    names = _guest_list(guest or [])
    sub = submission_mod.load(cli_authors=author or None)
    run_dir = runs.new_run("all")
    summary = allrun.run_all(
        [_opts(name, accel, cpu, mirror) for name in names],
        run_dir,
        cycle_count=cycles,
        stress_count=stress,
        submission=sub,
    )
    print(f"bundle: {summary['bundle']}", file=sys.stderr)
    for failure in summary["failures"]:
        print(f"FAIL {failure}", file=sys.stderr)
    print(summary["report"])
    if not summary["ok"]:
        raise Exit(code=1)


@task(
    iterable=["author"],
    help={"run": "run directory (default: runs/latest)", "author": "as for invoke all"},
)
def submission(c: Context, run: str = "", author: list[str] | None = None) -> None:
    """Bundle a finished run (report, sources, README.txt, logs) for the course."""
    from memlayout.paths import runs_dir

    run_dir = Path(run) if run else (runs_dir() / "latest").resolve()
    if not (run_dir / "report.pdf").exists():
        raise _fail(f"{run_dir} has no report.pdf: run invoke all first")
    try:
        sub = submission_mod.load(cli_authors=author or None)
        print(submission_mod.make_bundle(run_dir, sub))
    except submission_mod.SubmissionError as exc:
        raise _fail(f"submission: {exc}") from None
