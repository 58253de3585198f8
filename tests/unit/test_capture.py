"""Two channels: the record read from /proc/procmem, and its printk lines checked against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from memlayout.module import capture, verify
from memlayout.module.capture import compare_printk, logged_lines, parse_capture

CAPTURE = Path(__file__).parents[1] / "data" / "bookworm-sshd.capture"


@pytest.fixture(scope="module")
def old() -> dict[str, str]:
    """The sections of a capture taken before the file channel existed (dmesg only)."""
    return capture.split_sections(CAPTURE.read_text())


@pytest.fixture(scope="module")
def lines(old: dict[str, str]) -> list[str]:
    return logged_lines(old["dmesg"])


def new_capture(old: dict[str, str], record: list[str], dmesg: list[str], mark: bool) -> str:
    """A capture as capture.sh writes it now: the file's record, then the log."""
    sections = dict(old)
    sections["record"] = "\n".join(record)
    logged = [f"[  123.{i:06d}] {line}" for i, line in enumerate(dmesg)]
    head = ["memlayout-log mark=1", "[  123.000000] memlayout-mark capture"] if mark else []
    sections["dmesg"] = "\n".join(
        [*head, "[  123.5] procmem: loading out-of-tree module taints kernel.", *logged]
    )
    order = ["meta", "maps", "stat", "statm", "status", "smaps", "ps", "top", "system"]
    order += ["pagemap", "insmod", "record", "dmesg", "end"]
    if not mark:
        sections["dmesg"] = "memlayout-log mark=0\n" + sections["dmesg"]
    return "\n".join(f"=== {name} ===\n{sections.get(name, '')}" for name in order)


def test_the_log_lines_are_the_records_lines(lines: list[str]) -> None:
    assert lines[0].startswith("procmem: begin ") and lines[-1].startswith("procmem: end ")
    assert not any("taints kernel" in line for line in lines)


def test_a_whole_log_equals_the_file(old: dict[str, str], lines: list[str]) -> None:
    cap = parse_capture(286, new_capture(old, lines, lines, mark=True))
    assert cap.record is not None and cap.record.lines == lines
    assert cap.printk is not None and cap.printk.status == "equal" and cap.printk.ok
    result = verify.verify(cap)
    assert result.ok, result.table()
    assert result.to_json()["printk"]["log_overflowed"] is False


def test_an_overflowed_log_is_a_suffix_and_the_file_still_verifies(
    old: dict[str, str], lines: list[str]
) -> None:
    cap = parse_capture(286, new_capture(old, lines, lines[100:], mark=False))
    assert cap.printk is not None and cap.printk.status == "suffix" and cap.printk.ok
    result = verify.verify(cap)
    assert result.ok, result.table()
    printk = result.to_json()["printk"]
    assert printk["log_overflowed"] is True and printk["lost_from_dmesg"] == 100


def test_lines_lost_while_the_mark_survived_are_a_mismatch(
    old: dict[str, str], lines: list[str]
) -> None:
    cap = parse_capture(286, new_capture(old, lines, lines[100:], mark=True))
    assert cap.printk is not None and not cap.printk.ok
    assert "printk lines (dmesg) = /proc/procmem" in {c.name for c in verify.verify(cap).failures}


@pytest.mark.parametrize("mark", [True, False])
def test_a_changed_or_missing_line_is_a_mismatch(lines: list[str], mark: bool) -> None:
    head = "memlayout-log mark=1\n" if mark else "memlayout-log mark=0\n"
    i = next(n for n, line in enumerate(lines) if " rss=" in line)
    changed = [*lines[:i], lines[i].replace(" rss=", " rss=9"), *lines[i + 1 :]]
    assert compare_printk(lines, head + "\n".join(changed)).status == "mismatch"
    holed = lines[:i] + lines[i + 1 :]
    assert compare_printk(lines, head + "\n".join(holed)).status == "mismatch"
    assert compare_printk(lines, head).status == "mismatch"  # printk printed nothing


def test_an_old_capture_reads_the_record_from_the_log(old: dict[str, str]) -> None:
    cap = parse_capture(286, CAPTURE.read_text())
    assert cap.record is not None and cap.printk is None
    assert "printk" not in {c.name.split()[0] for c in verify.verify(cap).checks}


def test_an_error_record_with_insmod_succeeding_is_a_failure(old: dict[str, str]) -> None:
    error = ["procmem: error tag=capture pid=286 errno=-3 reason=no_such_process"]
    cap = parse_capture(286, new_capture(old, error, error, mark=True))
    assert cap.insmod_status == 0 and cap.errno_name == "ESRCH"
    failure = cap.failure()
    assert failure is not None and "no_such_process" in failure
    result = verify.verify(cap)
    assert not result.ok and result.failures[0].name == "module record"


def test_a_failed_load_leaves_its_error_in_the_log(old: dict[str, str]) -> None:
    text = new_capture(old, [], ["procmem: error tag=- pid=1 errno=-12 reason=out_of_memory"], True)
    cap = parse_capture(1, text.replace("insmod_status=0", "insmod_status=1"))
    assert cap.record is not None and cap.record.errors and cap.printk is None
    assert cap.errno_name == "ENOMEM"
