"""Scenario "thread": a second thread gets its own stack, an anonymous mapping, not [stack]."""

from __future__ import annotations

from ..humanize import article, human_bytes
from .base import Experiment, Scenario, too_few


class Thread(Scenario):
    name = "thread"
    title = "A second thread's stack"
    actions = ("start", "thread", "joined")

    def check(self, exp: Experiment) -> None:
        start = next(iter(exp.actions("start")), None)
        running = next(iter(exp.actions("thread")), None)
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

    def summary(self, exp: Experiment) -> list[str]:
        start = next(iter(exp.actions("start")), None)
        running = next(iter(exp.actions("thread")), None)
        if start is None or running is None:
            return [too_few(exp, "thread")]
        vma = running.get("thread_sp_vma") or {}
        return [
            f"The second thread's stack pointer lies in {article(vma.get('kind'))} VMA of "
            f"{human_bytes(vma.get('size'))}; starting the thread took the process from "
            f"{start['map_count']} to {running['map_count']} VMAs."
        ]
