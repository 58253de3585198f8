"""The guest lifecycle on a real VM: boot, SSH, SFTP, shutdown, and failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from memlayout import image
from memlayout.guests import get_profile
from memlayout.paths import cache_dir
from memlayout.pipeline import Session
from memlayout.vm import VM, VMError, pid_alive

from .conftest import DEFAULT_TEST_GUEST

pytestmark = pytest.mark.vm


def base_image() -> image.BaseImage:
    return image.ensure_image(get_profile(DEFAULT_TEST_GUEST), cache_dir())


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
    assert guest.remote.run("sha256sum /tmp/up.bin", check=True).stdout.split()[0] == (
        __import__("hashlib").sha256(payload).hexdigest()
    )
    guest.remote.run("cp /tmp/up.bin /tmp/down.bin", check=True)
    guest.remote.get("/tmp/down.bin", tmp_path / "down.bin")
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_clean_shutdown_leaves_no_qemu(tmp_path: Path) -> None:
    vm = VM(base_image(), tmp_path, accel="tcg", accel_reason="test")
    with vm:
        pid = vm.proc.pid if vm.proc else 0
    assert vm.proc is not None and vm.proc.returncode == 0  # powered down, not killed
    assert not pid_alive(pid)


def test_kernel_panic_is_reported_with_the_console_and_qemu_is_gone(tmp_path: Path) -> None:
    # Without its initramfs the kernel cannot load virtio_blk and panics.
    broken = dataclasses.replace(base_image(), initrd=None)
    vm = VM(broken, tmp_path, accel="tcg", accel_reason="test")
    with pytest.raises(VMError) as info, vm:
        pass
    message = str(info.value)
    assert "Kernel panic" in message or "QEMU exited early" in message
    assert "last console lines" in message and str(vm.spec.console_log) in message
    assert vm.proc is not None and vm.proc.poll() is not None
    assert not pid_alive(vm.proc.pid)


def test_qemu_exiting_early_is_reported(tmp_path: Path) -> None:
    vm = VM(base_image(), tmp_path, accel="tcg", accel_reason="test")
    vm.spec = dataclasses.replace(vm.spec, extra_args=("-no-such-option",))
    with pytest.raises(VMError, match="QEMU exited early"), vm:
        pass
    assert vm.proc is not None and not pid_alive(vm.proc.pid)


def test_boot_timeout_kills_qemu(tmp_path: Path) -> None:
    vm = VM(base_image(), tmp_path, accel="tcg", accel_reason="test")
    vm.start()
    try:
        with pytest.raises(VMError, match="no SSH banner within 2 s"):
            vm.wait_for_ssh(timeout=2)
    finally:
        vm.kill()
    assert vm.proc is not None and not pid_alive(vm.proc.pid)
