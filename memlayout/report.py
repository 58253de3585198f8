"""The PDF report: read a run directory, build one context dict, render HTML, print a PDF.

Everything shown comes from the run's files (run.json, <guest>/guest.json, targets.json,
experiments/*.json, cycles.json, plots/) or from the sources in the repository, read at
render time. Missing files are reported as missing, never filled in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import CLexer

from .paths import REPO_ROOT

TITLE = "Process memory layout with a kernel module"
TEMPLATES = REPO_ROOT / "report_templates"
MODULE_SOURCE = REPO_ROOT / "kernel-module" / "procmem.c"
APP_SOURCE = REPO_ROOT / "guest" / "app.c"
SAMPLE_LINES = 40
PAGE = 4096
KIB = 1024

Json = dict[str, Any]


# ---- reading the run directory ----------------------------------------------


def article(word: object) -> str:
    """ "a heap", "an anon"."""
    text = str(word)
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def load_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def guest_names(run_dir: Path, run: Json) -> list[str]:
    names = [str(g) for g in run.get("guests") or []]
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if sub.name not in names and (sub / "guest.json").exists():
            names.append(sub.name)
    return names


# ---- formatting helpers (also used as jinja filters) -------------------------


def hexaddr(value: Any) -> str:
    return f"{int(value):#x}" if isinstance(value, int) else str(value)


def human_bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return str(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def short_value(value: Any) -> str:
    """Like verify's table: big integers as hex, long text cut."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and value > 65535:
        return hex(value)
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(short_value(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def truncate(lines: list[str], limit: int = SAMPLE_LINES) -> tuple[list[str], int]:
    """The first ``limit`` lines and how many were left out."""
    return lines[:limit], max(0, len(lines) - limit)


# ---- source excerpts ---------------------------------------------------------

_FORMATTER_OPTS: Json = {"cssclass": "hl", "nowrap": False}


def pygments_css() -> str:
    return str(HtmlFormatter(cssclass="hl").get_style_defs(".hl"))


def highlight_c(code: str, first_line: int = 1) -> str:
    formatter = HtmlFormatter(linenos="inline", linenostart=first_line, **_FORMATTER_OPTS)
    return str(highlight(code, CLexer(), formatter))


def extract_function(source: str, name: str) -> tuple[int, str] | None:
    """(first line number, text) of a top-level C function and the comment above it."""
    lines = source.splitlines()
    head = re.compile(rf"^(?:static\s|int\s|void\s)[^;]*\b{re.escape(name)}\s*\(")
    for i, line in enumerate(lines):
        if not head.match(line):
            continue
        start = i
        while start > 0 and lines[start - 1].lstrip().startswith(("/*", "*")):
            start -= 1
        for j in range(i, len(lines)):
            if lines[j] == "}":
                return start + 1, "\n".join(lines[start : j + 1])
        return None
    return None


def extract_between(source: str, begin: str, end: str) -> tuple[int, str] | None:
    """Lines from the first holding ``begin`` to the next holding ``end``."""
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines) if begin in line), None)
    if first is None:
        return None
    last = next((j for j in range(first, len(lines)) if end in lines[j]), None)
    if last is None:
        return None
    return first + 1, "\n".join(lines[first : last + 1])


# The module's steps, in the order procmem_init takes them: (title, text, excerpts); an
# excerpt is a function name or a (first line, last line) pair of markers.
MODULE_STEPS: list[tuple[str, str, list[str | tuple[str, str]]]] = [
    (
        "Find the task",
        "insmod passes pid= as a module parameter. The module looks up the struct pid "
        "with find_get_pid() and takes a reference on its task with get_pid_task(); "
        "a pid that does not exist makes insmod fail with ESRCH and an error record.",
        ["pm_get_task"],
    ),
    (
        "Pin the address space",
        "get_task_mm() takes a reference on the task's mm_struct (kernel threads have "
        "none and are refused); procmem_init drops it with mmput() once the report is "
        "printed, then put_task_struct() drops the task.",
        ["pm_get_mm", ("task = pm_get_task();", "return err;")],
    ),
    (
        "Hold the mmap lock while reading",
        "The whole report is printed under the mmap read lock, so the VMA tree cannot "
        "change underneath. Kernel-version differences (mmap_read_lock() appeared in "
        "5.8, before it the lock was mmap_sem) live in one block of small helpers.",
        ["pm_report", "pm_mmap_read_lock"],
    ),
    (
        "Walk the VMAs",
        "find_vma(mm, addr) returns the first VMA ending above addr; starting at 0 and "
        "continuing from each vm_end visits every VMA in address order, on every kernel "
        "from 4.4 to the newest (with or without the maple tree).",
        ["pm_print_vmas"],
    ),
    (
        "Walk the page tables by hand",
        "Resident pages are counted on raw x86_64 entries, level by level. PTE tables "
        "may be freed through RCU (khugepaged collapsing a range into a huge page), so "
        "each PMD entry and the PTE table below it are visited inside rcu_read_lock().",
        ["pm_walk_range"],
    ),
    (
        "Dump the top-level table",
        "Every present PGD entry is printed with its raw value, the next table's "
        "physical address and the decoded flag bits. With page-table isolation on, the "
        "user copy of the PGD (the page after mm->pgd) is dumped as well.",
        ["pm_dump_pgd", "pm_pti_enabled"],
    ),
    (
        "Print records",
        "Every line goes through one printk helper that prefixes 'procmem: ' (pr_fmt) "
        "and counts it; the end record states the count, so a lost line is detected.",
        ["pm_rec"],
    ),
]


