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
    def __init__(self, chan: FakeChannel) -> None:
        self.chan = chan

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> FakeChannel:
        return self.chan


def remote_with(chan: FakeChannel, watch: Any = None) -> Remote:
    remote = Remote.__new__(Remote)
    remote.client = type("Client", (), {"get_transport": lambda self: FakeTransport(chan)})()  # type: ignore[assignment]
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
