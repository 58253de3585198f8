"""Parsers for the kernel's own views of a process (/proc/PID/{maps,stat,statm,status,smaps,
pagemap}) and of the tools the assignment names (ps aux, top) and system-wide counters."""

from __future__ import annotations

import re
from dataclasses import dataclass

# /proc/PID/stat field numbers (1-based, as in proc(5)) of the mm ranges.
STAT_FIELDS = {
    "start_code": 26,
    "end_code": 27,
    "start_stack": 28,
    "start_data": 45,
    "end_data": 46,
    "start_brk": 47,
    "arg_start": 48,
    "arg_end": 49,
    "env_start": 50,
    "env_end": 51,
}


@dataclass(frozen=True)
class MapsEntry:
    start: int
    end: int
    perms: str
    pgoff: int
    dev: str
    inode: int
    path: str


_MAPS_RE = re.compile(
    r"^(?P<start>[0-9a-f]+)-(?P<end>[0-9a-f]+) (?P<perms>\S{4}) (?P<off>[0-9a-f]+) "
    r"(?P<dev>\S+) (?P<inode>\d+)\s*(?P<path>.*)$"
)


def parse_maps(text: str) -> list[MapsEntry]:
    entries = []
    for line in text.splitlines():
        m = _MAPS_RE.match(line)
        if m is None:
            continue
        entries.append(
            MapsEntry(
                start=int(m["start"], 16),
                end=int(m["end"], 16),
                perms=m["perms"],
                pgoff=int(m["off"], 16),
                dev=m["dev"],
                inode=int(m["inode"]),
                path=m["path"],
            )
        )
    return entries


def parse_stat(text: str) -> dict[str, int | str]:
    """The fields of /proc/PID/stat by name (comm may hold spaces and parentheses)."""
    head, _, rest = text.strip().rpartition(")")
    fields = rest.split()
    # fields[0] is field 3 (state)
    out: dict[str, int | str] = {"comm": head.partition("(")[2], "state": fields[0]}
    for name, number in STAT_FIELDS.items():
        index = number - 3
        out[name] = int(fields[index]) if index < len(fields) else 0
    return out


def parse_statm(text: str) -> dict[str, int]:
    names = ("size", "resident", "shared", "text", "lib", "data", "dt")
    return dict(zip(names, (int(x) for x in text.split()), strict=False))


def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def status_kb(status: dict[str, str], key: str) -> int | None:
    value = status.get(key)
    if value is None:
        return None
    return int(value.split()[0])


def parse_smaps(text: str) -> dict[int, dict[str, int]]:
    """The kB fields of each mapping (Rss, Swap, Private_Hugetlb, ...), keyed by its start."""
    out: dict[int, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        m = _MAPS_RE.match(line)
        if m is not None:
            current = out.setdefault(int(m["start"], 16), {})
            continue
        key, sep, value = line.partition(":")
        parts = value.split()
        if current is not None and sep and len(parts) == 2 and parts[1] == "kB":
            current[key] = int(parts[0])
    return out


@dataclass(frozen=True)
class PagemapEntry:
    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw >> 63 & 1)

    @property
    def swapped(self) -> bool:
        return bool(self.raw >> 62 & 1)

    @property
    def pfn(self) -> int:
        return self.raw & ((1 << 55) - 1)


def parse_pagemap(text: str) -> tuple[int, PagemapEntry] | None:
    """The capture's pagemap section: ``va=ADDR`` then one od -tx8 word."""
    m = re.search(r"va=(\S+)\s+([0-9a-f]{16})", text)
    if m is None:
        return None
    return int(m.group(1), 0), PagemapEntry(int(m.group(2), 16))


def _columns(text: str, pid: int) -> dict[str, str]:
    """The process's row of a header-and-rows table (ps aux, top), by column name."""
    header: list[str] | None = None
    for line in text.splitlines():
        cells = line.split()
        if not cells:
            continue
        if "PID" in cells and header is None:
            header = cells
        elif header is not None and str(pid) in cells[:2]:
            return dict(zip(header, cells, strict=False))
    return {}


def parse_ps(text: str, pid: int) -> dict[str, int]:
    """VSZ and RSS (KiB) from ``ps aux``'s line for ``pid`` (empty if it is not there)."""
    row = _columns(text, pid)
    return {k: int(row[k]) for k in ("VSZ", "RSS") if row.get(k, "").isdigit()}


_TOP_UNITS = {"": 1, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}


def top_kib(value: str) -> float | None:
    """A top memory cell in KiB: "39088", "1.2g" (scaled cells are rounded by top)."""
    m = re.fullmatch(r"([\d.]+)([kmgt]?)", value.lower())
    return float(m.group(1)) * _TOP_UNITS[m.group(2)] if m else None


def parse_top(text: str, pid: int) -> dict[str, float]:
    """VIRT and RES (KiB) from ``top -b``'s line for ``pid``."""
    row = _columns(text, pid)
    out = {}
    for key in ("VIRT", "RES"):
        kib = top_kib(row.get(key, ""))
        if kib is not None:
            out[key] = kib
    return out


def parse_system(text: str) -> dict[str, int]:
    """The capture's system section: MemFree/AnonPages (kB), nr_* and zone_*_free (pages)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out
