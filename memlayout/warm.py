"""Saved, already-booted guest states: resume to SSH in about two seconds.

After a cold boot the VM is paused and its RAM and device state are migrated
to a file; the overlay it booted on is kept, never written again, as the disk
that state belongs to. A later VM with the same QEMU configuration boots a
new overlay on top of that disk with ``-incoming "exec:cat STATE"`` and is
told to continue. The key covers everything the saved state depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from .accel import qemu_version


@dataclass(frozen=True)
class WarmState:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def state(self) -> Path:
        return self.directory / "state.bin"

    @property
    def done(self) -> Path:
        return self.directory / "done.json"

    def ready(self) -> bool:
        return self.done.exists() and self.disk.exists() and self.state.exists()


def warm_key(image_sha256: str, cmdline_parts: dict[str, object]) -> str:
    blob = json.dumps(
        {"image": image_sha256, "qemu": qemu_version(), **cmdline_parts}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_dir(cache: Path, guest: str, key: str) -> WarmState:
    return WarmState(cache / "warm" / f"{guest}-{key}")


def _qmp(socket_path: Path) -> QEMUMonitorProtocol:
    mon = QEMUMonitorProtocol(str(socket_path))
    mon.connect()
    return mon


def _ask(mon: QEMUMonitorProtocol, command: str) -> dict[str, Any]:
    """A QMP command's result as a dict (empty on anything unexpected)."""
    reply = mon.cmd(command)
    return reply if isinstance(reply, dict) else {}


def save(qmp_socket: Path, overlay: Path, target: WarmState, timeout: float = 120.0) -> float:
    """Pause the VM, migrate its state into ``target``, keep its overlay as the disk.

    QEMU quits once the state is written. Returns the seconds it took.
    """
    started = time.monotonic()
    tmp = target.directory.with_name(target.directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _migrate(qmp_socket, tmp / "state.bin", timeout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # QEMU has flushed and let go of the overlay once migration completed.
    shutil.copyfile(overlay, tmp / "disk.qcow2")
    (tmp / "done.json").write_text(json.dumps({"saved_at": time.time()}) + "\n")
    if target.directory.exists():
        shutil.rmtree(target.directory)
    os.replace(tmp, target.directory)
    return time.monotonic() - started


def _migrate(qmp_socket: Path, state: Path, timeout: float) -> None:
    """Stop the guest, write its state to ``state``, quit QEMU."""
    mon = _qmp(qmp_socket)
    try:
        mon.cmd("stop")
        mon.cmd("migrate", uri=f"exec:cat > {state}")
        deadline = time.monotonic() + timeout
        while True:
            status = _ask(mon, "query-migrate").get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"saving the VM state failed: migration status {status}")
            time.sleep(0.05)
        mon.cmd("quit")
    finally:
        mon.close()


def resume(qmp_socket: Path, timeout: float = 60.0) -> None:
    """Wait until the incoming state is loaded, then let the guest run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mon = _qmp(qmp_socket)
            break
        except Exception:  # QEMU has not made its socket yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        while True:
            status = _ask(mon, "query-status").get("status")
            if status in ("paused", "postmigrate", "prelaunch"):
                mon.cmd("cont")
                return
            if status == "running":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the saved state did not load (status {status})")
            time.sleep(0.02)
    finally:
        mon.close()
