"""Fixtures shared by the unit tests (tests/unit) and the VM tests (tests/vm)."""

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
