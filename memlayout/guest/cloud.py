"""The cloud builder (Ubuntu 16.04): download a pinned build, check it, provision it once.

The disk's SHA256 is pinned (in the profile, or by the environment while the code has
none); the build's SHA256SUMS is fetched only to cross-check that pin. The disk is then
booted once with a cloud-init NoCloud seed that lets root in with the cache's key, pins
a host key made here, and runs qemu/ubuntu-provision.sh: it waits for apt, picks an
archive that still serves xenial, and installs the compiler and the running kernel's
headers. That seed holds the host's private key, so it lives in a private temporary
directory and is gone after the boot. The image keeps a second seed with the same
instance-id and no secrets, attached at every later boot so cloud-init finds its
datasource at once (and, seeing the same instance, runs nothing again).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko

from ..errors import DownloadError, ImageError, MemlayoutError, UsageError
from ..paths import REPO_ROOT
from ..progress import Reporter, Step
from ..rundir import GuestDir
from . import accel, download, keys, seed
from .console import tail
from .image import BaseImage, publish, sha256_file
from .machine import Machine, MachineConfig
from .profiles import GuestProfile
from .qemu import DEFAULT_CPU
from .remote import Remote, Result

PROVISION_TIMEOUT = 3600.0
DISK_SIZE = "10G"
PROVISION_SCRIPT = REPO_ROOT / "qemu" / "ubuntu-provision.sh"
GUEST_SCRIPT = "/usr/local/sbin/memlayout-provision"
GUEST_MARKER = "/var/lib/memlayout/provisioned"
GUEST_OUTPUT_LOG = "/var/log/cloud-init-output.log"
# apt in xenial has no https transport by default; the archive's Release files are signed.
DEFAULT_ARCHIVE = "http://archive.ubuntu.com/ubuntu"
# Where Ubuntu moves a release the main archive no longer serves.
OLD_RELEASES_ARCHIVE = "http://old-releases.ubuntu.com/ubuntu"
ARCHIVE_VARIABLE = "MEMLAYOUT_UBUNTU_ARCHIVE"
# `cloud-init status --wait` returns when cloud-init is done, with an error too; an image
# whose cloud-init is too old for it waits for the file its final stage writes.
WAIT_FOR_CLOUD_INIT = (
    "cloud-init status --wait >/dev/null 2>&1 || "
    "until test -f /var/lib/cloud/instance/boot-finished; do sleep 2; done"
)


def sha256_variable(profile: GuestProfile) -> str:
    """The environment variable that pins a profile's disk: MEMLAYOUT_UBUNTU_XENIAL_SHA256."""
    return "MEMLAYOUT_" + re.sub(r"\W", "_", profile.name).upper() + "_SHA256"


def pinned_sha256(profile: GuestProfile, env: Mapping[str, str]) -> str:
    """The disk's expected SHA256: the profile's, else the environment's ("" when neither)."""
    variable = sha256_variable(profile)
    given = env.get(variable, "").strip().lower()
    if given and not re.fullmatch(r"[0-9a-f]{64}", given):
        raise UsageError(f"{variable} must be 64 hex digits, not {given!r}")
    if given and profile.image_sha256 and given != profile.image_sha256:
        raise ImageError(
            f"{variable}={given} contradicts the SHA256 pinned in the code for "
            f"{profile.name} ({profile.image_sha256}); unset it or fix the pin"
        )
    return profile.image_sha256 or given


def no_pin(profile: GuestProfile) -> ImageError:
    variable = sha256_variable(profile)
    return ImageError(
        f"{profile.name}: no SHA256 is pinned for {profile.image_url}, and a digest fetched "
        "at run time is no trust root, so the image is not built.\n"
        f"Check the build's SHA256SUMS against its signature ({profile.sums_url}.gpg, "
        "Ubuntu's cloud image signing key: gpg --verify SHA256SUMS.gpg SHA256SUMS), then "
        f"set {variable}=<the disk's sha256>, or pin it in memlayout/guest/profiles.py."
    )


def cross_check(profile: GuestProfile, name: str, sha256: str, report: Reporter) -> None:
    """The published SHA256SUMS must not contradict the pin (it cannot replace it)."""
    try:
        sums = download.parse_sums(download.fetch_text(profile.sums_url))
    except DownloadError as exc:
        report(f"{exc}; relying on the pinned sha256 alone")
        return
    published = sums.get(name)
    if published is None:
        report(f"{profile.sums_url} lists no {name}; relying on the pinned sha256 alone")
    elif published != sha256:
        raise ImageError(
            f"{profile.sums_url} lists sha256 {published} for {name}, but {sha256} is "
            "pinned: the build was changed or the pin is wrong; nothing was downloaded"
        )


