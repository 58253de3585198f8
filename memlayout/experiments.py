"""The experiments: run each app scenario, and at every checkpoint take the module's
record and the /proc views of the app, then check what the numbers must obey.

Rules come from how the kernel and glibc work (documented facts, not recorded
numbers): small malloc requests are served from the brk heap, requests at or
above glibc's mmap threshold (128 KiB by default) get their own anonymous
mapping, the stack VMA grows with recursion depth, and anonymous memory becomes
resident only when touched.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import app as app_mod
from . import kmod, verify
from .records import ProcRecord
from .remote import Remote

SCENARIOS = ("heap", "stack", "demand", "mmap", "thread")
MMAP_THRESHOLD = 128 * 1024  # glibc's default M_MMAP_THRESHOLD
PAGE = 4096


@dataclass
class Rule:
    name: str
    ok: bool
    detail: str


@dataclass
class Experiment:
    scenario: str
    kernel: str
    points: list[dict[str, Any]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules) and all(v["ok"] for v in self.verifications)

    def failures(self) -> list[str]:
        """Every broken rule and failed verification, named."""
        broken = [f"experiment {self.scenario}: {r.name}" for r in self.rules if not r.ok]
        return broken + [
            f"experiment {self.scenario} step {v['step']}: verification"
            for v in self.verifications
            if not v["ok"]
        ]

    def rule(self, name: str, ok: bool, detail: str) -> None:
        self.rules.append(Rule(name, bool(ok), detail))

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kernel": self.kernel,
            "ok": self.ok,
            "points": self.points,
            "rules": [asdict(r) for r in self.rules],
            "verifications": self.verifications,
        }


def vma_containing(record: ProcRecord, addr: int) -> dict[str, Any] | None:
    for vma in record.vmas:
        if int(vma["start"]) <= addr < int(vma["end"]):
            return vma
    return None


def measure(record: ProcRecord, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The numbers one checkpoint contributes to the plots and rules."""
    mm = record.mm()
    heap = next((v for v in record.vmas if v.get("kind") == "heap"), None)
    stack = record.regions.get("stack", {})
    anon = [v for v in record.vmas if v.get("kind") == "anon"]
    point: dict[str, Any] = dict(checkpoint)
    point.update(
        heap_bytes=mm["brk"] - mm["start_brk"],
        heap_vma_bytes=int(heap["size"]) if heap else 0,
        stack_vma_bytes=int(stack.get("size", 0)),
        stack_vma_end=int(stack.get("end", 0)),
        rss_pages=int(record.counters.get("rss", 0)),
        rss_anon_pages=int(record.counters.get("rss_anon", 0)),
        total_vm_pages=int(record.counters.get("total_vm", 0)),
        map_count=len(record.vmas),
        anon_vmas=len(anon),
        anon_vma_bytes=sum(int(v["size"]) for v in anon),
    )
    for key in ("ptr", "region", "sp", "thread_sp"):
        if isinstance(point.get(key), int):
            vma = vma_containing(record, int(point[key]))
            point[f"{key}_vma"] = (
                None
                if vma is None
                else {
                    "start": vma["start"],
                    "end": vma["end"],
                    "kind": vma.get("kind"),
                    "rss": vma.get("rss"),
                    "size": vma["size"],
                }
            )
    return point


def run_scenario(remote: Remote, scenario: str, out_dir: Path) -> Experiment:
    """Drive one scenario checkpoint by checkpoint; snapshot and verify at each."""
    proc = app_mod.start(remote, scenario)
    exp = Experiment(scenario, "")
    try:
        while (checkpoint := proc.next_checkpoint()) is not None:
            snap = kmod.snapshot(remote, proc.pid)
            if snap.record is None:
                exp.rule(
                    f"step {checkpoint.get('step')}: module record",
                    False,
                    snap.record_error or snap.insmod_output,
                )
            else:
                exp.kernel = str(snap.record.begin.get("kernel"))
                exp.points.append(measure(snap.record, checkpoint))
                result = verify.verify(snap)
                entry = result.to_json()
                entry["step"] = checkpoint.get("step")
                exp.verifications.append(entry)
            proc.go()
    finally:
        proc.stop()
    RULES[scenario](exp)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{scenario}.json").write_text(json.dumps(exp.to_json(), indent=1) + "\n")
    return exp


def run_all(remote: Remote, out_dir: Path) -> dict[str, Experiment]:
    """Every scenario, in order; each writes ``<scenario>.json`` into ``out_dir``."""
    return {scenario: run_scenario(remote, scenario, out_dir) for scenario in SCENARIOS}


# ---- what each scenario's numbers must obey --------------------------------


