"""The churn fuzzer without a VM: the generator, the grammar, the shrinker, and the fuzz
loop against a fake guest whose "module" miscounts locked memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from memlayout.errors import UsageError
from memlayout.fuzz import ops as ops_mod
from memlayout.fuzz import runner
from memlayout.fuzz.ops import GRAMMAR, Op, generate, parse, read_replay
from memlayout.fuzz.runner import Checkpoint, Run, expected_checkpoints
from memlayout.fuzz.shrink import shrink
from memlayout.rundir import GuestDir

LOCKED_CHECK = "vma resident pages (smaps Rss)"


def test_a_seed_always_gives_the_same_sequence() -> None:
    assert generate(7, 60) == generate(7, 60)
    assert generate(7, 30) == generate(7, 60)[:30]
    assert generate(7, 60) != generate(8, 60)


def test_every_generated_operation_is_grammatical_and_reads_back() -> None:
    for seed in range(300):
        for op in generate(seed, 40):
            assert op.problem() is None, op
            assert parse(str(op)) == op


def test_the_generator_uses_every_operation_advice_kind_and_flag() -> None:
    ops = [op for seed in range(300) for op in generate(seed, 40)]
    assert {op.name for op in ops} == set(GRAMMAR)
    assert {op.words[4] for op in ops if op.name == "advise"} == set(ops_mod.ADVICES)
    maps = [op for op in ops if op.name == "map"]
    assert {op.words[4] for op in maps} == set(ops_mod.KINDS)
    assert {op.words[5] for op in maps} == set(ops_mod.FLAGS)
    assert all(int(op.words[2]) % ops_mod.HUGE == 0 for op in maps if op.words[4] == "hugetlb")


def test_sequences_start_by_mapping_and_mostly_work_on_mapped_slots() -> None:
    for seed in range(100):
        mapped: set[str] = set()
        on_empty = 0
        slot_ops = 0
        for op in generate(seed, 40):
            if op.name == "map":
                mapped.add(op.words[1])
            elif op.name in GRAMMAR and GRAMMAR[op.name][:1] == ("slot",):
                slot_ops += 1
                on_empty += op.words[1] not in mapped
        assert on_empty <= slot_ops // 4 + 1, seed


@pytest.mark.parametrize(
    "line",
    [
        "frobnicate 1",
        "map 9 1 rw anon - 0",  # no such slot
        "touch 0 0 0 write",  # zero pages
        "protect 0 0 1 rwxs",
        "advise 0 0 1 sideways",
        "remap 0 4",  # a word short
        "fork now",
        "brk 1.5",
    ],
)
def test_the_grammar_refuses_bad_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse(line)


def test_blank_and_comment_lines_are_not_operations() -> None:
    assert parse("") is None and parse("  # seed=3") is None


def test_a_replay_file_round_trips_with_its_header(tmp_path: Path) -> None:
    ops = generate(3, 12)
    path = ops_mod.write_replay(
        tmp_path / "r.ops", ops, {"seed": 3, "kernel": "6.1.0"}, ["failed: x"]
    )
    saved = read_replay(path)
    assert saved.ops == ops
    assert saved.meta == {"seed": "3", "kernel": "6.1.0"}
    assert "invoke fuzz --replay" in path.read_text()


def test_a_bad_replay_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.ops").write_text("map 0 1 rw anon - 0\nexplode\n")
    with pytest.raises(UsageError, match=r"bad\.ops:2"):
        read_replay(tmp_path / "bad.ops")
    (tmp_path / "empty.ops").write_text("# nothing\n")
    with pytest.raises(UsageError, match="no operations"):
        read_replay(tmp_path / "empty.ops")
    with pytest.raises(UsageError, match="cannot read"):
        read_replay(tmp_path / "missing.ops")


def test_shrink_finds_the_two_items_that_fail_together() -> None:
    calls: list[list[int]] = []

    def fails(xs: list[int]) -> bool:
        calls.append(xs)
        return 7 in xs and 31 in xs and xs.index(7) < xs.index(31)

    result = shrink(list(range(40)), fails)
    assert result.items == [7, 31] and result.complete
    assert result.tests == len(calls) < 60  # each candidate tried once


def test_shrink_keeps_duplicates_apart_and_the_order() -> None:
    items = [1] * 10 + [2] + [1] * 10 + [3] + [1]
    result = shrink(items, lambda xs: xs.count(1) >= 2 and 3 in xs)
    assert sorted(result.items) == [1, 1, 3] and result.complete
    assert shrink(items, lambda xs: xs[-2:] == [3, 1]).items == [3, 1]


def test_shrink_stops_at_its_deadline_with_a_failing_sequence() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def fails(xs: list[int]) -> bool:
        now[0] += 10  # every replay takes 10 s
        return 5 in xs

    result = shrink(list(range(64)), fails, deadline=25.0, clock=clock)
    assert not result.complete and 5 in result.items and len(result.items) < 64
    assert result.tests == 3
    capped = shrink(list(range(64)), lambda xs: 5 in xs, max_tests=2)
    assert not capped.complete and capped.tests == 2


def test_expected_checkpoints_matches_the_apps_rule() -> None:
    assert expected_checkpoints(5, 1) == 5
    assert expected_checkpoints(5, 2) == 3  # after ops 1, 3 and the last (4)
    assert expected_checkpoints(6, 3) == 2
    assert expected_checkpoints(0, 1) == 0


class LockBlindGuest:
    """A fake guest whose module miscounts VM_LOCKED memory: every checkpoint where a
    mapped slot has a locked page fails the per-VMA Rss check."""

    kernel = "fake-1.0"

    def __init__(self) -> None:
        self.runs: list[tuple[list[Op], int]] = []

    def run(self, ops: Sequence[Op], every: int = 1, *, until: float | None = None) -> Run:
        self.runs.append((list(ops), every))
        mapped: set[str] = set()
        locked: set[str] = set()
        checkpoints = []
        for i, op in enumerate(ops):
            slot = op.words[1] if len(op.words) > 1 else ""
            if op.name == "map":
                mapped.add(slot)
                locked.discard(slot)
                if op.words[5] == "locked":
                    locked.add(slot)
            elif op.name == "unmap" and op.words[2] == "0":
                mapped.discard(slot)
                locked.discard(slot)
            elif op.name == "lock" and slot in mapped:
                locked.add(slot)
            if (i + 1) % every and i != len(ops) - 1:
                continue
            failed = [
                {"name": LOCKED_CHECK, "expected": 0, "actual": 1, "detail": f"slot {s}"}
                for s in sorted(locked & mapped)
            ]
            checkpoints.append(Checkpoint(i, str(op), "ok", "-", 0, 30, failed[:1]))
        return Run(checkpoints, {"done": len(ops), "refused": 0}, True, 0.01)


def first_locking_seed() -> int:
    """A seed whose sequence locks memory only after a few other operations."""
    for seed in range(1000):
        ops = generate(seed, runner.DEFAULT_LENGTH)
        first = next(
            (i for i, op in enumerate(ops) if op.name == "lock" or op.words[-2:-1] == ("locked",)),
            None,
        )
        if first is not None and first >= 6:
            return seed
    raise AssertionError("no seed locks late")


def test_fuzz_finds_the_mismatch_names_the_seed_and_shrinks_it(tmp_path: Path) -> None:
    seed = first_locking_seed()
    guest = LockBlindGuest()
    files = GuestDir(tmp_path / "g").create()
    result = runner.fuzz(
        guest, files, guest="fake", seconds=60, seed=seed - 2, report=lambda _: None
    )
    assert len(result.mismatches) == 1  # the first mismatch ends the run
    m = result.mismatches[0]
    assert [s.seed for s in result.seeds] == list(range(seed - 2, m.seed + 1 if m.seed else 0))
    assert m.seed == result.seeds[-1].seed and m.reproduced and m.complete
    assert m.names() == [LOCKED_CHECK]
    assert 1 <= len(m.shrunk) <= 2 < len(m.prefix)
    assert any("lock" in op for op in m.shrunk)
    replay_file = Path(m.replay)
    assert replay_file == files.fuzz_replay(m.seed)
    saved = read_replay(replay_file)
    assert saved.meta["seed"] == str(m.seed) and [str(o) for o in saved.ops] == m.shrunk
    # The shrinker's candidates were checked at their end only.
    assert all(every == len(ops) for ops, every in guest.runs[1:])
    data = json.loads(json.dumps(result.to_json()))
    assert data["ok"] is False and data["mismatches"][0]["shrunk"] == m.shrunk
    assert result.failures == [f"fuzz seed {m.seed} op {m.index} ({m.op}): {LOCKED_CHECK}"]


def test_replaying_the_shrunk_file_fails_again(tmp_path: Path) -> None:
    seed = first_locking_seed()
    files = GuestDir(tmp_path / "g").create()
    found = runner.fuzz(
        LockBlindGuest(), files, guest="fake", seconds=60, seed=seed, report=lambda _: None
    )
    saved = read_replay(Path(found.mismatches[0].replay))
    lines: list[str] = []
    again = runner.replay(LockBlindGuest(), saved, files, guest="fake", report=lines.append)
    assert again.mode == "replay" and again.first_seed == seed
    assert again.mismatches and again.mismatches[0].names() == [LOCKED_CHECK]
    assert any("MISMATCH" in line for line in lines)


def test_a_clean_guest_runs_consecutive_seeds_until_the_time_is_up(tmp_path: Path) -> None:
    class Clean(LockBlindGuest):
        def run(self, ops: Sequence[Op], every: int = 1, *, until: float | None = None) -> Run:
            run = super().run([op for op in ops if op.name != "lock"], every)
            for c in run.checkpoints:
                c.failed = []
            return run

    result = runner.fuzz(
        Clean(), GuestDir(tmp_path / "g"), guest="fake", seconds=0.05, seed=100, length=8
    )
    assert not result.mismatches and not result.failures
    seeds = [s.seed for s in result.seeds]
    assert seeds == list(range(100, 100 + len(seeds))) and result.checkpoints > 0


def test_the_fuzz_task_prints_the_mismatch_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    import tasks
    from memlayout import pipeline

    monkeypatch.setenv("MEMLAYOUT_RUNS", str(tmp_path / "runs"))
    seed = first_locking_seed()

    def fake_fuzz(
        opts: object, files: GuestDir, plan: pipeline.FuzzPlan, **_: object
    ) -> runner.FuzzResult:
        assert plan.seed == seed and plan.seconds == 30.0
        return runner.fuzz(
            LockBlindGuest(), files.create(), guest="fake", seconds=30, seed=plan.seed
        )

    monkeypatch.setattr(pipeline, "fuzz", fake_fuzz)
    with pytest.raises(Exit) as exc:
        tasks.fuzz(Context(), seconds=30.0, seed=str(seed))
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert f"MISMATCH seed {seed} after op" in out and LOCKED_CHECK in out
    assert "shrunk to" in out and "invoke fuzz --guest" in out and "--replay" in out
