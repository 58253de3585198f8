"""Plots of the experiments (matplotlib, SVG and PNG), each stating units and kernel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

KIB = 1024


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.svg", out / f"{name}.png"]
    fig.tight_layout()
    fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=130)
    plt.close(fig)
    return paths


def heap_plot(exp: dict[str, Any], out: Path) -> list[Path]:
    points = [p for p in exp["points"] if p.get("action") == "malloc"]
    sizes = [int(p["bytes"]) for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(sizes, [p["heap_bytes"] / KIB for p in points], "o-", label="heap (brk - start_brk)")
    ax.plot(
        sizes,
        [p["anon_vma_bytes"] / KIB for p in points],
        "s--",
        label="anonymous mappings (total)",
    )
    ax.axvline(128 * KIB, color="grey", linestyle=":", label="glibc mmap threshold (128 KiB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes requested by the latest malloc (log scale)")
    ax.set_ylabel("KiB")
    ax.set_title(f"malloc: heap vs new mappings — kernel {exp['kernel']}")
    ax.legend(fontsize=8)
    return _save(fig, out, "heap")


# (label, style, KiB of one checkpoint) for plots over checkpoints
Series = tuple[str, str, Callable[[dict[str, Any]], float]]
HEAP: Series = ("heap (brk - start_brk)", "o-", lambda p: p["heap_bytes"] / KIB)
ANON: Series = ("anonymous mappings", "s--", lambda p: p["anon_vma_bytes"] / KIB)
TOTAL_VM: Series = ("total_vm", "^:", lambda p: p["total_vm_pages"] * 4)
RSS: Series = ("rss", "^:", lambda p: p["rss_pages"] * 4)


def _steps_plot(
    exp: dict[str, Any], series: list[Series], what: str, title: str
) -> tuple[Figure, Any]:
    """KiB (log scale) of each series at every checkpoint of one scenario."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = exp["points"]
    x = [p["step"] for p in steps]
    for label, style, value in series:
        ax.plot(x, [value(p) for p in steps], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(f"checkpoint ({what} per step)")
    ax.set_ylabel("KiB (log scale)")
    ax.set_title(f"{title} — kernel {exp['kernel']}")
    return fig, ax


def free_plot(exp: dict[str, Any], out: Path) -> list[Path]:
    """The heap scenario from its first malloc to its last free."""
    what = "one malloc, then one free,"
    fig, ax = _steps_plot(exp, [HEAP, ANON, TOTAL_VM], what, "malloc then free")
    first_free = next((p["step"] for p in exp["points"] if p.get("action") == "free"), None)
    if first_free is not None:
        ax.axvline(first_free - 0.5, color="grey", linestyle=":", label="frees begin")
    ax.legend(fontsize=8)
    return _save(fig, out, "free")


def mmap_plot(exp: dict[str, Any], out: Path) -> list[Path]:
    """The mmap scenario: mappings come and go, total_vm follows."""
    series = [("total_vm", "o-", TOTAL_VM[2]), ANON, RSS]
    what = "one mmap, then one munmap,"
    fig, ax = _steps_plot(exp, series, what, "mmap then munmap")
    ax.legend(fontsize=8)
    return _save(fig, out, "mmap")


def stack_plot(exp: dict[str, Any], out: Path) -> list[Path]:
    points = [p for p in exp["points"] if p.get("action") == "recurse"]
    depth = [int(p["depth"]) for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        depth, [p["stack_vma_bytes"] / KIB for p in points], "o-", lw=3, label="[stack] VMA size"
    )
    ax.plot(
        depth,
        [(p["stack_vma_end"] - int(p["sp"])) / KIB for p in points],
        "s--",
        label="stack in use (VMA end - sp)",
    )
    ax.set_xlabel(
        f"recursion depth (frames of {points[0]['frame_bytes'] if points else '?'} bytes)"
    )
    ax.set_ylabel("KiB")
    ax.set_title(f"recursion: stack VMA size — kernel {exp['kernel']}")
    ax.legend(fontsize=8)
    return _save(fig, out, "stack")


def demand_plot(exp: dict[str, Any], out: Path) -> list[Path]:
    points = [p for p in exp["points"] if p.get("action") == "touch"]
    touched = [int(p["touched"]) for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(touched, [p["rss_pages"] for p in points], "o-", label="rss (pages)")
    ax.plot(
        touched,
        [int((p.get("region_vma") or {}).get("rss") or 0) for p in points],
        "s--",
        label="resident pages of the region's VMA",
    )
    base = points[0]["rss_pages"] if points else 0
    ax.plot(touched, [base + t for t in touched], ":", color="grey", label="rss at start + touched")
    ax.set_xlabel("pages touched (of a 64 MiB anonymous mapping)")
    ax.set_ylabel("pages (4 KiB)")
    ax.set_title(f"demand paging: rss follows touched pages — kernel {exp['kernel']}")
    ax.legend(fontsize=8)
    return _save(fig, out, "demand")


def cycles_plot(latencies_ms: list[float], kernel: str, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(latencies_ms, bins=40)
    ax.set_xlabel("insmod + rmmod latency (ms)")
    ax.set_ylabel("cycles")
    ax.set_title(f"{len(latencies_ms)} insmod/rmmod cycles — kernel {kernel}")
    return _save(fig, out, "cycles")


def all_plots(experiments: dict[str, dict[str, Any]], out: Path) -> dict[str, str]:
    """Draw every plot the data allows; returns name -> PNG path."""
    made: dict[str, list[Path]] = {}
    if "heap" in experiments:
        made["heap"] = heap_plot(experiments["heap"], out)
        made["free"] = free_plot(experiments["heap"], out)
    if "mmap" in experiments:
        made["mmap"] = mmap_plot(experiments["mmap"], out)
    if "stack" in experiments:
        made["stack"] = stack_plot(experiments["stack"], out)
    if "demand" in experiments:
        made["demand"] = demand_plot(experiments["demand"], out)
    return {name: str(paths[1]) for name, paths in made.items()}
