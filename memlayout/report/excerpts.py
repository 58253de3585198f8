"""Source excerpts for the report: the module's steps, shown from procmem.c itself.

Each step names the C functions (or a pair of marker lines) it quotes; they are
looked up in the source when the report is rendered, so the excerpts never go
stale, and a name that is no longer found shows as missing in the report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import CLexer

from ..paths import REPO_ROOT

Json = dict[str, Any]
MODULE_SOURCE = REPO_ROOT / "kernel-module" / "procmem.c"
APP_SOURCE = REPO_ROOT / "guest" / "app.c"

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
        "insmod passes pid= as a module parameter. By default (find=pid) the module looks "
        "up the struct pid with find_get_pid() and takes a reference on its task with "
        "get_pid_task(): O(1), and the number is read in the caller's pid namespace, as "
        "kill(2) and /proc read it. find=list walks the process list instead, as the "
        "assignment describes: from current's thread-group leader along task->tasks under "
        "rcu_read_lock(), comparing task_pid_vnr(), and cross-checks the result with the pid "
        "lookup. The walk costs O(processes) and finds thread-group leaders only. A pid that "
        "does not exist gives an error record with ESRCH (the module still loads, so the "
        "error can be read from /proc/procmem).",
        ["pm_find_by_pid", "pm_find_by_list", "pm_find_task"],
    ),
    (
        "Pin the address space",
        "get_task_mm() takes a reference on the task's mm_struct (kernel threads have "
        "none and are refused); pm_collect_task drops it with mmput() once the report is "
        "collected, then put_task_struct() drops the task. A task that exits meanwhile "
        "keeps its address space until that mmput().",
        ["pm_get_mm", "pm_collect_task"],
    ),
    (
        "Hold the mmap lock while reading",
        "The whole report is collected under the mmap read lock, so the VMA tree cannot "
        "change underneath; nothing under it touches user memory, and it is dropped "
        "before anything is printed. Kernel-version differences (mmap_read_lock() "
        "appeared in 5.8, before it the lock was mmap_sem) live in one block of small "
        "helpers.",
        ["pm_report", "pm_mmap_read_lock_killable"],
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
        "each PMD entry and the PTE table below it are visited inside rcu_read_lock(). "
        "Hugetlb VMAs are read with huge_pte_offset()'s descent and huge_ptep_get() under "
        "the file's i_mmap_rwsem, so a shared PMD table cannot be unshared meanwhile.",
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
        "Every line goes through one helper that appends it, prefixed 'procmem: ' "
        "(pr_fmt), to a buffer the module owns and counts it; the end record states the "
        "count. After the lock is dropped the lines are printed with printk and the same "
        "bytes are served from /proc/procmem until rmmod, so a record larger than the "
        "kernel log is still read whole.",
        ["pm_vappend", "pm_print_lines", "pm_proc_read"],
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
