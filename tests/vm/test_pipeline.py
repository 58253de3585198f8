"""The experiments, the insmod/rmmod cycles and `invoke all`, on a real guest."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from memlayout import experiments
from memlayout.experiments.heap import MMAP_THRESHOLD
from memlayout.guest.session import Session
from memlayout.module import cycles
from memlayout.paths import REPO_ROOT
from memlayout.report import submission
from memlayout.rundir import RunDir

from .conftest import DEFAULT_TEST_GUEST


@pytest.mark.parametrize("scenario", experiments.SCENARIOS)
def test_scenario_obeys_the_rules_and_verifies(
    guest: Session, scenario: str, tmp_path: Path
) -> None:
    exp = experiments.select(scenario).run(guest.remote, tmp_path)
    assert len(exp.points) >= 3 and exp.rules
    broken = [f"{r.name}: {r.detail}" for r in exp.rules if not r.ok]
    assert not broken
    assert all(v["ok"] for v in exp.verifications)
    assert (tmp_path / f"{scenario}.json").exists()


def test_heap_switches_to_mmap_at_the_threshold(guest: Session, tmp_path: Path) -> None:
    exp = experiments.select("heap").run(guest.remote, tmp_path)
    mallocs = [p for p in exp.points if p.get("action") == "malloc"]
    first_mapped = min(int(p["bytes"]) for p in mallocs if p["ptr_vma"]["kind"] == "anon")
    last_heap = max(int(p["bytes"]) for p in mallocs if p["ptr_vma"]["kind"] == "heap")
    assert last_heap < MMAP_THRESHOLD <= first_mapped


def test_insmod_rmmod_cycles_are_clean(guest: Session) -> None:
    stats = cycles.run(guest.remote, 150)
    summary = stats.summary()
    assert stats.ok, summary
    assert summary["count"] == 150 and summary["failed_loads"] == 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_stress_cycles_against_a_churning_target(guest: Session) -> None:
    count = int(os.environ.get("MEMLAYOUT_STRESS_CYCLES", "1000"))
    stats = cycles.run(guest.remote, count, stress=True)
    summary = stats.summary()
    assert summary["count"] == count
    assert stats.ok, summary  # no oops, BUG or warning; every load left a whole record


def test_bundle_builds_and_loads_inside_the_guest(guest: Session, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.report_pdf.write_bytes(b"%PDF-1.7")
    bundle = submission.make_bundle(run, submission.Submission())
    guest.remote.put(bundle, "/tmp/submission.tar.gz")
    out = guest.remote.run(
        "set -e; rm -rf /tmp/unpacked; mkdir /tmp/unpacked; cd /tmp/unpacked; "
        "tar xzf /tmp/submission.tar.gz; cd procmem-submission/kernel-module; "
        "make >/dev/null 2>&1; insmod procmem.ko pid=$$; rmmod procmem; "
        "dmesg | grep -c 'procmem: end '",
        timeout=600,
    )
    assert out.status == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 1


def test_invoke_all_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, MEMLAYOUT_RUNS=str(tmp_path / "runs"))
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "all", "--guest", DEFAULT_TEST_GUEST,
         "--author", "Test Student:t1", "--cycles", "50"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Path(proc.stdout.strip().splitlines()[-1])
    run = report.parent
    assert report.name == "report.pdf" and report.stat().st_size > 10_000
    assert (tmp_path / "runs" / "latest").resolve() == run
    g = run / DEFAULT_TEST_GUEST
    for rel in (
        "report.html",
        "run.json",
        f"{DEFAULT_TEST_GUEST}/console.log",
        f"{DEFAULT_TEST_GUEST}/dmesg.txt",
        f"{DEFAULT_TEST_GUEST}/targets.json",
        f"{DEFAULT_TEST_GUEST}/verify.json",
        f"{DEFAULT_TEST_GUEST}/cycles.json",
        f"{DEFAULT_TEST_GUEST}/experiments/heap.json",
        f"{DEFAULT_TEST_GUEST}/plots/heap.png",
        f"{DEFAULT_TEST_GUEST}/plots/stack.svg",
    ):
        assert (run / rel).exists(), rel
    assert (g / "guest.json").exists()
    with tarfile.open(run / "submission.tar.gz") as tf:
        assert "procmem-submission/report.pdf" in tf.getnames()
