"""Check the module's record against the kernel's own views taken at the same moment."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..humanize import short_value
from . import procviews as pv
from .capture import Capture, error_text
from .records import ProcRecord

PAGE = 4096
VSYSCALL = "[vsyscall]"  # the gate area: in /proc/PID/maps, but not a VMA


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: Any
    actual: Any
    detail: str = ""


@dataclass
class Verification:
    pid: int
    comm: str
    kernel: str
    checks: list[Check] = field(default_factory=list)
    printk: dict[str, Any] | None = None  # the printk channel against /proc/procmem

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, expected: Any, actual: Any, detail: str = "") -> None:
        self.checks.append(Check(name, expected == actual, expected, actual, detail))

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "kernel": self.kernel,
            "ok": self.ok,
            "printk": self.printk,
            "checks": [asdict(c) for c in self.checks],
        }

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        rows = [f"{'check':<{width}}  result  expected (/proc) | actual (module)"]
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            exp, act = short_value(c.expected, 40), short_value(c.actual, 40)
            line = f"{c.name:<{width}}  {mark}    {exp} | {act}"
            if c.detail and not c.ok:
                line += f"\n{'':<{width}}          {c.detail}"
            rows.append(line)
        return "\n".join(rows)


# Known differences between the kernel's /proc/PID/maps and the module, each a named
# exception with the kernels it applies to: the only tolerated mismatches.
STACK_TID_MARKS = "maps names thread stacks [stack:TID] (kernels before 4.5); the module does not"


def expected_file(entry: pv.MapsEntry, kernel: tuple[int, int]) -> str:
    """What the module should call a mapping that /proc/PID/maps names ``path``."""
    if entry.path.startswith("[stack:") and kernel < (4, 5):
        return ""  # STACK_TID_MARKS
    return entry.path


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a release string like 6.1.0-56-amd64 (0, 0 if unreadable)."""
    parts = release.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0


# Per-VMA module field -> (smaps fields in kB that must add up to it in pages, check name).
SMAPS_FIELDS = {
    "rss": (("Rss",), "vma resident pages (smaps Rss)"),
    "swap": (("Swap",), "vma swapped-out pages (smaps Swap)"),
    "hugetlb": (("Private_Hugetlb", "Shared_Hugetlb"), "vma hugetlb pages (smaps *_Hugetlb)"),
}


def check_vmas(
    v: Verification,
    record: ProcRecord,
    maps: list[pv.MapsEntry],
    smaps: dict[int, dict[str, int]],
) -> None:
    """Every VMA exactly as maps shows it (bounds, perms, offset, name) and smaps counts it."""
    maps = [m for m in maps if m.path != VSYSCALL]
    kernel = kernel_version(str(record.begin.get("kernel", "")))
    by_start = {int(vma["start"]): vma for vma in record.vmas}
    v.add("vma count", len(maps), len(record.vmas))
    missing = [f"{m.start:#x}" for m in maps if m.start not in by_start]
    v.add("vma starts", 0, len(missing), "missing in the module: " + ", ".join(missing[:8]))
    problems: dict[str, list[str]] = {"end": [], "perms": [], "offset": [], "file": []}
    problems.update({name: [] for _, name in SMAPS_FIELDS.values()})
    for m in maps:
        vma = by_start.get(m.start)
        if vma is None:
            continue
        where = f"{m.start:#x}"
        if int(vma["end"]) != m.end:
            problems["end"].append(f"{where}: {m.end:#x} != {int(vma['end']):#x}")
        if vma["perms"] != m.perms:
            problems["perms"].append(f"{where}: {m.perms} != {vma['perms']}")
        if int(vma["pgoff"]) != m.pgoff:
            problems["offset"].append(f"{where}: {m.pgoff:#x} != {int(vma['pgoff']):#x}")
        want, got = expected_file(m, kernel), str(vma.get("file", ""))
        if want != got:
            problems["file"].append(f"{where}: {want!r} != {got!r}")
        for key, (keys, name) in SMAPS_FIELDS.items():
            entry = smaps.get(m.start)
            if entry is None or key not in vma or not all(k in entry for k in keys):
                continue
            pages = sum(entry[k] for k in keys) * 1024 // PAGE
            if int(vma[key]) != pages:
                problems[name].append(f"{where}: {pages} != {vma[key]}")
    for what, found in problems.items():
        v.add(
            what if what.startswith("vma ") else f"vma {what}", 0, len(found), "; ".join(found[:6])
        )


