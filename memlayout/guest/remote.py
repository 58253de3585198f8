"""SSH and SFTP to a guest with paramiko; the guest's host key is known in advance."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from ..errors import RemoteError

WATCH_INTERVAL = 0.5


class GuestWatch(Protocol):
    """What a command's wait loop checks: the guest's console and QEMU."""

    def check(self) -> None:
        """Raise when the guest has failed (a panic, an oops, QEMU gone)."""

    def context(self) -> str:
        """Lines to quote when a command hangs (the console's tail, stuck-task reports)."""
        ...


@dataclass(frozen=True)
class Result:
    command: str
    status: int
    stdout: str
    stderr: str

    def check(self) -> Result:
        if self.status != 0:
            raise RemoteError(
                f"guest command failed (exit {self.status}): {self.command}\n"
                f"{self.stderr.strip() or self.stdout.strip()}"
            )
        return self


def host_key_from_line(line: str) -> paramiko.PKey:
    kind, blob = line.split()[:2]
    if kind != "ssh-ed25519":
        raise ValueError(f"unsupported host key type {kind}")
    return paramiko.Ed25519Key(data=base64.b64decode(blob))


class Remote:
    """A connection to root@127.0.0.1:port that rejects any other host key."""

    def __init__(
        self,
        port: int,
        client_key: Path,
        host_key: str,
        *,
        user: str = "root",
        connect_timeout: float = 20.0,
        watch: GuestWatch | None = None,
    ) -> None:
        self.port = port
        self.watch = watch
        self.client = paramiko.SSHClient()
        self.client.get_host_keys().add(
            f"[127.0.0.1]:{port}", "ssh-ed25519", host_key_from_line(host_key)
        )
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.client.connect(
                    "127.0.0.1",
                    port,
                    username=user,
                    pkey=pkey,
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=10,
                    banner_timeout=10,
                    auth_timeout=10,
                )
                break
            except (paramiko.SSHException, OSError) as exc:
                if isinstance(exc, paramiko.BadHostKeyException):
                    raise RemoteError(f"guest host key mismatch: {exc}") from exc
                if time.monotonic() > deadline:
                    raise RemoteError(f"cannot connect over SSH: {exc}") from exc
                time.sleep(0.5)
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(
        self,
        command: str,
        *,
        timeout: float | None = 600,
        check: bool = False,
        stdin: str | None = None,
    ) -> Result:
        """Run ``command`` in the guest's shell; collect both output streams.

        ``timeout`` is a deadline for the whole command (None: none). Past it the
        command's channel is closed and RemoteError quotes what it printed so far.
        """
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError("the SSH connection to the guest is gone")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            chan = transport.open_session(timeout=30)
        except (paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"cannot open an SSH channel to the guest: {exc}") from exc
        out, err = bytearray(), bytearray()
        next_watch = time.monotonic()
        try:
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if not busy and chan.exit_status_ready():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise RemoteError(
                        f"guest command timed out after {timeout:.0f} s: {command}\n"
                        f"--- its output so far ---\n"
                        f"{(out + err).decode(errors='replace')[-2000:]}"
                        + (self.watch.context() if self.watch is not None else "")
                    )
                if self.watch is not None and time.monotonic() >= next_watch:
                    self.watch.check()  # a panic or a dead QEMU fails the command at once
                    next_watch = time.monotonic() + WATCH_INTERVAL
                if not busy:
                    if transport is not None and not transport.is_active():
                        raise RemoteError(f"the SSH connection dropped during: {command}")
                    chan.status_event.wait(0.05)
            status = chan.recv_exit_status()
            if status == -1:  # no exit status: a signal killed it, or the connection is gone
                self._explain_lost(transport, command)
        except (paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"the SSH connection failed during: {command}: {exc}") from exc
        finally:
            chan.close()
        result = Result(command, status, out.decode(errors="replace"), err.decode(errors="replace"))
        return result.check() if check else result

    def _explain_lost(self, transport: paramiko.Transport, command: str) -> None:
        """Raise when the guest or the connection is gone; return when only the command died."""
        deadline = time.monotonic() + 1.0
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.1)  # the transport notices a closed socket a moment later
        if self.watch is not None:
            self.watch.check()  # a dead QEMU or a panic says more than a lost connection
        if not transport.is_active():
            raise RemoteError(f"the SSH connection dropped during: {command}")

    def put(self, local: Path, remote: str) -> None:
        self.sftp.put(str(local), remote)
        self.sftp.chmod(remote, local.stat().st_mode & 0o777)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.sftp.get(remote, str(local))
