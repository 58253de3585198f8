"""What every scenario shares: the experiment record, its rules, and the checkpoint loop.

The app (guest/app.c) runs one scenario and stops at checkpoints; at each one the
module's record and the /proc views of the app are captured and checked, and
:func:`measure` turns the record into the numbers of one point. A
:class:`Scenario` subclass (one file each) says which actions the app prints
for it, the rules its numbers must obey, the summary the report prints, and
the plots it draws. Rules come from how the kernel and glibc work (documented
facts), never from recorded numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UsageError
from ..guest.remote import Remote
from ..module.capture import capture
from ..module.procviews import parse_system
from ..module.records import ProcRecord
from ..module.verify import verify
from . import app as app_mod

Point = dict[str, Any]
PAGE = 4096
# Addresses in a checkpoint whose VMA is looked up: the point gets "<key>_vma".
ADDRESS_KEYS = ("ptr", "region", "sp", "thread_sp", "upper")
# The module's fields of that VMA kept in the point (present..file: see FORMAT.md's vma record).
VMA_KEYS = (
    "start",
    "end",
    "kind",
    "rss",
    "size",
    "present",
    "swap",
    "hugetlb",
    "perms",
    "flags",
    "pgoff",
    "file",
)


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Rule:
    name: str
    ok: bool
    detail: str


@dataclass
class Experiment:
    scenario: str
    kernel: str
    points: list[Point] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)  # what the scenario measured first

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

    def actions(self, action: str) -> list[Point]:
        """The points whose checkpoint did ``action``, in order."""
        return [p for p in self.points if p.get("action") == action]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kernel": self.kernel,
            "ok": self.ok,
            "points": self.points,
            "rules": [asdict(r) for r in self.rules],
            "verifications": self.verifications,
            "baseline": self.baseline,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        return cls(
            scenario=str(data.get("scenario", "")),
            kernel=str(data.get("kernel", "")),
            points=list(data.get("points") or []),
            rules=[
                Rule(str(r["name"]), bool(r["ok"]), str(r["detail"]))
                for r in data.get("rules") or []
            ],
            verifications=list(data.get("verifications") or []),
            baseline=dict(data.get("baseline") or {}),
        )


def vma_containing(record: ProcRecord, addr: int) -> dict[str, Any] | None:
    for vma in record.vmas:
        if int(vma["start"]) <= addr < int(vma["end"]):
            return vma
    return None


def measure(record: ProcRecord, checkpoint: Point) -> Point:
    """The numbers one checkpoint contributes to the plots and rules."""
    mm = record.mm()
    heap = next((v for v in record.vmas if v.get("kind") == "heap"), None)
    stack = record.regions.get("stack", {})
    anon = [v for v in record.vmas if v.get("kind") == "anon"]
    point: Point = dict(checkpoint)
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
    for key in ADDRESS_KEYS:
        if isinstance(point.get(key), int):
            vma = vma_containing(record, int(point[key]))
            point[f"{key}_vma"] = None if vma is None else {k: vma.get(k) for k in VMA_KEYS}
    return point


class Scenario:
    """One app scenario. Subclasses register themselves under ``name``."""

    name: ClassVar[str]
    title: ClassVar[str]
    # Every action the app prints for this scenario; any other is a broken rule.
    actions: ClassVar[tuple[str, ...]]
    # The plots ``draw`` makes, by file name (without extension).
    plots: ClassVar[tuple[str, ...]] = ()

    registry: ClassVar[dict[str, type[Scenario]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Scenario.registry[cls.name] = cls

    def prepare(self, remote: Remote, exp: Experiment) -> None:
        """Measure what the scenario needs before the app starts (nothing by default)."""
        del remote, exp

    def check(self, exp: Experiment) -> None:
        """Add the rules this scenario's numbers must obey."""
        raise NotImplementedError

    def summary(self, exp: Experiment) -> list[str]:
        """The report's paragraphs about the recorded numbers."""
        raise NotImplementedError

    def tables(self, exp: Experiment) -> list[Table]:
        """Tables the report shows under the summary (none by default)."""
        del exp
        return []

    def draw(self, exp: Experiment, out: Path) -> None:
        """Write the ``plots`` into ``out`` (none by default)."""
        del exp, out

    def check_actions(self, exp: Experiment) -> None:
        unknown = sorted({str(p.get("action")) for p in exp.points} - set(self.actions))
        if unknown:
            exp.rule(
                "the app printed only this scenario's actions",
                False,
                f"unknown actions: {', '.join(unknown)}",
            )

    def run(self, remote: Remote, out_dir: Path) -> Experiment:
        """Drive the app checkpoint by checkpoint; capture and verify at each; check."""
        exp = Experiment(self.name, "")
        self.prepare(remote, exp)
        proc = app_mod.start(remote, self.name)
        try:
            while (checkpoint := proc.next_checkpoint()) is not None:
                self._capture(remote, proc.pid, checkpoint, exp)
                proc.go()
        finally:
            proc.stop()
        self.check_actions(exp)
        self.check(exp)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{self.name}.json").write_text(json.dumps(exp.to_json(), indent=1) + "\n")
        return exp

    @staticmethod
    def _capture(
        remote: Remote, pid: int, checkpoint: Point, exp: Experiment, va: int | None = None
    ) -> None:
        """Capture and verify one checkpoint; ``va`` also translates that address (pagemap)."""
        cap = capture(remote, pid, va=va)
        if cap.record is None:
            exp.rule(
                f"step {checkpoint.get('step')}: module record",
                False,
                cap.record_error or cap.insmod_output,
            )
            return
        exp.kernel = str(cap.record.begin.get("kernel"))
        point = measure(cap.record, checkpoint)
        point["system"] = parse_system(cap.sections.get("system", ""))
        exp.points.append(point)
        entry = verify(cap).to_json()
        entry["step"] = checkpoint.get("step")
        exp.verifications.append(entry)


def select(name: str) -> Scenario:
    """The scenario called ``name``; a clear error listing the known ones otherwise."""
    try:
        return Scenario.registry[name]()
    except KeyError:
        known = ", ".join(Scenario.registry)
        raise UsageError(f"unknown scenario {name!r}; known scenarios: {known}") from None


def too_few(exp: Experiment, action: str) -> str:
    actions = ", ".join(f"{p.get('action')}" for p in exp.points) or "none"
    return (
        f"Too few '{action}' checkpoints to summarise: the run recorded {len(exp.points)} "
        f"checkpoint(s) in all (actions: {actions})."
    )
