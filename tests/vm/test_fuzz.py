"""The churn fuzzer on a real guest: a fixed seed finds no mismatch, and a record
corrupted on purpose is found, named with its seed and shrunk to a replayable file."""

from __future__ import annotations

import json
from pathlib import Path

from memlayout import pipeline
from memlayout.fuzz.ops import generate, read_replay
from memlayout.guest.session import Session
from memlayout.module.capture import Capture
from memlayout.rundir import GuestDir

SEED = 4242  # fixed, so a failure here is replayed with invoke fuzz --seed 4242
VM_LOCKED = 0x2000


def test_a_fixed_seed_verifies_every_step_without_a_mismatch(
    guest: Session, tmp_path: Path
) -> None:
    files = GuestDir(tmp_path / "g").create()
    plan = pipeline.FuzzPlan(seconds=90, seed=SEED, length=12)
    result = pipeline.fuzz_on(guest.remote, files, "test", plan)
    shown = [(m.seed, m.index, m.op, m.names(), m.shrunk) for m in result.mismatches]
    assert not result.failures, (result.failures, shown)
    assert result.checkpoints > 0 and result.seeds[0].seed == SEED
    data = json.loads(files.fuzz_json.read_text())
    assert data["ok"] and data["checkpoints"] == result.checkpoints
    assert data["prepared"].get("swap_kb", 0) > 0  # MADV_PAGEOUT has swap to go to


def lock_blind(cap: Capture) -> None:
    """A module that counts one page too many in every locked VMA."""
    assert cap.record is not None
    for vma in cap.record.vmas:
        if int(vma.get("flags", 0)) & VM_LOCKED:
            vma["rss"] = int(vma["rss"]) + 1


def late_locking_seed(length: int) -> int:
    """A seed whose first lock (mlock or MAP_LOCKED) comes after a few other operations."""
    for seed in range(SEED, SEED + 1000):
        ops = generate(seed, length)
        first = next(
            (i for i, op in enumerate(ops) if op.name == "lock" or "locked" in op.words), None
        )
        if first is not None and 3 <= first <= 6:
            return seed
    raise AssertionError("no seed locks late")


def test_a_corrupted_record_is_found_named_and_shrunk(guest: Session, tmp_path: Path) -> None:
    length = 10
    seed = late_locking_seed(length)
    files = GuestDir(tmp_path / "g").create()
    plan = pipeline.FuzzPlan(seconds=600, seed=seed, length=length, shrink_seconds=420)
    result = pipeline.fuzz_on(guest.remote, files, "test", plan, corrupt=lock_blind)
    assert len(result.mismatches) == 1, result.to_json()["seeds"]
    m = result.mismatches[0]
    assert m.seed is not None and m.seed >= seed
    assert "vma resident pages (smaps Rss)" in m.names()
    assert m.reproduced, m
    assert len(m.shrunk) < len(m.prefix), (m.prefix, m.shrunk)
    assert any(op.startswith("lock") or " locked " in op for op in m.shrunk), m.shrunk
    saved = read_replay(Path(m.replay))
    assert saved.meta["seed"] == str(m.seed)
    assert [str(op) for op in saved.ops] == m.shrunk
    assert json.loads(files.fuzz_json.read_text())["ok"] is False
    # The saved sequence fails again when replayed.
    again = pipeline.fuzz_on(
        guest.remote,
        GuestDir(tmp_path / "again").create(),
        "test",
        pipeline.FuzzPlan(replay=saved),
        corrupt=lock_blind,
    )
    assert again.mismatches and "vma resident pages (smaps Rss)" in again.mismatches[0].names()
