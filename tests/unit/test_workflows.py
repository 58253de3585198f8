"""The GitHub Actions workflows: actionlint-clean, set up as the README says, all guests run.

actionlint runs its shellcheck integration on `run:` scripts only when shellcheck is on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from memlayout.guest import profiles as guests
from memlayout.paths import REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
NIGHTLY_GUESTS = {"debian-bookworm", "debian-trixie", "debian-bullseye", "ubuntu-xenial"}
CHECK_ACCEL = REPO_ROOT / "ci" / "check-accel.sh"


def actionlint_binary() -> str:
    """The actionlint installed next to this Python (by ci/setup.sh), else one on PATH."""
    beside_python = Path(sys.executable).parent / "actionlint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint is not installed: run bash ci/setup.sh (requirements.txt pins it)")
    return found


def load_workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def job_scripts(job: dict[str, Any]) -> str:
    """Every `run:` script of a job, joined."""
    return "\n".join(str(step.get("run", "")) for step in job.get("steps", []))


def test_workflows_exist() -> None:
    assert {path.name for path in WORKFLOW_FILES} >= {"nightly.yml", "pr.yml"}


def test_actionlint_reports_nothing() -> None:
    result = subprocess.run(
        [actionlint_binary(), "-no-color", *map(str, WORKFLOW_FILES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0 and not report.strip(), f"actionlint:\n{report}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_job_runs_the_readme_setup(path: Path) -> None:
    jobs: dict[str, dict[str, Any]] = load_workflow(path)["jobs"]
    without_setup = [name for name, job in jobs.items() if "ci/setup.sh" not in job_scripts(job)]
    assert not without_setup, f"{path.name}: jobs not running bash ci/setup.sh: {without_setup}"


def test_nightly_matrix_lists_the_four_guests() -> None:
    jobs: dict[str, dict[str, Any]] = load_workflow(WORKFLOWS_DIR / "nightly.yml")["jobs"]
    matrix_guests = {
        guest
        for job in jobs.values()
        for guest in job.get("strategy", {}).get("matrix", {}).get("guest", [])
    }
    assert matrix_guests == NIGHTLY_GUESTS
    assert matrix_guests <= set(guests.PROFILES), "a nightly guest is not a known profile"


def run_check_accel(tmp_path: Path, guest_info: dict[str, str] | None) -> str:
    """Run ci/check-accel.sh on a fake run directory; return its output (it must exit 0)."""
    guest = "debian-bookworm"
    if guest_info is not None:
        (tmp_path / guest).mkdir()
        (tmp_path / guest / "guest.json").write_text(json.dumps(guest_info))
    env = {key: value for key, value in os.environ.items() if key != "GITHUB_STEP_SUMMARY"}
    result = subprocess.run(
        ["bash", str(CHECK_ACCEL), str(tmp_path), guest],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_check_accel_is_quiet_under_kvm(tmp_path: Path) -> None:
    info = {"accel": "kvm", "accel_reason": "probe boot printed", "clocksource": "kvm-clock"}
    output = run_check_accel(tmp_path, info)
    assert "accelerator kvm (probe boot printed)" in output
    assert "::warning::" not in output


def test_check_accel_warns_when_the_guest_clock_contradicts_kvm(tmp_path: Path) -> None:
    output = run_check_accel(tmp_path, {"accel": "kvm", "accel_reason": "x", "clocksource": "tsc"})
    assert "::warning::debian-bookworm: QEMU ran with KVM but the guest's clocksource is tsc" in (
        output
    )


def test_check_accel_warns_on_tcg(tmp_path: Path) -> None:
    output = run_check_accel(tmp_path, {"accel": "tcg", "accel_reason": "/dev/kvm does not exist"})
    assert "::warning::debian-bookworm ran under tcg, not KVM: /dev/kvm does not exist" in output


def test_check_accel_warns_without_guest_json(tmp_path: Path) -> None:
    assert "::warning::" in run_check_accel(tmp_path, None)


def load_runner_module() -> Any:
    """ci/workflow.py (a script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "workflow_runner", REPO_ROOT / "ci" / "workflow.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["workflow_runner"] = module
    spec.loader.exec_module(module)
    return module


runner_mod = load_runner_module()


def every_job() -> list[tuple[str, str, dict[str, str]]]:
    """(workflow, job, matrix entry) for every job and every entry of its matrix."""
    out = []
    for path in WORKFLOW_FILES:
        for job_id, job in load_workflow(path)["jobs"].items():
            entries = job.get("strategy", {}).get("matrix", {})
            keys = [k for k in entries if k != "include"]
            if not keys:
                out.append((path.stem, job_id, {}))
            for value in entries.get(keys[0], []) if keys else []:
                out.append((path.stem, job_id, {keys[0]: str(value)}))
    return out


@pytest.mark.parametrize(("workflow", "job_id", "matrix"), every_job())
def test_the_local_runner_can_run_every_step(
    workflow: str, job_id: str, matrix: dict[str, str], tmp_path: Path
) -> None:
    """ci/workflow.py understands every expression and has a stand-in for every action."""
    job = runner_mod.Job.load(workflow, job_id, matrix)
    for step in job.spec["steps"]:
        job.expand(str(step.get("name", "")))
        job.expand(str(step.get("run", "")))
        for value in (step.get("env") or {}).values():
            job.expand(str(value))
        assert job.should_run(step, failed=False) in (True, False)
        if "uses" in step:
            job.inputs(step)
            action = step["uses"].split("@")[0]
            assert action in runner_mod.STAND_INS, f"{workflow}/{job_id}: no stand-in for {action}"


@pytest.mark.parametrize(
    ("condition", "failed", "runs"),
    [
        (None, False, True),
        (None, True, False),
        ("always()", True, True),
        ("${{ !cancelled() }}", True, True),
        ("${{ always() && steps.images.outputs.cache-hit != 'true' }}", True, True),
        ("failure()", True, True),
        ("failure()", False, False),
    ],
)
def test_the_local_runner_honours_if(condition: str | None, failed: bool, runs: bool) -> None:
    job = runner_mod.Job("w", "j", {}, {})
    step = {"run": "true"} if condition is None else {"run": "true", "if": condition}
    assert job.should_run(step, failed) is runs


def test_the_cache_save_stand_in_fails_when_its_paths_are_missing(tmp_path: Path) -> None:
    import getpass

    job = runner_mod.Job("w", "j", {}, {})
    runner = runner_mod.Runner(job, getpass.getuser(), tmp_path, tmp_path / "summary.md")
    step = {"uses": "actions/cache/save@v5", "with": {"path": "images\n!images/*.tmp", "key": "k"}}
    ok, detail = runner.uses(step)
    assert not ok and "images" in detail
    (tmp_path / "images").mkdir()
    assert runner.uses(step)[0]


def test_the_local_runner_refuses_what_it_cannot_evaluate() -> None:
    job = runner_mod.Job("w", "j", {}, {}, {"guest": "debian-bookworm"})
    assert job.expand("--guest ${{ matrix.guest }}") == "--guest debian-bookworm"
    with pytest.raises(SystemExit, match="cannot evaluate"):
        job.expand("${{ github.sha }}")
