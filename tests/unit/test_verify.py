"""The verifier on a real capture: all checks pass, and each kind of lie is caught by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from memlayout.module import capture, records, verify
from memlayout.module import procviews as pv

CAPTURE = Path(__file__).parents[1] / "data" / "bookworm-sshd.capture"


@pytest.fixture
def cap() -> capture.Capture:
    sections = capture.split_sections(CAPTURE.read_text())
    return capture.Capture(286, sections, 0, "", records.parse(sections["dmesg"]))


def test_real_capture_verifies_clean(cap: capture.Capture) -> None:
    result = verify.verify(cap)
    assert result.ok, result.table()
    names = {c.name for c in result.checks}
    assert {"vma count", "rss pages (statm resident)", "mm start_code (stat)"} <= names
    assert any(n.startswith("va ") and "frame" in n for n in names)


def failing(cap: capture.Capture) -> set[str]:
    return {c.name for c in verify.verify(cap).failures}


def first_anon_vma(rec: records.ProcRecord) -> dict[str, int | str]:
    return next(v for v in rec.vmas if v.get("file") == "" and int(v.get("rss", 0)) > 0)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda r: r.vmas.pop(), "vma count"),
        (lambda r: r.vmas[3].update(end=int(r.vmas[3]["end"]) + 4096), "vma end"),
        (lambda r: r.vmas[0].update(perms="rwxp"), "vma perms"),
        (lambda r: r.vmas[1].update(pgoff=0x123000), "vma offset"),
        (lambda r: r.vmas[0].update(file="/usr/bin/impostor"), "vma file"),
        (lambda r: first_anon_vma(r).update(rss=10**6), "vma resident pages (smaps Rss)"),
        (lambda r: first_anon_vma(r).update(pgoff=int(first_anon_vma(r)["start"])), "vma offset"),
        (lambda r: first_anon_vma(r).update(file="[anon:lie]"), "vma file"),
        (lambda r: first_anon_vma(r).update(swap=3), "vma swapped-out pages (smaps Swap)"),
        (lambda r: first_anon_vma(r).update(hugetlb=512), "vma hugetlb pages (smaps *_Hugetlb)"),
        (lambda r: r.regions["code"].update(start=1), "mm start_code (stat)"),
        (lambda r: r.regions["env"].update(end=2), "mm env_end (stat)"),
        (lambda r: r.counters.update(rss=1), "rss pages (statm resident)"),
        (lambda r: r.counters.update(total_vm=1), "total_vm pages (statm size)"),
        (lambda r: r.va_frame.update(pfn=1), "frame (pagemap PFN)"),
    ],
)
def test_each_lie_is_named(cap: capture.Capture, mutate, check: str) -> None:  # type: ignore[no-untyped-def]
    assert cap.record is not None
    cap.record = copy.deepcopy(cap.record)
    mutate(cap.record)
    assert any(name == check or name.endswith(f" {check}") for name in failing(cap)), failing(cap)


def test_no_record_is_a_failure(cap: capture.Capture) -> None:
    cap.record = None
    cap.record_error = "no 'begin' line"
    result = verify.verify(cap)
    assert not result.ok and result.failures[0].name == "module record"


def with_tools(cap: capture.Capture, vsz: int, rss: int, top_virt: str, top_res: str) -> None:
    cap.sections["ps"] = (
        "USER       PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND\n"
        f"root       {cap.pid}  0.0  0.9 {vsz} {rss} ?        Ts   10:00   0:00 sshd: /usr/sbin"
    )
    cap.sections["top"] = (
        "    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND\n"
        f"    {cap.pid} root      20   0 {top_virt} {top_res}   7000 T   0.0   0.9   0:00.01 sshd"
    )


def test_ps_and_top_columns_are_checked_against_total_vm_and_rss(cap: capture.Capture) -> None:
    assert cap.record is not None
    total_kib = int(cap.record.counters["total_vm"]) * 4
    rss_kib = int(cap.record.counters["rss"]) * 4
    with_tools(cap, total_kib, rss_kib, str(total_kib), str(rss_kib))
    tools = [c for c in verify.verify(cap).checks if "(ps aux)" in c.name or "(top)" in c.name]
    assert len(tools) == 4 and all(c.ok for c in tools)
    with_tools(cap, total_kib + 4, rss_kib, str(total_kib), str(rss_kib - 4))
    assert failing(cap) == {"VSZ KiB (ps aux) = total_vm", "RES KiB (top) = rss"}


def test_scaled_top_cells_are_compared_at_tops_precision(cap: capture.Capture) -> None:
    assert cap.record is not None
    total_kib = int(cap.record.counters["total_vm"]) * 4
    rss_kib = int(cap.record.counters["rss"]) * 4
    with_tools(cap, total_kib, rss_kib, f"{total_kib / 1024:.1f}m", str(rss_kib))
    assert not failing(cap)
    with_tools(cap, total_kib, rss_kib, f"{total_kib * 2 / 1024:.1f}m", str(rss_kib))
    assert failing(cap) == {"VIRT KiB (top) = total_vm"}


def test_only_named_kernel_differences_are_tolerated() -> None:
    stack_mark = pv.MapsEntry(0x7F00, 0x8000, "rw-p", 0, "00:00", 0, "[stack:1234]")
    assert verify.expected_file(stack_mark, (4, 4)) == ""  # STACK_TID_MARKS, before 4.5
    assert verify.expected_file(stack_mark, (6, 1)) == "[stack:1234]"
    named = pv.MapsEntry(0x7F00, 0x8000, "rw-p", 0, "00:00", 0, "[anon:jit]")
    assert verify.expected_file(named, (6, 1)) == "[anon:jit]"
