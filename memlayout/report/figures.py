"""The layout figure: one process's mappings as a column, lowest address at the bottom.

Adjacent VMAs of one file are one block (×N); block heights grow with log2 of
the size; gaps of 1 GiB or more are dotted lines; the mm ranges code, data,
heap, stack, args and env are marked with arrows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..humanize import human_bytes
from ..plotting import new_figure, save_figure

Json = dict[str, Any]
PAGE = 4096
BIG_GAP = 1 << 30
FOLD_ABOVE = 70  # more blocks than this: runs of anonymous blocks are folded into one
LABELS_AT_MOST = 45
FIGURE_WIDTH = 7.5
REGIONS = ("code", "data", "heap", "stack", "args", "env")

KIND_COLOURS = {
    "file": "#8fb3d9",
    "anon": "#c9c9c9",
    "heap": "#f4a261",
    "stack": "#e76f51",
    "special": "#9bd39b",
}


@dataclass
class Block:
    label: str
    kind: str
    start: int
    end: int
    count: int = 1
    y: float = 0.0
    height: float = 0.0


def vma_groups(vmas: list[Json]) -> list[Block]:
    """Adjacent VMAs of the same file (or kind) merged into one block, in address order."""
    groups: list[Block] = []
    for v in vmas:
        label = str(v.get("file") or "") or f"[{v.get('kind')}]"
        last = groups[-1] if groups else None
        if (
            last is not None
            and last.label == label
            and last.end == int(v["start"])
            and v.get("kind") not in ("heap", "stack")
        ):
            last.end = int(v["end"])
            last.count += 1
            continue
        groups.append(Block(label, str(v.get("kind") or "anon"), int(v["start"]), int(v["end"])))
    return groups


def fold_anonymous(blocks: list[Block]) -> list[Block]:
    """Runs of anonymous blocks as one (the 3000-mapping app would be unreadable)."""
    folded: list[Block] = []
    for b in blocks:
        if folded and folded[-1].kind == b.kind == "anon":
            folded[-1].end = b.end
            folded[-1].count += b.count
        else:
            folded.append(b)
    return folded


def place(blocks: list[Block]) -> tuple[float, list[tuple[float, int]]]:
    """Give each block its y and height; returns the total height and the big gaps."""
    y = 0.0
    gaps: list[tuple[float, int]] = []
    prev_end: int | None = None
    for b in blocks:
        if prev_end is not None and b.start > prev_end:
            gap = b.start - prev_end
            space = 1.2 if gap >= BIG_GAP else 0.25
            if gap >= BIG_GAP:
                gaps.append((y + space / 2, gap))
            y += space
        b.y = y
        b.height = 0.5 + 0.12 * max(0.0, math.log2(max(b.end - b.start, PAGE) / PAGE))
        y += b.height
        prev_end = b.end
    return max(y, 1.0), gaps


def block_y(blocks: list[Block], addr: int) -> float | None:
    """Where ``addr`` falls in the drawing (None: in no block)."""
    for b in blocks:
        if b.start <= addr < b.end or (addr == b.end and addr > b.start):
            return b.y + b.height * (addr - b.start) / max(1, b.end - b.start)
    return None


def _draw_blocks(ax: Any, blocks: list[Block], gaps: list[tuple[float, int]]) -> None:
    from matplotlib.patches import Rectangle

    label_every = max(1, len(blocks) // LABELS_AT_MOST)
    for i, b in enumerate(blocks):
        colour = KIND_COLOURS.get(b.kind, "#dddddd")
        ax.add_patch(
            Rectangle((0, b.y), 1, b.height, facecolor=colour, edgecolor="black", linewidth=0.4)
        )
        if i % label_every == 0 or b.kind in ("heap", "stack", "special"):
            name = b.label.rsplit("/", 1)[-1]
            more = f" ×{b.count}" if b.count > 1 else ""
            ax.text(
                -0.05,
                b.y + b.height / 2,
                f"{b.start:#x}  {name}{more}  {human_bytes(b.end - b.start)}",
                ha="right",
                va="center",
                fontsize=6.5,
                family="DejaVu Sans Mono",
            )
    for ypos, gap in gaps:
        ax.plot([0, 1], [ypos, ypos], linestyle=":", color="grey", linewidth=0.6)
        ax.text(
            0.5,
            ypos,
            f"gap {human_bytes(gap)}",
            ha="center",
            va="center",
            fontsize=6.5,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )


def _mark_regions(ax: Any, blocks: list[Block], regions: Json) -> float:
    """Arrows to the mm ranges; returns the y of the highest label."""
    marks = []
    for name in REGIONS:
        region = regions.get(name)
        if not region or not int(region.get("end", 0)):
            continue
        start, end = int(region["start"]), int(region["end"])
        where = block_y(blocks, start)
        if where is None:
            where = block_y(blocks, max(start, end - 1))
        if where is not None:
            marks.append((where, name, start, end))
    last_text = -10.0
    for where, name, start, end in sorted(marks):
        last_text = max(where, last_text + 0.9)
        ax.annotate(
            f"{name}: {start:#x}–{end:#x} ({human_bytes(end - start)})",
            xy=(1.0, where),
            xytext=(1.25, last_text),
            fontsize=7.5,
            va="center",
            arrowprops={"arrowstyle": "->", "linewidth": 0.6},
        )
    return last_text


def draw_layout(record: Json, title: str, out: Path) -> tuple[list[Path], float]:
    """Draw ``out/layout.svg|png``; returns the paths and the figure's height/width ratio."""
    blocks = vma_groups(record.get("vmas") or [])
    if len(blocks) > FOLD_ABOVE:
        blocks = fold_anonymous(blocks)
    total, gaps = place(blocks)
    height = min(9.0, max(4.5, 0.16 * total + 1.5))
    fig, ax = new_figure(FIGURE_WIDTH, height)
    from matplotlib.patches import Rectangle  # after new_figure: matplotlib is loaded

    _draw_blocks(ax, blocks, gaps)
    last_text = _mark_regions(ax, blocks, record.get("regions") or {})
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="black") for c in KIND_COLOURS.values()
    ]
    fig.legend(handles, list(KIND_COLOURS), loc="lower center", ncol=5, fontsize=7.5)
    ax.set_xlim(-3.2, 3.4)
    ax.set_ylim(-0.3, max(total, last_text + 1) + 0.3)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    paths = save_figure(fig, out, "layout", rect=(0, 0.03, 1, 1))
    return paths, height / FIGURE_WIDTH
