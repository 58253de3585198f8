"""The pipeline under faults, on real guests: every fault is a clear error, quickly,
and leaves no QEMU behind, the base image unchanged and the run directory with the logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlayout.errors import MemlayoutError, RemoteError, VMError
from memlayout.guest.cache import ensure_image
from memlayout.guest.image import sha256_file
from memlayout.guest.machine import pid_alive
from memlayout.guest.profiles import get_profile
from memlayout.guest.session import GuestOptions, Session, open_session
from memlayout.paths import REPO_ROOT, cache_dir
from memlayout.rundir import GuestDir

from .conftest import DEFAULT_TEST_GUEST

STALL = Path(__file__).parents[1] / "data" / "stall"


@pytest.fixture(scope="module")
def base_sha256() -> Iterator[str]:
    """The base image's checksum must be the same after every fault."""
    image = ensure_image(get_profile(DEFAULT_TEST_GUEST), cache_dir())
    yield image.sha256
    assert sha256_file(image.disk_path) == image.sha256


def faulty_session(tmp_path: Path) -> tuple[GuestDir, object]:
    files = GuestDir(tmp_path / DEFAULT_TEST_GUEST)
    return files, open_session(GuestOptions(DEFAULT_TEST_GUEST), files, attach=False)


def assert_cleaned_up(s: Session, files: GuestDir) -> None:
    assert s.machine is not None and s.machine.pid is not None
    assert not pid_alive(s.machine.pid), "QEMU was left running"
    assert files.console_log.exists() and files.qemu_cmdline.exists()


def test_a_module_that_blocks_in_init_times_out_and_the_guest_is_stopped(
    base_sha256: str, tmp_path: Path
) -> None:
    files, opened = faulty_session(tmp_path)
    started = 0.0
    with pytest.raises(RemoteError, match="timed out after 5 s") as info, opened as s:  # type: ignore[attr-defined]
        s.remote.run("mkdir -p /root/stall", check=True)
        for name in ("stall.c", "Makefile"):
            s.remote.put(STALL / name, f"/root/stall/{name}")
        s.remote.run("make -C /root/stall", check=True, timeout=600)
        started = time.monotonic()
        s.remote.run("insmod /root/stall/stall.ko seconds=600", timeout=5)
    assert time.monotonic() - started < 15
    assert "last console lines" in str(info.value)
    assert_cleaned_up(s, files)


def test_a_panic_during_a_command_is_noticed_at_once(base_sha256: str, tmp_path: Path) -> None:
    files, opened = faulty_session(tmp_path)
    with pytest.raises(VMError) as info, opened as s:  # type: ignore[attr-defined]
        started = time.monotonic()
        s.remote.run("sleep 1; echo c > /proc/sysrq-trigger; sleep 600", timeout=600)
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert "Kernel panic" in message or "sysrq" in message or "QEMU exited" in message
    assert_cleaned_up(s, files)


def test_qemu_killed_mid_stage_is_a_clear_error(base_sha256: str, tmp_path: Path) -> None:
    files, opened = faulty_session(tmp_path)
    with pytest.raises(MemlayoutError) as info, opened as s:  # type: ignore[attr-defined]
        assert s.machine is not None and s.machine.pid is not None
        threading.Timer(2.0, os.kill, (s.machine.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        s.remote.run("sleep 600", timeout=600)
    assert time.monotonic() - started < 30
    assert "QEMU exited" in str(info.value) or "connection" in str(info.value)
    assert_cleaned_up(s, files)


def test_sshd_killed_mid_command_is_a_clear_error(base_sha256: str, tmp_path: Path) -> None:
    files, opened = faulty_session(tmp_path)
    with pytest.raises(RemoteError), opened as s:  # type: ignore[attr-defined]
        s.remote.run("systemctl kill -s KILL ssh.service; sleep 600", timeout=120)
    assert_cleaned_up(s, files)


def test_ctrl_c_during_invoke_all_exits_130_and_leaves_no_qemu(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = dict(os.environ, MEMLAYOUT_RUNS=str(runs))
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "all", "--guest", DEFAULT_TEST_GUEST],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait until the guest is up and the build has begun
        seen.append(line)
        if "build ..." in line:
            break
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + out
    assert "interrupted" in out
    run = (runs / "latest").resolve()
    assert (run / DEFAULT_TEST_GUEST / "console.log").exists()
    leftover = subprocess.run(["pgrep", "-f", str(run)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a QEMU of the interrupted run is still running"


def test_two_pipelines_on_one_cache_both_pass(tmp_path: Path) -> None:
    """Two `invoke verify` at once: one image, one saved state, two guests, two ports."""
    procs = []
    for n in (1, 2):
        env = dict(os.environ, MEMLAYOUT_RUNS=str(tmp_path / f"runs{n}"))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "invoke",
                    "verify",
                    "--pid",
                    "1",
                    "--guest",
                    DEFAULT_TEST_GUEST,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
        assert " passed, 0 failed" in out
    ports = {
        line.rsplit("ssh 127.0.0.1:", 1)[1].split(")")[0]
        for out in outputs
        for line in out.splitlines()
        if "ssh 127.0.0.1:" in line
    }
    assert len(ports) >= 2
