"""Scenario "zoo": one region per page state, each verified at its own checkpoint.

The app (guest/app.c, ``zoo``) puts one region into each state the guest's kernel
allows: written then PROT_NONE, 4 KiB and huge zero pages, a THP and its split,
hugetlb, shmem and memfd, MADV_DONTNEED and MADV_FREE, mremap, a COW'd private
file mapping, mlock, swap (MADV_PAGEOUT), userfaultfd, memfd_secret,
MAP_GROWSDOWN and guard regions. A state the kernel cannot do is a checkpoint
with ``skipped=1 reason=...``. Every region stays until the app exits, so each
checkpoint verifies the earlier states again; the checkpoint's capture also
translates the region's first address (va=), checked against /proc/PID/pagemap.

The rules say how each state must be counted, from the kernel's documented
behaviour (fs/proc/task_mmu.c, Documentation/admin-guide/mm/): an anonymous
page is resident or swapped, zero pages map but are not counted in Rss,
hugetlb pages are counted apart from Rss, a locked page stays resident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..guest.remote import Remote
from ..humanize import human_bytes
from .base import Experiment, Point, Scenario, Table

# A 2 MiB page (THP, huge zero page, hugetlb) in 4 KiB pages.
HUGE_PAGES = 512
# vm_flags bits (include/linux/mm.h), stable since they were introduced.
VM_GROWSDOWN = 0x100
VM_UFFD_MISSING = 0x200
VM_LOCKED = 0x2000
VM_HUGETLB = 0x400000

# What prepare() sets up in the guest.
NR_HUGEPAGES = 16
SWAPFILE = "/swapfile"
SWAP_SIZE = "256M"
THP_DIR = "/sys/kernel/mm/transparent_hugepage"
PREPARE_COMMAND = (
    f"echo before_hugepages=$(cat /proc/sys/vm/nr_hugepages); "
    f"echo {NR_HUGEPAGES} > /proc/sys/vm/nr_hugepages; "
    "echo hugepages=$(cat /proc/sys/vm/nr_hugepages); "
    "echo swap_areas_before=$(($(wc -l < /proc/swaps) - 1)); "
    "if [ $(wc -l < /proc/swaps) -le 1 ]; then "
    f"  {{ fallocate -l {SWAP_SIZE} {SWAPFILE} || "
    f"    dd if=/dev/zero of={SWAPFILE} bs=1M count={SWAP_SIZE.rstrip('M')}; }} >/dev/null 2>&1 && "
    f"  chmod 600 {SWAPFILE} && mkswap {SWAPFILE} >/dev/null 2>&1 && "
    f"  swapon {SWAPFILE} 2>&1 && echo swapfile={SWAPFILE}; "
    "fi; "
    "echo swap_kb=$(awk '$1 == \"SwapTotal:\" { print $2 }' /proc/meminfo); "
    f"echo thp_enabled=$(cat {THP_DIR}/enabled 2>/dev/null | tr ' ' ,); "
    f"echo thp_use_zero_page=$(cat {THP_DIR}/use_zero_page 2>/dev/null)"
)


@dataclass(frozen=True)
class State:
    action: str
    label: str
    # Kernels since 4.x can always do it: a skip means the app hit an error.
    always: bool
    # The rule: (ok, what was seen) for a checkpoint that did the state.
    rule: Callable[[Point], tuple[bool, str]]
    expect: str


def n(p: Point, key: str) -> int:
    value = p.get(key)
    return int(value) if isinstance(value, int) else 0


def vma(p: Point, key: str = "region") -> dict[str, object]:
    return p.get(f"{key}_vma") or {}


def v(p: Point, field: str, key: str = "region") -> int:
    value = vma(p, key).get(field)
    return int(value) if isinstance(value, int) else -1


def counts(p: Point, key: str = "region") -> str:
    return (
        f"rss={v(p, 'rss', key)} present={v(p, 'present', key)} swap={v(p, 'swap', key)} "
        f"hugetlb={v(p, 'hugetlb', key)} perms={vma(p, key).get('perms')}"
    )


def flag(p: Point, bit: int) -> bool:
    return v(p, "flags") >= 0 and bool(v(p, "flags") & bit)


def resident_or_swapped(p: Point, pages: int, key: str = "region") -> bool:
    """An anonymous page is either mapped (rss) or in swap: together exactly ``pages``."""
    return v(p, "rss", key) + v(p, "swap", key) == pages


def _prot_none(p: Point) -> tuple[bool, str]:
    ok = (
        vma(p).get("perms") == "---p"
        and resident_or_swapped(p, n(p, "touched"))
        and v(p, "present") == v(p, "rss")
    )
    return ok, counts(p)


def _zero(p: Point) -> tuple[bool, str]:
    return v(p, "rss") == 0 and v(p, "present") == n(p, "read"), counts(p)


def _huge_zero(p: Point) -> tuple[bool, str]:
    reads, present = n(p, "read"), v(p, "present")
    how = (
        "huge zero page"
        if present == HUGE_PAGES * reads
        else "4 KiB zero page (huge zero page fallback)"
        if present == reads
        else "neither"
    )
    return v(p, "rss") == 0 and present in (HUGE_PAGES * reads, reads), f"{counts(p)} ({how})"


def _thp(p: Point) -> tuple[bool, str]:
    return (
        resident_or_swapped(p, n(p, "touched")),
        f"{counts(p)}, AnonHugePages {p.get('anon_huge_kb')} kB before the checkpoint",
    )


def _thp_split(p: Point) -> tuple[bool, str]:
    ok = (
        vma(p).get("perms") == "rw-p"
        and vma(p, "upper").get("perms") == "r--p"
        and v(p, "start", "upper") == n(p, "upper")
        and resident_or_swapped(p, n(p, "touched"))
        and resident_or_swapped(p, n(p, "upper_touched"), "upper")
    )
    return ok, f"lower half: {counts(p)}; upper half: {counts(p, 'upper')}"


def _hugetlb(p: Point) -> tuple[bool, str]:
    ok = (
        v(p, "rss") == 0
        and v(p, "swap") == 0
        and v(p, "hugetlb") == n(p, "touched")
        and flag(p, VM_HUGETLB)
    )
    return ok, counts(p)


def _shared(p: Point) -> tuple[bool, str]:
    ok = vma(p).get("perms") == "rw-s" and resident_or_swapped(p, n(p, "touched"))
    return ok, f"{counts(p)} file={vma(p).get('file')}"


def _memfd(p: Point) -> tuple[bool, str]:
    ok, seen = _shared(p)
    return ok and str(vma(p).get("file", "")).startswith("/memfd:zoo"), seen


def _dontneed(p: Point) -> tuple[bool, str]:
    left = n(p, "touched") - n(p, "advised")
    return resident_or_swapped(p, left) and v(p, "present") == v(p, "rss"), counts(p)


def _free(p: Point) -> tuple[bool, str]:
    kept = v(p, "rss") + v(p, "swap")
    ok = n(p, "touched") - n(p, "advised") <= kept <= n(p, "touched")
    return ok, counts(p)


def _mremap(p: Point) -> tuple[bool, str]:
    ok = (
        v(p, "start") == n(p, "region")
        and v(p, "size") == n(p, "bytes")
        and resident_or_swapped(p, n(p, "touched"))
    )
    return ok, f"{counts(p)} size={v(p, 'size')} (moved from {n(p, 'old'):#x})"


def _file_cow(p: Point) -> tuple[bool, str]:
    ok = (
        vma(p).get("kind") == "file"
        and vma(p).get("perms") == "rw-p"
        and v(p, "pgoff") == n(p, "offset")
        and resident_or_swapped(p, n(p, "read"))
    )
    return ok, f"{counts(p)} pgoff={v(p, 'pgoff'):#x} file={vma(p).get('file')}"


def _mlock(p: Point) -> tuple[bool, str]:
    ok = flag(p, VM_LOCKED) and v(p, "rss") == n(p, "pages") and v(p, "swap") == 0
    return ok, f"{counts(p)} flags={v(p, 'flags'):#x}"


def _pageout(p: Point) -> tuple[bool, str]:
    return v(p, "swap") > 0 and resident_or_swapped(p, n(p, "touched")), counts(p)


def _uffd(p: Point) -> tuple[bool, str]:
    ok = flag(p, VM_UFFD_MISSING) and resident_or_swapped(p, n(p, "touched"))
    return ok, f"{counts(p)} flags={v(p, 'flags'):#x}"


def _secret(p: Point) -> tuple[bool, str]:
    ok = vma(p).get("perms") == "rw-s" and v(p, "rss") == n(p, "touched")
    return ok, f"{counts(p)} file={vma(p).get('file')}"


def _growsdown(p: Point) -> tuple[bool, str]:
    ok = (
        flag(p, VM_GROWSDOWN)
        and v(p, "size") == n(p, "bytes")
        and resident_or_swapped(p, n(p, "touched"))
    )
    return ok, f"{counts(p)} size={v(p, 'size')} flags={v(p, 'flags'):#x}"


def _guard(p: Point) -> tuple[bool, str]:
    left = n(p, "touched") - n(p, "guarded")
    return resident_or_swapped(p, left) and v(p, "present") == v(p, "rss"), counts(p)


STATES = (
    State(
        "prot_none",
        "written, then PROT_NONE",
        True,
        _prot_none,
        "perms ---p; the written pages stay present and count: rss + swap = touched, present = rss",
    ),
    State(
        "zero",
        "read faults, MADV_NOHUGEPAGE (4 KiB zero page)",
        True,
        _zero,
        "each read maps the zero page: rss 0, present = pages read",
    ),
    State(
        "huge_zero",
        "read faults, MADV_HUGEPAGE (huge zero page)",
        False,
        _huge_zero,
        "rss 0; present 512 per 2 MiB read (huge zero page) or 1 per read (fallback)",
    ),
    State(
        "thp",
        "written, MADV_HUGEPAGE (THP)",
        True,
        _thp,
        "rss + swap = pages written, huge page or not",
    ),
    State(
        "thp_split",
        "THP split by mprotect(PROT_READ) of its upper half",
        True,
        _thp_split,
        "two VMAs, rw-p and r--p, each with its own half of the pages",
    ),
    State(
        "hugetlb",
        "MAP_HUGETLB, one of two 2 MiB pages written",
        False,
        _hugetlb,
        "rss 0, swap 0, hugetlb = 512 per 2 MiB written, VM_HUGETLB",
    ),
    State(
        "shmem",
        "MAP_SHARED|MAP_ANONYMOUS, half written",
        True,
        _shared,
        "perms rw-s; rss + swap = pages written",
    ),
    State(
        "memfd",
        "memfd_create, MAP_SHARED, half written",
        True,
        _memfd,
        "perms rw-s, /memfd:zoo; rss + swap = pages written",
    ),
    State(
        "dontneed",
        "written, MADV_DONTNEED on half",
        True,
        _dontneed,
        "the advised half is gone at once: rss + swap = touched - advised",
    ),
    State(
        "free",
        "written, MADV_FREE on half",
        True,
        _free,
        "lazily freed pages stay until reclaim: touched - advised <= rss + swap <= touched",
    ),
    State(
        "mremap",
        "written, moved and grown by mremap",
        True,
        _mremap,
        "the VMA starts at the new address with the new size; the pages moved with it",
    ),
    State(
        "file_cow",
        "private file mapping (offset 64 KiB) read, half written",
        True,
        _file_cow,
        "kind file, rw-p, pgoff = offset; page cache and COW copies: rss = pages read",
    ),
    State(
        "mlock",
        "mlock",
        True,
        _mlock,
        "VM_LOCKED; every page faulted in and kept: rss = pages, swap 0",
    ),
    State(
        "pageout",
        "written, MADV_PAGEOUT (swapped out)",
        False,
        _pageout,
        "swap > 0; rss + swap = touched",
    ),
    State(
        "uffd",
        "userfaultfd (missing mode) registered",
        False,
        _uffd,
        "VM_UFFD_MISSING; rss + swap = pages touched before registering",
    ),
    State(
        "secret",
        "memfd_secret, some pages written",
        False,
        _secret,
        "perms rw-s; rss = pages written",
    ),
    State(
        "growsdown",
        "MAP_GROWSDOWN, top pages written",
        True,
        _growsdown,
        "VM_GROWSDOWN, not grown; rss + swap = touched",
    ),
    State(
        "guard",
        "written, MADV_GUARD_INSTALL on 16 pages",
        False,
        _guard,
        "guarded pages are zapped: rss + swap = touched - guarded, present = rss",
    ),
)
BY_ACTION = {s.action: s for s in STATES}


def done(p: Point) -> bool:
    return not p.get("skipped")


def step_verification(exp: Experiment, p: Point) -> dict[str, Any]:
    """The verification of the checkpoint ``p`` (empty if it has none)."""
    return next((x for x in exp.verifications if x.get("step") == p.get("step")), {})


def parse_prepare(output: str) -> dict[str, object]:
    """``key=value`` lines of PREPARE_COMMAND (numbers converted)."""
    out: dict[str, object] = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.isidentifier():
            out[key] = int(value) if value.isdigit() else value
    return out


class Zoo(Scenario):
    name = "zoo"
    title = "Page-state zoo: one region per page state"
    actions = tuple(s.action for s in STATES)

    def __init__(self) -> None:
        self.undo: dict[str, object] = {}  # what prepare() changed in the guest

    def prepare(self, remote: Remote, exp: Experiment) -> None:
        """Reserve hugetlb pages and give the guest swap; record both (and THP's settings)."""
        exp.baseline = parse_prepare(remote.run(PREPARE_COMMAND).stdout)
        self.undo = dict(exp.baseline)

    def run(self, remote: Remote, out_dir: Path) -> Experiment:
        """The scenario, then the guest as it was: hugetlb pages and swap file undone."""
        self.undo = {}
        try:
            return super().run(remote, out_dir)
        finally:
            self.cleanup(remote, self.undo)

    @staticmethod
    def cleanup(remote: Remote, baseline: dict[str, object]) -> None:
        commands = []
        if isinstance(baseline.get("before_hugepages"), int):
            commands.append(f"echo {baseline['before_hugepages']} > /proc/sys/vm/nr_hugepages")
        if baseline.get("swapfile") == SWAPFILE:
            commands.append(f"swapoff {SWAPFILE} && rm -f {SWAPFILE}")
        if commands:
            remote.run("; ".join(commands))

    @staticmethod
    def _capture(
        remote: Remote, pid: int, checkpoint: Point, exp: Experiment, va: int | None = None
    ) -> None:
        """Capture as every scenario does, translating the region's first address too."""
        region = checkpoint.get("region")
        if va is None and isinstance(region, int):
            va = region
        Scenario._capture(remote, pid, checkpoint, exp, va=va)

    def check(self, exp: Experiment) -> None:
        seen = [str(p.get("action")) for p in exp.points]
        missing = [s.action for s in STATES if s.action not in seen]
        twice = sorted({a for a in seen if seen.count(a) > 1})
        exp.rule(
            "every state has one checkpoint, done or skipped",
            not missing and not twice,
            f"missing: {', '.join(missing) or 'none'}; repeated: {', '.join(twice) or 'none'}",
        )
        for p in exp.points:
            state = BY_ACTION.get(str(p.get("action")))
            if state is None:
                continue
            if not done(p):
                self._check_skip(exp, state, p)
                continue
            start, size = v(p, "start"), v(p, "size")
            exp.rule(
                f"{state.action}: the region is one VMA of its own",
                start == n(p, "region") and size == n(p, "bytes"),
                f"region {n(p, 'region'):#x} + {n(p, 'bytes')} bytes; "
                f"its VMA {start:#x} + {size} bytes",
            )
            ok, seen_text = state.rule(p)
            exp.rule(f"{state.action}: {state.expect}", ok, seen_text)

    @staticmethod
    def _check_skip(exp: Experiment, state: State, p: Point) -> None:
        reason = str(p.get("reason") or "")
        exp.rule(f"{state.action}: a skipped state says why", bool(reason), reason or "no reason")
        if state.always:
            exp.rule(f"{state.action}: every kernel can do it, not skipped", False, reason)
        elif state.action == "hugetlb" and n(exp.baseline, "hugepages") >= 2:
            exp.rule(
                "hugetlb: not skipped with huge pages reserved",
                False,
                f"{exp.baseline.get('hugepages')} huge pages reserved; {reason}",
            )
        elif state.action == "pageout" and reason == "no_swap" and n(exp.baseline, "swap_kb"):
            exp.rule(
                "pageout: not skipped for want of swap when the guest has swap",
                False,
                f"SwapTotal {exp.baseline.get('swap_kb')} kB; {reason}",
            )

    def summary(self, exp: Experiment) -> list[str]:
        states = [p for p in exp.points if p.get("action") in BY_ACTION]
        if not states:
            return ["The app recorded no page-state checkpoint."]
        did = [p for p in states if done(p)]
        skipped = [p for p in states if not done(p)]
        verified = sum(1 for p in states if step_verification(exp, p).get("ok"))
        text = [
            f"On kernel {exp.kernel} the app put {len(did)} of {len(STATES)} regions into "
            f"their page state; at each of the {len(states)} checkpoints the module's record "
            f"was compared with maps, smaps, statm, status and the region's pagemap entry, "
            f"and {verified} of those verifications passed. Every region stayed mapped to "
            "the end, so the last checkpoint checked all states together."
        ]
        if skipped:
            text.append(
                "Skipped, as the kernel or guest could not do them: "
                + "; ".join(f"{p.get('action')} ({p.get('reason')})" for p in skipped)
                + "."
            )
        b = exp.baseline
        text.append(
            f"Prepared: {b.get('hugepages', '?')} hugetlb pages of 2 MiB "
            f"(there were {b.get('before_hugepages', '?')}), "
            f"{b.get('swap_kb', '?')} kB of swap"
            + (f" on {b['swapfile']}" if b.get("swapfile") else "")
            + f"; THP {b.get('thp_enabled', '?')}, huge zero page "
            + ("on." if str(b.get("thp_use_zero_page")) == "1" else "off.")
        )
        return text

    def tables(self, exp: Experiment) -> list[Table]:
        rows = []
        for p in exp.points:
            state = BY_ACTION.get(str(p.get("action")))
            if state is None:
                continue
            check = step_verification(exp, p)
            failed = sum(1 for c in check.get("checks") or [] if not c.get("ok"))
            agree = "-" if not check else "yes" if check.get("ok") else f"no ({failed} checks)"
            if not done(p):
                rows.append(
                    [state.action, state.label, f"skipped: {p.get('reason')}"] + ["-"] * 5 + [agree]
                )
                continue
            rows.append(
                [
                    state.action,
                    state.label,
                    f"{vma(p).get('perms')} {human_bytes(v(p, 'size'))}",
                    str(v(p, "rss")),
                    str(v(p, "present")),
                    str(v(p, "swap")),
                    str(v(p, "hugetlb")),
                    str(n(p, "touched")),
                    agree,
                ]
            )
        caption = (
            "Each state's region as the module counted it at that state's checkpoint, in 4 KiB "
            "pages (rss, present, swap, hugetlb of the region's VMA), and whether the whole "
            "record agreed with /proc (maps, smaps Rss/Swap/*_Hugetlb per VMA, statm, status, "
            "pagemap) there."
        )
        header = [
            "state",
            "what the app did",
            "VMA",
            "rss",
            "present",
            "swap",
            "hugetlb",
            "written",
            "agrees with /proc",
        ]
        return [Table(caption, header, rows)]
