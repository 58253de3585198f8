"""Faults that need no VM: stale state files, half-saved states, full disks, two pipelines."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from memlayout.errors import ImageError, VMError
from memlayout.guest import debian, saved
from memlayout.guest.cache import locked
from memlayout.guest.session import live_state
from memlayout.guest.state import LiveState
from memlayout.paths import REPO_ROOT
from memlayout.rundir import active_state_path


@pytest.mark.parametrize(
    "content",
    ["", "{not json", '{"guest": "debian-bookworm"}', '{"guest": "x", "from_the_future": 1}', "[]"],
)
def test_a_stale_or_foreign_state_file_is_ignored_with_a_message(
    content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLAYOUT_RUNS", str(tmp_path))
    path = active_state_path("debian-bookworm")
    path.write_text(content)
    notes: list[str] = []
    assert live_state("debian-bookworm", notes.append) is None
    assert not path.exists()
    assert content == "" or (notes and "ignoring" in notes[0])


def test_a_state_file_of_a_dead_vm_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLAYOUT_RUNS", str(tmp_path))
    state = LiveState(
        "debian-bookworm", 2**22 + 7, 1, "q", "c", "k", "tcg", "", "cpu", "r", "s", "d"
    )
    state.save(active_state_path("debian-bookworm"))
    assert live_state("debian-bookworm") is None
    assert not active_state_path("debian-bookworm").exists()


def saved_state(tmp_path: Path, state_bytes: int = 1000, recorded: int = 1000) -> saved.SavedState:
    target = saved.SavedState(tmp_path / "saved")
    target.directory.mkdir()
    target.state.write_bytes(b"s" * state_bytes)
    target.disk.write_bytes(b"QFI\xfb")
    target.done.write_text(json.dumps({"state_bytes": recorded}))
    return target


def test_a_complete_saved_state_is_ready(tmp_path: Path) -> None:
    assert saved_state(tmp_path).ready()


@pytest.mark.parametrize("breakage", ["truncated", "no done.json", "garbled done.json"])
def test_a_broken_saved_state_is_never_resumed(breakage: str, tmp_path: Path) -> None:
    target = saved_state(tmp_path, state_bytes=400 if breakage == "truncated" else 1000)
    if breakage == "no done.json":
        target.done.unlink()
    if breakage == "garbled done.json":
        target.done.write_text("{")
    assert not target.ready()


def test_a_full_disk_while_saving_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saved, "_migrate", lambda sock, state, timeout: state.write_bytes(b"s"))

    def full(src: Path, dst: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    target = saved.SavedState(tmp_path / "saved" / "debian-bookworm-1234")
    overlay = tmp_path / "overlay.qcow2"
    overlay.write_bytes(b"QFI\xfb")
    with pytest.raises(VMError, match="No space left"):
        saved.save(tmp_path / "qmp.sock", overlay, target)
    assert not target.ready() and list((tmp_path / "saved").iterdir()) == []


def test_an_image_build_on_a_full_disk_says_where_and_how_much(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 9, 1 << 20))  # type: ignore[attr-defined]
    with pytest.raises(ImageError, match=rf"needs about 3072 MiB free in {tmp_path}; it has 1 MiB"):
        debian.require_space(tmp_path, debian.NEEDS_BYTES)


def hold(path: Path, holding: Any, release: Any) -> None:
    with locked(path, lambda _m: None):
        holding.set()
        release.wait(30)


def test_a_second_pipeline_waits_for_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / ".image.lock"
    ctx = multiprocessing.get_context("fork")
    holding, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=hold, args=(lock, holding, release))
    other.start()
    assert holding.wait(30)
    notes: list[str] = []
    threading.Timer(0.5, release.set).start()
    with locked(lock, notes.append):
        assert release.is_set()  # we got the lock only after the other one let go
    other.join()
    assert notes and "waiting" in notes[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_invoke_image_on_a_full_cache_says_where_and_exits_3(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        env = dict(os.environ, MEMLAYOUT_CACHE=str(small / "cache"))
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "image", "--guest", "debian-bookworm"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 3, proc.stderr
        assert f"free in {small / 'cache' / 'images'}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not list((small / "cache" / "images").glob("debian-bookworm-*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