def module_steps(source: str) -> list[Json]:
    steps = []
    for title, text, names in MODULE_STEPS:
        excerpts = []
        for name in names:
            if isinstance(name, tuple):
                found, label = extract_between(source, *name), f"{name[0]} ... {name[1]}"
            else:
                found, label = extract_function(source, name), f"{name}()"
            html = highlight_c(found[1], found[0]) if found is not None else None
            excerpts.append({"name": label, "html": html})
        steps.append({"title": title, "text": text, "excerpts": excerpts})
    return steps


def source_appendix(path: Path) -> Json:
    try:
        text = path.read_text()
    except OSError:
        return {"path": str(path.relative_to(REPO_ROOT)), "html": None, "lines": 0}
    return {
        "path": str(path.relative_to(REPO_ROOT)),
        "html": highlight_c(text),
        "lines": len(text.splitlines()),
    }


# ---- the layout figure ---------------------------------------------------------

KIND_COLOURS = {
    "file": "#8fb3d9",
    "anon": "#c9c9c9",
    "heap": "#f4a261",
    "stack": "#e76f51",
    "special": "#9bd39b",
}


def vma_groups(vmas: list[Json]) -> list[Json]:
    """Adjacent VMAs of the same file (or kind) merged into one block, in address order."""
    groups: list[Json] = []
    for v in vmas:
        label = str(v.get("file") or "") or f"[{v.get('kind')}]"
        last = groups[-1] if groups else None
        if (
            last is not None
            and last["label"] == label
            and last["end"] == int(v["start"])
            and v.get("kind") not in ("heap", "stack")
        ):
            last["end"] = int(v["end"])
            last["count"] += 1
            continue
        groups.append(
            {
                "label": label,
                "kind": str(v.get("kind") or "anon"),
                "start": int(v["start"]),
                "end": int(v["end"]),
                "count": 1,
            }
        )
    return groups


