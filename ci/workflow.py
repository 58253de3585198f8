#!/usr/bin/env python3
"""Run one job of a GitHub Actions workflow here, the way a hosted runner would.

    python ci/workflow.py pr lint-and-unit --user mlci
    python ci/workflow.py nightly all --matrix guest=debian-bookworm --user mlci

The job's ``run:`` steps run in order in a fresh clone of the repository, as the given
non-root user (GitHub's runners run as ``runner``), with GitHub's default shell
(``bash --noprofile --norc -eo pipefail``), the workflow's, job's and step's ``env:``,
``${{ matrix.* }}`` filled in, and ``if:`` honoured for the usual cases (a failed step
skips the rest unless they say ``always()`` or ``!cancelled()``). The ``uses:`` steps
are stood in for: checkout is the clone; cache restore finds nothing (a first run);
cache save and artifact upload check that the paths they would store exist.

Exit status 0 when every step passed; the log says which step failed and how long each
took. Needs root (or sudo) only to run the steps as the other user.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepResult:
    name: str
    outcome: str  # "success", "failure" or "skipped"
    seconds: float
    detail: str = ""


@dataclass
class Job:
    """One job of one workflow, with one matrix entry chosen."""

    workflow: str
    name: str
    spec: dict[str, Any]
    env: dict[str, str]
    matrix: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, workflow: str, job: str, matrix: dict[str, str]) -> Job:
        path = WORKFLOWS / f"{workflow}.yml"
        data = yaml.safe_load(path.read_text())
        jobs = data.get("jobs", {})
        if job not in jobs:
            raise SystemExit(f"{path.name} has no job {job!r} (it has {', '.join(jobs)})")
        spec = jobs[job]
        choices = spec.get("strategy", {}).get("matrix", {})
        for key, value in matrix.items():
            if value not in [str(v) for v in choices.get(key, [])]:
                raise SystemExit(f"{job}: matrix {key}={value} is not one of {choices.get(key)}")
        missing = [key for key in choices if key not in matrix and key != "include"]
        if missing:
            raise SystemExit(f"{job}: choose a matrix entry with --matrix {missing[0]}=...")
        env = {k: str(v) for k, v in (data.get("env") or {}).items()}
        env.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
        return cls(workflow, job, spec, env, matrix)

    def expand(self, text: str) -> str:
        """Fill in ``${{ matrix.X }}`` and ``${{ vars.X }}``; anything else is an error here.

        A repository variable comes from our own environment, else is empty (as on a fork).
        """

        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("matrix.") and expr[7:] in self.matrix:
                return self.matrix[expr[7:]]
            if expr.startswith("vars."):
                return os.environ.get(expr[5:], "")
            if expr in ("github.run_number", "github.run_id"):
                return os.environ.get("GITHUB_RUN_NUMBER", "1")
            raise SystemExit(f"{self.name}: cannot evaluate ${{{{ {expr} }}}} outside GitHub")

        return EXPRESSION.sub(one, text)

    def inputs(self, step: dict[str, Any]) -> dict[str, str]:
        """The ``with:`` inputs a stand-in reads (the cache key needs GitHub: not read)."""
        given = step.get("with") or {}
        return {k: self.expand(str(given[k])) for k in STAND_IN_INPUTS if k in given}

    def should_run(self, step: dict[str, Any], failed: bool) -> bool:
        condition = str(step.get("if", "success()"))
        condition = EXPRESSION.sub(lambda m: m.group(1), condition).strip()
        if "always()" in condition or "!cancelled()" in condition:
            return True
        if condition in ("success()", ""):
            return not failed
        if condition == "failure()":
            return failed
        raise SystemExit(f"{self.name}: cannot evaluate if: {condition}")


@dataclass
class Runner:
    """Runs a job's steps as ``user`` in ``workspace`` (a fresh clone)."""

    job: Job
    user: str
    workspace: Path
    summary: Path
    log: list[StepResult] = field(default_factory=list)

    def run(self) -> bool:
        failed = False
        for index, step in enumerate(self.job.spec.get("steps", []), 1):
            name = self.job.expand(str(step.get("name") or step.get("uses") or f"step {index}"))
            if not self.job.should_run(step, failed):
                self.log.append(StepResult(name, "skipped", 0.0))
                print(f"--- skipped: {name}", flush=True)
                continue
            print(f"--- {name}", flush=True)
            started = time.monotonic()
            ok, detail = self.uses(step) if "uses" in step else self.shell(step)
            outcome = "success" if ok else "failure"
            self.log.append(StepResult(name, outcome, time.monotonic() - started, detail))
            print(f"--- {outcome}: {name} ({time.monotonic() - started:.1f} s) {detail}")
            failed = failed or not ok
        return not failed

    def shell(self, step: dict[str, Any]) -> tuple[bool, str]:
        step_env = {k: self.job.expand(str(v)) for k, v in (step.get("env") or {}).items()}
        env = {**self.job.env, **step_env}
        script = self.job.expand(str(step["run"]))
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
            f.write(script)
        os.chmod(f.name, 0o644)
        try:
            proc = subprocess.run(
                [*as_user(self.user), "env", "-i", *self.environment(env), *SHELL, f.name],
                cwd=self.workspace,
                check=False,
            )
        finally:
            os.unlink(f.name)
        return proc.returncode == 0, "" if proc.returncode == 0 else f"exit {proc.returncode}"

    def environment(self, extra: dict[str, str]) -> list[str]:
        home = pwd.getpwnam(self.user).pw_dir
        base = {
            "HOME": home,
            "USER": self.user,
            "LOGNAME": self.user,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(self.summary.parent),
        }
        # What the host needs to reach the registries (proxies, a local CA bundle).
        for name, value in os.environ.items():
            if name.endswith(("_proxy", "_PROXY")) or name in PASS_THROUGH:
                base[name] = value
        return [f"{k}={v}" for k, v in {**base, **extra}.items()]

    def uses(self, step: dict[str, Any]) -> tuple[bool, str]:
        action = str(step["uses"]).split("@", 1)[0]
        if action not in STAND_INS:
            return False, f"no stand-in for {action}"
        inputs = self.job.inputs(step)
        if action == "actions/checkout":
            return True, "(the fresh clone)"
        if action == "actions/cache/restore":
            return True, "(cache miss: a first run)"
        if action in ("actions/cache/save", "actions/upload-artifact"):
            missing = [p for p in self.paths(inputs.get("path", "")) if not self.exists(p)]
            required = action != "actions/upload-artifact" or (
                inputs.get("if-no-files-found", "warn") == "error"
            )
            if missing and required:
                return False, f"would store missing paths: {', '.join(missing)}"
            return True, f"(paths present; missing: {', '.join(missing) or 'none'})"
        return False, f"no stand-in for {action}"

    def paths(self, text: str) -> list[str]:
        return [p.strip() for p in text.splitlines() if p.strip() and not p.strip().startswith("!")]

    def exists(self, pattern: str) -> bool:
        home = pwd.getpwnam(self.user).pw_dir
        path = pattern.replace("~", home, 1) if pattern.startswith("~") else pattern
        return bool(glob.glob(str(self.workspace / path)))


