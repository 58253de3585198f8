"""The pipeline's bookkeeping without a VM: stage results, failures, run.json, report, bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from memlayout import pipeline
from memlayout.errors import ReportError, UsageError, VMError
from memlayout.guest.session import GuestOptions
from memlayout.report.submission import Submission
from memlayout.rundir import GuestDir, RunDir

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


def shape(value: Any) -> Any:
    """Keys and value types, not values: what the golden file pins."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
def fake_guests(monkeypatch: pytest.MonkeyPatch) -> None:
    """bookworm "runs" with one failed check; bullseye cannot boot."""

    def run_guest(opts: GuestOptions, files: GuestDir, plan: pipeline.Plan, **kw: Any
                  ) -> pipeline.GuestRun:  # fmt: skip
        if opts.guest == "debian-bullseye":
            raise VMError("debian-bullseye: QEMU exited early with status 1\n--- console ---")
        files.create().guest_json.write_text(json.dumps({"kernel_release": "6.1.0-test"}))
        return pipeline.GuestRun(
            opts.guest, files, stages={"boot": 1.5, "build": 2.0}, failures=["verify init: vma end"]
        )

    monkeypatch.setattr(pipeline, "run_guest", run_guest)


def test_run_all_records_every_failure_and_still_renders(fake_guests: None, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    guests = [GuestOptions("debian-bookworm"), GuestOptions("debian-bullseye")]
    result = pipeline.run_all(guests, run, pipeline.Plan(), Submission(), report=lambda _m: None)
    assert not result.ok
    assert result.failures == [
        "debian-bookworm: verify init: vma end",
        "debian-bullseye: debian-bullseye: QEMU exited early with status 1",
    ]
    assert run.report_pdf.stat().st_size > 10_000 and result.bundle.exists()
    summary = json.loads(run.run_json.read_text())
    assert summary["stages"]["debian-bookworm"] == {"boot": 1.5, "build": 2.0}
    assert summary["ok"] is False and summary["bundle"] == str(result.bundle)


def test_run_json_has_the_golden_shape(fake_guests: None, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    pipeline.run_all([GuestOptions()], run, pipeline.Plan(), Submission(), report=lambda _m: None)
    golden = json.loads((GOLDEN / "run-json-shape.json").read_text())
    assert shape(json.loads(run.run_json.read_text())) == golden


def test_unknown_stage_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown stages"):
        pipeline.Plan(stages=("build", "deploy"))


def test_unknown_guest_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="known guests"):
        GuestOptions("debian-potato")


def test_run_all_without_a_pdf_library_keeps_run_json_and_names_the_error(
    fake_guests: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    monkeypatch.setitem(sys.modules, "weasyprint", None)
    with pytest.raises(ReportError):
        pipeline.run_all([GuestOptions()], run, pipeline.Plan(), Submission(), report=print)
    summary = json.loads(run.run_json.read_text())
    assert summary["stages"]["debian-bookworm"] == {"boot": 1.5, "build": 2.0}
    assert "invoke report --run" in summary["report_error"]
    assert run.report_html.exists() and not run.report_pdf.exists()


@pytest.mark.parametrize(
    ("prefixes", "links"),
    [
        (["all"], {"latest": 0}),
        (["all", "verify-debian-bookworm"], {"latest": 0, "latest-verify": 1}),
        (["all", "up-debian-bookworm", "all"], {"latest": 2, "latest-up": 1}),
    ],
)
def test_latest_follows_invoke_all_and_each_task_has_its_own(
    tmp_path: Path, prefixes: list[str], links: dict[str, int]
) -> None:
    runs = [RunDir.new(prefix, base=tmp_path) for prefix in prefixes]
    made = {p.name: runs.index(RunDir(p.resolve())) for p in tmp_path.iterdir() if p.is_symlink()}
    assert made == links
