"""Which accelerator really works: KVM when a guest kernel boots under it, else TCG.

"/dev/kvm exists" is not the test: some hosts expose a KVM that cannot run a
stock kernel. The probe boots the guest's own kernel under KVM and waits for
its first console line; the answer is cached per host and QEMU version.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError
from .qemu import QEMU, qemu_version

PROBE_TIMEOUT = 12.0
PROBE_MARKER = b"Linux version"


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str


def kvm_usable_device() -> str | None:
    """Why /dev/kvm cannot be used, or None if it can be opened."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def probe_kvm(kernel: Path, cpu: str, timeout: float = PROBE_TIMEOUT) -> AccelChoice:
    """Boot ``kernel`` under KVM with no disk; it must print on the console in time."""
    with tempfile.TemporaryDirectory(prefix="memlayout-probe-") as tmp:
        log = Path(tmp) / "console.log"
        cmd = [
            QEMU,
            "-accel",
            "kvm",
            "-cpu",
            cpu,
            "-m",
            "256",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            f"file:{log}",
            "-kernel",
            str(kernel),
            "-append",
            "console=ttyS0 earlyprintk=ttyS0 panic=-1",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if log.exists() and PROBE_MARKER in log.read_bytes():
                    return AccelChoice("kvm", "KVM booted the guest kernel")
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    return AccelChoice("tcg", f"KVM probe: QEMU exited: {err.strip()[:200]}")
                time.sleep(0.1)
            return AccelChoice("tcg", f"KVM probe: no console output within {timeout:.0f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def choose(requested: str, kernel: Path | None, cpu: str, cache: Path) -> AccelChoice:
    """Resolve ``requested`` ("auto", "kvm" or "tcg") to the accelerator to use."""
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, f"forced with --accel {requested}")
    if requested != "auto":
        raise UsageError(f"--accel must be auto, kvm or tcg, not {requested!r}")
    why_not = kvm_usable_device()
    if why_not:
        return AccelChoice("tcg", why_not)
    if kernel is None:
        return AccelChoice("kvm", "/dev/kvm is usable (no kernel to probe with)")
    key = f"{platform.release()}|{qemu_version()}|{cpu}|{kernel.stat().st_size}"
    memo = cache / "accel-probe.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("key") == key:
            return AccelChoice(saved["accel"], saved["reason"] + " (cached probe)")
    except (FileNotFoundError, ValueError, KeyError):
        pass
    choice = probe_kvm(kernel, cpu)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"key": key, **asdict(choice)}))
    return choice
