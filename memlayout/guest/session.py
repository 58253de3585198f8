"""A guest to work in: the one ``invoke up`` left running, or one booted for the duration.

:func:`boot` resumes a saved state of the same image and QEMU configuration when
there is one; otherwise it boots cold, saves the booted state, and resumes that,
so every later boot of the configuration takes about two seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import MemlayoutError, VMError
from ..paths import cache_dir
from ..progress import Reporter, to_stderr
from ..rundir import GuestDir, active_state_path
from . import accel, keys
from .cache import ensure_image, locked
from .console import ConsoleWatcher, find_trouble, tail
from .machine import Machine, MachineConfig, pid_alive
from .profiles import DEFAULT_GUEST, get_profile
from .qemu import DEFAULT_CPU, KERNEL_ARGS
from .remote import GuestWatch, Remote
from .saved import SavedState, saved_state_for
from .state import LiveState


@dataclass(frozen=True)
class GuestOptions:
    """Which guest, on which accelerator and CPU, from which mirror."""

    guest: str = DEFAULT_GUEST
    accel: str = "auto"
    cpu: str = DEFAULT_CPU
    mirror: str | None = None
    memory_mib: int = 1024
    resume: bool = True  # resume a saved booted state when one matches
    kernel_args: str = KERNEL_ARGS  # the guest kernel's command line (direct kernel boot)

    def __post_init__(self) -> None:
        get_profile(self.guest)  # an unknown name fails here, with the known ones listed


def prepare(
    opts: GuestOptions, files: GuestDir, *, detached: bool = False, report: Reporter = to_stderr
) -> Machine:
    """Ensure the image, pick the accelerator, and make (not launch) the machine."""
    cache = cache_dir()
    base = ensure_image(get_profile(opts.guest), cache, mirror=opts.mirror, report=report)
    choice = accel.choose(opts.accel, base.kernel_path, opts.cpu, cache)
    config = MachineConfig(
        accel=choice.accel,
        accel_reason=choice.reason,
        cpu=opts.cpu,
        memory_mib=opts.memory_mib,
        kernel_args=opts.kernel_args,
    )
    return Machine(base, files, config, detached=detached, report=report)


def saved_state_of(m: Machine) -> SavedState:
    """Where the saved state for exactly this machine's configuration lives."""
    key = m.config.key(m.config.kernel_args, seed=m.image.seed is not None)
    return saved_state_for(cache_dir(), m.image.guest, m.image.sha256, key)


def boot(
    opts: GuestOptions,
    files: GuestDir,
    *,
    detached: bool = False,
    report: Reporter = to_stderr,
) -> Machine:
    """A running machine with sshd answering: resumed from a saved state when one matches."""
    cold = prepare(opts, files, detached=detached, report=report)
    if not opts.resume:
        return cold.start()
    target = saved_state_of(cold)
    cold_seconds = 0.0
    with locked(target.directory.with_name(f".{target.directory.name}.lock"), report):
        if not target.ready():
            cold.start()
            cold_seconds = cold.boot_seconds
            try:
                seconds = cold.save_state(target)
            except MemlayoutError as exc:  # QMP or disk trouble: the guest still boots, cold
                report(f"vm: could not save the booted state ({exc}); booting cold")
                return _again(cold, None).start()
            report(f"vm: saved the booted state in {seconds:.1f} s ({target.directory})")
    warm = _again(cold, target)
    try:
        warm.start(timeout=60)
    except VMError as exc:
        report(f"vm: the saved state did not resume ({exc.summary()}); booting cold")
        target.discard()
        return _again(cold, None).start()
    warm.cold_boot_seconds = cold_seconds
    return warm


def _again(m: Machine, resume: SavedState | None) -> Machine:
    """A new machine like ``m`` (same image and accelerator), resuming ``resume``."""
    return Machine(m.image, m.files, m.config, resume=resume, detached=m.detached, report=m.report)


