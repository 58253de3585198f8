"""Cold boot -> first command beside virtme-ng, the peer a user would otherwise pick.

Both boot the guest image's own kernel with the same accelerator, CPU model, memory and
vCPUs (read from memlayout, never restated here); the runs alternate, ours first, and
each side's figure is the median of ``repeats`` runs.

    ours       invoke up --no-resume; invoke ssh --command 'uname -r'; invoke down
    virtme-ng  vng -r <vmlinuz> --root-disk <fresh overlay> -- uname -r  (it powers off itself)

vng's wall clock includes its power-off, so the totals are compared; ours to the first
command alone is printed beside them. First use sets up, under <cache>/bench/:

    vng-<version>/        a venv with virtme-ng pinned
    tools/bin/            modprobe (kmod) and a static busybox, from Debian's packages via
                          `apt-get download`: vng resolves the kernel's modules with
                          modprobe and builds its initramfs around a static busybox
    modules/<release>/    boot/vmlinuz-<release> and lib/modules/<release>/, taken from
                          the image's disk: vng looks for the modules beside the kernel
                          image it is given, so the host's /lib/modules is never touched
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmark import Figure, median

from memlayout.guest.image import BaseImage
from memlayout.guest.qemu import create_overlay
from memlayout.guest.session import GuestOptions, live_state, prepare
from memlayout.paths import REPO_ROOT, cache_dir
from memlayout.progress import silent
from memlayout.rundir import GuestDir

VNG_VERSION = "1.42"
COMMAND = ("uname", "-r")
ROOT_FSTYPE = "ext4"  # qemu/debian-disk.sh makes the image's disk with mke2fs -t ext4
TIMEOUT = 900.0  # seconds one boot may take on a loaded machine under TCG
T = TypeVar("T")
TOOL_PACKAGES = {"kmod": "bin/kmod", "busybox-static": "bin/busybox"}


@dataclass(frozen=True)
class Settings:
    """What both sides boot: the same kernel, accelerator, CPU model, memory and vCPUs."""

    guest: str
    kernel: Path
    release: str
    accel: str  # "kvm" or "tcg"
    cpu: str
    memory_mib: int
    smp: int


def settings_of(guest: str, scratch: Path) -> tuple[Settings, BaseImage]:
    """The settings `invoke up --guest GUEST` boots with (the image is built if missing)."""
    m = prepare(GuestOptions(guest, resume=False), GuestDir(scratch / "probe"), report=silent)
    if m.image.kernel_path is None:
        raise SystemExit(f"{guest}: the image has no kernel of its own for vng -r")
    c = m.config
    settings = Settings(
        guest, m.image.kernel_path, m.image.kernel_release, c.accel, c.cpu, c.memory_mib, c.smp
    )
    return settings, m.image


def vng_command(vng: Path, kernel: Path, overlay: Path, s: Settings) -> list[str]:
    """virtme-ng's command line for ``s``: --disable-kvm exactly when ours runs TCG."""
    cmd = [str(vng), "-r", str(kernel), "--root-disk", str(overlay), "--root-fstype", ROOT_FSTYPE]
    if s.accel != "kvm":
        cmd.append("--disable-kvm")
    cmd += ["--cpus", str(s.smp), "--memory", f"{s.memory_mib}M", f"--qemu-opts=-cpu {s.cpu}"]
    return [*cmd, "--", *COMMAND]


def ours_commands(python: str, guest: str) -> tuple[list[str], list[str], list[str]]:
    """Ours from the shell: up (cold), the first command, down."""

    def invoke(*args: str) -> list[str]:
        return [python, "-m", "invoke", *args, "--guest", guest]

    return (
        invoke("up", "--no-resume"),
        invoke("ssh", "--command", " ".join(COMMAND)),
        invoke("down"),
    )


def against(name: str, values: Sequence[float], peer: float) -> Figure:
    """The median of ``values`` with its ratio to the peer's median."""
    value = median(list(values))
    return Figure(name, value, ratio=value / peer, baseline="of virtme-ng")


class RunFailed(Exception):
    """One boot that did not get to its first command (TCG on a loaded host can panic)."""


@dataclass(frozen=True)
class Timed:
    seconds: float
    stdout: str


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Timed:
    """Wall clock of ``cmd``, which must succeed; on a timeout its whole group is killed."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        text=True,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RunFailed(f"{' '.join(cmd)}: no answer in {TIMEOUT:.0f} s") from None
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RunFailed(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return Timed(seconds, out)


# -- virtme-ng and what it needs, set up once under <cache>/bench/ -------------------------


def bench_dir() -> Path:
    return cache_dir() / "bench"


def ensure_vng() -> Path:
    """virtme-ng, pinned, in its own venv; returns the venv's bin/ (vng calls virtme-run)."""
    venv = bench_dir() / f"vng-{VNG_VERSION}"
    if not (venv / "bin" / "vng").exists():
        print(f"peer: installing virtme-ng=={VNG_VERSION} into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"virtme-ng=={VNG_VERSION}"], check=True
        )
    return venv / "bin"


