"""Stage 3, the experiments: the app's scenarios, captured and checked at every checkpoint.

One file per scenario (heap, stack, demand, mmap, thread, zoo), each a
:class:`~memlayout.experiments.base.Scenario` with its rules, summary and plots;
:func:`select` finds one by name. ``app`` drives guest/app.c from the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..guest.remote import Remote
from ..rundir import GuestDir
from . import demand, heap, mmap, stack, thread, zoo
from .base import Experiment, Scenario, select

# The order the pipeline runs them in, and the report shows them in.
SCENARIOS = tuple(
    m.name for m in (heap.Heap, stack.Stack, demand.Demand, mmap.Mmap, thread.Thread, zoo.Zoo)
)

__all__ = ["SCENARIOS", "Experiment", "ExperimentsResult", "Scenario", "run", "select"]


@dataclass
class ExperimentsResult:
    experiments: dict[str, Experiment] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [f for exp in self.experiments.values() for f in exp.failures()]

    @property
    def kernel(self) -> str:
        return next((e.kernel for e in self.experiments.values() if e.kernel), "?")


def run(remote: Remote, files: GuestDir, names: tuple[str, ...] = ()) -> ExperimentsResult:
    """Run ``names`` (default: every scenario) in order; write their JSON and plots."""
    scenarios = [select(name) for name in names or SCENARIOS]
    result = ExperimentsResult()
    for scenario in scenarios:
        exp = scenario.run(remote, files.experiments_dir)
        result.experiments[scenario.name] = exp
        scenario.draw(exp, files.plots_dir)
    return result


def load(files: GuestDir) -> dict[str, dict[str, Any] | None]:
    """Every experiment file of a run, by scenario name (None: unreadable), in run order."""
    if not files.experiments_dir.is_dir():
        return {}
    names = [p.stem for p in sorted(files.experiments_dir.glob("*.json"))]
    ordered = [n for n in SCENARIOS if n in names] + [n for n in names if n not in SCENARIOS]
    out: dict[str, dict[str, Any] | None] = {}
    for name in ordered:
        try:
            data = json.loads(files.experiment_json(name).read_text())
        except (OSError, ValueError):
            data = None
        out[name] = data if isinstance(data, dict) else None
    return out
