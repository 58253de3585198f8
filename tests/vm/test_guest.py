"""The guest lifecycle on a real VM: boot, SSH, SFTP, shutdown, and failures."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from memlayout.errors import VMError
from memlayout.guest.cache import ensure_image
from memlayout.guest.image import BaseImage
from memlayout.guest.machine import Machine, MachineConfig, pid_alive
from memlayout.guest.profiles import get_profile
from memlayout.guest.session import Session
from memlayout.paths import cache_dir
from memlayout.rundir import GuestDir

from .conftest import DEFAULT_TEST_GUEST

TCG = MachineConfig(accel="tcg", accel_reason="test")


def base_image() -> BaseImage:
    return ensure_image(get_profile(DEFAULT_TEST_GUEST), cache_dir())


def machine(tmp_path: Path, image: BaseImage | None = None, **kw: object) -> Machine:
    return Machine(image or base_image(), GuestDir(tmp_path / "guest"), TCG, **kw)  # type: ignore[arg-type]


def test_uname_over_ssh_matches_the_image_kernel(guest: Session) -> None:
    release = guest.remote.run("uname -r", check=True).stdout.strip()
    assert release == guest.state.kernel_release


def test_guest_runs_the_requested_cpu_with_4_level_paging(guest: Session) -> None:
    cpuinfo = guest.remote.run("cat /proc/cpuinfo", check=True).stdout
    assert "GenuineIntel" in cpuinfo
    assert " la57" not in cpuinfo
    assert guest.state.accel in ("kvm", "tcg") and guest.state.accel_reason


def test_files_copy_both_ways(guest: Session, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    (tmp_path / "up.bin").write_bytes(payload)
    guest.remote.put(tmp_path / "up.bin", "/tmp/up.bin")
    digest = guest.remote.run("sha256sum /tmp/up.bin", check=True).stdout.split()[0]
    assert digest == hashlib.sha256(payload).hexdigest()
    guest.remote.run("cp /tmp/up.bin /tmp/down.bin", check=True)
    guest.remote.get("/tmp/down.bin", tmp_path / "down.bin")
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_constructing_a_machine_starts_nothing(tmp_path: Path) -> None:
    m = machine(tmp_path)
    assert m.spec is None and m.pid is None and not (tmp_path / "guest").exists()
    assert m.shutdown() == "was not running"


def test_clean_shutdown_leaves_no_qemu(tmp_path: Path) -> None:
    m = machine(tmp_path)
    with m:
        pid = m.pid
        assert pid is not None and pid_alive(pid)
    assert m.returncode == 0  # powered down, not killed
    assert not pid_alive(pid)
    assert m.spec is not None and not m.spec.qmp_socket.parent.exists()


def test_a_detached_machine_leaves_nothing_after_shutdown(tmp_path: Path) -> None:
    m = machine(tmp_path, detached=True)
    m.launch()
    assert m.spec is not None and m.spec.qmp_socket.parent.exists()
    assert m.shutdown(hard=True) == "killed"
    assert m.pid is not None and not pid_alive(m.pid)
    assert not m.spec.qmp_socket.parent.exists()


def test_kernel_panic_is_reported_with_the_console_and_qemu_is_gone(tmp_path: Path) -> None:
    # Without its initramfs the kernel cannot load virtio_blk and panics.
    m = machine(tmp_path, dataclasses.replace(base_image(), initrd=None))
    with pytest.raises(VMError) as info, m:
        pass
    message = str(info.value)
    assert "Kernel panic" in message or "QEMU exited early" in message
    assert "last console lines" in message and str(m.files.console_log) in message
    assert info.value.log == m.files.console_log
    assert m.pid is not None and not pid_alive(m.pid)


def test_qemu_exiting_early_is_reported(tmp_path: Path) -> None:
    m = machine(tmp_path, extra_args=("-no-such-option",))
    with pytest.raises(VMError, match="QEMU exited early"), m:
        pass
    assert m.pid is not None and not pid_alive(m.pid)


def test_boot_timeout_kills_qemu(tmp_path: Path) -> None:
    m = machine(tmp_path)
    m.launch()
    try:
        with pytest.raises(VMError, match="no SSH banner within 2 s"):
            m.wait_for_ssh(timeout=2)
    finally:
        m.kill()
    assert m.pid is not None and not pid_alive(m.pid)


def test_the_base_image_is_never_written(tmp_path: Path) -> None:
    image = base_image()
    before = hashlib.sha256(image.disk_path.read_bytes()).hexdigest()
    with machine(tmp_path, image) as m:
        assert m.spec is not None and m.spec.overlay.exists()
    assert hashlib.sha256(image.disk_path.read_bytes()).hexdigest() == before == image.sha256
