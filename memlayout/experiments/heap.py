"""Scenario "heap": malloc of growing sizes, then free; brk heap or a mapping of its own.

glibc serves requests below its mmap threshold (M_MMAP_THRESHOLD, 128 KiB by
default) from the brk heap and gives larger ones an anonymous mapping, which
free() unmaps again.
"""

from __future__ import annotations

from pathlib import Path

from ..humanize import article, human_bytes
from ..plotting import KIB, new_figure, save_figure
from .base import Experiment, Point, Scenario, too_few
from .plotting import ANON, HEAP, TOTAL_VM, steps_plot

MMAP_THRESHOLD = 128 * 1024  # glibc's default M_MMAP_THRESHOLD


class Heap(Scenario):
    name = "heap"
    title = "malloc and free: heap or own mapping"
    actions = ("start", "malloc", "free")
    plots = ("heap", "free")

    def check(self, exp: Experiment) -> None:
        mallocs = exp.actions("malloc")
        small_total = 0
        for prev, p in zip([exp.points[0], *mallocs], mallocs, strict=False):
            if int(p["bytes"]) < MMAP_THRESHOLD:
                small_total += int(p["bytes"])
                self._small(exp, p, small_total)
            else:
                self._large(exp, prev, p)
        for p in exp.actions("free"):
            if int(p["bytes"]) >= MMAP_THRESHOLD:
                where = p.get("ptr_vma")
                exp.rule(
                    f"free({p['bytes']}) returns its mapping",
                    where is None or where["kind"] != "anon",
                    f"{p['ptr']:#x} is "
                    + (
                        "no longer mapped"
                        if where is None
                        else f"in {where['kind']} VMA {where['start']:#x}"
                    ),
                )

    @staticmethod
    def _small(exp: Experiment, p: Point, small_total: int) -> None:
        size, where = int(p["bytes"]), p.get("ptr_vma") or {}
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

    @staticmethod
    def _large(exp: Experiment, prev: Point, p: Point) -> None:
        size, where = int(p["bytes"]), p.get("ptr_vma") or {}
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

    def summary(self, exp: Experiment) -> list[str]:
        mallocs = exp.actions("malloc")
        if not mallocs:
            return [too_few(exp, "malloc")]
        in_heap = [p for p in mallocs if (p.get("ptr_vma") or {}).get("kind") == "heap"]
        outside = next((p for p in mallocs if p not in in_heap), None)
        text = [
            f"{len(mallocs)} malloc calls from {int(mallocs[0]['bytes'])} to "
            f"{int(mallocs[-1]['bytes'])} bytes; {len(in_heap)} were served from the brk heap."
        ]
        if outside is not None:
            where = outside.get("ptr_vma") or {}
            biggest = max((int(p["bytes"]) for p in in_heap), default=0)
            text.append(
                f"The first request served outside the heap was malloc({int(outside['bytes'])}) "
                f"({human_bytes(int(outside['bytes']))}): it landed in "
                f"{article(where.get('kind'))} VMA of {where.get('size')} bytes; "
                f"the largest request served from the heap was {biggest} bytes."
            )
        text.append(
            f"The heap (brk − start_brk) went from {mallocs[0]['heap_bytes']} to "
            f"{mallocs[-1]['heap_bytes']} bytes over the mallocs."
        )
        frees = exp.actions("free")
        if frees:
            text.append(
                f"After {len(frees)} frees the heap is {frees[-1]['heap_bytes']} bytes and "
                f"total_vm {frees[-1]['total_vm_pages']} pages "
                f"(it was {mallocs[-1]['total_vm_pages']} after the last malloc)."
            )
        return text

    def draw(self, exp: Experiment, out: Path) -> None:
        points = exp.actions("malloc")
        sizes = [int(p["bytes"]) for p in points]
        fig, ax = new_figure()
        ax.plot(
            sizes, [p["heap_bytes"] / KIB for p in points], "o-", label="heap (brk - start_brk)"
        )
        ax.plot(
            sizes,
            [p["anon_vma_bytes"] / KIB for p in points],
            "s--",
            label="anonymous mappings (total)",
        )
        ax.axvline(
            MMAP_THRESHOLD, color="grey", linestyle=":", label="glibc mmap threshold (128 KiB)"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("bytes requested by the latest malloc (log scale)")
        ax.set_ylabel("KiB")
        ax.set_title(f"malloc: heap vs new mappings — kernel {exp.kernel}")
        ax.legend(fontsize=8)
        save_figure(fig, out, "heap")

        fig, ax = steps_plot(
            exp, [HEAP, ANON, TOTAL_VM], "one malloc, then one free,", "malloc then free"
        )
        first_free = next((p["step"] for p in exp.actions("free")), None)
        if first_free is not None:
            ax.axvline(first_free - 0.5, color="grey", linestyle=":", label="frees begin")
        ax.legend(fontsize=8)
        save_figure(fig, out, "free")
