"""Where the pipeline keeps things: the image cache and the run directories."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The cache root: $MEMLAYOUT_CACHE, else $XDG_CACHE_HOME/memlayout."""
    explicit = os.environ.get("MEMLAYOUT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "memlayout"


def runs_dir() -> Path:
    """Where run directories live: $MEMLAYOUT_RUNS, else runs/ in the repository."""
    explicit = os.environ.get("MEMLAYOUT_RUNS")
    return Path(explicit).expanduser() if explicit else REPO_ROOT / "runs"
