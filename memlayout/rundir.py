"""Run directories: every file name of a run, in one place.

    runs/<run-id>/                 RunDir
      run.json                     host, commit, guests, stage times, failures
      report.html, report.pdf      the report
      submission.tar.gz | .zip     the hand-in bundle
      <guest>/                     GuestDir, one per guest
        guest.json                 accelerator (and why), CPU, kernel, image checksum, boot time
        build.log                  kbuild's output (kept when the build fails too)
        hello.json                 Step 1: the hello module's load and unload
        lookup.json                find=pid and find=list: same task, and what each costs
        targets.json, verify.json  module records, /proc/PID/maps, every check
        record.json                the record `invoke inspect` printed
        experiments/<name>.json    one file per scenario
        plots/<name>.svg|.png      the experiments' plots, the layout figure
        cycles.json, stress.json   insmod/rmmod cycle latencies and checks
        fuzz.json                  invoke fuzz: seeds, checkpoints, mismatches
        fuzz/seed-<S>.ops          a mismatch's shrunk sequence (invoke fuzz --replay)
        dmesg.txt                  the guest's whole kernel log
        console.log                the serial console
        qemu-cmdline.txt, qemu-stderr.log, vm.json, overlay.qcow2
    runs/latest -> the newest run of `invoke all` (its report.pdf stays there
                                   whatever single-stage tasks run afterwards)
    runs/latest-<task> -> the newest run of one task (latest-verify, latest-up, ...)
    runs/active-<guest>.json       the VM `invoke up` left running

Every reader and writer of these files goes through :class:`RunDir` and
:class:`GuestDir`; no other module spells a file name of a run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .paths import runs_dir

RUN_JSON = "run.json"
GUEST_JSON = "guest.json"


@dataclass(frozen=True)
class GuestDir:
    """The files one guest contributes to a run."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def create(self) -> GuestDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # -- the VM -------------------------------------------------------------
    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_cmdline(self) -> Path:
        return self.path / "qemu-cmdline.txt"

    @property
    def qemu_stderr(self) -> Path:
        return self.path / "qemu-stderr.log"

    @property
    def overlay(self) -> Path:
        return self.path / "overlay.qcow2"

    @property
    def vm_json(self) -> Path:
        return self.path / "vm.json"

    @property
    def guest_json(self) -> Path:
        return self.path / GUEST_JSON

    # -- the stages ---------------------------------------------------------
    @property
    def build_log(self) -> Path:
        return self.path / "build.log"

    @property
    def targets_json(self) -> Path:
        return self.path / "targets.json"

    @property
    def verify_json(self) -> Path:
        return self.path / "verify.json"

    @property
    def hello_json(self) -> Path:
        return self.path / "hello.json"

    @property
    def lookup_json(self) -> Path:
        return self.path / "lookup.json"

    @property
    def record_json(self) -> Path:
        return self.path / "record.json"

    @property
    def experiments_dir(self) -> Path:
        return self.path / "experiments"

    def experiment_json(self, scenario: str) -> Path:
        return self.experiments_dir / f"{scenario}.json"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def plot(self, name: str, ext: str = "svg") -> Path:
        return self.plots_dir / f"{name}.{ext}"

    def cycles_json(self, stress: bool = False) -> Path:
        return self.path / ("stress.json" if stress else "cycles.json")

    @property
    def fuzz_json(self) -> Path:
        return self.path / "fuzz.json"

    def fuzz_replay(self, seed: int | None) -> Path:
        return self.path / "fuzz" / (f"seed-{seed}.ops" if seed is not None else "replay.ops")

    @property
    def dmesg(self) -> Path:
        return self.path / "dmesg.txt"

    def logs(self) -> list[Path]:
        """The files of this guest that the report quotes, for the bundle."""
        files = (
            self.dmesg,
            self.hello_json,
            self.lookup_json,
            self.verify_json,
            self.targets_json,
            self.cycles_json(),
            self.cycles_json(stress=True),
            self.build_log,
            self.console_log,
        )
        return [p for p in files if p.is_file()]

    def expected(self) -> dict[str, Path]:
        """What a complete ``invoke all`` leaves for this guest (the report lists gaps)."""
        return {
            GUEST_JSON: self.guest_json,
            "targets.json": self.targets_json,
            "verify.json": self.verify_json,
            "experiments": self.experiments_dir,
            "cycles.json": self.cycles_json(),
        }


def _point(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target``, atomically (rename over it)."""
    tmp = link.with_name(f".{link.name}-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


@dataclass(frozen=True)
class RunDir:
    """One run: ``runs/<run-id>/``."""

    path: Path

    @classmethod
    def new(cls, prefix: str = "all", base: Path | None = None) -> RunDir:
        """Create a fresh run directory and point its task's ``latest`` link at it.

        ``prefix`` starts with the task's name ("all", "verify-debian-bookworm", ...):
        ``runs/latest`` follows `invoke all` only, ``runs/latest-<task>`` every task.
        """
        base = base or runs_dir()
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}{'-' + prefix if prefix else ''}"
        path = base / name
        n = 1
        while path.exists():
            n += 1
            path = base / f"{name}.{n}"
        path.mkdir()
        task = prefix.split("-", 1)[0] or "all"
        _point(base / ("latest" if task == "all" else f"latest-{task}"), path)
        return cls(path)

    @classmethod
    def existing(cls, path: str | Path | None = None) -> RunDir:
        """A finished run: ``path``, or ``runs/latest``; a clear error when it is not one."""
        target = Path(path) if path else runs_dir() / "latest"
        if not target.is_dir():
            raise UsageError(f"{target} is not a run directory (run invoke all first)")
        return cls(target.resolve())

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def report_pdf(self) -> Path:
        return self.path / "report.pdf"

    def bundle(self, fmt: str) -> Path:
        return self.path / f"submission.{fmt}"

    def guest(self, name: str) -> GuestDir:
        return GuestDir(self.path / name)

    def guests(self, order: list[str] | None = None) -> list[GuestDir]:
        """The guests of this run: those named in ``order`` first, then any other
        subdirectory that holds a guest.json."""
        names = list(order or [])
        if self.path.is_dir():
            for sub in sorted(p for p in self.path.iterdir() if p.is_dir()):
                if sub.name not in names and (sub / GUEST_JSON).exists():
                    names.append(sub.name)
        return [self.guest(n) for n in names]


def active_state_path(guest: str, base: Path | None = None) -> Path:
    """Where ``invoke up`` records the live VM of ``guest``."""
    return (base or runs_dir()) / f"active-{guest}.json"