def connect(port: int, host_key: str, watch: GuestWatch | None = None) -> Remote:
    client = keys.ensure_client_key(cache_dir())
    return Remote(port, client.private, host_key, watch=watch)


@dataclass
class ConsoleWatch:
    """Fails a guest command at once when QEMU dies or the console shows kernel trouble;
    quotes the console (and any hung-task or stall report) when a command times out."""

    console_log: Path
    alive: Callable[[], bool]
    machine: Machine | None = None  # ours to kill on trouble; None: invoke up's VM

    def __post_init__(self) -> None:
        self.watcher = ConsoleWatcher(self.console_log)

    def check(self) -> None:
        if self.machine is not None:
            self.machine.check(self.watcher)
            return
        if not self.alive():
            raise VMError(f"the VM is gone\n{self.context()}", log=self.console_log)
        trouble = self.watcher.poll()
        if trouble:
            raise VMError(
                f"kernel trouble on the console: {trouble}\n{self.context()}", log=self.console_log
            )

    def context(self) -> str:
        stuck = [ln for ln in tail(self.console_log, 400).splitlines() if find_trouble(ln)]
        text = f"\n--- last console lines ({self.console_log}) ---\n{tail(self.console_log)}"
        if stuck:
            text += "\n--- kernel reports on the console ---\n" + "\n".join(stuck[-10:])
        return text


def live_state(guest: str, report: Reporter = to_stderr) -> LiveState | None:
    """The state of a VM left running by ``invoke up``, if it is still alive."""
    path = active_state_path(guest)
    state = LiveState.load(path, report)
    if state is None or not pid_alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


@dataclass
class Session:
    remote: Remote
    state: LiveState
    machine: Machine | None  # None when attached to a VM started by ``invoke up``


@contextlib.contextmanager
def open_session(
    opts: GuestOptions,
    files: GuestDir,
    report: Reporter = to_stderr,
    *,
    attach: bool = True,
) -> Iterator[Session]:
    """Attach to the live VM of ``opts.guest`` (if ``attach``), or boot one for the duration."""
    state = live_state(opts.guest, report) if attach else None
    if state is not None:
        report(f"using the running {opts.guest} VM (pid {state.pid}, accel {state.accel})")
        watch = ConsoleWatch(Path(state.console_log), lambda: pid_alive(state.pid))
        with connect(state.ssh_port, state.host_key, watch) as remote:
            yield Session(remote, state, None)
        return
    m = boot(opts, files, report=report)
    failed = True
    try:
        assert m.spec is not None
        watch = ConsoleWatch(m.files.console_log, m.is_running, m)
        with connect(m.spec.ssh_port, m.image.host_key, watch) as remote:
            if m.resumed:
                sync_clock(remote)
            yield Session(remote, m.live_state(), m)
        failed = False
    finally:
        m.shutdown(hard=failed)


def sync_clock(remote: Remote) -> None:
    """A resumed guest's clock stands where it was saved: set it to the host's."""
    remote.run(f"date -s @{time.time():.3f} >/dev/null", check=True)


def start_detached(opts: GuestOptions, files: GuestDir, report: Reporter = to_stderr) -> LiveState:
    """``invoke up``: boot a machine that outlives this process; record how to reach it."""
    path = active_state_path(opts.guest)
    m = boot(opts, files, detached=True, report=report)
    try:
        assert m.spec is not None
        if m.resumed:
            with connect(m.spec.ssh_port, m.image.host_key) as remote:
                sync_clock(remote)
        state = m.live_state()
        state.save(files.vm_json)
        state.save(path)
    except BaseException:
        m.shutdown(hard=True)
        raise
    return state


def stop_detached(guest: str, report: Reporter = to_stderr) -> str:
    """``invoke down``: shut down the machine ``invoke up`` left running."""
    state = live_state(guest, report)
    if state is None:
        return "was not running"
    try:
        return Machine.attach(state).shutdown()
    finally:
        active_state_path(guest).unlink(missing_ok=True)
