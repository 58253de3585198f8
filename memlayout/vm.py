"""One QEMU process running one guest: start, wait for SSH, shut down, always clean up.

A ``VM`` owns a copy-on-write overlay on top of a base image, a QMP socket,
the serial console log (in the run directory) and a localhost port forwarded
to the guest's sshd. Used as a context manager it never leaves QEMU behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from . import warm as warm_mod
from .console import ConsoleWatcher, tail
from .image import BaseImage
from .progress import Reporter, Step, to_stderr
from .warm import WarmState

QEMU = "qemu-system-x86_64"
DEFAULT_CPU = "Skylake-Client-v1"  # Intel vendor, 48-bit addresses, guest enables PTI
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 log_buf_len=16M loglevel=5 panic=-1"


class VMError(RuntimeError):
    """A VM failed; the message quotes the console's last lines."""


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
    extra_args: tuple[str, ...] = ()


def qemu_command(spec: VMSpec) -> list[str]:
    """The QEMU command line for ``spec`` (a pure function, unit-tested)."""
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
    return cmd + list(spec.extra_args)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_overlay(base: Path, overlay: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)],
        check=True,
        capture_output=True,
    )


def ssh_banner(port: int, timeout: float = 2.0) -> bytes:
    """What the forwarded port says first (b"" if nothing in time)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64)
    except OSError:
        return b""


def _die_with_parent() -> None:
    """Runs in the child: QEMU gets SIGKILL if the Python process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class VMState:
    """What ``invoke up`` records so later tasks can reach the VM."""

    guest: str
    pid: int
    ssh_port: int
    qmp_socket: str
    console_log: str
    host_key: str
    accel: str
    accel_reason: str
    cpu: str
    kernel_release: str
    image_sha256: str
    run_dir: str
    boot_seconds: float = 0.0
    resumed: bool = False
    started_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> VMState:
        return cls(**json.loads(path.read_text()))


