"""Scenario "stack": recursion with frames of known size; the [stack] VMA grows down."""

from __future__ import annotations

import itertools
from pathlib import Path

from ..humanize import human_bytes
from ..plotting import KIB, new_figure, save_figure
from .base import Experiment, Scenario, too_few


class Stack(Scenario):
    name = "stack"
    title = "Recursion: how the stack grows"
    actions = ("start", "recurse")
    plots = ("stack",)

    def check(self, exp: Experiment) -> None:
        deep = exp.actions("recurse")
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

    def summary(self, exp: Experiment) -> list[str]:
        deep = exp.actions("recurse")
        if len(deep) < 2:
            return [too_few(exp, "recurse")]
        first, last = deep[0], deep[-1]
        frames = int(last["depth"]) - int(first["depth"])
        moved = int(first["sp"]) - int(last["sp"])
        per_frame = moved / frames if frames else 0.0
        return [
            f"From depth {first['depth']} to {last['depth']} the stack pointer moved down by "
            f"{moved} bytes: {per_frame:.0f} bytes per frame for "
            f"frames that reserve {first['frame_bytes']} bytes of locals.",
            f"The [stack] VMA grew from {human_bytes(first['stack_vma_bytes'])} to "
            f"{human_bytes(last['stack_vma_bytes'])}; at the deepest point "
            f"{human_bytes(int(last['stack_vma_end']) - int(last['sp']))} of it were in use.",
        ]

    def draw(self, exp: Experiment, out: Path) -> None:
        points = exp.actions("recurse")
        depth = [int(p["depth"]) for p in points]
        fig, ax = new_figure()
        ax.plot(
            depth,
            [p["stack_vma_bytes"] / KIB for p in points],
            "o-",
            lw=3,
            label="[stack] VMA size",
        )
        ax.plot(
            depth,
            [(p["stack_vma_end"] - int(p["sp"])) / KIB for p in points],
            "s--",
            label="stack in use (VMA end - sp)",
        )
        frame = points[0]["frame_bytes"] if points else "?"
        ax.set_xlabel(f"recursion depth (frames of {frame} bytes)")
        ax.set_ylabel("KiB")
        ax.set_title(f"recursion: stack VMA size — kernel {exp.kernel}")
        ax.legend(fontsize=8)
        save_figure(fig, out, "stack")
