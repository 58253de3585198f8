"""The page-state zoo's rules, summary and table, on hand-made checkpoints (no VM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from memlayout.experiments import SCENARIOS, base, select, zoo
from memlayout.experiments.base import Experiment, measure
from memlayout.module.records import ProcRecord

MIB = 1 << 20
BASE = 0x7F0000000000
RW_FLAGS = 0x100073  # VM_READ|VM_WRITE|VM_MAYREAD|VM_MAYWRITE|VM_MAYEXEC|VM_ACCOUNT


def region(
    rss: int = 0,
    present: int | None = None,
    swap: int = 0,
    hugetlb: int = 0,
    perms: str = "rw-p",
    flags: int = RW_FLAGS,
    size: int = MIB,
    start: int = BASE,
    kind: str = "anon",
    file: str = "",
    pgoff: int = 0,
) -> dict[str, Any]:
    return {
        "start": start,
        "end": start + size,
        "kind": kind,
        "rss": rss,
        "size": size,
        "present": rss if present is None else present,
        "swap": swap,
        "hugetlb": hugetlb,
        "perms": perms,
        "flags": flags,
        "pgoff": pgoff,
        "file": file,
    }


def point(action: str, vma: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
    vma = vma or region()
    p: dict[str, Any] = {
        "action": action,
        "region": vma["start"],
        "bytes": vma["size"],
        "pages": vma["size"] // 4096,
        "region_vma": vma,
    }
    p.update(keys)
    return p


def skipped(action: str, reason: str = "madvise_EINVAL") -> dict[str, Any]:
    return {"action": action, "skipped": 1, "reason": reason}


def good_points() -> dict[str, dict[str, Any]]:
    """One checkpoint per state, each as the documented kernel behaviour has it."""
    upper = BASE + MIB // 2
    return {
        "prot_none": point("prot_none", region(rss=64, perms="---p"), touched=64),
        "zero": point("zero", region(rss=0, present=256), touched=0, read=256),
        "huge_zero": point(
            "huge_zero", region(rss=0, present=1024, size=4 * MIB), touched=0, read=2
        ),
        "thp": point("thp", region(rss=512, size=2 * MIB), touched=512, anon_huge_kb=2048),
        "thp_split": point(
            "thp_split",
            region(rss=256),
            upper=upper,
            upper_vma=region(rss=256, perms="r--p", start=upper),
            touched=256,
            upper_touched=256,
        ),
        "hugetlb": point(
            "hugetlb",
            region(rss=0, present=512, hugetlb=512, size=4 * MIB, flags=0x4400FB, kind="file"),
            touched=512,
        ),
        "shmem": point(
            "shmem", region(rss=128, perms="rw-s", file="/dev/zero (deleted)"), touched=128
        ),
        "memfd": point(
            "memfd", region(rss=128, perms="rw-s", file="/memfd:zoo (deleted)"), touched=128
        ),
        "dontneed": point("dontneed", region(rss=128), touched=256, advised=128),
        "free": point("free", region(rss=256), touched=256, advised=128),
        "mremap": point("mremap", region(rss=256, size=3 * MIB // 2), touched=256, old=BASE),
        "file_cow": point(
            "file_cow",
            region(rss=256, kind="file", pgoff=0x10000, file="/tmp/zoo-file-9 (deleted)"),
            touched=128,
            read=256,
            offset=0x10000,
        ),
        "mlock": point("mlock", region(rss=256, flags=RW_FLAGS | zoo.VM_LOCKED), touched=256),
        "pageout": point("pageout", region(rss=10, swap=246), touched=256),
        "uffd": point("uffd", region(rss=16, flags=RW_FLAGS | zoo.VM_UFFD_MISSING), touched=16),
        "secret": point("secret", region(rss=16, perms="rw-s"), touched=16),
        "growsdown": point(
            "growsdown", region(rss=16, flags=RW_FLAGS | zoo.VM_GROWSDOWN), touched=16
        ),
        "guard": point("guard", region(rss=240), touched=256, guarded=16),
    }


def experiment(points: list[dict[str, Any]], **baseline: Any) -> Experiment:
    exp = Experiment("zoo", "6.1.0-56-amd64", baseline=baseline)
    for step, p in enumerate(points):
        p["step"] = step
        exp.points.append(p)
        exp.verifications.append({"step": step, "ok": True, "checks": [{"ok": True}]})
    return exp


def broken(exp: Experiment) -> list[str]:
    select("zoo").check(exp)
    return [r.name for r in exp.rules if not r.ok]


def test_zoo_is_registered_after_thread_with_every_state_as_an_action() -> None:
    assert SCENARIOS[-2:] == ("thread", "zoo")
    assert select("zoo").actions == tuple(zoo.BY_ACTION)
    assert set(good_points()) == set(zoo.BY_ACTION)


def test_every_state_as_the_kernel_documents_it_passes() -> None:
    exp = experiment(list(good_points().values()))
    assert broken(exp) == []
    # one rule that the states are all there, then two per state (own VMA, the state's rule)
    assert len(exp.rules) == 1 + 2 * len(zoo.STATES)


# (state, a change to its good checkpoint that breaks the state's rule)
BAD = [
    ("prot_none", {"perms": "rw-p"}),
    ("prot_none", {"rss": 0, "present": 64}),  # PROT_NONE pages must still count
    ("zero", {"rss": 256}),  # zero pages never count in rss
    ("zero", {"present": 0}),
    ("huge_zero", {"rss": 1024}),
    ("huge_zero", {"present": 0}),
    ("thp", {"rss": 0, "present": 0}),
    ("thp_split", {"perms": "r--p"}),
    ("thp_split", {"rss": 512}),
    ("hugetlb", {"rss": 512}),  # hugetlb pages are not in rss
    ("hugetlb", {"hugetlb": 1024}),
    ("hugetlb", {"flags": RW_FLAGS}),
    ("shmem", {"perms": "rw-p"}),
    ("shmem", {"rss": 0, "present": 0}),
    ("memfd", {"file": "/dev/zero (deleted)"}),
    ("dontneed", {"rss": 256}),  # MADV_DONTNEED drops the pages at once
    ("dontneed", {"present": 256}),
    ("free", {"rss": 100, "present": 100}),  # below the half that was not advised
    ("mremap", {"size": MIB}),
    ("mremap", {"rss": 0, "present": 0}),
    ("file_cow", {"pgoff": 0}),
    ("file_cow", {"kind": "anon"}),
    ("file_cow", {"rss": 128, "present": 128}),
    ("mlock", {"flags": RW_FLAGS}),
    ("mlock", {"rss": 200, "swap": 56}),  # locked pages are not swapped
    ("pageout", {"rss": 256, "swap": 0}),  # nothing was swapped out
    ("pageout", {"swap": 300}),
    ("uffd", {"flags": RW_FLAGS}),
    ("secret", {"perms": "rw-p"}),
    ("secret", {"rss": 0, "present": 16}),
    ("growsdown", {"flags": RW_FLAGS}),
    ("guard", {"rss": 256, "present": 256}),  # guarded pages must be gone
]


@pytest.mark.parametrize(("action", "change"), BAD, ids=[f"{a}-{'-'.join(c)}" for a, c in BAD])
def test_a_state_counted_against_the_kernels_rules_breaks_its_rule(
    action: str, change: dict[str, Any]
) -> None:
    points = good_points()
    points[action]["region_vma"].update(change)
    names = broken(experiment(list(points.values())))
    assert names and all(name.startswith(f"{action}: ") for name in names), names


def test_the_upper_half_of_a_split_thp_is_checked_too() -> None:
    points = good_points()
    points["thp_split"]["upper_vma"]["perms"] = "rw-p"
    assert broken(experiment(list(points.values()))) == [
        f"thp_split: {zoo.BY_ACTION['thp_split'].expect}"
    ]


def test_huge_zero_page_fallback_to_4k_zero_pages_is_allowed() -> None:
    points = good_points()
    points["huge_zero"]["region_vma"].update(present=2)
    assert broken(experiment(list(points.values()))) == []


def test_madv_free_pages_may_be_reclaimed_lazily() -> None:
    points = good_points()
    points["free"]["region_vma"].update(rss=128, present=128)
    assert broken(experiment(list(points.values()))) == []


def test_a_region_merged_with_a_neighbour_is_not_its_own_vma() -> None:
    points = good_points()
    points["dontneed"]["region_vma"].update(start=BASE - MIB, size=2 * MIB)
    assert broken(experiment(list(points.values()))) == [
        "dontneed: the region is one VMA of its own"
    ]


def test_a_missing_or_repeated_state_breaks_the_completeness_rule() -> None:
    points = good_points()
    del points["guard"]
    exp = experiment([*points.values(), good_points()["zero"]])
    assert broken(exp) == ["every state has one checkpoint, done or skipped"]
    detail = next(r.detail for r in exp.rules if not r.ok)
    assert "missing: guard" in detail and "repeated: zero" in detail


def test_optional_states_may_be_skipped_with_a_reason() -> None:
    points = good_points()
    for action in ("huge_zero", "uffd", "secret", "guard"):
        points[action] = skipped(action, f"{action}_ENOSYS")
    points["hugetlb"] = skipped("hugetlb", "mmap_ENOMEM")
    points["pageout"] = skipped("pageout", "no_swap")
    assert broken(experiment(list(points.values()), hugepages=0, swap_kb=0)) == []


def test_a_skip_without_reason_or_of_a_state_every_kernel_can_do_breaks_a_rule() -> None:
    points = good_points()
    points["guard"] = {"action": "guard", "skipped": 1}
    points["mlock"] = skipped("mlock", "mlock_ENOMEM")
    assert broken(experiment(list(points.values()))) == [
        "mlock: every kernel can do it, not skipped",
        "guard: a skipped state says why",
    ]


def test_hugetlb_and_swap_skips_are_broken_when_prepare_provided_them() -> None:
    points = good_points()
    points["hugetlb"] = skipped("hugetlb", "mmap_ENOMEM")
    points["pageout"] = skipped("pageout", "no_swap")
    assert broken(experiment(list(points.values()), hugepages=16, swap_kb=262140)) == [
        "hugetlb: not skipped with huge pages reserved",
        "pageout: not skipped for want of swap when the guest has swap",
    ]
    # MADV_PAGEOUT itself missing (before 5.4) is a fair skip even with swap
    points["pageout"] = skipped("pageout", "madvise_EINVAL")
    points["hugetlb"] = good_points()["hugetlb"]
    assert broken(experiment(list(points.values()), hugepages=16, swap_kb=262140)) == []


def test_summary_and_table_list_every_state() -> None:
    points = good_points()
    points["secret"] = skipped("secret", "memfd_secret_ENOSYS")
    exp = experiment(list(points.values()), hugepages=16, before_hugepages=0, swap_kb=262140)
    exp.verifications[2] = {"step": 2, "ok": False, "checks": [{"ok": False}, {"ok": True}]}
    scenario = select("zoo")
    text = " ".join(scenario.summary(exp))
    assert "17 of 18 regions" in text and "17 of those verifications passed" in text
    assert "secret (memfd_secret_ENOSYS)" in text and "16 hugetlb pages" in text
    (table,) = scenario.tables(exp)
    assert [row[0] for row in table.rows] == list(zoo.BY_ACTION)
    assert all(len(row) == len(table.header) for row in table.rows)
    by_state = {row[0]: row for row in table.rows}
    assert by_state["secret"][2] == "skipped: memfd_secret_ENOSYS"
    assert by_state["huge_zero"][-1] == "no (1 checks)"
    assert by_state["pageout"][3:7] == ["10", "10", "246", "0"]


def test_summary_without_checkpoints_says_so() -> None:
    assert select("zoo").summary(experiment([])) == ["The app recorded no page-state checkpoint."]


def test_prepare_output_parses_into_the_baseline() -> None:
    out = (
        "before_hugepages=0\nhugepages=16\nswap_areas_before=0\nswapfile=/swapfile\n"
        "swap_kb=262140\nthp_enabled=[always],madvise,never\nthp_use_zero_page=1\n"
    )
    assert zoo.parse_prepare(out) == {
        "before_hugepages": 0,
        "hugepages": 16,
        "swap_areas_before": 0,
        "swapfile": "/swapfile",
        "swap_kb": 262140,
        "thp_enabled": "[always],madvise,never",
        "thp_use_zero_page": 1,
    }


@dataclass
class FakeRemote:
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, **_: Any) -> Any:
        self.commands.append(command)
        return type("Result", (), {"stdout": "", "stderr": "", "status": 0})()


def test_cleanup_undoes_only_what_prepare_did() -> None:
    remote = FakeRemote()
    zoo.Zoo.cleanup(remote, {"before_hugepages": 0, "swapfile": "/swapfile"})  # type: ignore[arg-type]
    assert remote.commands == [
        "echo 0 > /proc/sys/vm/nr_hugepages; swapoff /swapfile && rm -f /swapfile"
    ]
    remote.commands.clear()
    zoo.Zoo.cleanup(remote, {})  # type: ignore[arg-type]
    assert remote.commands == []


def test_each_checkpoint_translates_the_regions_address(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int | None] = []

    def fake_capture(remote: object, pid: int, *, va: int | None = None) -> Any:
        seen.append(va)
        return type("Cap", (), {"record": None, "record_error": "none", "insmod_output": ""})()

    monkeypatch.setattr(base, "capture", fake_capture)
    exp = Experiment("zoo", "")
    zoo.Zoo._capture(None, 1, {"step": 0, "region": BASE}, exp)  # type: ignore[arg-type]
    zoo.Zoo._capture(None, 1, {"step": 1, "skipped": 1}, exp)  # type: ignore[arg-type]
    assert seen == [BASE, None]


def test_measure_keeps_the_vma_fields_the_rules_need() -> None:
    vma = region(rss=10, swap=246, present=10) | {"idx": 0}
    record = ProcRecord(
        vmas=[vma],
        counters={"rss": 10},
        regions={"heap": {"start": 0, "end": 0}, "stack": {"start": 0, "end": 0, "size": 0}},
    )
    record.begin = {"kernel": "6.1"}
    monkey_mm = {"brk": 0, "start_brk": 0}
    record.mm = lambda: monkey_mm  # type: ignore[method-assign]
    p = measure(record, {"region": BASE + 4096, "upper": BASE})
    assert p["region_vma"] == {k: vma[k] for k in base.VMA_KEYS}
    assert p["upper_vma"]["swap"] == 246
