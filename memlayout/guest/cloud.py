"""The cloud builder (Ubuntu 16.04): download a pinned build, check it, provision it once.

The disk is checked against the build's SHA256SUMS, then booted once with a
cloud-init NoCloud seed that lets root in with the cache's key, pins a host key
made here, and installs the compiler and the headers of the running kernel.
The provisioned disk, flattened, is the cached base image; the same seed is
attached at every later boot so cloud-init finds its datasource at once.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from ..progress import Reporter, Step
from ..rundir import GuestDir
from . import accel, download, keys, seed
from .image import BaseImage, publish, sha256_file
from .machine import Machine, MachineConfig
from .profiles import GuestProfile
from .qemu import DEFAULT_CPU
from .remote import Remote

PROVISION_TIMEOUT = 3600.0
DISK_SIZE = "10G"


def fetch_cloud_disk(profile: GuestProfile, cache: Path, report: Reporter) -> Path:
    """The pinned cloud disk, downloaded once and verified against SHA256SUMS."""
    name = profile.image_url.rsplit("/", 1)[-1]
    sums = download.parse_sums(download.fetch_text(profile.sums_url))
    if name not in sums:
        raise ImageError(f"{profile.sums_url} lists no checksum for {name}")
    dest = cache / "downloads" / f"{sums[name][:16]}-{name}"
    return download.download(profile.image_url, dest, sums[name], report=report)


def provisioning_seed(
    work: Path, client: keys.KeyPair, host: keys.KeyPair, profile: GuestProfile
) -> Path:
    user = seed.user_data(
        authorized_key=client.public_line,
        host_private=host.private.read_text(),
        host_public=host.public_line,
        packages=profile.cloud_packages,
        runcmd=("DEBIAN_FRONTEND=noninteractive apt-get install -y linux-headers-$(uname -r)",),
    )
    meta = seed.meta_data(f"memlayout-{uuid.uuid4().hex[:12]}")
    return seed.make_seed_iso(work / "seed.iso", user, meta)


def _qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"qemu-img {args[0]} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class CloudBuilder:
    """Downloads and provisions ``profile``'s pinned cloud image (needs the internet)."""

    profile: GuestProfile
    cache: Path

    def recipe(self) -> dict[str, object]:
        return {"disk_size": DISK_SIZE}

    def build(self, directory: Path, recipe: str, client: keys.KeyPair, step: Step) -> BaseImage:
        disk = fetch_cloud_disk(self.profile, self.cache, step)
        work = directory.with_name(f".{directory.name}.work")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            return self._provision(disk, work, directory, recipe, client, step)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _provision(
        self,
        disk: Path,
        work: Path,
        directory: Path,
        recipe: str,
        client: keys.KeyPair,
        step: Step,
    ) -> BaseImage:
        host = keys.generate(work / "ssh_host_ed25519_key", "memlayout-guest")
        provisioning_seed(work, client, host, self.profile)
        base = work / "cloud.qcow2"
        _qemu_img("convert", "-O", "qcow2", str(disk), str(base))
        _qemu_img("resize", "-q", str(base), DISK_SIZE)
        template = BaseImage(
            guest=self.profile.name,
            directory=work,
            disk="cloud.qcow2",
            kernel=None,
            initrd=None,
            kernel_release="",
            host_key=" ".join(host.public_line.split()[:2]),
            sha256="",
            recipe=recipe,
            build_seconds=0.0,
            seed="seed.iso",
        )
        choice = accel.choose("auto", None, DEFAULT_CPU, self.cache)
        step(f"provisioning with cloud-init (accel {choice.accel}); this installs packages")
        files = GuestDir(work / "provision")
        config = MachineConfig(accel=choice.accel, accel_reason=choice.reason)
        with Machine(template, files, config, report=step) as vm:
            assert vm.spec is not None
            with Remote(vm.spec.ssh_port, client.private, template.host_key) as remote:
                remote.run("cloud-init status --wait || true", timeout=PROVISION_TIMEOUT)
                release = remote.run("uname -r", check=True).stdout.strip()
                remote.run(f"test -d /lib/modules/{release}/build", check=True)
        final = work / "disk.qcow2"
        _qemu_img("convert", "-O", "qcow2", str(files.overlay), str(final))
        base.unlink()
        host.private.unlink()
        shutil.rmtree(files.path)
        image = BaseImage(
            guest=self.profile.name,
            directory=directory,
            disk="disk.qcow2",
            kernel=None,
            initrd=None,
            kernel_release=release,
            host_key=template.host_key,
            sha256=sha256_file(final),
            recipe=recipe,
            build_seconds=round(step.elapsed(), 1),
            seed="seed.iso",
        )
        return publish(image, work)
