"""ci/peer.py's pure parts: both sides' command lines from the same settings; median and ratio."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from memlayout.guest.machine import MachineConfig
from memlayout.guest.qemu import DEFAULT_CPU, VMSpec, qemu_command
from memlayout.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "ci"))

import peer


def settings(accel: str = "tcg") -> peer.Settings:
    c = MachineConfig(accel=accel)
    return peer.Settings("debian-bookworm", Path("/img/vmlinuz"), "6.1.0-56-amd64",
                         c.accel, c.cpu, c.memory_mib, c.smp)  # fmt: skip


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_settings_are_read_from_the_machine_ours_would_boot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = MachineConfig(accel="kvm", cpu="qemu64", memory_mib=2048, smp=4)
    image = SimpleNamespace(kernel_path=Path("/img/vmlinuz"), kernel_release="6.1.0-56-amd64")
    monkeypatch.setattr(
        peer, "prepare", lambda *a, **k: SimpleNamespace(image=image, config=config)
    )
    s, _ = peer.settings_of("debian-bookworm", Path("/tmp"))
    assert (s.accel, s.cpu, s.memory_mib, s.smp) == ("kvm", "qemu64", 2048, 4)
    assert (s.kernel, s.release) == (Path("/img/vmlinuz"), "6.1.0-56-amd64")


def test_vng_boots_what_ours_boots() -> None:
    s = settings()
    vng = peer.vng_command(Path("/venv/bin/vng"), Path("/k/vmlinuz"), Path("/t/o.qcow2"), s)
    ours = qemu_command(VMSpec(Path("o"), Path("c"), Path("q"), 2222,
                               cpu=s.cpu, memory_mib=s.memory_mib, smp=s.smp))  # fmt: skip
    assert option(vng, "-r") == "/k/vmlinuz"
    assert option(vng, "--root-disk") == "/t/o.qcow2"
    assert option(vng, "--root-fstype") == "ext4"
    assert option(vng, "--cpus") == option(ours, "-smp") == "2"
    assert option(vng, "--memory") == f"{option(ours, '-m')}M" == "1024M"
    assert f"--qemu-opts=-cpu {option(ours, '-cpu')}" in vng
    assert option(ours, "-cpu") == DEFAULT_CPU
    assert vng[-3:] == ["--", "uname", "-r"]


def test_disable_kvm_exactly_when_ours_runs_tcg() -> None:
    def vng(accel: str) -> list[str]:
        return peer.vng_command(Path("vng"), Path("k"), Path("o"), settings(accel))

    assert "--disable-kvm" in vng("tcg")
    assert "--disable-kvm" not in vng("kvm")


def test_ours_is_up_cold_then_the_same_command_then_down() -> None:
    up, ssh, down = peer.ours_commands("/venv/bin/python", "debian-trixie")
    assert up == [
        "/venv/bin/python",
        "-m",
        "invoke",
        "up",
        "--no-resume",
        "--guest",
        "debian-trixie",
    ]
    assert ssh[3:] == ["ssh", "--command", "uname -r", "--guest", "debian-trixie"]
    assert down[3:] == ["down", "--guest", "debian-trixie"]


def test_median_and_ratio_to_the_peer() -> None:
    figure = peer.against("ours", [3.0, 1.0, 2.0, 10.0, 4.0], peer=2.0)
    assert figure.value == 3.0
    assert figure.ratio == pytest.approx(1.5)
    assert "1.50x of virtme-ng" in figure.line()
