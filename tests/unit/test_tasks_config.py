"""Defaults for --accel/--cpu/--mirror from invoke's configuration: files and environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.config import Config
from invoke.context import Context

import tasks
from memlayout.guest.qemu import DEFAULT_CPU


def context(runtime: Path | None = None) -> Context:
    """A Context configured the way `invoke` configures one for tasks.py."""
    config = Config(runtime_path=str(runtime) if runtime else None)
    config.load_collection(tasks.ns.configuration())
    if runtime:
        config.load_runtime()
    config.load_shell_env()
    return Context(config)


def test_the_built_in_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACCEL", "CPU", "MIRROR"):
        monkeypatch.delenv(f"INVOKE_MEMLAYOUT_{name}", raising=False)
    opts = tasks._opts(context(), "debian-bookworm", None, None, None)
    assert (opts.accel, opts.cpu, opts.mirror) == ("auto", DEFAULT_CPU, None)


def test_environment_sets_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOKE_MEMLAYOUT_ACCEL", "tcg")
    monkeypatch.setenv("INVOKE_MEMLAYOUT_MIRROR", "http://mirror.invalid/debian")
    opts = tasks._opts(context(), "debian-bookworm", None, None, None)
    assert (opts.accel, opts.cpu, opts.mirror) == (
        "tcg",
        DEFAULT_CPU,
        "http://mirror.invalid/debian",
    )


def test_a_config_file_sets_the_defaults_and_the_command_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVOKE_MEMLAYOUT_ACCEL", raising=False)
    monkeypatch.delenv("INVOKE_MEMLAYOUT_CPU", raising=False)
    conf = tmp_path / "invoke.yaml"
    conf.write_text("memlayout:\n  accel: tcg\n  cpu: max\n")
    c = context(conf)
    from_file = tasks._opts(c, "debian-bookworm", None, None, None)
    assert (from_file.accel, from_file.cpu) == ("tcg", "max")
    given = tasks._opts(c, "debian-bookworm", "kvm", "Skylake-Client-v1", None)
    assert (given.accel, given.cpu) == ("kvm", "Skylake-Client-v1")
