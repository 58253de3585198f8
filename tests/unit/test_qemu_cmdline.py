from pathlib import Path

import pytest

from memlayout.guest.qemu import DEFAULT_CPU, VMSpec, free_port, qemu_command


def spec(**kw: object) -> VMSpec:
    base = dict(
        overlay=Path("/r/o.qcow2"),
        console_log=Path("/r/console.log"),
        qmp_socket=Path("/t/qmp.sock"),
        ssh_port=40022,
        kernel=Path("/i/vmlinuz"),
        initrd=Path("/i/initrd.img"),
    )
    base.update(kw)
    return VMSpec(**base)  # type: ignore[arg-type]


def value_after(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == flag]


def test_port_forward_binds_loopback_only() -> None:
    netdev = value_after(qemu_command(spec()), "-netdev")[0]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev


@pytest.mark.parametrize(("accel", "expected"), [("kvm", "kvm"), ("tcg", "tcg,thread=multi")])
def test_accelerator_is_passed(accel: str, expected: str) -> None:
    assert value_after(qemu_command(spec(accel=accel)), "-accel") == [expected]


def test_default_cpu_is_an_intel_model_without_la57() -> None:
    cmd = qemu_command(spec())
    assert value_after(cmd, "-cpu") == [DEFAULT_CPU]
    assert DEFAULT_CPU.startswith("Skylake") and "max" not in DEFAULT_CPU


def test_direct_kernel_boot_and_console_log() -> None:
    cmd = qemu_command(spec())
    assert value_after(cmd, "-kernel") == ["/i/vmlinuz"]
    assert value_after(cmd, "-initrd") == ["/i/initrd.img"]
    append = value_after(cmd, "-append")[0]
    assert "console=ttyS0" in append and "root=/dev/vda" in append
    assert "path=/r/console.log" in value_after(cmd, "-chardev")[0]
    assert value_after(cmd, "-qmp") == ["unix:/t/qmp.sock,server=on,wait=off"]


def test_disk_boot_without_kernel_attaches_seed_read_only() -> None:
    cmd = qemu_command(spec(kernel=None, initrd=None, seed_iso=Path("/i/seed.iso")))
    assert "-kernel" not in cmd and "-append" not in cmd
    drives = value_after(cmd, "-drive")
    assert drives[0].startswith("file=/r/o.qcow2,format=qcow2")
    assert drives[1] == "file=/i/seed.iso,format=raw,if=virtio,readonly=on"


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


GOLDEN = Path(__file__).parents[1] / "data" / "golden"


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("qemu-direct-kernel.txt", {}),
        ("qemu-cloud-resume.txt", {"kernel": None, "initrd": None, "accel": "kvm",
                                   "seed_iso": Path("/i/seed.iso"),
                                   "incoming": Path("/c/saved/state.bin")}),
    ],
)  # fmt: skip
def test_command_line_matches_the_golden_file(name: str, kw: dict[str, object]) -> None:
    """The whole command line, one argument per line; update the file when it changes on purpose."""
    assert "\n".join(qemu_command(spec(**kw))) + "\n" == (GOLDEN / name).read_text()


def test_resume_reads_the_saved_state() -> None:
    cmd = qemu_command(spec(incoming=Path("/c/s/state.bin")))
    assert value_after(cmd, "-incoming") == ["exec:cat /c/s/state.bin"]