def draw_layout(record: Json, title: str, out: Path) -> tuple[list[Path], float]:
    """A column of the process's mappings, high addresses on top; block heights grow
    with log2 of the size; the mm ranges code/data/heap/stack/args/env are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    groups = vma_groups(record.get("vmas") or [])
    # Many small anonymous blocks (the 3000-mapping app) would be unreadable: fold them.
    if len(groups) > 70:
        folded: list[Json] = []
        for g in groups:
            if folded and folded[-1]["kind"] == g["kind"] and g["kind"] == "anon":
                folded[-1]["end"] = g["end"]
                folded[-1]["count"] += g["count"]
            else:
                folded.append(g)
        groups = folded
    y = 0.0
    placed: list[tuple[Json, float, float]] = []
    gaps: list[tuple[float, int]] = []
    prev_end: int | None = None
    for g in groups:
        if prev_end is not None and g["start"] > prev_end:
            gap = g["start"] - prev_end
            space = 0.25 if gap < 1 << 30 else 1.2
            if gap >= 1 << 30:
                gaps.append((y + space / 2, gap))
            y += space
        height = 0.5 + 0.12 * max(0.0, math.log2(max(g["end"] - g["start"], PAGE) / PAGE))
        placed.append((g, y, height))
        y += height
        prev_end = g["end"]
    total = max(y, 1.0)
    fig_h = min(9.0, max(4.5, 0.16 * total + 1.5))
    fig, ax = plt.subplots(figsize=(7.5, fig_h))
    label_every = max(1, len(placed) // 45)
    for i, (g, y0, h) in enumerate(placed):
        ax.add_patch(
            Rectangle(
                (0, y0),
                1,
                h,
                facecolor=KIND_COLOURS.get(g["kind"], "#dddddd"),
                edgecolor="black",
                linewidth=0.4,
            )
        )
        if i % label_every == 0 or g["kind"] in ("heap", "stack", "special"):
            name = g["label"].rsplit("/", 1)[-1]
            more = f" ×{g['count']}" if g["count"] > 1 else ""
            ax.text(
                -0.05,
                y0 + h / 2,
                f"{g['start']:#x}  {name}{more}  {human_bytes(g['end'] - g['start'])}",
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

    def block_y(addr: int) -> float | None:
        for g, y0, h in placed:
            start, end = int(g["start"]), int(g["end"])
            if start <= addr < end or (addr == end and addr > start):
                return y0 + h * (addr - start) / max(1, end - start)
        return None

    marks = []
    for name in ("code", "data", "heap", "stack", "args", "env"):
        region = (record.get("regions") or {}).get(name)
        if not region or not int(region.get("end", 0)):
            continue
        start, end = int(region["start"]), int(region["end"])
        where = block_y(start)
        if where is None:
            where = block_y(max(start, end - 1))
        if where is not None:
            marks.append((where, name, start, end))
    marks.sort()
    last_text = -10.0
    for where, name, start, end in marks:
        text_y = max(where, last_text + 0.9)
        last_text = text_y
        ax.annotate(
            f"{name}: {start:#x}–{end:#x} ({human_bytes(end - start)})",
            xy=(1.0, where),
            xytext=(1.25, text_y),
            fontsize=7.5,
            va="center",
            arrowprops={"arrowstyle": "->", "linewidth": 0.6},
        )
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="black") for c in KIND_COLOURS.values()
    ]
    fig.legend(handles, list(KIND_COLOURS), loc="lower center", ncol=5, fontsize=7.5)
    ax.set_xlim(-3.2, 3.4)
    ax.set_ylim(-0.3, max(total, last_text + 1) + 0.3)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "layout.svg", out / "layout.png"]
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # real text: crisp and quick to print
        fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=130)
    plt.close(fig)
    return paths, fig_h / 7.5


# ---- per-guest sections ----------------------------------------------------------


def pick_target(targets: list[Json]) -> Json | None:
    """The sshd target, else the first with a record."""
    with_record = [t for t in targets if t.get("record")]
    sshd = next((t for t in with_record if t.get("name") == "sshd"), None)
    return sshd or (with_record[0] if with_record else None)


def environment(info: Json | None, stages: Json) -> list[tuple[str, str]]:
    if not info:
        return []
    rows = [
        ("distribution", info.get("distro")),
        ("kernel", info.get("kernel_release")),
        ("accelerator", info.get("accel")),
        ("why", info.get("accel_reason")),
        ("QEMU CPU model", info.get("cpu")),
        ("CPU (guest /proc/cpuinfo)", info.get("cpu_model_name")),
        ("meltdown (sysfs)", info.get("meltdown")),
        ("clocksource", info.get("clocksource")),
        ("image sha256", info.get("image_sha256")),
        ("boot time", f"{info['boot_seconds']} s" if "boot_seconds" in info else None),
    ]
    if stages:
        rows.append(("stages", ", ".join(f"{k} {v} s" for k, v in stages.items())))
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def sample_output(target: Json | None) -> Json | None:
    if target is None:
        return None
    lines, lines_more = truncate(list(target.get("lines") or []))
    maps, maps_more = truncate(str(target.get("maps") or "").splitlines())
    return {
        "name": target.get("name"),
        "pid": target.get("pid"),
        "lines": lines,
        "lines_more": lines_more,
        "maps": maps,
        "maps_more": maps_more,
    }


def layout_section(record: Json, target: Json, out: Path, run_dir: Path) -> Json:
    header = record.get("header") or {}
    title = f"{target.get('name')} (pid {record.get('pid')}) — kernel {record.get('kernel')}"
    try:
        paths, ratio = draw_layout(record, title, out)
        figure: str | None = str(paths[0].relative_to(run_dir))
        error = None
    except Exception as exc:  # a plot must not stop the report
        figure, error, ratio = None, f"{type(exc).__name__}: {exc}", 1.0
    regions = [
        {
            "name": name,
            "start": hexaddr(r.get("start")),
            "end": hexaddr(r.get("end")),
            "size": human_bytes(r.get("size")),
        }
        for name, r in (record.get("regions") or {}).items()
    ]
    counters = record.get("counters") or {}
    kinds: dict[str, int] = {}
    for v in record.get("vmas") or []:
        kinds[str(v.get("kind"))] = kinds.get(str(v.get("kind")), 0) + 1
    return {
        "figure": figure,
        "figure_width_mm": round(min(170.0, 165.0 / ratio)),
        "error": error,
        "target": target.get("name"),
        "pid": record.get("pid"),
        "regions": regions,
        "vma_count": len(record.get("vmas") or []),
        "kinds": kinds,
        "rss_pages": counters.get("rss"),
        "total_vm_pages": counters.get("total_vm"),
        "task_size": hexaddr(header.get("task_size")),
    }


def entry_index(entry: Json) -> int:
    return int(entry.get("index", entry.get("idx")) or 0)


def pgd_section(record: Json) -> Json:
    header = record.get("header") or {}
    entries = record.get("pgd") or []
    tables_meta = record.get("pgd_tables") or {}
    summaries = record.get("pgd_summary") or {}
    tables = []
    for name in tables_meta or sorted({str(e.get("table")) for e in entries}):
        rows = [e for e in entries if e.get("table") == name]
        tables.append(
            {
                "name": name,
                "pa": hexaddr((tables_meta.get(name) or {}).get("pa", "?")),
                "summary": summaries.get(name) or {},
                "rows": [
                    {
                        "index": entry_index(e),
                        "va_start": hexaddr(e.get("va_start")),
                        "va_end": hexaddr(e.get("va_end")),
                        "value": f"{int(e['value']):#018x}"
                        if isinstance(e.get("value"), int)
                        else str(e.get("value")),
                        "next_pa": hexaddr(e.get("next_pa")),
                        "flags": str(e.get("flags")),
                        "user_half": entry_index(e) < 256,
                    }
                    for e in rows
                ],
            }
        )
    return {
        "levels": header.get("levels"),
        "pti": header.get("pti"),
        "va_bits": header.get("va_bits"),
        "tables": tables,
        "pti_notes": pti_notes(header, entries, tables_meta),
    }


def pti_notes(header: Json, entries: list[Json], tables_meta: Json) -> list[str]:
    """What the data shows about page-table isolation (each claim checked on the data)."""
    if not header.get("pti"):
        return [
            "The module reports pti=0: this kernel runs with a single PGD per process "
            "(no page-table isolation), so only one table is dumped."
        ]
    notes = []
    kpa = (tables_meta.get("kernel") or {}).get("pa")
    upa = (tables_meta.get("user") or {}).get("pa")
    if isinstance(kpa, int) and isinstance(upa, int):
        relation = (
            "exactly one 4 KiB page above"
            if upa - kpa == PAGE
            else f"{upa - kpa:+#x} bytes away from"
        )
        notes.append(
            f"The user copy of the PGD is at physical address {upa:#x}, {relation} the "
            f"kernel copy at {kpa:#x} (the two halves of an 8 KiB PGD allocation)."
        )
    else:
        notes.append("pti=1, but the record holds no user copy of the PGD.")

    def by(table: str, user: bool) -> list[Json]:
        return [e for e in entries if e.get("table") == table and (entry_index(e) < 256) == user]

    k_user, u_user = by("kernel", True), by("user", True)
    nx = [e for e in k_user if "NX" in str(e.get("flags")).split("|")]
    if k_user:
        notes.append(
            f"{len(nx)} of the {len(k_user)} user-half entries of the kernel copy carry NX: "
            + (
                "user code cannot run on the kernel's tables, so a return to user space "
                "that forgot to switch to the user copy faults instead of running with the "
                "kernel mapped."
                if len(nx) == len(k_user)
                else "not all of them, so this kernel does not poison every user entry."
            )
        )
    if u_user:
        u_nx = [e for e in u_user if "NX" in str(e.get("flags")).split("|")]
        same = {int(e.get("next_pa") or 0) for e in u_user} == {
            int(e.get("next_pa") or 0) for e in k_user
        }
        notes.append(
            f"The user copy has {len(u_user)} user-half entries, {len(u_nx)} with NX; "
            + (
                "they point to the same lower-level tables as the kernel copy."
                if same
                else "their next-level tables differ from the kernel copy's."
            )
        )
    k_kern, u_kern = by("kernel", False), by("user", False)
    if k_kern or u_kern:
        notes.append(
            f"The kernel half holds {len(k_kern)} present entries in the kernel copy but "
            f"{len(u_kern)} in the user copy: in user mode only the entry trampoline and "
            "the CPU entry area stay mapped, which is what blocks Meltdown."
        )
    return notes


def verification_section(targets: list[Json]) -> list[Json]:
    out = []
    for t in targets:
        v = t.get("verification") or {}
        checks = [
            {
                "name": c.get("name"),
                "ok": bool(c.get("ok")),
                "expected": short_value(c.get("expected")),
                "actual": short_value(c.get("actual")),
                "detail": "" if c.get("ok") else str(c.get("detail") or "")[:200],
            }
            for c in v.get("checks") or []
        ]
        out.append(
            {
                "name": t.get("name"),
                "pid": t.get("pid"),
                "comm": v.get("comm"),
                "ok": bool(v.get("ok")),
                "checks": checks,
                "passed": sum(c["ok"] for c in checks),
            }
        )
    return out


# ---- experiments: one paragraph of numbers each --------------------------------------


def _actions(exp: Json, action: str) -> list[Json]:
    return [p for p in exp.get("points") or [] if p.get("action") == action]


def too_few(exp: Json, action: str) -> str:
    points = exp.get("points") or []
    actions = ", ".join(f"{p.get('action')}" for p in points) or "none"
    return (
        f"Too few '{action}' checkpoints to summarise: the run recorded {len(points)} "
        f"checkpoint(s) in all (actions: {actions})."
    )


def heap_text(exp: Json) -> list[str]:
    mallocs = _actions(exp, "malloc")
    if not mallocs:
        return [too_few(exp, "malloc")]
    in_heap = [p for p in mallocs if (p.get("ptr_vma") or {}).get("kind") == "heap"]
    outside = next((p for p in mallocs if (p.get("ptr_vma") or {}).get("kind") != "heap"), None)
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
            "the largest request served from the heap was "
            f"{biggest} bytes."
        )
    text.append(
        f"The heap (brk − start_brk) went from {mallocs[0]['heap_bytes']} to "
        f"{mallocs[-1]['heap_bytes']} bytes over the mallocs."
    )
    frees = _actions(exp, "free")
    if frees:
        text.append(
            f"After {len(frees)} frees the heap is {frees[-1]['heap_bytes']} bytes and "
            f"total_vm {frees[-1]['total_vm_pages']} pages "
            f"(it was {mallocs[-1]['total_vm_pages']} after the last malloc)."
        )
    return text


def stack_text(exp: Json) -> list[str]:
    deep = _actions(exp, "recurse")
    if len(deep) < 2:
        return [too_few(exp, "recurse")]
    first, last = deep[0], deep[-1]
    frames = int(last["depth"]) - int(first["depth"])
    per_frame = (int(first["sp"]) - int(last["sp"])) / frames if frames else 0.0
    return [
        f"From depth {first['depth']} to {last['depth']} the stack pointer moved down by "
        f"{int(first['sp']) - int(last['sp'])} bytes: {per_frame:.0f} bytes per frame for "
        f"frames that reserve {first['frame_bytes']} bytes of locals.",
        f"The [stack] VMA grew from {human_bytes(first['stack_vma_bytes'])} to "
        f"{human_bytes(last['stack_vma_bytes'])}; at the deepest point "
        f"{human_bytes(int(last['stack_vma_end']) - int(last['sp']))} of it were in use.",
    ]


def demand_text(exp: Json) -> list[str]:
    touches = _actions(exp, "touch")
    if len(touches) < 2:
        return [too_few(exp, "touch")]
    first, last = touches[0], touches[-1]
    touched = int(last["touched"]) - int(first["touched"])
    grew = int(last["rss_anon_pages"]) - int(first["rss_anon_pages"])
    ratio = grew / touched if touched else 0.0
    return [
        f"Touching {touched} more pages (from {first['touched']} to {last['touched']}) of "
        f"the anonymous region raised rss_anon by {grew} pages: {ratio:.3f} resident pages "
        "per touched page. Mapped but untouched memory costs no frames.",
        f"The region's own VMA held {(last.get('region_vma') or {}).get('rss')} resident "
        f"pages at the last checkpoint; total rss was {last['rss_pages']} pages.",
    ]


def mmap_text(exp: Json) -> list[str]:
    points = exp.get("points") or []
    maps, unmaps = _actions(exp, "mmap"), _actions(exp, "munmap")
    if not maps:
        return [too_few(exp, "mmap")]
    peak = max(int(p["total_vm_pages"]) for p in points)
    return [
        f"{len(maps)} mmap calls of {', '.join(str(p.get('bytes')) for p in maps)} bytes and "
        f"{len(unmaps)} munmap calls: total_vm went from {points[0]['total_vm_pages']} pages "
        f"to a peak of {peak} and back to {points[-1]['total_vm_pages']}; the VMA count "
        f"went from {points[0]['map_count']} to {max(p['map_count'] for p in points)} "
        f"and back to {points[-1]['map_count']}."
    ]


def thread_text(exp: Json) -> list[str]:
    start = next(iter(_actions(exp, "start")), None)
    running = next(iter(_actions(exp, "thread")), None)
    if start is None or running is None:
        return [too_few(exp, "thread")]
    vma = running.get("thread_sp_vma") or {}
    return [
        f"The second thread's stack pointer lies in {article(vma.get('kind'))} VMA of "
        f"{human_bytes(vma.get('size'))}; starting the thread took the process from "
        f"{start['map_count']} to {running['map_count']} VMAs."
    ]


EXPERIMENT_TEXT: dict[str, tuple[str, Callable[[Json], list[str]], list[str]]] = {
    "heap": ("malloc and free: heap or own mapping", heap_text, ["heap", "free"]),
    "stack": ("Recursion: how the stack grows", stack_text, ["stack"]),
    "demand": ("Demand paging: resident pages follow touches", demand_text, ["demand"]),
    "mmap": ("mmap and munmap", mmap_text, ["mmap"]),
    "thread": ("A second thread's stack", thread_text, []),
}


def figure_path(plots: Path, name: str, run_dir: Path) -> str | None:
    for ext in ("svg", "png"):
        path = plots / f"{name}.{ext}"
        if path.exists():
            return str(path.relative_to(run_dir))
    return None


def experiments_section(gdir: Path, run_dir: Path) -> list[Json]:
    out: list[Json] = []
    exp_dir = gdir / "experiments"
    names = [p.stem for p in sorted(exp_dir.glob("*.json"))] if exp_dir.is_dir() else []
    order = [n for n in EXPERIMENT_TEXT if n in names] + [
        n for n in names if n not in EXPERIMENT_TEXT
    ]
    for name in order:
        exp = load_json(exp_dir / f"{name}.json")
        if not isinstance(exp, dict):
            out.append({"name": name, "title": name, "error": "unreadable JSON"})
            continue
        title, text_fn, plot_names = EXPERIMENT_TEXT.get(name, (name, lambda _e: [], []))
        try:
            text = text_fn(exp)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            text = [f"The numbers could not be summarised ({type(exc).__name__}: {exc})."]
        rules = exp.get("rules") or []
        verifs = exp.get("verifications") or []
        out.append(
            {
                "name": name,
                "title": title,
                "ok": bool(exp.get("ok")),
                "kernel": exp.get("kernel"),
                "points": len(exp.get("points") or []),
                "text": text,
                "figures": [
                    {"path": p, "name": n}
                    for n in plot_names
                    if (p := figure_path(gdir / "plots", n, run_dir)) is not None
                ],
                "rules": rules,
                "rules_passed": sum(bool(r.get("ok")) for r in rules),
                "verifications": len(verifs),
                "verifications_passed": sum(bool(v.get("ok")) for v in verifs),
            }
        )
    return out


def cycles_section(gdir: Path, run_dir: Path) -> Json:
    def summary(name: str) -> Json | None:
        data = load_json(gdir / name)
        if not isinstance(data, dict):
            return None
        return {k: v for k, v in data.items() if k != "latencies_ms"}

    return {
        "cycles": summary("cycles.json"),
        "stress": summary("stress.json"),
        "figure": figure_path(gdir / "plots", "cycles", run_dir),
    }


EXPECTED_FILES = ("guest.json", "targets.json", "verify.json", "experiments", "cycles.json")


def guest_section(run_dir: Path, name: str, run: Json) -> Json:
    gdir = run_dir / name
    info = load_json(gdir / "guest.json")
    targets = load_json(gdir / "targets.json")
    targets = targets if isinstance(targets, list) else []
    target = pick_target(targets)
    record = (target or {}).get("record")
    prefix = f"{name}: "
    return {
        "name": name,
        "info": info if isinstance(info, dict) else None,
        "environment": environment(
            info if isinstance(info, dict) else None, (run.get("stages") or {}).get(name) or {}
        ),
        "failures": [f[len(prefix) :] for f in run.get("failures") or [] if f.startswith(prefix)],
        "missing": [f for f in EXPECTED_FILES if not (gdir / f).exists()],
        "sample": sample_output(target),
        "layout": layout_section(record, target or {}, gdir / "plots", run_dir) if record else None,
        "pgd": pgd_section(record) if record else None,
        "header": (record or {}).get("header") or {},
        "verification": verification_section(targets),
        "experiments": experiments_section(gdir, run_dir),
        "cycles": cycles_section(gdir, run_dir),
        "sshd_vmas": next(
            (
                len(t["record"].get("vmas") or [])
                for t in targets
                if t.get("name") == "sshd" and t.get("record")
            ),
            None,
        ),
    }


def comparison(guests: list[Json]) -> list[Json]:
    rows = []
    for g in guests:
        verif = g["verification"]
        exps = g["experiments"]
        cyc = g["cycles"]["cycles"] or {}
        rows.append(
            {
                "guest": g["name"],
                "kernel": g["header"].get("kernel") or (g["info"] or {}).get("kernel_release"),
                "levels": g["header"].get("levels"),
                "pti": g["header"].get("pti"),
                "sshd_vmas": g["sshd_vmas"],
                "p50": cyc.get("p50_ms"),
                "verified": f"{sum(t['ok'] for t in verif)}/{len(verif)}",
                "rules": f"{sum(e.get('rules_passed', 0) for e in exps)}/"
                f"{sum(len(e.get('rules') or []) for e in exps)}",
            }
        )
    return rows


# ---- the whole document --------------------------------------------------------------


def submission_context(run: Json) -> Json:
    sub = run.get("submission") or {}
    authors = [a for a in sub.get("authors") or [] if isinstance(a, dict) and a.get("name")]
    return {
        "course": sub.get("course"),
        "title": sub.get("title"),
        "group": sub.get("group"),
        "date": sub.get("date"),
        "authors": authors,
    }


def build_context(run_dir: Path, *, sources: bool = True) -> Json:
    run = load_json(run_dir / "run.json")
    run = run if isinstance(run, dict) else {}
    guests = [guest_section(run_dir, name, run) for name in guest_names(run_dir, run)]
    commit = str(run.get("commit") or "unknown")
    source = MODULE_SOURCE.read_text() if MODULE_SOURCE.exists() else ""
    return {
        "title": TITLE,
        "submission": submission_context(run),
        "run": run,
        "run_id": run.get("run_id") or run_dir.name,
        "run_ok": bool(run.get("ok")) and not run.get("failures"),
        "run_json_missing": not (run_dir / "run.json").exists(),
        "commit": commit,
        "commit_short": commit[:12],
        "host": run.get("host") or {},
        "failures": run.get("failures") or [],
        "guests": guests,
        "comparison": comparison(guests) if len(guests) > 1 else [],
        "steps": module_steps(source),
        "sources": [source_appendix(MODULE_SOURCE), source_appendix(APP_SOURCE)] if sources else [],
        "guest_args": " ".join(f"--guest {g['name']}" for g in guests) or "--guest debian-bookworm",
        "pygments_css": pygments_css(),
        "css": (TEMPLATES / "report.css").read_text(),
    }


def environment_factory() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hexaddr"] = hexaddr
    env.filters["bytes"] = human_bytes
    return env


def render_html(context: Json) -> str:
    return environment_factory().get_template("report.html.j2").render(**context)


def render(run_dir: Path, *, sources: bool = True) -> Path:
    """Write run_dir/report.html and run_dir/report.pdf; return the PDF's path.

    ``sources=False`` leaves out the source appendices (a quicker draft).
    """
    from weasyprint import HTML

    run_dir = run_dir.resolve()
    html = render_html(build_context(run_dir, sources=sources))
    html_path = run_dir / "report.html"
    html_path.write_text(html)
    pdf_path = run_dir / "report.pdf"
    HTML(string=html, base_url=str(run_dir)).write_pdf(pdf_path)
    return pdf_path
