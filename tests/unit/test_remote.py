"""Remote.run's wait loop with a fake SSH channel: deadlines and the guest watch (no VM)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from memlayout.errors import RemoteError, VMError
from memlayout.guest.remote import Remote


class FakeChannel:
    """A command that prints once and then never finishes."""

    def recv_exit_status(self) -> int:
        return 0

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.pending = [b"partial output\n"]
        self.closed = False

    def exec_command(self, command: str) -> None:
        del command

    def shutdown_write(self) -> None:
        pass

    def recv_ready(self) -> bool:
        return bool(self.pending)

    def recv(self, n: int) -> bytes:
        return self.pending.pop(0)

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self, chan: FakeChannel, active: bool = True) -> None:
        self.chan = chan
        self.active = active

    def is_active(self) -> bool:
        return self.active

    def open_session(self, timeout: float) -> FakeChannel:
        return self.chan


class LostChannel(FakeChannel):
    """The connection went away mid-command: closed, with no exit status."""

    def __init__(self, transport_alive: list[bool]) -> None:
        super().__init__()
        self.pending = []
        self.transport_alive = transport_alive

    def exit_status_ready(self) -> bool:
        self.transport_alive[0] = False
        return True

    def recv_exit_status(self) -> int:
        return -1


def remote_with(chan: FakeChannel, watch: Any = None, alive: list[bool] | None = None) -> Remote:
    state = alive if alive is not None else [True]

    class Transport(FakeTransport):
        def is_active(self) -> bool:
            return state[0]

    remote = Remote.__new__(Remote)
    remote.client = type("Client", (), {"get_transport": lambda self: Transport(chan)})()  # type: ignore[assignment]
    remote.watch = watch
    return remote


def test_a_command_that_never_returns_times_out_with_its_output() -> None:
    chan = FakeChannel()
    started = time.monotonic()
    with pytest.raises(RemoteError, match="timed out after 1 s") as info:
        remote_with(chan).run("sleep infinity", timeout=1)
    assert time.monotonic() - started < 3
    assert "partial output" in str(info.value) and chan.closed


class DyingGuest:
    """The guest panics on the second look."""

    def __init__(self) -> None:
        self.looks = 0

    def check(self) -> None:
        self.looks += 1
        if self.looks >= 2:
            raise VMError("kernel trouble on the console: Kernel panic - not syncing")

    def context(self) -> str:
        return "\n--- last console lines ---\nKernel panic - not syncing"


def test_a_panic_fails_the_command_at_once_not_at_its_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(VMError, match="Kernel panic"):
        remote_with(FakeChannel(), DyingGuest()).run("insmod stuck.ko", timeout=600)
    assert time.monotonic() - started < 5


def test_a_timeout_quotes_the_console() -> None:
    class Quiet(DyingGuest):
        def check(self) -> None:
            pass

    with pytest.raises(RemoteError, match="last console lines"):
        remote_with(FakeChannel(), Quiet()).run("true", timeout=0.5)


def test_a_dropped_connection_is_an_error_not_a_status() -> None:
    alive = [True]
    with pytest.raises(RemoteError, match="connection dropped"):
        remote_with(LostChannel(alive), alive=alive).run("sleep 600")


def test_a_dropped_connection_of_a_dead_guest_says_so() -> None:
    alive = [True]
    dead = DyingGuest()
    dead.looks = 1  # already gone at the first look
    with pytest.raises(VMError, match="Kernel panic"):
        remote_with(LostChannel(alive), dead, alive).run("sleep 600")
