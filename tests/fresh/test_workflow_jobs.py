"""The GitHub workflows' jobs, run here step by step as a throwaway non-root user.

``ci/workflow.py`` runs a job's ``run:`` steps in order in a fresh clone, as GitHub's
``runner`` user would (its ``uses:`` steps stood in for). The user is made for the test
(with passwordless sudo, like ``runner``) and removed afterwards, with everything it
owned; its cache starts empty, so the nightly entry builds its image in mmdebstrap's
unshare mode and runs the README's first command through to report.pdf. The PR job's
VM half (the whole VM suite again) is left to ``python ci/workflow.py pr one-guest``.
About 2 minutes for the PR job and 8-12 minutes for the nightly entry under TCG.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.paths import REPO_ROOT

from .conftest import privileged

WORKFLOW = REPO_ROOT / "ci" / "workflow.py"


@pytest.fixture(scope="module")
def runner_user() -> Iterator[str]:
    """A new user with a home, sub-uid ranges and passwordless sudo; gone afterwards."""
    root = privileged()
    user = f"mlci{secrets.token_hex(3)}"
    subprocess.run([*root, "useradd", "-m", "-s", "/bin/bash", user], check=True)
    sudoers = Path("/etc/sudoers.d") / user
    try:
        if Path("/etc/sudoers.d").is_dir():
            subprocess.run([*root, "tee", str(sudoers)], input=f"{user} ALL=(ALL) NOPASSWD:ALL\n",
                           text=True, check=True, capture_output=True)  # fmt: skip
        yield user
    finally:
        left = subprocess.run(["pgrep", "-a", "-u", user], capture_output=True, text=True)
        subprocess.run([*root, "pkill", "-KILL", "-u", user], check=False)
        subprocess.run([*root, "rm", "-f", str(sudoers)], check=False)
        subprocess.run([*root, "userdel", "-r", user], check=False, capture_output=True)
        assert left.stdout == "", f"processes of {user} were left running:\n{left.stdout}"


def run_job(user: str, workflow: str, job: str, *matrix: str) -> str:
    args = [sys.executable, str(WORKFLOW), workflow, job, "--user", user]
    for entry in matrix:
        args += ["--matrix", entry]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = out[out.rindex("=== ") :].splitlines()[1:]  # one line per step, after the run
    outcomes = [line.split()[0] for line in summary if line.startswith("    ")]
    assert outcomes and set(outcomes) == {"success"}, "\n".join(summary)
    return out


def home(user: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(user).pw_dir)


def test_pr_lint_and_unit_job(runner_user: str) -> None:
    out = run_job(runner_user, "pr", "lint-and-unit")
    assert " passed" in out and "setup: done" in out


def test_nightly_debian_entry_as_a_non_root_user(runner_user: str) -> None:
    out = run_job(runner_user, "nightly", "all", "guest=debian-bookworm")
    work = home(runner_user) / "work-nightly-all-debian-bookworm"
    report = work / "runs" / "latest" / "report.pdf"
    assert report.stat().st_size > 10_000, out[-3000:]
    assert "unshare mode" in out, "the image was not built the non-root way"
    owners = {p.owner() for p in work.rglob("*") if not p.is_symlink()}
    assert owners == {runner_user}, f"files of other owners in the run: {owners}"
    assert "accelerator" in out  # ci/check-accel.sh said which one the guest used
    cache = home(runner_user) / ".cache" / "memlayout" / "images"
    assert any(cache.iterdir()), "the image the cache-save step would store is missing"
