from pathlib import Path

import pytest

from memlayout.errors import UsageError
from memlayout.guest import accel


@pytest.mark.parametrize("forced", ["kvm", "tcg"])
def test_forced_accelerator_is_used_as_is(forced: str, tmp_path: Path) -> None:
    choice = accel.choose(forced, None, "Skylake-Client-v1", tmp_path)
    assert choice.accel == forced and "forced" in choice.reason


def test_unknown_accelerator_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="auto, kvm or tcg"):
        accel.choose("hvf", None, "max", tmp_path)


def test_no_kvm_device_means_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel, "kvm_usable_device", lambda: "/dev/kvm does not exist")
    choice = accel.choose("auto", tmp_path / "vmlinuz", "max", tmp_path)
    assert choice == accel.AccelChoice("tcg", "/dev/kvm does not exist")


def test_probe_result_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"x" * 10)
    calls = []

    def fake_probe(k: Path, cpu: str) -> accel.AccelChoice:
        calls.append(k)
        return accel.AccelChoice("tcg", "KVM probe: no console output")

    monkeypatch.setattr(accel, "kvm_usable_device", lambda: None)
    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    first = accel.choose("auto", kernel, "max", tmp_path)
    second = accel.choose("auto", kernel, "max", tmp_path)
    assert len(calls) == 1
    assert first.accel == second.accel == "tcg"
    assert second.reason.endswith("(cached probe)")
