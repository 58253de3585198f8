"""Glue between the stages: open a guest (booted or already up) and reach it."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import accel as accel_mod
from . import image, keys, runs
from . import warm as warm_mod
from .guests import get_profile
from .paths import cache_dir
from .progress import Reporter, to_stderr
from .remote import Remote
from .vm import DEFAULT_CPU, VM, VMError, VMState, pid_alive
from .warm import WarmState


@dataclass(frozen=True)
class GuestOptions:
    guest: str = "debian-bookworm"
    accel: str = "auto"
    cpu: str = DEFAULT_CPU
    mirror: str | None = None
    memory_mib: int = 1024


def prepare_vm(
    opts: GuestOptions,
    run_dir: Path,
    *,
    detached: bool = False,
    report: Reporter = to_stderr,
) -> VM:
    """Ensure the image, pick the accelerator, and make (not start) the VM."""
    cache = cache_dir()
    base = image.ensure_image(get_profile(opts.guest), cache, mirror=opts.mirror, report=report)
    choice = accel_mod.choose(opts.accel, base.kernel_path, opts.cpu, cache)
    return VM(
        base,
        run_dir,
        accel=choice.accel,
        accel_reason=choice.reason,
        cpu=opts.cpu,
        memory_mib=opts.memory_mib,
        detached=detached,
        report=report,
    )


def warm_state_for(vm: VM) -> WarmState:
    """Where the saved state for exactly this VM configuration lives."""
    spec = vm.spec
    key = warm_mod.warm_key(
        vm.image.sha256,
        {
            "accel": spec.accel,
            "cpu": spec.cpu,
            "memory": spec.memory_mib,
            "smp": spec.smp,
            "kernel_args": spec.kernel_args,
            "seed": bool(spec.seed_iso),
            "layout": 1,
        },
    )
    return warm_mod.warm_dir(cache_dir(), vm.image.guest, key)


def boot(
    opts: GuestOptions,
    run_dir: Path,
    *,
    detached: bool = False,
    use_warm: bool = True,
    report: Reporter = to_stderr,
) -> VM:
    """A running VM with sshd answering: resumed from a saved state when one matches.

    Without one, the guest boots cold, its state is saved, and it is resumed
    from that state, so every later boot of the same configuration is fast.
    """
    vm = prepare_vm(opts, run_dir, detached=detached, report=report)
    if not use_warm:
        _start(vm)
        return vm
    ws = warm_state_for(vm)
    if not ws.ready():
        _start(vm)
        cold = vm.boot_seconds
        try:
            seconds = vm.save_warm(ws)
        except Exception as exc:  # QMP or disk trouble: the guest still boots, cold
            report(f"vm: could not save the booted state ({exc}); booting cold")
            return boot(opts, run_dir, detached=detached, use_warm=False, report=report)
        report(f"vm: saved the booted state in {seconds:.1f} s ({ws.directory})")
    else:
        cold = 0.0
    vm = vm.resuming(ws)  # the image is checked and the accelerator chosen once
    try:
        _start(vm, timeout=60)
    except VMError as exc:
        report(f"vm: the saved state did not resume ({exc}); booting cold")
        shutil.rmtree(ws.directory, ignore_errors=True)
        return boot(opts, run_dir, detached=detached, use_warm=False, report=report)
    vm.cold_boot_seconds = cold
    return vm


def _start(vm: VM, timeout: float = 180.0) -> None:
    try:
        vm.start()
        vm.wait_for_ssh(timeout=timeout)
    except BaseException:
        vm.kill()
        raise


def connect(port: int, host_key: str) -> Remote:
    client = keys.ensure_client_key(cache_dir())
    return Remote(port, client.private, host_key)


def live_state(guest: str) -> VMState | None:
    """The state of a VM left running by ``invoke up``, if it is still alive."""
    path = runs.active_state_path(guest)
    if not path.exists():
        return None
    state = VMState.load(path)
    if not pid_alive(state.pid):
        path.unlink()
        return None
    return state


@dataclass
class Session:
    remote: Remote
    state: VMState
    vm: VM | None  # None when attached to a VM started by ``invoke up``


@contextlib.contextmanager
def session(
    opts: GuestOptions,
    run_dir: Path,
    report: Reporter = to_stderr,
    *,
    attach: bool = True,
    warm: bool = True,
) -> Iterator[Session]:
    """Attach to the live VM of ``opts.guest`` (if ``attach``), or boot one for the duration."""
    state = live_state(opts.guest) if attach else None
    if state is not None:
        report(f"using the running {opts.guest} VM (pid {state.pid}, accel {state.accel})")
        with connect(state.ssh_port, state.host_key) as remote:
            yield Session(remote, state, None)
        return
    vm = boot(opts, run_dir, use_warm=warm, report=report)
    try:
        with connect(vm.spec.ssh_port, vm.image.host_key) as remote:
            if vm.resumed:
                sync_clock(remote)
            yield Session(remote, vm.state(), vm)
    finally:
        vm.shutdown()


def sync_clock(remote: Remote) -> None:
    """A resumed guest's clock stands where it was saved: set it to the host's."""
    remote.run(f"date -s @{time.time():.3f} >/dev/null", check=True)
