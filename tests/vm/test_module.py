"""procmem.ko in a real guest: verified against /proc for live processes, and bad input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memlayout.experiments import app
from memlayout.guest.console import find_trouble
from memlayout.guest.session import Session
from memlayout.module import build, verify
from memlayout.module.build import REMOTE_ROOT, full_dmesg
from memlayout.module.capture import capture


def assert_verified(s: Session, pid: int, **kw: object) -> verify.Verification:
    cap = capture(s.remote, pid, **kw)  # type: ignore[arg-type]
    result = verify.verify(cap)
    assert result.ok, result.table()
    return result


def test_module_builds_without_warnings(guest: Session) -> None:
    # The fixture built it; a rebuild from scratch must stay silent too.
    guest.remote.run(f"make -C {REMOTE_ROOT}/kernel-module clean", check=True)
    result = build.build(guest.remote, force=True)
    assert not result.skipped and not build.warnings_in(result.log)


@pytest.mark.parametrize("name", ["sshd", "systemd-journal", "systemd-udevd", "init"])
def test_system_processes_verify_clean(guest: Session, name: str) -> None:
    pid = 1 if name == "init" else int(guest.remote.run(f"pgrep -o -x {name}").stdout.split()[0])
    assert_verified(guest, pid)


def test_a_shell_verifies_clean(guest: Session) -> None:
    pid = int(guest.remote.run("setsid sh -c 'sleep 300' >/dev/null 2>&1 & echo $!").stdout)
    try:
        assert_verified(guest, pid)
    finally:
        guest.remote.run(f"kill {pid}")


@pytest.fixture
def started(guest: Session, request: pytest.FixtureRequest) -> Iterator[app.AppProcess]:
    scenario, arg = request.param
    proc = app.start(guest.remote, scenario, arg)
    assert proc.next_checkpoint() is not None
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "started", [("maps", 3000), ("threads", 8), ("heap", None), ("demand", None)], indirect=True
)
def test_app_targets_verify_clean(guest: Session, started: app.AppProcess) -> None:
    result = assert_verified(guest, started.pid)
    if started.scenario == "maps":
        count = next(c for c in result.checks if c.name == "vma count")
        assert isinstance(count.actual, int) and count.actual > 3000


@pytest.mark.parametrize("started", [("heap", None)], indirect=True)
def test_va_translation_matches_pagemap(guest: Session, started: app.AppProcess) -> None:
    started.go()
    point = started.next_checkpoint()  # the first malloc
    assert point is not None and point["action"] == "malloc"
    result = assert_verified(guest, started.pid, va=int(point["ptr"]))
    assert any("frame (pagemap PFN)" in c.name for c in result.checks)


@pytest.mark.parametrize(
    ("args", "errno", "reason"),
    [
        ([], "EINVAL", "pid_not_set"),
        (["pid=0"], "EINVAL", "pid_not_set"),
        (["pid=-5"], "EINVAL", "bad_pid"),
        (["pid=4000000"], "ESRCH", "no_such_process"),
        (["pid=2"], "EINVAL", "kernel_thread"),
        (["pid=1", "va=0xffffffffff600000"], "EINVAL", "bad_va"),
    ],
)
def test_bad_input_gives_a_clear_error_record(
    guest: Session, args: list[str], errno: str, reason: str
) -> None:
    cap = capture(guest.remote, 1, raw_args=args, stop=False, pid_arg=False)
    # The module loads all the same, so /proc/procmem holds the error until rmmod.
    assert cap.insmod_status == 0, cap.insmod_output
    assert cap.errno_name == errno
    assert cap.record is not None and cap.record.errors and not cap.record.begin
    assert str(cap.record.errors[0]["reason"]).startswith(reason)
    assert cap.printk is not None and cap.printk.status == "equal"
    assert cap.failure() is not None and not verify.verify(cap).ok


def test_zombie_gives_esrch(guest: Session) -> None:
    # The parent sleeps without reaping its exited child.
    out = guest.remote.run(
        "setsid sh -c 'sleep 0 & exec sleep 30' >/dev/null 2>&1 & sleep 1; "
        "ps -eo pid,stat,comm | awk '$2 ~ /^Z/ && $3 == \"sleep\" {print $1; exit}'"
    ).stdout.split()
    assert out, "no zombie to test with"
    cap = capture(guest.remote, int(out[0]), stop=False)
    assert cap.insmod_status == 0 and cap.errno_name == "ESRCH", cap.insmod_output
    assert cap.record is not None and cap.record.errors


def test_dmesg_has_no_oops_or_warning(guest: Session) -> None:
    log = full_dmesg(guest.remote)
    assert find_trouble(log) is None