def heap_rules(exp: Experiment) -> None:
    mallocs = [p for p in exp.points if p.get("action") == "malloc"]
    small_total = 0
    for prev, p in zip([exp.points[0], *mallocs], mallocs, strict=False):
        size, where = int(p["bytes"]), p.get("ptr_vma") or {}
        if size < MMAP_THRESHOLD:
            small_total += size
            exp.rule(
                f"malloc({size}) is served from the heap",
                where.get("kind") == "heap",
                f"ptr {p['ptr']:#x} in {where.get('kind')} VMA",
            )
            exp.rule(
                f"heap holds the {small_total} small bytes asked so far",
                p["heap_bytes"] >= small_total,
                f"brk - start_brk = {p['heap_bytes']}",
            )
        else:
            exp.rule(
                f"malloc({size}) gets its own anonymous mapping",
                where.get("kind") == "anon" and int(where.get("size", 0)) >= size,
                f"ptr in {where.get('kind')} VMA of {where.get('size')} bytes",
            )
            exp.rule(
                f"malloc({size}) leaves the heap alone",
                p["heap_bytes"] == prev["heap_bytes"],
                f"heap {prev['heap_bytes']} -> {p['heap_bytes']} bytes",
            )
    frees = [p for p in exp.points if p.get("action") == "free"]
    for p in frees:
        if int(p["bytes"]) >= MMAP_THRESHOLD:
            exp.rule(
                f"free({p['bytes']}) returns its mapping",
                p.get("ptr_vma") is None or p["ptr_vma"]["kind"] != "anon",
                f"{p['ptr']:#x} is "
                + (
                    "no longer mapped"
                    if p.get("ptr_vma") is None
                    else f"in {p['ptr_vma']['kind']} VMA {p['ptr_vma']['start']:#x}"
                ),
            )


def stack_rules(exp: Experiment) -> None:
    deep = [p for p in exp.points if p.get("action") == "recurse"]
    for prev, p in itertools.pairwise(deep):
        exp.rule(
            f"stack VMA does not shrink from depth {prev['depth']} to {p['depth']}",
            p["stack_vma_bytes"] >= prev["stack_vma_bytes"],
            f"{prev['stack_vma_bytes']} -> {p['stack_vma_bytes']} bytes",
        )
        per_frame = (int(prev["sp"]) - int(p["sp"])) / (int(p["depth"]) - int(prev["depth"]))
        exp.rule(
            f"each frame takes at least frame_bytes ({p['frame_bytes']})",
            per_frame >= int(p["frame_bytes"]),
            f"{per_frame:.0f} bytes per frame",
        )
    for p in deep:
        used = p["stack_vma_end"] - int(p["sp"])
        exp.rule(
            f"depth {p['depth']}: the stack VMA covers the stack in use",
            (p.get("sp_vma") or {}).get("kind") == "stack" and p["stack_vma_bytes"] >= used,
            f"in use {used} bytes, VMA {p['stack_vma_bytes']} bytes",
        )


# Anonymous memory can become resident a 2 MiB transparent huge page at a time.
THP_PAGES = 512
# Before 6.2 each task caches its rss changes and folds them into the mm's
# counters every 64 page faults, so the counters may lag the page tables.
RSS_LAG = 64


def demand_rules(exp: Experiment) -> None:
    touches = [p for p in exp.points if p.get("action") == "touch"]
    for p in touches:
        rss = int((p.get("region_vma") or {}).get("rss", -1))
        exp.rule(
            f"{p['touched']} pages touched: that many (up to one huge page more) are resident",
            int(p["touched"]) <= rss <= int(p["touched"]) + THP_PAGES,
            f"the region's VMA has {rss} resident pages (page-table walk)",
        )
    for prev, p in itertools.pairwise(touches):
        walked = int(p["region_vma"]["rss"]) - int(prev["region_vma"]["rss"])
        counted = p["rss_anon_pages"] - prev["rss_anon_pages"]
        exp.rule(
            f"touching {int(p['touched']) - int(prev['touched'])} more pages: "
            "rss_anon follows the page tables",
            abs(counted - walked) <= RSS_LAG + 8,
            f"rss_anon +{counted} pages, resident in the region +{walked} pages",
        )


def mmap_rules(exp: Experiment) -> None:
    prev = exp.points[0] if exp.points else {}
    for p in exp.points[1:]:
        size = int(p.get("bytes", 0))
        delta = (p["total_vm_pages"] - prev["total_vm_pages"]) * PAGE
        if p.get("action") == "mmap":
            exp.rule(
                f"mmap({size}) adds a mapping of at least its size",
                int((p.get("region_vma") or {}).get("size", 0)) >= size and delta >= size,
                f"total_vm grew by {delta} bytes",
            )
        elif p.get("action") == "munmap":
            exp.rule(
                f"munmap({size}) removes it",
                p.get("region_vma") is None and -delta >= size,
                f"total_vm shrank by {-delta} bytes",
            )
        prev = p


def thread_rules(exp: Experiment) -> None:
    start = next((p for p in exp.points if p.get("action") == "start"), None)
    running = next((p for p in exp.points if p.get("action") == "thread"), None)
    if start is None or running is None:
        exp.rule("thread checkpoints", False, "missing")
        return
    vma = running.get("thread_sp_vma") or {}
    exp.rule(
        "the thread's stack is its own anonymous mapping, not [stack]",
        vma.get("kind") == "anon",
        f"thread sp in {vma.get('kind')} VMA of {vma.get('size')} bytes",
    )
    exp.rule(
        "a thread adds mappings (stack and guard page)",
        running["map_count"] >= start["map_count"] + 1,
        f"{start['map_count']} -> {running['map_count']} VMAs",
    )


RULES = {
    "heap": heap_rules,
    "stack": stack_rules,
    "demand": demand_rules,
    "mmap": mmap_rules,
    "thread": thread_rules,
}
