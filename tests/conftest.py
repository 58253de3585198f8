"""Shared fixtures. VM fixtures boot real guests and live in tests/vmfixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory, used through $MEMLAYOUT_CACHE."""
    path = tmp_path / "cache"
    monkeypatch.setenv("MEMLAYOUT_CACHE", str(path))
    return path


# ---- fixtures that boot real guests (tests marked vm) ----------------------

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from memlayout import kmod  # noqa: E402
from memlayout.pipeline import GuestOptions, Session, session  # noqa: E402

DEFAULT_TEST_GUEST = os.environ.get("MEMLAYOUT_TEST_GUEST", "debian-bookworm")


def boot_session(guest: str, run_dir: Path) -> Iterator[Session]:
    """A booted guest with the module and the app built in it."""
    with session(GuestOptions(guest=guest), run_dir, attach=False) as s:
        kmod.push_sources(s.remote)
        kmod.build(s.remote, kmod.source_digest())
        yield s


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The default guest, booted once for the whole test session."""
    yield from boot_session(DEFAULT_TEST_GUEST, tmp_path_factory.mktemp("guest-run"))
