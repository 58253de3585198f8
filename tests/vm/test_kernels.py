"""The module on kernels before and after 6.1 (VMA list vs. VMA iterator, and more)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout import pipeline
from memlayout.experiments import app
from memlayout.guest.console import find_trouble
from memlayout.guest.session import Session
from memlayout.module import hello, verify
from memlayout.module.build import full_dmesg
from memlayout.module.capture import capture
from memlayout.rundir import GuestDir

from .conftest import boot_session

FUZZ_SEED = 8080  # fixed: a failure replays with invoke fuzz --guest G --seed 8080
# One kernel before 6.1's VMA iterator and one after; MEMLAYOUT_OTHER_GUESTS overrides.
OTHER_KERNELS = os.environ.get("MEMLAYOUT_OTHER_GUESTS", "debian-bullseye,debian-trixie").split(",")


@pytest.fixture(scope="module", params=OTHER_KERNELS)
def other(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Session]:  # fmt: skip
    yield from boot_session(request.param, tmp_path_factory.mktemp(request.param))


def test_module_verifies_on_other_kernels(other: Session) -> None:
    targets = [1, int(other.remote.run("pgrep -o -x sshd", check=True).stdout.split()[0])]
    maps = app.start(other.remote, "maps", 1000)
    threads = app.start(other.remote, "threads", 4)
    try:
        for proc in (maps, threads):
            assert proc.next_checkpoint() is not None
            targets.append(proc.pid)
        for pid in targets:
            result = verify.verify(capture(other.remote, pid))
            assert result.ok, f"{other.state.kernel_release}, pid {pid}:\n{result.table()}"
    finally:
        maps.stop()
        threads.stop()


@pytest.mark.parametrize(
    ("args", "errno"), [(["pid=2"], "EINVAL"), (["pid=4000000"], "ESRCH"), ([], "EINVAL")]
)
def test_bad_input_on_other_kernels(other: Session, args: list[str], errno: str) -> None:
    cap = capture(other.remote, 1, raw_args=args, stop=False, pid_arg=False)
    assert cap.insmod_status == 0 and cap.errno_name == errno
    assert cap.record is not None and cap.record.errors


def test_va_and_walk_on_other_kernels(other: Session) -> None:
    proc = app.start(other.remote, "heap")
    try:
        proc.next_checkpoint()
        proc.go()
        point = proc.next_checkpoint()
        assert point is not None
        cap = capture(other.remote, proc.pid, va=int(point["ptr"]), walk=True)
        result = verify.verify(cap)
        assert result.ok, result.table()
        assert cap.record is not None and int(cap.record.walk["pte"]) > 0
    finally:
        proc.stop()


def test_fuzz_on_other_kernels(other: Session, tmp_path: Path) -> None:
    """A minute of seeded churn per kernel (the nightly fuzzes 15); the seed replays it."""
    files = GuestDir(tmp_path / "g").create()
    plan = pipeline.FuzzPlan(seconds=60, seed=FUZZ_SEED, length=12)
    result = pipeline.fuzz_on(other.remote, files, "test", plan)
    shown = [(m.seed, m.index, m.op, m.names(), m.shrunk) for m in result.mismatches]
    assert not result.failures, (result.failures, shown)
    assert result.checkpoints > 0


def test_no_kernel_trouble_on_other_kernels(other: Session) -> None:
    assert find_trouble(full_dmesg(other.remote)) is None


def test_hello_loads_on_other_kernels(other: Session, tmp_path: Path) -> None:
    result = hello.run(other.remote, GuestDir(tmp_path / "g"))
    assert result.ok, result.failures
