"""The QEMU command line: everything that decides it, and the pure function that writes it."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import VMError

QEMU = "qemu-system-x86_64"
DEFAULT_CPU = "Skylake-Client-v1"  # Intel vendor, 48-bit addresses, guest enables PTI
# no_timer_check: under TCG on a loaded host the kernel's check that the 8254 timer
# reaches the IO-APIC can time out and panic the boot ("IO-APIC + timer doesn't work").
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 log_buf_len=16M loglevel=5 panic=-1 no_timer_check"


@dataclass(frozen=True)
class VMSpec:
    """Everything that decides the QEMU command line."""

    overlay: Path
    console_log: Path
    qmp_socket: Path
    ssh_port: int
    accel: str = "tcg"
    cpu: str = DEFAULT_CPU
    memory_mib: int = 1024
    smp: int = 2
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_args: str = KERNEL_ARGS
    seed_iso: Path | None = None
    incoming: Path | None = None  # a saved state to resume instead of booting
    extra_args: tuple[str, ...] = ()


def qemu_command(spec: VMSpec) -> list[str]:
    """The QEMU command line for ``spec`` (a pure function, checked against a golden file)."""
    accel = "kvm" if spec.accel == "kvm" else "tcg,thread=multi"
    cmd = [
        QEMU,
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        spec.cpu,
        "-smp",
        str(spec.smp),
        "-m",
        str(spec.memory_mib),
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-chardev",
        f"file,id=console,path={spec.console_log}",
        "-serial",
        "chardev:console",
        "-qmp",
        f"unix:{spec.qmp_socket},server=on,wait=off",
        "-drive",
        f"file={spec.overlay},format=qcow2,if=virtio,cache=unsafe",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
    ]
    if spec.kernel is not None:
        cmd += ["-kernel", str(spec.kernel), "-append", spec.kernel_args]
        if spec.initrd is not None:
            cmd += ["-initrd", str(spec.initrd)]
    if spec.seed_iso is not None:
        cmd += ["-drive", f"file={spec.seed_iso},format=raw,if=virtio,readonly=on"]
    if spec.incoming is not None:
        cmd += ["-incoming", f"exec:cat {spec.incoming}"]
    return cmd + list(spec.extra_args)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_overlay(base: Path, overlay: Path) -> None:
    """A qcow2 overlay on ``base``: the VM writes there, never to the base."""
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise VMError(f"qemu-img could not create {overlay}: {proc.stderr.strip()}")


def qemu_version(binary: str = QEMU) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    except OSError as exc:
        raise VMError(f"{binary} is not installed (apt-get install qemu-system-x86)") from exc
    return out.stdout.splitlines()[0] if out.stdout else "unknown"
