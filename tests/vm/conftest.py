"""Fixtures that boot real guests. Every test in tests/vm is marked ``vm``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.guest.qemu import KERNEL_ARGS
from memlayout.guest.session import GuestOptions, Session, open_session
from memlayout.module import build
from memlayout.rundir import GuestDir

DEFAULT_TEST_GUEST = os.environ.get("MEMLAYOUT_TEST_GUEST", "debian-bookworm")
# The guest kernel with the distribution's own log buffer size (no log_buf_len=16M):
# 128 KiB on Debian, which a record of a few thousand VMAs overflows.
SMALL_LOG_ARGS = " ".join(a for a in KERNEL_ARGS.split() if not a.startswith("log_buf_len="))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.vm)


def boot_session(guest: str, run_dir: Path, kernel_args: str = KERNEL_ARGS) -> Iterator[Session]:
    """A booted guest with the module and the app built in it (the pipeline's build stage)."""
    files = GuestDir(run_dir / guest)
    opts = GuestOptions(guest=guest, kernel_args=kernel_args)
    with open_session(opts, files, attach=False) as s:
        build.build(s.remote, files)
        yield s


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The default guest, booted once for the whole test session."""
    yield from boot_session(DEFAULT_TEST_GUEST, tmp_path_factory.mktemp("guest-run"))
