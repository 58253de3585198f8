"""Fixtures that boot real guests. Every test in tests/vm is marked ``vm``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.guest.session import GuestOptions, Session, open_session
from memlayout.module import build
from memlayout.rundir import GuestDir

DEFAULT_TEST_GUEST = os.environ.get("MEMLAYOUT_TEST_GUEST", "debian-bookworm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.vm)


def boot_session(guest: str, run_dir: Path) -> Iterator[Session]:
    """A booted guest with the module and the app built in it (the pipeline's build stage)."""
    files = GuestDir(run_dir / guest)
    with open_session(GuestOptions(guest=guest), files, attach=False) as s:
        build.build(s.remote, files)
        yield s


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The default guest, booted once for the whole test session."""
    yield from boot_session(DEFAULT_TEST_GUEST, tmp_path_factory.mktemp("guest-run"))
