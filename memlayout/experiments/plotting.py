"""Plots over a scenario's checkpoints, shared by the scenarios that draw them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..plotting import KIB, new_figure
from .base import Experiment, Point

# (label, style, KiB at one checkpoint)
Series = tuple[str, str, Callable[[Point], float]]
HEAP: Series = ("heap (brk - start_brk)", "o-", lambda p: p["heap_bytes"] / KIB)
ANON: Series = ("anonymous mappings", "s--", lambda p: p["anon_vma_bytes"] / KIB)
TOTAL_VM: Series = ("total_vm", "^:", lambda p: p["total_vm_pages"] * 4)
RSS: Series = ("rss", "^:", lambda p: p["rss_pages"] * 4)


def steps_plot(exp: Experiment, series: list[Series], what: str, title: str) -> tuple[Any, Any]:
    """KiB (log scale) of each series at every checkpoint of one scenario."""
    fig, ax = new_figure()
    x = [p["step"] for p in exp.points]
    for label, style, value in series:
        ax.plot(x, [value(p) for p in exp.points], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(f"checkpoint ({what} per step)")
    ax.set_ylabel("KiB (log scale)")
    ax.set_title(f"{title} — kernel {exp.kernel}")
    return fig, ax