def check_mm(
    v: Verification, record: ProcRecord, stat: dict[str, int | str], maps: list[pv.MapsEntry]
) -> None:
    mm = record.mm()
    for name in pv.STAT_FIELDS:
        v.add(f"mm {name} (stat)", stat[name], mm[name])
    heap = next((m for m in maps if m.path == "[heap]"), None)
    if heap is not None:
        v.add(
            "heap VMA start (maps [heap])",
            heap.start,
            mm["start_brk"] & ~(PAGE - 1) if mm["start_brk"] & (PAGE - 1) else mm["start_brk"],
        )
        v.add("heap VMA end = page-aligned brk", heap.end, -(-mm["brk"] // PAGE) * PAGE)
    stack = next((m for m in maps if m.start <= mm["start_stack"] < m.end), None)
    if stack is not None:
        v.add(
            "stack VMA (maps)",
            (stack.start, stack.end),
            (mm["stack_vma_start"], mm["stack_vma_end"]),
        )


def check_counters(
    v: Verification,
    record: ProcRecord,
    statm: dict[str, int],
    status: dict[str, str],
    map_count: int,
) -> None:
    c = record.counters
    v.add("rss pages (statm resident)", statm["resident"], c.get("rss"))
    v.add("total_vm pages (statm size)", statm["size"], c.get("total_vm"))
    kb_keys = {
        "rss_anon": "RssAnon",
        "rss_file": "RssFile",
        "rss_shmem": "RssShmem",
        "locked_vm": "VmLck",
        "data_vm": "VmData",
        "stack_vm": "VmStk",
        "swap": "VmSwap",
    }
    for key, status_key in kb_keys.items():
        kb = pv.status_kb(status, status_key)
        if key in c and kb is not None:
            v.add(f"{key} pages (status {status_key})", kb * 1024 // PAGE, c[key])
    if "map_count" in c:
        v.add("map_count (maps lines)", map_count, c["map_count"])


def check_va(v: Verification, record: ProcRecord, pagemap_text: str) -> None:
    parsed = pv.parse_pagemap(pagemap_text)
    if parsed is None or not record.va:
        return
    va, entry = parsed
    frame = record.va_frame
    module_present = int(frame.get("present", 1 if "pfn" in frame else 0)) == 1
    v.add(f"va {va:#x} present (pagemap bit 63)", entry.present, module_present)
    if entry.present and module_present:
        v.add(f"va {va:#x} frame (pagemap PFN)", entry.pfn, frame.get("pfn"))


def check_tools(v: Verification, record: ProcRecord, sections: dict[str, str]) -> None:
    """ps aux's VSZ/RSS and top's VIRT/RES (KiB) against total_vm and rss (pages)."""
    total_kib = int(record.counters.get("total_vm", 0)) * PAGE // 1024
    rss_kib = int(record.counters.get("rss", 0)) * PAGE // 1024
    ps = pv.parse_ps(sections.get("ps", ""), record.pid)
    if ps:
        v.add("VSZ KiB (ps aux) = total_vm", ps.get("VSZ"), total_kib)
        v.add("RSS KiB (ps aux) = rss", ps.get("RSS"), rss_kib)
    top = pv.parse_top(sections.get("top", ""), record.pid)
    for column, kib in (("VIRT", total_kib), ("RES", rss_kib)):
        shown = top.get(column)
        if shown is None:
            continue
        name = f"{column} KiB (top) = {'total_vm' if column == 'VIRT' else 'rss'}"
        # top scales big cells (e.g. 1.2g) and rounds them: compare at its precision.
        exact = float(shown).is_integer() and shown < 10**8
        v.checks.append(
            Check(name, shown == kib if exact else abs(shown - kib) <= 0.051 * shown, shown, kib)
        )


def check_printk(v: Verification, cap: Capture) -> None:
    """The dmesg lines of the load equal the file's, or end them when the log overflowed."""
    p = cap.printk
    if p is None:
        return  # the record was read from the log itself (an old capture)
    v.printk = p.to_json()
    name = "printk lines (dmesg) = /proc/procmem"
    v.checks.append(Check(name, p.ok, p.expected, p.status, p.detail))


def verify(cap: Capture) -> Verification:
    """Compare one capture's module record with its /proc views."""
    record = cap.record
    if record is None:
        v = Verification(cap.pid, "?", cap.sections.get("meta", ""))
        v.add(
            "module record",
            "complete",
            cap.record_error or cap.insmod_output,
            "the module produced no usable record",
        )
        return v
    if record.errors:
        v = Verification(cap.pid, str(record.begin.get("comm", "?")), cap.sections.get("meta", ""))
        v.add("module record", "no error", error_text(record), "the module reported an error")
        return v
    s = cap.sections
    v = Verification(record.pid, str(record.begin.get("comm")), str(record.begin.get("kernel")))
    v.add("insmod exit status", 0, cap.insmod_status, cap.insmod_output)
    check_printk(v, cap)
    maps = pv.parse_maps(s.get("maps", ""))
    check_vmas(v, record, maps, pv.parse_smaps(s.get("smaps", "")))
    check_mm(v, record, pv.parse_stat(s.get("stat", "")), maps)
    real_maps = [m for m in maps if m.path != VSYSCALL]
    check_counters(
        v,
        record,
        pv.parse_statm(s.get("statm", "")),
        pv.parse_status(s.get("status", "")),
        len(real_maps),
    )
    check_va(v, record, s.get("pagemap", ""))
    check_tools(v, record, s)
    return v


def write(verifications: list[Verification], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([x.to_json() for x in verifications], indent=2) + "\n")
