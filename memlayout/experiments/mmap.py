"""Scenario "mmap": anonymous mappings of several sizes come and go; total_vm follows."""

from __future__ import annotations

from pathlib import Path

from ..plotting import save_figure
from .base import PAGE, Experiment, Scenario, too_few
from .plotting import ANON, RSS, TOTAL_VM, steps_plot


class Mmap(Scenario):
    name = "mmap"
    title = "mmap and munmap"
    actions = ("start", "mmap", "munmap")
    plots = ("mmap",)

    def check(self, exp: Experiment) -> None:
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

    def summary(self, exp: Experiment) -> list[str]:
        maps, unmaps = exp.actions("mmap"), exp.actions("munmap")
        if not maps:
            return [too_few(exp, "mmap")]
        points = exp.points
        peak = max(int(p["total_vm_pages"]) for p in points)
        return [
            f"{len(maps)} mmap calls of {', '.join(str(p.get('bytes')) for p in maps)} bytes and "
            f"{len(unmaps)} munmap calls: total_vm went from {points[0]['total_vm_pages']} pages "
            f"to a peak of {peak} and back to {points[-1]['total_vm_pages']}; the VMA count "
            f"went from {points[0]['map_count']} to {max(p['map_count'] for p in points)} "
            f"and back to {points[-1]['map_count']}."
        ]

    def draw(self, exp: Experiment, out: Path) -> None:
        series = [("total_vm", "o-", TOTAL_VM[2]), ANON, RSS]
        fig, ax = steps_plot(exp, series, "one mmap, then one munmap,", "mmap then munmap")
        ax.legend(fontsize=8)
        save_figure(fig, out, "mmap")
