"""The Debian builder: a base image made from Debian's packages with mmdebstrap.

No internet is needed, only a Debian mirror (mmdebstrap's default, or ``--mirror``).
The root tree gets the project's customize hook (qemu/debian-customize.sh), then
becomes an ext4 disk with ``mke2fs -d`` (no loop mount) converted to qcow2; the
image's own kernel and initrd are copied out beside it for direct kernel boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from ..paths import REPO_ROOT
from ..progress import Step
from . import keys
from .image import BaseImage, publish, sha256_file
from .profiles import GuestProfile

CUSTOMIZE_HOOK = REPO_ROOT / "qemu" / "debian-customize.sh"
DISK_SIZE = "4G"
# The root tree (~0.9 GB), the ext4 disk made from it and its qcow2 copy exist at once.
NEEDS_BYTES = 3 << 30


def require_space(directory: Path, needed: int) -> None:
    """Fail up front, naming the place and the sizes, when ``directory`` is too full."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ImageError(
            f"building an image needs about {needed >> 20} MiB free in {directory}; "
            f"it has {free >> 20} MiB (set MEMLAYOUT_CACHE to a roomier place)"
        )


def mmdebstrap_command(
    profile: GuestProfile, root: Path, mirror: str | None, allow_expired: bool = False
) -> list[str]:
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--include=" + ",".join(profile.packages),
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        *(['--aptopt=Acquire::Check-Valid-Until "false"'] if allow_expired else []),
        f'--customize-hook={CUSTOMIZE_HOOK} "$1"',
        profile.suite,
        str(root),
    ]
    if mirror:
        cmd.append(mirror)
    return cmd


def run_logged(cmd: list[str], log: Path, step: Step, env: dict[str, str] | None = None) -> None:
    """Run ``cmd``, appending its output to ``log`` and its main steps to ``step``."""
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        except OSError as exc:
            raise ImageError(f"cannot run {cmd[0]}: {exc}", log=log) from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("I: ") and "..." in line:
                step(line[3:].strip())
        if proc.wait() != 0:
            tail = log.read_text().splitlines()[-15:]
            raise ImageError(
                f"{cmd[0]} failed (exit {proc.returncode})\n" + "\n".join(tail), log=log
            )


def kernel_files(root: Path) -> tuple[Path, Path, str]:
    """The newest kernel in the tree's /boot, its initrd, and its release."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError(f"no kernel in {root}/boot")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise ImageError(f"no initrd for {release} in {root}/boot")
    return kernel, initrd, release


@dataclass(frozen=True)
class DebianBuilder:
    """Builds ``profile`` with mmdebstrap from ``mirror`` (None: mmdebstrap's default)."""

    profile: GuestProfile
    mirror: str | None = None
    allow_expired: bool = False

    def recipe(self) -> dict[str, object]:
        return {"hook": CUSTOMIZE_HOOK.read_text(), "disk_size": DISK_SIZE}

    def build(self, directory: Path, recipe: str, client: keys.KeyPair, step: Step) -> BaseImage:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        directory.parent.mkdir(parents=True, exist_ok=True)
        require_space(directory.parent, NEEDS_BYTES)
        work = Path(tempfile.mkdtemp(prefix=f".{self.profile.name}-", dir=directory.parent))
        # The log lives beside the work dir, so it outlives a failed build.
        log = directory.parent / f"{self.profile.name}-build.log"
        log.unlink(missing_ok=True)
        try:
            return self._build(work, directory, recipe, client, step, log)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def _build(
        self,
        work: Path,
        directory: Path,
        recipe: str,
        client: keys.KeyPair,
        step: Step,
        log: Path,
    ) -> BaseImage:
        root = work / "root"
        host_key = keys.generate(work / "ssh_host_ed25519_key", "memlayout-guest")
        env = dict(os.environ)
        env["MEMLAYOUT_AUTHORIZED_KEY"] = client.public_line
        env["MEMLAYOUT_HOST_KEY"] = str(host_key.private)
        step(f"mmdebstrap {self.profile.suite} (log: {log})")
        cmd = mmdebstrap_command(self.profile, root, self.mirror, self.allow_expired)
        try:
            run_logged(cmd, log, step, env)
        except ImageError as exc:
            if "is expired" in log.read_text():
                raise ImageError(
                    f"{exc}\nThe mirror's Release file has expired (a stale mirror?). If you "
                    "trust it, pass --allow-expired-release.",
                    log=log,
                ) from None
            raise
        kernel, initrd, release = kernel_files(root)
        shutil.copyfile(kernel, work / "vmlinuz")
        shutil.copyfile(initrd, work / "initrd.img")
        step(f"kernel {release}; making the ext4 disk")
        raw = work / "disk.raw"
        mke2fs = ["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root), "-F"]
        run_logged([*mke2fs, str(raw), DISK_SIZE], log, step, env)
        shutil.rmtree(root)
        run_logged(
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")],
            log,
            step,
            env,
        )
        raw.unlink()
        host_key.private.unlink()  # the guest has it; the host needs only the public half
        image = BaseImage(
            guest=self.profile.name,
            directory=directory,
            disk="disk.qcow2",
            kernel="vmlinuz",
            initrd="initrd.img",
            kernel_release=release,
            host_key=" ".join(host_key.public_line.split()[:2]),
            sha256=sha256_file(work / "disk.qcow2"),
            recipe=recipe,
            build_seconds=round(step.elapsed(), 1),
        )
        shutil.copyfile(log, work / "build.log")
        published = publish(image, work)
        step(f"done: {directory}")
        return published
