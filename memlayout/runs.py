"""Run directories: ``runs/<run-id>/`` per run, ``runs/latest`` for the newest."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .paths import runs_dir


def new_run(prefix: str = "", base: Path | None = None) -> Path:
    """Create a fresh run directory and point ``latest`` at it."""
    base = base or runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}{'-' + prefix if prefix else ''}"
    path = base / name
    n = 1
    while path.exists():
        n += 1
        path = base / f"{name}.{n}"
    path.mkdir()
    link = base / "latest"
    tmp = base / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    os.replace(tmp, link)
    return path


def active_state_path(guest: str, base: Path | None = None) -> Path:
    """Where ``invoke up`` records the live VM of ``guest``."""
    return (base or runs_dir()) / f"active-{guest}.json"