def fetch_cloud_disk(profile: GuestProfile, sha256: str, cache: Path, report: Reporter) -> Path:
    """The pinned cloud disk, downloaded once and verified against the pinned sha256."""
    if not sha256:
        raise no_pin(profile)
    name = profile.image_url.rsplit("/", 1)[-1]
    dest = cache / "downloads" / f"{sha256[:16]}-{name}"
    if not dest.exists():
        cross_check(profile, name, sha256, report)
    return download.download(profile.image_url, dest, sha256, report=report)


@dataclass(frozen=True)
class SeedDocuments:
    provision: str  # the first boot's user-data: holds the host's private key
    boot: str  # the user-data kept with the image: no secrets
    meta: str


def seed_documents(
    client_line: str,
    host_private: str,
    host_public: str,
    archive: str,
    instance_id: str,
    packages: tuple[str, ...],
) -> SeedDocuments:
    """What both seeds say; the provisioning script travels in the first one."""
    provision = seed.user_data(
        authorized_key=client_line,
        host_private=host_private,
        host_public=host_public,
        write_files=(
            {"path": GUEST_SCRIPT, "permissions": "0755", "content": PROVISION_SCRIPT.read_text()},
        ),
        runcmd=((GUEST_SCRIPT, archive, OLD_RELEASES_ARCHIVE, *packages),),
    )
    return SeedDocuments(
        provision=provision,
        boot=seed.boot_user_data(authorized_key=client_line),
        meta=seed.meta_data(instance_id),
    )


@dataclass(frozen=True)
class ProvisionLogs:
    """Where a build's guest logs stay: beside the image directories, so a failure keeps them."""

    console: Path
    cloud_init_output: Path

    @classmethod
    def beside(cls, directory: Path, guest: str) -> ProvisionLogs:
        return cls(
            directory.parent / f"{guest}-provision-console.log",
            directory.parent / f"{guest}-cloud-init-output.log",
        )

    def clear(self) -> None:
        """Forget an earlier build's logs: what is here afterwards is this build's."""
        self.console.parent.mkdir(parents=True, exist_ok=True)
        self.console.unlink(missing_ok=True)
        self.cloud_init_output.unlink(missing_ok=True)


def provisioning_failed(guest: str, cause: MemlayoutError, logs: ProvisionLogs) -> ImageError:
    """An ImageError naming the cause and quoting the tails of both logs."""
    first = cause.message.strip().splitlines()[0] if cause.message.strip() else type(cause).__name__
    parts = [
        f"{guest}: provisioning failed: {first}",
        f"--- last lines of the console ({logs.console}) ---",
        tail(logs.console) or "(nothing)",
    ]
    if logs.cloud_init_output.exists():
        parts += [
            f"--- last lines of cloud-init-output.log ({logs.cloud_init_output}) ---",
            tail(logs.cloud_init_output) or "(nothing)",
        ]
        log = logs.cloud_init_output
    else:
        parts.append(
            "(cloud-init-output.log could not be copied: the guest was not reachable over SSH)"
        )
        log = logs.console
    return ImageError("\n".join(parts), log=log)


class GuestShell(Protocol):
    """What provisioning needs of the booted guest (a :class:`Remote`)."""

    def run(self, command: str, *, timeout: float | None = ..., check: bool = ...) -> Result: ...

    def get(self, remote: str, local: Path) -> None: ...


GuestBoot = Callable[
    [BaseImage, GuestDir, keys.KeyPair, Path, Step], AbstractContextManager[GuestShell]
]


@contextlib.contextmanager
def boot_guest(
    template: BaseImage, files: GuestDir, client: keys.KeyPair, cache: Path, step: Step
) -> Iterator[GuestShell]:
    """QEMU running ``template`` with its seed, and SSH to it; QEMU is gone afterwards."""
    choice = accel.choose("auto", None, DEFAULT_CPU, cache)
    step(f"provisioning with cloud-init (accel {choice.accel}); this installs packages")
    config = MachineConfig(accel=choice.accel, accel_reason=choice.reason)
    with Machine(template, files, config, report=step) as vm:
        assert vm.spec is not None
        with Remote(vm.spec.ssh_port, client.private, template.host_key) as remote:
            yield remote


def wait_for_provisioning(guest: GuestShell) -> str:
    """Wait for cloud-init; the script must have succeeded. Returns the kernel release."""
    guest.run(WAIT_FOR_CLOUD_INIT, timeout=PROVISION_TIMEOUT)
    if guest.run(f"test -f {GUEST_MARKER}").status != 0:
        raise ImageError("cloud-init finished, but the provisioning script did not succeed")
    release = guest.run("uname -r", check=True).stdout.strip()
    guest.run(f"test -d /lib/modules/{release}/build", check=True)
    return release


