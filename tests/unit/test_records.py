"""The module's output format, parsed from a real capture (tests/data/*.capture)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from memlayout.errors import RecordError
from memlayout.module import capture, records
from memlayout.module.records import LINE_RE, parse, parse_line

CAPTURE = Path(__file__).parents[1] / "data" / "bookworm-sshd.capture"


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return capture.split_sections(CAPTURE.read_text())


@pytest.fixture(scope="module")
def record(sections: dict[str, str]) -> records.ProcRecord:
    return parse(sections["dmesg"])


def test_every_module_line_matches_the_one_regex(sections: dict[str, str]) -> None:
    lines = [
        ln[ln.find("procmem: ") :] for ln in sections["dmesg"].splitlines() if "procmem: " in ln
    ]
    ours = [ln for ln in lines if "taints kernel" not in ln and "verification failed" not in ln]
    assert ours and all(LINE_RE.match(ln) for ln in ours)


def test_header_and_counts(record: records.ProcRecord) -> None:
    assert record.begin["comm"] == "sshd" and record.pid == 286
    assert record.begin["levels"] == 4 and record.begin["pti"] == 1
    assert int(record.end["records"]) == len(record.lines)
    assert len(record.vmas) == record.counters["map_count"]


def test_vmas_are_in_address_order_and_do_not_overlap(record: records.ProcRecord) -> None:
    bounds = [(int(v["start"]), int(v["end"])) for v in record.vmas]
    assert all(s < e for s, e in bounds)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(bounds))
    assert all(int(v["size"]) == int(v["end"]) - int(v["start"]) for v in record.vmas)


def test_json_has_the_documented_shape(record: records.ProcRecord) -> None:
    data = record.to_json()
    assert {"pid", "comm", "kernel", "mm", "vmas", "pgd"} <= data.keys()
    assert {"start_code", "end_code", "start_brk", "brk", "rss_pages", "total_vm_pages"} <= set(
        data["mm"]
    )
    assert all(isinstance(v["start"], int) for v in data["vmas"])
    kernel_entries = [e for e in data["pgd"] if e["table"] == "kernel"]
    assert len(kernel_entries) == record.pgd_summary["kernel"]["present"]
    assert data["va"]["frame"]["pfn"] > 0 and len(data["va"]["levels"]) == 4


def test_pti_user_copy_is_one_page_above_the_kernel_copy(record: records.ProcRecord) -> None:
    assert int(record.pgd["user"]["pa"]) == int(record.pgd["kernel"]["pa"]) + 4096
    user_half = [e for e in record.pgd_entries["kernel"] if int(e["idx"]) < 256]
    # PTI sets NX on the kernel copy's user entries.
    assert user_half and all("NX" in str(e["flags"]).split("|") for e in user_half)


def test_escaped_values_are_unescaped() -> None:
    parsed = parse_line(r"procmem: vma idx=1 file=/tmp/a\040b\134c perms=rw-p start=0x10")
    assert parsed == ("vma", {"idx": 1, "file": "/tmp/a b\\c", "perms": "rw-p", "start": 16})


def test_foreign_lines_are_ignored() -> None:
    assert parse_line("[ 1.0] e1000: link up") is None
    assert parse_line("procmem: loading out-of-tree module taints kernel.") is None


def test_a_lost_line_is_detected(sections: dict[str, str]) -> None:
    lines = sections["dmesg"].splitlines()
    victim = next(i for i, ln in enumerate(lines) if "procmem: vma " in ln)
    with pytest.raises(RecordError, match="lost"):
        parse("\n".join(lines[:victim] + lines[victim + 1 :]))


def test_a_cut_record_is_detected(sections: dict[str, str]) -> None:
    text = sections["dmesg"]
    with pytest.raises(RecordError, match="no 'end' line"):
        parse(text[: text.index("procmem: end ")])


def test_tag_selects_one_load() -> None:
    text = (
        "procmem: begin tag=aaa pid=1 comm=x\nprocmem: end tag=aaa pid=1 records=2\n"
        "procmem: begin tag=bbb pid=2 comm=y\nprocmem: end tag=bbb pid=2 records=2\n"
    )
    assert parse(text, tag="bbb").pid == 2


def test_error_record_without_begin() -> None:
    rec = parse("procmem: error tag=- pid=0 errno=-22 reason=pid_not_set")
    assert rec.errors == [{"tag": "-", "pid": 0, "errno": -22, "reason": "pid_not_set"}]