def ensure_tools() -> Path:
    """modprobe and a static busybox for vng, from Debian's packages; returns their bin/."""
    bin_dir = bench_dir() / "tools" / "bin"
    if (bin_dir / "modprobe").exists() and (bin_dir / "busybox-static").exists():
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        for package, member in TOOL_PACKAGES.items():
            proc = subprocess.run(
                ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
            )
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if proc.returncode != 0 or not debs:
                raise SystemExit(
                    f"apt-get download {package} failed: {proc.stderr.strip()}\n"
                    "vng needs modprobe (kmod) and a static busybox (busybox-static)"
                )
            tree = Path(tmp) / package
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True)
            name = "busybox-static" if package == "busybox-static" else "kmod"
            shutil.copy2(tree / member, bin_dir / name)
    for link in ("modprobe", "depmod"):
        (bin_dir / link).unlink(missing_ok=True)
        (bin_dir / link).symlink_to("kmod")  # kmod acts as the tool it is called by
    return bin_dir


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_kernel_tree(image: BaseImage, kernel: Path) -> Path:
    """The image's kernel beside its modules (from the image's disk); returns the kernel.

    vng takes the modules from <root>/lib/modules/<release>/, <root> being the nearest
    directory above the kernel image that has lib/modules: here modules/<release>/.
    """
    release = image.kernel_release
    root = bench_dir() / "modules" / release
    source = root / "source.json"
    stamp = {"vmlinuz_sha256": file_sha256(kernel)}
    copy = root / "boot" / f"vmlinuz-{release}"
    if source.exists() and json.loads(source.read_text()) == stamp and copy.exists():
        return copy
    print(f"peer: copying {release}'s modules out of {image.disk_path}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    (root / "lib" / "modules").mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", str(image.disk_path), str(raw)], check=True
        )
        # debugfs reads the ext4 root without mounting it; bookworm and later are merged-/usr
        for where in (f"/usr/lib/modules/{release}", f"/lib/modules/{release}"):
            subprocess.run(
                ["debugfs", "-R", f"rdump {where} {root / 'lib' / 'modules'}", str(raw)],
                capture_output=True,
                check=True,
            )
            if (root / "lib" / "modules" / release / "modules.dep").exists():
                break
        else:
            raise SystemExit(f"no modules.dep for {release} on {image.disk_path}")
    copy.parent.mkdir()
    shutil.copy2(kernel, copy)
    source.write_text(json.dumps(stamp) + "\n")
    return copy


# -- the runs ------------------------------------------------------------------------------


def run_ours(s: Settings) -> dict[str, float]:
    up, ssh, down = ours_commands(sys.executable, s.guest)
    timings = {"up": timed(up, cwd=REPO_ROOT).seconds}
    try:
        state = live_state(s.guest, report=silent)
        if state is None or (state.accel, state.cpu) != (s.accel, s.cpu):
            raise SystemExit(
                f"invoke up booted {state and (state.accel, state.cpu)}, "
                f"not {(s.accel, s.cpu)}: the two sides would differ"
            )
        first = timed(ssh, cwd=REPO_ROOT)
        if first.stdout.strip() != s.release:
            raise RunFailed(f"ours: {' '.join(COMMAND)} said {first.stdout.strip()!r}")
        timings["ssh"] = first.seconds
    finally:
        timings["down"] = timed(down, cwd=REPO_ROOT).seconds
    return timings


def run_vng(s: Settings, image: BaseImage, kernel: Path, vng_bin: Path, path: str) -> float:
    with tempfile.TemporaryDirectory(prefix="vng-", dir=bench_dir()) as tmp:
        overlay = Path(tmp) / "overlay.qcow2"
        create_overlay(image.disk_path, overlay)  # a fresh one each run; the base stays as is
        result = timed(
            vng_command(vng_bin / "vng", kernel, overlay, s),
            cwd=Path(tmp),
            env=dict(os.environ, PATH=path),
        )
    if s.release not in result.stdout.split():
        raise RunFailed(f"vng: {' '.join(COMMAND)} said {result.stdout.strip()[-200:]!r}")
    return result.seconds


def peer_boots(guest: str, repeats: int) -> list[Figure]:
    """Ours and virtme-ng, alternating, ``repeats`` cold boots each."""
    if live_state(guest, report=silent):
        raise SystemExit(f"a {guest} VM is running already: invoke down --guest {guest} first")
    bench_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench_dir()) as scratch:
        s, image = settings_of(guest, Path(scratch))
    vng_bin = ensure_vng()
    path = os.pathsep.join([str(vng_bin), str(ensure_tools()), os.environ.get("PATH", "")])
    kernel = ensure_kernel_tree(image, s.kernel)
    ours: list[dict[str, float]] = []
    peer: list[float] = []
    failed = {"ours": 0, "virtme-ng": 0}

    def attempt(side: str, run: Callable[[], T]) -> T:
        """``run``, once more when it fails: one failure is counted, two end the benchmark."""
        for tries in (1, 2):
            try:
                return run()
            except RunFailed as exc:
                if tries == 2:
                    raise SystemExit(f"{side} failed twice in a row:\n{exc}") from None
                failed[side] += 1
                print(f"peer: {side} failed, once more:\n{exc}", file=sys.stderr, flush=True)
        raise AssertionError("unreachable")

    for i in range(repeats):
        ours.append(attempt("ours", lambda: run_ours(s)))
        peer.append(attempt("virtme-ng", lambda: run_vng(s, image, kernel, vng_bin, path)))
        print(
            f"peer: run {i + 1}/{repeats}: ours {sum(ours[-1].values()):.1f} s, "
            f"virtme-ng {peer[-1]:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    vng = median(peer)
    retried = [
        Figure(f"{side}: boots that failed (retried)", n, unit="")
        for side, n in failed.items()
        if n
    ]
    return [
        *retried,
        Figure(f"virtme-ng {VNG_VERSION}: boot + uname -r + power-off ({s.accel})", vng),
        against("ours: up + ssh uname -r + down", [sum(t.values()) for t in ours], vng),
        against("ours: up + ssh uname -r (first command)", [t["up"] + t["ssh"] for t in ours], vng),
        against("  of which invoke up --no-resume", [t["up"] for t in ours], vng),
        against("  invoke down", [t["down"] for t in ours], vng),
    ]
