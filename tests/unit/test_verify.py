"""The verifier on a real capture: all checks pass, and each kind of lie is caught by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from memlayout.module import capture, records, verify

CAPTURE = Path(__file__).parents[1] / "data" / "bookworm-sshd.capture"


@pytest.fixture
def cap() -> capture.Capture:
    sections = capture.split_sections(CAPTURE.read_text())
    return capture.Capture(293, sections, 0, "", records.parse(sections["dmesg"]))


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
        (lambda r: r.regions["code"].update(start=1), "mm start_code (stat)"),
        (lambda r: r.regions["env"].update(end=2), "mm env_end (stat)"),
        (lambda r: r.counters.update(rss=1), "rss pages (statm resident)"),
        (lambda r: r.counters.update(total_vm=1), "total_vm pages (statm size)"),
        (lambda r: r.va_frame.update(pfn=1), "va 0x5559d6a0e000 frame (pagemap PFN)"),
    ],
)
def test_each_lie_is_named(cap: capture.Capture, mutate, check: str) -> None:  # type: ignore[no-untyped-def]
    assert cap.record is not None
    cap.record = copy.deepcopy(cap.record)
    mutate(cap.record)
    assert check in failing(cap)


def test_no_record_is_a_failure(cap: capture.Capture) -> None:
    cap.record = None
    cap.record_error = "no 'begin' line"
    result = verify.verify(cap)
    assert not result.ok and result.failures[0].name == "module record"