# The actions a job may use, each stood in for by Runner.uses (actions/cache, which
# saves at the job's end, is not: the workflows restore and save in steps of their own).
STAND_INS = (
    "actions/checkout",
    "actions/cache/restore",
    "actions/cache/save",
    "actions/upload-artifact",
)
STAND_IN_INPUTS = ("path", "if-no-files-found")
PASS_THROUGH = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL")


def as_user(user: str) -> list[str]:
    """The prefix that runs a command as ``user`` (nothing if we already are it)."""
    if pwd.getpwuid(os.getuid()).pw_name == user:
        return []
    prefix = ["runuser", "-u", user, "--"]
    return prefix if os.getuid() == 0 else ["sudo", "-n", *prefix]


def clone(user: str, dest: Path, source: Path = REPO_ROOT) -> None:
    """A fresh clone of ``source``'s HEAD, owned by ``user`` (checkout's stand-in).

    Cloned by us and handed over: git refuses to read a repository another user owns.
    """
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(source), str(dest)], check=True)
    if pwd.getpwuid(os.getuid()).pw_name != user:
        chown = ["chown", "-R", f"{user}:", str(dest)]
        subprocess.run(chown if os.getuid() == 0 else ["sudo", "-n", *chown], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workflow", help="pr or nightly (.github/workflows/NAME.yml)")
    ap.add_argument("job", help="the job's id, e.g. lint-and-unit, one-guest, all")
    ap.add_argument("--matrix", action="append", default=[], help="KEY=VALUE, one entry")
    ap.add_argument("--user", default=pwd.getpwuid(os.getuid()).pw_name, help="run as this user")
    ap.add_argument("--workspace", type=Path, help="where to clone (default: a folder in HOME)")
    args = ap.parse_args(argv)
    matrix = dict(item.split("=", 1) for item in args.matrix)
    job = Job.load(args.workflow, args.job, matrix)
    home = Path(pwd.getpwnam(args.user).pw_dir)
    suffix = "-".join([args.workflow, args.job, *matrix.values()])
    workspace = args.workspace or home / f"work-{suffix}"
    clone(args.user, workspace)
    summary = workspace.parent / f"summary-{suffix}.md"
    subprocess.run([*as_user(args.user), "touch", str(summary)], check=True)
    runner = Runner(job, args.user, workspace, summary)
    ok = runner.run()
    print(f"=== {args.workflow}/{args.job} {shlex.join(args.matrix)} as {args.user}:")
    for r in runner.log:
        print(f"    {r.outcome:8} {r.seconds:7.1f} s  {r.name} {r.detail}".rstrip())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
