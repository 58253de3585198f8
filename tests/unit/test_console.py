from pathlib import Path

import pytest

from memlayout.guest.console import ConsoleWatcher, find_trouble, tail

BAD = [
    "[    5.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
    "[   12.0] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "[   12.0] Oops: 0002 [#1] PREEMPT SMP PTI",
    "[   12.0] Oops[#1]",
    "[   12.0] WARNING: CPU: 1 PID: 812 at mm/memory.c:123 do_thing+0x1/0x2",
    "[   12.0] general protection fault, probably for non-canonical address 0xdead",
    "[   12.0] Call Trace:",
    "[  245.1] INFO: task insmod:812 blocked for more than 120 seconds.",
    "[   30.2] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "[   30.2] rcu: INFO: rcu_sched self-detected stall on CPU",
    "[   30.2] INFO: rcu_sched detected stalls on CPUs/tasks: { 1} (detected by 0)",
    "[   40.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [insmod:812]",
]
GOOD = [
    "[    0.0] Linux version 6.1.0-56-amd64",
    "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.",
    "WARNING: this line is from userspace, not a kernel WARN",
    "[    1.0] BUGS: none",
]


@pytest.mark.parametrize("line", BAD)
def test_kernel_failures_are_found(line: str) -> None:
    assert find_trouble("boot\n" + line + "\nmore") == line.strip()


@pytest.mark.parametrize("line", GOOD)
def test_ordinary_lines_are_not_trouble(line: str) -> None:
    assert find_trouble(line) is None


def test_watcher_reads_incrementally_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    assert watcher.poll() is None  # no file yet
    log.write_text("booting\r\n[ 1.0] Kernel pa")
    assert watcher.poll() is None  # the marker is still cut in half
    with log.open("a") as f:
        f.write("nic - not syncing: boom\n")
    assert watcher.poll() == "[ 1.0] Kernel panic - not syncing: boom"


def test_tail_gives_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("".join(f"line {i}\r\n" for i in range(100)))
    assert tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert tail(tmp_path / "missing.log") == ""
