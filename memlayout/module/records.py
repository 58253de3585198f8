"""Parse the procmem module's dmesg lines into one structured record.

Every line the module prints matches ``LINE_RE``: ``procmem: <record>``
followed by ``key=value`` fields whose values hold no spaces (strings are
escaped as backslash + three octal digits). Numbers starting with ``0x`` are
hex, other all-digit values decimal; everything else stays a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordError

LINE_RE = re.compile(r"^procmem: (?P<rec>[a-z_]+)(?P<fields>(?: [a-z_0-9]+=\S*)*)$")
FIELD_RE = re.compile(r" ([a-z_0-9]+)=(\S*)")
_OCTAL = re.compile(rb"\\([0-7]{3})")
_DECIMAL = re.compile(r"-?\d+")

Value = int | str
Fields = dict[str, Value]

# The mm ranges, by the module's region name: (start key, end key) in the JSON.
REGION_KEYS = {
    "code": ("start_code", "end_code"),
    "data": ("start_data", "end_data"),
    "heap": ("start_brk", "brk"),
    "args": ("arg_start", "arg_end"),
    "env": ("env_start", "env_end"),
}


def unescape(text: str) -> str:
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), text.encode())
    return raw.decode("utf-8", "surrogateescape")


def convert(value: str) -> Value:
    if value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return value
    if _DECIMAL.fullmatch(value):
        return int(value)
    return unescape(value)


def parse_line(line: str) -> tuple[str, Fields] | None:
    """(record name, fields) for a module line, None for any other line.

    A lost or mangled record line is caught by ``parse``: the ``end`` line
    says how many lines the module printed.
    """
    line = line.rstrip("\n")
    start = line.find("procmem: ")
    if start < 0:
        return None
    m = LINE_RE.match(line[start:])
    if m is None:
        return None  # the kernel's own words about the module ("loading ... taints")
    fields = {k: convert(v) for k, v in FIELD_RE.findall(m.group("fields"))}
    return m.group("rec"), fields


@dataclass
class ProcRecord:
    """Everything one load of the module printed."""

    begin: Fields = field(default_factory=dict)
    regions: dict[str, Fields] = field(default_factory=dict)
    vmas: list[Fields] = field(default_factory=list)
    counters: Fields = field(default_factory=dict)
    pgd: dict[str, Fields] = field(default_factory=dict)  # table -> header
    pgd_entries: dict[str, list[Fields]] = field(default_factory=dict)
    pgd_summary: dict[str, Fields] = field(default_factory=dict)
    walk: Fields = field(default_factory=dict)
    va: Fields = field(default_factory=dict)
    va_levels: list[Fields] = field(default_factory=list)
    va_frame: Fields = field(default_factory=dict)
    end: Fields = field(default_factory=dict)
    errors: list[Fields] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.begin["pid"])

    def mm(self) -> dict[str, int]:
        mm: dict[str, int] = {}
        for name, (start, end) in REGION_KEYS.items():
            region = self.regions.get(name, {})
            mm[start] = int(region.get("start", 0))
            mm[end] = int(region.get("end", 0))
        stack = self.regions.get("stack", {})
        mm["start_stack"] = int(stack.get("start_stack", 0))
        mm["stack_vma_start"] = int(stack.get("start", 0))
        mm["stack_vma_end"] = int(stack.get("end", 0))
        mm["rss_pages"] = int(self.counters.get("rss", 0))
        mm["total_vm_pages"] = int(self.counters.get("total_vm", 0))
        return mm

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.begin.get("comm"),
            "kernel": self.begin.get("kernel"),
            "header": self.begin,
            "mm": self.mm(),
            "regions": self.regions,
            "counters": self.counters,
            "vmas": [
                {
                    "start": v["start"],
                    "end": v["end"],
                    "size": v.get("size"),
                    "perms": v["perms"],
                    "pgoff": v["pgoff"],
                    "file": v.get("file", ""),
                    "kind": v.get("kind"),
                    "rss_pages": v.get("rss"),
                    "present_pages": v.get("present"),
                    "swap_pages": v.get("swap"),
                    "hugetlb_pages": v.get("hugetlb"),
                }
                for v in self.vmas
            ],
            "pgd": [
                {"table": table, "index": e["idx"], "present": True, **e}
                for table, entries in self.pgd_entries.items()
                for e in entries
            ],
            "pgd_tables": self.pgd,
            "pgd_summary": self.pgd_summary,
            "walk": self.walk,
            "va": {**self.va, "levels": self.va_levels, "frame": self.va_frame}
            if self.va
            else None,
        }


def _add(rec: ProcRecord, name: str, fields: Fields) -> None:
    if name == "begin":
        rec.begin = fields
    elif name == "region":
        rec.regions[str(fields.get("name"))] = fields
    elif name == "vma":
        rec.vmas.append(fields)
    elif name == "counters":
        rec.counters = fields
    elif name == "pgd":
        table = str(fields.get("table", "kernel"))
        rec.pgd[table] = fields
        rec.pgd_entries.setdefault(table, [])
    elif name == "pgde":
        rec.pgd_entries.setdefault(str(fields.get("table", "kernel")), []).append(fields)
    elif name == "pgd_summary":
        rec.pgd_summary[str(fields.get("table", "kernel"))] = fields
    elif name == "walk":
        rec.walk = fields
    elif name == "va":
        rec.va = fields
    elif name == "va_level":
        rec.va_levels.append(fields)
    elif name == "va_frame":
        rec.va_frame = fields
    elif name == "end":
        rec.end = fields
    elif name == "error":
        rec.errors.append(fields)


def parse(text: str, *, tag: str | None = None) -> ProcRecord:
    """Parse one load's output (other kernel lines are ignored).

    With ``tag``, only the lines from ``begin tag=TAG`` to ``end tag=TAG`` count.
    Raises RecordError when the record is incomplete: no begin or end line, or
    fewer lines than the module says it printed (a lost line in the ring buffer).
    """
    rec = ProcRecord()
    inside = tag is None
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        name, fields = parsed
        if name == "unload":
            continue  # printed by rmmod, after the load's record
        if tag is not None and name == "begin":
            inside = str(fields.get("tag")) == tag
        if not inside:
            continue
        rec.lines.append(line[line.find("procmem: ") :])
        _add(rec, name, fields)
        if name == "end" and tag is not None:
            break
    if rec.errors and not rec.begin:
        return rec
    if not rec.begin:
        raise RecordError("no 'begin' line: the module printed no record")
    if not rec.end:
        raise RecordError("no 'end' line: the record is cut short")
    expected = int(rec.end.get("records", -1))
    if expected != len(rec.lines):
        raise RecordError(
            f"the module printed {expected} lines but {len(rec.lines)} arrived "
            "(the kernel log lost some)"
        )
    return rec
