"""Glue between the stages: open a guest (booted or already up) and reach it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import accel as accel_mod
from . import image, keys, runs
from .guests import get_profile
from .paths import cache_dir
from .progress import Reporter, to_stderr
from .remote import Remote
from .vm import DEFAULT_CPU, VM, VMState, pid_alive


@dataclass(frozen=True)
class GuestOptions:
    guest: str = "debian-bookworm"
    accel: str = "auto"
    cpu: str = DEFAULT_CPU
    mirror: str | None = None
    memory_mib: int = 1024


def prepare_vm(
    opts: GuestOptions, run_dir: Path, *, detached: bool = False, report: Reporter = to_stderr
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
    opts: GuestOptions, run_dir: Path, report: Reporter = to_stderr, *, attach: bool = True
) -> Iterator[Session]:
    """Attach to the live VM of ``opts.guest`` (if ``attach``), or boot one for the duration."""
    state = live_state(opts.guest) if attach else None
    if state is not None:
        report(f"using the running {opts.guest} VM (pid {state.pid}, accel {state.accel})")
        with connect(state.ssh_port, state.host_key) as remote:
            yield Session(remote, state, None)
        return
    vm = prepare_vm(opts, run_dir, report=report)
    with vm, connect(vm.spec.ssh_port, vm.image.host_key) as remote:
        yield Session(remote, vm.state(), vm)
