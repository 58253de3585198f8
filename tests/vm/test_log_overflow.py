"""A record larger than the kernel log: dmesg loses its start, /proc/procmem keeps it all.

The guest boots with the distribution's log buffer (128 KiB on Debian, not the
pipeline's log_buf_len=16M); a process with 3000 VMAs prints about 480 KiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.experiments import app
from memlayout.guest.console import find_trouble
from memlayout.guest.session import Session
from memlayout.module import verify
from memlayout.module.build import full_dmesg
from memlayout.module.capture import capture

from .conftest import DEFAULT_TEST_GUEST, SMALL_LOG_ARGS, boot_session


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    run_dir: Path = tmp_path_factory.mktemp("small-log")
    yield from boot_session(DEFAULT_TEST_GUEST, run_dir, SMALL_LOG_ARGS)


def test_3000_vmas_verify_from_the_file_when_dmesg_lost_the_start(small_log: Session) -> None:
    proc = app.start(small_log.remote, "maps", 3000)
    try:
        assert proc.next_checkpoint() is not None
        cap = capture(small_log.remote, proc.pid)
    finally:
        proc.stop()
    result = verify.verify(cap)
    assert result.ok, result.table()
    assert cap.record is not None and len(cap.record.vmas) > 3000
    assert cap.record.lines[0].startswith("procmem: begin ")
    p = cap.printk
    assert p is not None and p.log_overflowed and p.status == "suffix", p
    assert 0 < p.dmesg_lines < p.file_lines
    assert result.to_json()["printk"]["lost_from_dmesg"] == p.file_lines - p.dmesg_lines


def test_a_small_record_is_logged_whole(small_log: Session) -> None:
    cap = capture(small_log.remote, 1)
    result = verify.verify(cap)
    assert result.ok, result.table()
    assert cap.printk is not None and not cap.printk.log_overflowed
    assert cap.printk.status == "equal"


def test_no_kernel_trouble_with_a_small_log(small_log: Session) -> None:
    assert find_trouble(full_dmesg(small_log.remote)) is None