def copy_output_log(guest: GuestShell, dest: Path, report: Reporter) -> None:
    """Copy cloud-init-output.log out of the guest if it can be had (a failure is a note)."""
    try:
        guest.get(GUEST_OUTPUT_LOG, dest)
    except (MemlayoutError, OSError, EOFError, paramiko.SSHException) as exc:
        dest.unlink(missing_ok=True)
        report(f"could not copy {GUEST_OUTPUT_LOG} out of the guest: {exc}")


@contextlib.contextmanager
def kept(source: Path, dest: Path) -> Iterator[None]:
    """Copy ``source`` to ``dest`` when the block ends, however it ends."""
    try:
        yield
    finally:
        if source.exists():
            shutil.copyfile(source, dest)


def _qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"qemu-img {args[0]} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class CloudBuilder:
    """Downloads and provisions ``profile``'s pinned cloud image (needs the internet)."""

    profile: GuestProfile
    cache: Path
    image_sha256: str = ""  # the pin; "" refuses to build (see no_pin)
    archive: str = DEFAULT_ARCHIVE  # the guest's apt archive (old-releases is the fallback)
    boot: GuestBoot = field(default=boot_guest, compare=False, repr=False)

    @classmethod
    def from_env(
        cls, profile: GuestProfile, cache: Path, env: Mapping[str, str] = os.environ
    ) -> CloudBuilder:
        """The pin (the profile's, else $MEMLAYOUT_<GUEST>_SHA256) and the archive
        ($MEMLAYOUT_UBUNTU_ARCHIVE, else Ubuntu's main archive)."""
        archive = env.get(ARCHIVE_VARIABLE, "").strip().rstrip("/") or DEFAULT_ARCHIVE
        return cls(profile, cache, pinned_sha256(profile, env), archive)

    def recipe(self) -> dict[str, object]:
        """The disk, the size, and both seeds as written (keys and ids as placeholders).

        The archive is left out: another mirror of the same archive makes the same image.
        """
        docs = seed_documents(
            "CLIENT-KEY",
            "HOST-KEY",
            "HOST-KEY.pub",
            "ARCHIVE",
            "INSTANCE-ID",
            self.profile.cloud_packages,
        )
        return {
            "disk_size": DISK_SIZE,
            "image_sha256": self.image_sha256,
            "seed": {"provision": docs.provision, "boot": docs.boot, "meta": docs.meta},
        }

    def build(self, directory: Path, recipe: str, client: keys.KeyPair, step: Step) -> BaseImage:
        disk = fetch_cloud_disk(self.profile, self.image_sha256, self.cache, step)
        work = directory.with_name(f".{directory.name}.work")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            # The host's private key and the seed carrying it: 0700, outside the cache,
            # removed when the build ends however it ends.
            with tempfile.TemporaryDirectory(prefix="memlayout-provision-") as secrets:
                return self._provision(disk, work, Path(secrets), directory, recipe, client, step)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _provision(
        self,
        disk: Path,
        work: Path,
        secrets: Path,
        directory: Path,
        recipe: str,
        client: keys.KeyPair,
        step: Step,
    ) -> BaseImage:
        host = keys.generate(secrets / "ssh_host_ed25519_key", "memlayout-guest")
        docs = seed_documents(
            client.public_line,
            host.private.read_text(),
            host.public_line,
            self.archive,
            f"memlayout-{uuid.uuid4().hex[:12]}",
            self.profile.cloud_packages,
        )
        first_seed = seed.make_seed_iso(secrets / "seed.iso", docs.provision, docs.meta)
        seed.make_seed_iso(work / "seed.iso", docs.boot, docs.meta)
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
            seed=str(first_seed),  # absolute: seed_path is then this path, outside work
        )
        files = GuestDir(work / "provision")
        logs = ProvisionLogs.beside(directory, self.profile.name)
        release = self._run_provisioning(template, files, client, logs, step)
        final = work / "disk.qcow2"
        _qemu_img("convert", "-O", "qcow2", str(files.overlay), str(final))
        base.unlink()
        shutil.rmtree(files.path)
        if logs.cloud_init_output.exists():
            shutil.copyfile(logs.cloud_init_output, work / "cloud-init-output.log")
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

    def _run_provisioning(
        self,
        template: BaseImage,
        files: GuestDir,
        client: keys.KeyPair,
        logs: ProvisionLogs,
        step: Step,
    ) -> str:
        """Boot once and provision; on failure, keep both logs and quote them."""
        logs.clear()
        try:
            # kept() is outermost: it copies the console once QEMU has exited.
            with (
                kept(files.console_log, logs.console),
                self.boot(template, files, client, self.cache, step) as guest,
            ):
                try:
                    return wait_for_provisioning(guest)
                finally:
                    copy_output_log(guest, logs.cloud_init_output, step)
        except MemlayoutError as exc:
            raise provisioning_failed(self.profile.name, exc, logs) from exc