class VM:
    """One QEMU process. Use ``with VM(...) as vm:``; it is gone afterwards."""

    def __init__(
        self,
        image: BaseImage,
        run_dir: Path,
        *,
        accel: str = "tcg",
        accel_reason: str = "",
        cpu: str = DEFAULT_CPU,
        memory_mib: int = 1024,
        smp: int = 2,
        detached: bool = False,
        warm: WarmState | None = None,
        report: Reporter = to_stderr,
    ) -> None:
        self.image = image
        self.run_dir = run_dir
        self.accel_reason = accel_reason
        self.detached = detached
        self.report = report
        self._tmp = Path(tempfile.mkdtemp(prefix="memlayout-vm-"))
        self.spec = VMSpec(
            overlay=run_dir / f"{image.guest}-overlay.qcow2",
            console_log=run_dir / f"{image.guest}-console.log",
            qmp_socket=self._tmp / "qmp.sock",
            ssh_port=free_port(),
            accel=accel,
            cpu=cpu,
            memory_mib=memory_mib,
            smp=smp,
            kernel=image.kernel_path,
            initrd=image.initrd_path,
            seed_iso=image.seed_path,
        )
        self.warm = warm if warm is not None and warm.ready() else None
        if self.warm is not None:
            self.spec = replace(self.spec, extra_args=("-incoming", f"exec:cat {self.warm.state}"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds = 0.0
        self.cold_boot_seconds = 0.0  # when resumed: how long the cold boot took

    def resuming(self, warm: WarmState) -> VM:
        """A new VM like this one (image, accelerator, CPU, ...) that resumes ``warm``."""
        return VM(
            self.image,
            self.run_dir,
            accel=self.spec.accel,
            accel_reason=self.accel_reason,
            cpu=self.spec.cpu,
            memory_mib=self.spec.memory_mib,
            smp=self.spec.smp,
            detached=self.detached,
            warm=warm,
            report=self.report,
        )

    @property
    def resumed(self) -> bool:
        """True when this VM continues a saved, already-booted state."""
        return self.warm is not None

    # -- lifecycle --------------------------------------------------------

    def __enter__(self) -> VM:
        try:
            self.start()
            self.wait_for_ssh()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        backing = self.warm.disk if self.warm is not None else self.image.disk_path
        create_overlay(backing, self.spec.overlay)
        cmd = qemu_command(self.spec)
        (self.run_dir / f"{self.image.guest}-qemu-cmdline.txt").write_text(" ".join(cmd) + "\n")
        stderr_log = (self.run_dir / f"{self.image.guest}-qemu-stderr.log").open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stderr_log,
            stderr=stderr_log,
            preexec_fn=None if self.detached else _die_with_parent,
            start_new_session=self.detached,
        )
        stderr_log.close()
        self._started = time.monotonic()
        if self.warm is not None:
            try:
                warm_mod.resume(self.spec.qmp_socket)
            except (OSError, RuntimeError) as exc:
                raise self._error(f"resuming the saved state failed: {exc}") from exc
        how = "resumed a saved state" if self.warm is not None else "booting"
        self.report(
            f"vm: {how}: {self.image.guest} (pid {self.proc.pid}, "
            f"accel {self.spec.accel}: {self.accel_reason}; cpu {self.spec.cpu}; "
            f"ssh 127.0.0.1:{self.spec.ssh_port})"
        )

    def wait_for_ssh(self, timeout: float = 180.0) -> float:
        """Wait until sshd answers with its banner; watch the console meanwhile."""
        step = Step("boot", self.report)
        watcher = ConsoleWatcher(self.spec.console_log)
        deadline = time.monotonic() + timeout
        last_note = 0.0
        while True:
            self._check_alive(watcher)
            if ssh_banner(self.spec.ssh_port, timeout=1.5).startswith(b"SSH-"):
                break
            if time.monotonic() > deadline:
                raise self._error(f"no SSH banner within {timeout:.0f} s")
            if step.elapsed() - last_note >= 5:
                last_note = step.elapsed()
                step("waiting for sshd")
            time.sleep(0.25)
        self.boot_seconds = time.monotonic() - self._started
        step(f"sshd answered after {self.boot_seconds:.1f} s")
        return self.boot_seconds

    def _check_alive(self, watcher: ConsoleWatcher) -> None:
        if self.proc is None:
            raise VMError("VM not started")
        if self.proc.poll() is not None:
            raise self._error(f"QEMU exited early with status {self.proc.returncode}")
        trouble = watcher.poll()
        if trouble:
            raise self._error(f"kernel trouble on the console: {trouble}")

    def check_console(self) -> None:
        """Raise if the console shows a kernel failure since boot."""
        self._check_alive(ConsoleWatcher(self.spec.console_log))

    def _error(self, what: str) -> VMError:
        stderr = self.run_dir / f"{self.image.guest}-qemu-stderr.log"
        qemu_err = tail(stderr, 5)
        msg = (
            f"{self.image.guest}: {what}\n"
            f"--- last console lines ({self.spec.console_log}) ---\n"
            f"{tail(self.spec.console_log)}"
        )
        if qemu_err:
            msg += f"\n--- QEMU stderr ({stderr}) ---\n{qemu_err}"
        self.kill()
        return VMError(msg)

    def qmp(self, command: str, **args: object) -> object:
        mon = QEMUMonitorProtocol(str(self.spec.qmp_socket))
        mon.connect()
        try:
            return mon.cmd(command, **args)
        finally:
            mon.close()

    def shutdown(self, timeout: float = 30.0) -> float:
        """ACPI power-down through QMP, then quit, then SIGKILL. Returns seconds."""
        started = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            self._cleanup()
            return 0.0
        for command, wait in (("system_powerdown", timeout), ("quit", 5.0)):
            with contextlib.suppress(Exception):
                self.qmp(command)
                self.proc.wait(timeout=wait)
                break
        self.kill()
        return time.monotonic() - started

    def save_warm(self, target: WarmState) -> float:
        """Save this booted VM's state into ``target``; the VM is gone afterwards."""
        try:
            return warm_mod.save(self.spec.qmp_socket, self.spec.overlay, target)
        finally:
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if not self.detached:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- access -------------------------------------------------------------

    def state(self) -> VMState:
        assert self.proc is not None
        return VMState(
            guest=self.image.guest,
            pid=self.proc.pid,
            ssh_port=self.spec.ssh_port,
            qmp_socket=str(self.spec.qmp_socket),
            console_log=str(self.spec.console_log),
            host_key=self.image.host_key,
            accel=self.spec.accel,
            accel_reason=self.accel_reason,
            cpu=self.spec.cpu,
            kernel_release=self.image.kernel_release,
            image_sha256=self.image.sha256,
            run_dir=str(self.run_dir),
            boot_seconds=round(self.boot_seconds, 2),
            resumed=self.resumed,
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_detached(state: VMState, timeout: float = 30.0) -> str:
    """Shut down a VM started by ``invoke up``; returns how it ended."""
    if not pid_alive(state.pid):
        return "was not running"
    how = "killed"
    for command, wait in (("system_powerdown", timeout), ("quit", 5.0)):
        try:
            mon = QEMUMonitorProtocol(state.qmp_socket)
            mon.connect()
            mon.cmd(command)
            mon.close()
        except Exception:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(state.pid):
            time.sleep(0.1)
        if not pid_alive(state.pid):
            how = "powered down" if command == "system_powerdown" else "quit"
            break
    if pid_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    shutil.rmtree(Path(state.qmp_socket).parent, ignore_errors=True)
    return how
