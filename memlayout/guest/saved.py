"""Saved states of booted guests: resume to SSH in about two seconds.

After a cold boot the VM is paused and its RAM and device state are migrated
to a file; the overlay it booted on is kept, never written again, as the disk
that state belongs to. A later VM with the same QEMU configuration boots a
new overlay on top of that disk with ``-incoming "exec:cat STATE"`` and is
told to continue. The key covers everything the saved state depends on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from ..errors import VMError
from .qemu import qemu_version

# Bump when what a saved state holds, or how it is keyed, changes.
LAYOUT = 2


@dataclass(frozen=True)
class SavedState:
    """A booted guest saved to disk: its RAM and devices, and the disk it belongs to."""

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
        """Complete: written to the end (done.json is written last) and not truncated."""
        if not (self.done.exists() and self.disk.exists() and self.state.exists()):
            return False
        try:
            done = json.loads(self.done.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(done, dict) and done.get("state_bytes") == self.state.stat().st_size

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def saved_state_for(
    cache: Path, guest: str, image_sha256: str, config: dict[str, object]
) -> SavedState:
    """Where the saved state of exactly this image and QEMU configuration lives."""
    blob = json.dumps(
        {"image": image_sha256, "qemu": qemu_version(), "layout": LAYOUT, **config},
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return SavedState(cache / "saved" / f"{guest}-{key}")


def _qmp(socket_path: Path) -> QEMUMonitorProtocol:
    mon = QEMUMonitorProtocol(str(socket_path))
    mon.connect()
    return mon


def _ask(mon: QEMUMonitorProtocol, command: str) -> dict[str, Any]:
    """A QMP command's result as a dict (empty on anything unexpected)."""
    reply = mon.cmd(command)
    return reply if isinstance(reply, dict) else {}


def save(qmp_socket: Path, overlay: Path, target: SavedState, timeout: float = 120.0) -> float:
    """Pause the VM, migrate its state into ``target``, keep its overlay as the disk.

    QEMU quits once the state is written. Returns the seconds it took.
    """
    started = time.monotonic()
    tmp = target.directory.with_name(target.directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _migrate(qmp_socket, tmp / "state.bin", timeout)
    except Exception as exc:  # QMP errors, a closed socket (EOFError), OSError
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, VMError):
            raise
        raise VMError(f"saving the VM state failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        # QEMU has flushed and let go of the overlay once migration completed.
        shutil.copyfile(overlay, tmp / "disk.qcow2")
        done = {"saved_at": time.time(), "state_bytes": (tmp / "state.bin").stat().st_size}
        (tmp / "done.json").write_text(json.dumps(done) + "\n")
    except OSError as exc:  # a full disk: nothing half-written is ever resumed
        shutil.rmtree(tmp, ignore_errors=True)
        raise VMError(f"could not save the VM state into {tmp}: {exc}") from exc
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
                raise VMError(f"saving the VM state failed: migration status {status}")
            time.sleep(0.05)
        # QEMU may close the socket before it answers; the state is complete either way.
        with contextlib.suppress(Exception):
            mon.cmd("quit")
    finally:
        with contextlib.suppress(Exception):
            mon.close()


def resume(qmp_socket: Path, timeout: float = 60.0) -> None:
    """Wait until the incoming state is loaded, then let the guest run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mon = _qmp(qmp_socket)
            break
        except Exception as exc:  # QEMU has not made its socket yet (ConnectError, OSError)
            if time.monotonic() > deadline:
                raise VMError(f"QEMU's monitor did not answer within {timeout:.0f} s") from exc
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
                raise VMError(f"the saved state did not load (status {status})")
            time.sleep(0.02)
    finally:
        mon.close()
