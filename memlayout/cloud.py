"""Cloud-image guests (Ubuntu 16.04): download a pinned build, check it, provision it once.

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
from pathlib import Path

from . import download, keys, seed
from .guests import GuestProfile
from .image import BaseImage, ImageError, _finish, load_image, sha256_file
from .progress import Reporter, Step

PROVISION_TIMEOUT = 3600.0
DISK_SIZE = "10G"


def fetch_cloud_disk(profile: GuestProfile, cache: Path, report: Reporter) -> Path:
    """The pinned cloud disk, downloaded once and verified against SHA256SUMS."""
    name = profile.image_url.rsplit("/", 1)[-1]
    try:
        sums = download.parse_sums(download.fetch_text(profile.sums_url))
    except download.DownloadError as exc:
        raise ImageError(f"{profile.name}: {exc}") from exc
    if name not in sums:
        raise ImageError(f"{profile.sums_url} lists no checksum for {name}")
    dest = cache / "downloads" / f"{sums[name][:16]}-{name}"
    try:
        return download.download(profile.image_url, dest, sums[name], report=report)
    except download.DownloadError as exc:
        raise ImageError(f"{profile.name}: {exc}") from exc


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


def prepare_cloud_image(
    profile: GuestProfile,
    directory: Path,
    recipe: str,
    client: keys.KeyPair,
    cache: Path,
    report: Reporter,
) -> BaseImage:
    from . import accel
    from .remote import Remote
    from .vm import DEFAULT_CPU, VM

    step = Step(f"image {profile.name}", report)
    disk = fetch_cloud_disk(profile, cache, step)
    work = directory.with_name(f".{directory.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        host = keys.generate(work / "ssh_host_ed25519_key", "memlayout-guest")
        provisioning_seed(work, client, host, profile)
        base = work / "cloud.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(base)], check=True)
        subprocess.run(["qemu-img", "resize", "-q", str(base), DISK_SIZE], check=True)
        template = BaseImage(
            guest=profile.name,
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
        choice = accel.choose("auto", None, DEFAULT_CPU, cache)
        step(f"provisioning with cloud-init (accel {choice.accel}); this installs packages")
        vm = VM(template, work, accel=choice.accel, accel_reason=choice.reason, report=step)
        with vm, Remote(vm.spec.ssh_port, client.private, template.host_key) as remote:
            remote.run("cloud-init status --wait || true", timeout=PROVISION_TIMEOUT)
            release = remote.run("uname -r", check=True).stdout.strip()
            remote.run(f"test -d /lib/modules/{release}/build", check=True)
        final = work / "disk.qcow2"
        subprocess.run(
            ["qemu-img", "convert", "-O", "qcow2", str(vm.spec.overlay), str(final)], check=True
        )
        for leftover in (base, vm.spec.overlay, host.private):
            leftover.unlink()
        image = BaseImage(
            guest=profile.name,
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
        _finish(image, work)
        return load_image(directory, check_sum=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
