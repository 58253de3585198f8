"""The assignment's own steps on a real guest: Step 1's hello module, the PCB-list walk,
and the tools it names (ps aux, top) against the module's numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.experiments import app
from memlayout.guest.session import Session
from memlayout.module import hello, lookup, verify
from memlayout.module.capture import capture
from memlayout.rundir import GuestDir


def test_hello_prints_its_lines_and_refuses_bad_parameters(guest: Session, tmp_path: Path) -> None:
    result = hello.run(guest.remote, GuestDir(tmp_path / "g"), whom="tester", times=2)
    assert result.ok, result.failures
    assert result.load.records() == hello.expected_records("tester", 2)
    assert result.bad.status != 0
    assert (tmp_path / "g" / "hello.json").exists()


@pytest.fixture
def targets(guest: Session) -> Iterator[dict[str, int]]:
    shell = int(guest.remote.run("setsid sh -c 'sleep 300' >/dev/null 2>&1 & echo $!").stdout)
    threaded = app.start(guest.remote, "threads", 4)
    threaded.next_checkpoint()
    yield {"init": 1, "shell": shell, "threaded app": threaded.pid}
    guest.remote.run(f"kill {shell}")
    threaded.stop()


@pytest.mark.parametrize("name", ["init", "shell", "threaded app"])
def test_find_list_finds_the_same_task_as_the_pid_lookup(
    guest: Session, targets: dict[str, int], name: str
) -> None:
    comparison = lookup.compare(guest.remote, name, targets[name])
    assert comparison.same, comparison.found
    assert comparison.found["list"].split()[0] == str(targets[name])


def test_a_missing_pid_fails_the_same_way_with_both_lookups(guest: Session) -> None:
    comparison = lookup.compare(guest.remote, "missing", lookup.MISSING_PID)
    assert comparison.found == {"pid": "error ESRCH", "list": "error ESRCH"}


def test_find_list_refuses_a_thread_id(guest: Session, targets: dict[str, int]) -> None:
    pid = targets["threaded app"]
    tids = guest.remote.run(f"ls /proc/{pid}/task").stdout.split()
    tid = next(int(t) for t in tids if int(t) != pid)
    assert lookup.what_was_found(lookup.load_with(guest.remote, tid, "pid")).startswith(str(tid))
    cap = lookup.load_with(guest.remote, tid, "list")
    assert cap.errno_name == "ESRCH" and cap.record is not None
    assert cap.record.errors[0]["reason"] == "find_mismatch"


@pytest.mark.parametrize("name", ["init", "shell", "threaded app"])
def test_ps_and_top_show_the_modules_total_vm_and_rss(
    guest: Session, targets: dict[str, int], name: str
) -> None:
    result = verify.verify(capture(guest.remote, targets[name]))
    tools = [c for c in result.checks if "(ps aux)" in c.name or "(top)" in c.name]
    assert len(tools) == 4, [c.name for c in result.checks]
    assert all(c.ok for c in tools), result.table()


def test_lookup_stage_compares_and_times_both(guest: Session, tmp_path: Path) -> None:
    result = lookup.run(guest.remote, GuestDir(tmp_path / "g"))
    assert not result.failures
    assert len(result.comparisons) == 4
    for cost in result.costs:
        assert cost.processes > lookup.EXTRA_PROCESSES
        assert all(ns > 0 for ns in cost.median_ns.values()), cost
