"""One QEMU process running one guest: launch, wait for SSH, shut down, always clean up.

Modelled on QEMU's own ``QEMUMachine``: the constructor only stores settings;
:meth:`Machine.launch` makes the socket directory, picks the port, creates the
copy-on-write overlay and starts QEMU; :meth:`Machine.shutdown` asks the guest
to power down over QMP, falls back to killing QEMU, cleans up in ``finally``,
and raises :class:`AbnormalShutdown` when a soft shutdown had to kill. As a
context manager a machine never leaves QEMU behind. A machine left running by
``invoke up`` is reached again with :meth:`Machine.attach`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from qemu.qmp.legacy import QEMUMonitorProtocol

from ..errors import AbnormalShutdown, VMError
from ..progress import Reporter, Step, to_stderr
from ..rundir import GuestDir
from . import saved
from .console import ConsoleWatcher, tail
from .image import BaseImage
from .qemu import DEFAULT_CPU, KERNEL_ARGS, VMSpec, create_overlay, free_port, qemu_command
from .saved import SavedState
from .state import LiveState


@dataclass(frozen=True)
class MachineConfig:
    """How to run QEMU: the accelerator (and why), CPU model, memory, vCPUs."""

    accel: str = "tcg"
    accel_reason: str = ""
    cpu: str = DEFAULT_CPU
    memory_mib: int = 1024
    smp: int = 2
    kernel_args: str = KERNEL_ARGS

    def key(self, spec_args: str, seed: bool) -> dict[str, object]:
        """What a saved state of this configuration depends on."""
        return {
            "accel": self.accel,
            "cpu": self.cpu,
            "memory": self.memory_mib,
            "smp": self.smp,
            "kernel_args": spec_args,
            "seed": seed,
        }


def ssh_banner(port: int, timeout: float = 2.0) -> bytes:
    """What the forwarded port says first (b"" if nothing in time)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64)
    except OSError:
        return b""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """Runs in the child: QEMU gets SIGKILL if the Python process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Machine:
    """One QEMU process. ``with Machine(...) as m:`` boots it; it is gone afterwards."""

    def __init__(
        self,
        image: BaseImage,
        files: GuestDir,
        config: MachineConfig | None = None,
        *,
        resume: SavedState | None = None,
        detached: bool = False,
        extra_args: tuple[str, ...] = (),
        report: Reporter = to_stderr,
    ) -> None:
        self.image = image
        self.files = files
        self.config = config or MachineConfig()
        self.resume_from = resume
        self.detached = detached
        self.extra_args = extra_args
        self.report = report
        self.spec: VMSpec | None = None
        self.boot_seconds = 0.0
        self.cold_boot_seconds = 0.0  # when resumed: how long the cold boot before it took
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._sock_dir: Path | None = None
        self._started = 0.0

    # -- state ---------------------------------------------------------------

    @property
    def resumed(self) -> bool:
        """True when this machine continues a saved, already-booted state."""
        return self.resume_from is not None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode if self._popen is not None else None

    def is_running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def _spec(self) -> VMSpec:
        if self.spec is None:
            raise VMError(f"{self.image.guest}: the machine has not been launched")
        return self.spec

    # -- launch ----------------------------------------------------------------

    def launch(self) -> None:
        """Make the socket directory, the port and the overlay; start QEMU."""
        if self._pid is not None:
            raise VMError(f"{self.image.guest}: the machine was launched already")
        try:
            self._launch()
        except BaseException:
            self.shutdown(hard=True)
            raise

    def _launch(self) -> None:
        self.files.create()
        self._sock_dir = Path(tempfile.mkdtemp(prefix="memlayout-vm-"))
        c = self.config
        self.spec = replace(
            VMSpec(
                overlay=self.files.overlay,
                console_log=self.files.console_log,
                qmp_socket=self._sock_dir / "qmp.sock",
                ssh_port=free_port(),
                accel=c.accel,
                cpu=c.cpu,
                memory_mib=c.memory_mib,
                smp=c.smp,
                kernel=self.image.kernel_path,
                initrd=self.image.initrd_path,
                kernel_args=c.kernel_args,
                seed_iso=self.image.seed_path,
                extra_args=self.extra_args,
            ),
            incoming=self.resume_from.state if self.resume_from is not None else None,
        )
        backing = self.resume_from.disk if self.resume_from is not None else self.image.disk_path
        self.files.overlay.unlink(missing_ok=True)
        create_overlay(backing, self.spec.overlay)
        cmd = qemu_command(self.spec)
        self.files.qemu_cmdline.write_text(" ".join(cmd) + "\n")
        with self.files.qemu_stderr.open("wb") as stderr_log:
            try:
                self._popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr_log,
                    stderr=stderr_log,
                    preexec_fn=None if self.detached else _die_with_parent,
                    start_new_session=self.detached,
                )
            except OSError as exc:
                raise VMError(
                    f"cannot start {cmd[0]}: {exc} (apt-get install qemu-system-x86)"
                ) from exc
        self._pid = self._popen.pid
        self._started = time.monotonic()
        if self.resume_from is not None:
            try:
                saved.resume(self.spec.qmp_socket)
            except VMError as exc:
                raise self._error(f"resuming the saved state failed: {exc}") from exc
        how = "resumed a saved state" if self.resumed else "booting"
        self.report(
            f"vm: {how}: {self.image.guest} (pid {self._pid}, accel {c.accel}: "
            f"{c.accel_reason}; cpu {c.cpu}; ssh 127.0.0.1:{self.spec.ssh_port})"
        )

    def wait_for_ssh(self, timeout: float = 180.0) -> float:
        """Wait until sshd answers with its banner; watch the console meanwhile."""
        spec = self._spec()
        step = Step("boot", self.report)
        watcher = ConsoleWatcher(spec.console_log)
        deadline = time.monotonic() + timeout
        last_note = 0.0
        while True:
            self.check(watcher)
            if ssh_banner(spec.ssh_port, timeout=1.5).startswith(b"SSH-"):
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

    def check(self, watcher: ConsoleWatcher) -> None:
        """Raise (and kill QEMU) if QEMU exited or the console shows kernel trouble."""
        if not self.is_running():
            raise self._error(f"QEMU exited early with status {self.returncode}")
        trouble = watcher.poll()
        if trouble:
            raise self._error(f"kernel trouble on the console: {trouble}")

    def _error(self, what: str) -> VMError:
        """A VMError quoting the console and QEMU's stderr; QEMU is killed first."""
        self.shutdown(hard=True)
        qemu_err = tail(self.files.qemu_stderr, 5)
        msg = (
            f"{self.image.guest}: {what}\n"
            f"--- last console lines ({self.files.console_log}) ---\n"
            f"{tail(self.files.console_log)}"
        )
        if qemu_err:
            msg += f"\n--- QEMU stderr ({self.files.qemu_stderr}) ---\n{qemu_err}"
        return VMError(msg, log=self.files.console_log)

    # -- context manager -------------------------------------------------------

    def start(self, timeout: float = 180.0, port_retries: int = 2) -> Machine:
        """Launch and wait for sshd; QEMU is gone if this raises.

        The SSH port is free when picked but another program may bind it before QEMU
        does: QEMU then cannot set up host forwarding, and the machine launches again.
        """
        try:
            self.launch()
            self.wait_for_ssh(timeout=timeout)
        except VMError as exc:
            self.shutdown(hard=True)
            if "host forwarding" not in str(exc) or port_retries <= 0:
                raise
            self.report("vm: the SSH port was taken meanwhile; launching again on another")
            self._popen, self._pid, self.spec = None, None, None
            return self.start(timeout, port_retries - 1)
        except BaseException:
            self.shutdown(hard=True)
            raise
        return self

    def __enter__(self) -> Machine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(hard=exc_type is not None)

    # -- QMP and shutdown --------------------------------------------------------

    def qmp(self, command: str, **args: object) -> object:
        mon = QEMUMonitorProtocol(str(self._spec().qmp_socket))
        mon.connect()
        try:
            return mon.cmd(command, **args)
        finally:
            mon.close()

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for QEMU to exit; True if it did."""
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=timeout)
            return self._popen.poll() is not None
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.is_running()

    def _soft_stop(self, timeout: float) -> str | None:
        """ACPI power-down, then QMP quit; how it ended, or None if neither worked."""
        for command, wait, how in (
            ("system_powerdown", timeout, "powered down"),
            ("quit", 5.0, "quit"),
        ):
            with contextlib.suppress(Exception):
                self.qmp(command)
            if self._wait(wait):
                return how
        return None

    def _kill(self) -> None:
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.kill()
            self._popen.wait()
        elif self._pid is not None and pid_alive(self._pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._wait(10)

    def shutdown(self, *, hard: bool = False, timeout: float = 30.0) -> str:
        """Stop the guest: power it down (unless ``hard``), kill it if that fails.

        Returns how it ended. A soft shutdown that had to kill QEMU raises
        AbnormalShutdown, after cleaning up.
        """
        how = "was not running"
        try:
            if self.is_running():
                soft = None if hard or self.spec is None else self._soft_stop(timeout)
                how = soft or "killed"
        finally:  # kills QEMU when the soft stop did not end it
            self._kill()
            self._cleanup()
        if how == "killed" and not hard:
            raise AbnormalShutdown(
                f"{self.image.guest}: the guest did not power down within {timeout:.0f} s; "
                "QEMU was killed",
                log=self.files.console_log,
            )
        return how

    def kill(self) -> None:
        self.shutdown(hard=True)

    def _cleanup(self) -> None:
        """QEMU is gone (shutdown and failed launches call this): its socket directory goes."""
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None

    def save_state(self, target: SavedState) -> float:
        """Save this booted guest into ``target``; QEMU quits, the machine is gone."""
        spec = self._spec()
        try:
            return saved.save(spec.qmp_socket, spec.overlay, target)
        finally:
            self._wait(10)
            self.shutdown(hard=True)

    # -- invoke up / down ----------------------------------------------------------

    def live_state(self) -> LiveState:
        """What ``invoke up`` records so that later tasks can reach this machine."""
        spec = self._spec()
        assert self._pid is not None
        return LiveState(
            guest=self.image.guest,
            pid=self._pid,
            ssh_port=spec.ssh_port,
            qmp_socket=str(spec.qmp_socket),
            console_log=str(spec.console_log),
            host_key=self.image.host_key,
            accel=self.config.accel,
            accel_reason=self.config.accel_reason,
            cpu=self.config.cpu,
            kernel_release=self.image.kernel_release,
            image_sha256=self.image.sha256,
            run_dir=str(self.files.path),
            boot_seconds=round(self.boot_seconds, 2),
            resumed=self.resumed,
        )

    @classmethod
    def attach(cls, state: LiveState, image: BaseImage | None = None) -> Machine:
        """The machine ``invoke up`` left running, to shut it down."""
        placeholder = image or BaseImage(
            guest=state.guest,
            directory=Path(state.run_dir),
            disk="",
            kernel=None,
            initrd=None,
            kernel_release=state.kernel_release,
            host_key=state.host_key,
            sha256=state.image_sha256,
            recipe="",
            build_seconds=0.0,
        )
        m = cls(placeholder, GuestDir(Path(state.run_dir)), report=lambda _m: None)
        m.spec = VMSpec(
            overlay=Path(state.run_dir) / "overlay.qcow2",
            console_log=Path(state.console_log),
            qmp_socket=Path(state.qmp_socket),
            ssh_port=state.ssh_port,
        )
        m._pid = state.pid
        m._sock_dir = Path(state.qmp_socket).parent
        return m
