"""Base images: built from Debian's packages with mmdebstrap, or downloaded.

A base image lives in ``<cache>/images/<guest>-<recipe hash>/`` and is never
written to once ``manifest.json`` exists (it is the last file written). VMs
boot copy-on-write overlays on top of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import keys
from .guests import GuestProfile
from .paths import REPO_ROOT
from .progress import Reporter, Step, to_stderr

RECIPE_VERSION = 3
CUSTOMIZE_HOOK = REPO_ROOT / "qemu" / "debian-customize.sh"
DISK_SIZE = "4G"
MANIFEST = "manifest.json"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class BaseImage:
    """A finished, verified base image."""

    guest: str
    directory: Path
    disk: str  # file names inside directory
    kernel: str | None
    initrd: str | None
    kernel_release: str
    host_key: str  # "ssh-ed25519 AAAA..."
    sha256: str
    recipe: str
    build_seconds: float
    seed: str | None = None  # cloud-init seed ISO attached at every boot

    @property
    def seed_path(self) -> Path | None:
        return self.directory / self.seed if self.seed else None

    @property
    def disk_path(self) -> Path:
        return self.directory / self.disk

    @property
    def kernel_path(self) -> Path | None:
        return self.directory / self.kernel if self.kernel else None

    @property
    def initrd_path(self) -> Path | None:
        return self.directory / self.initrd if self.initrd else None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def recipe_hash(profile: GuestProfile, client_public: str) -> str:
    """Changes whenever anything that goes into the image changes."""
    recipe = {
        "version": RECIPE_VERSION,
        "profile": asdict(profile),
        "client_key": client_public.split()[1],
        "disk_size": DISK_SIZE,
    }
    if profile.kind == "debian":
        recipe["hook"] = CUSTOMIZE_HOOK.read_text()
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_dir(cache: Path, profile: GuestProfile, recipe: str) -> Path:
    return cache / "images" / f"{profile.name}-{recipe}"


def load_image(directory: Path, *, check_sum: bool = True) -> BaseImage:
    """Load a finished image; raise ImageError if it is half-built or corrupt."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        raise ImageError(f"{directory} has no {MANIFEST}: half-built")
    try:
        data = json.loads(manifest.read_text())
        data["directory"] = directory
        image = BaseImage(**data)
    except (ValueError, TypeError) as exc:
        raise ImageError(f"{manifest} is unreadable: {exc}") from exc
    for path in (image.disk_path, image.kernel_path, image.initrd_path, image.seed_path):
        if path is not None and not path.is_file():
            raise ImageError(f"{path} is missing")
    if check_sum and sha256_file(image.disk_path) != image.sha256:
        raise ImageError(f"{image.disk_path} does not match its recorded sha256")
    return image


def ensure_image(
    profile: GuestProfile,
    cache: Path,
    *,
    mirror: str | None = None,
    allow_expired: bool = False,
    rebuild: bool = False,
    report: Reporter = to_stderr,
) -> BaseImage:
    """Return the cached image for ``profile``, building it when needed."""
    client = keys.ensure_client_key(cache)
    recipe = recipe_hash(profile, client.public_line)
    directory = image_dir(cache, profile, recipe)
    if directory.exists() and not rebuild:
        try:
            return load_image(directory)
        except ImageError as exc:
            report(f"image: {exc}; rebuilding")
    if profile.kind == "debian":
        return build_debian(
            profile, directory, recipe, client, mirror, report, allow_expired=allow_expired
        )
    from .cloud import prepare_cloud_image

    return prepare_cloud_image(profile, directory, recipe, client, cache, report)


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


def _run_logged(cmd: list[str], log: Path, step: Step, env: dict[str, str]) -> None:
    """Run ``cmd``, teeing its output to ``log`` and its main steps to ``step``."""
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("I: ") and "..." in line:
                step(line[3:].strip())
        if proc.wait() != 0:
            tail = log.read_text().splitlines()[-15:]
            raise ImageError(
                f"{cmd[0]} failed (exit {proc.returncode}); log: {log}\n" + "\n".join(tail)
            )


def _kernel_files(root: Path) -> tuple[Path, Path, str]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError(f"no kernel in {root}/boot")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise ImageError(f"no initrd for {release} in {root}/boot")
    return kernel, initrd, release


def build_debian(
    profile: GuestProfile,
    directory: Path,
    recipe: str,
    client: keys.KeyPair,
    mirror: str | None,
    report: Reporter,
    *,
    allow_expired: bool = False,
) -> BaseImage:
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    step = Step(f"image {profile.name}", report)
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{profile.name}-", dir=directory.parent))
    # The log lives beside the work dir, so it outlives a failed build.
    log = directory.parent / f"{profile.name}-build.log"
    log.unlink(missing_ok=True)
    try:
        root = work / "root"
        host_key = keys.generate(work / "ssh_host_ed25519_key", "memlayout-guest")
        env = dict(os.environ)
        env["MEMLAYOUT_AUTHORIZED_KEY"] = client.public_line
        env["MEMLAYOUT_HOST_KEY"] = str(host_key.private)
        step(f"mmdebstrap {profile.suite} (log: {log})")
        cmd = mmdebstrap_command(profile, root, mirror, allow_expired)
        try:
            _run_logged(cmd, log, step, env)
        except ImageError as exc:
            if "is expired" in log.read_text():
                raise ImageError(
                    f"{exc}\nThe mirror's Release file has expired (a stale mirror?). If you "
                    "trust it, pass --allow-expired-release."
                ) from None
            raise
        kernel, initrd, release = _kernel_files(root)
        shutil.copyfile(kernel, work / "vmlinuz")
        shutil.copyfile(initrd, work / "initrd.img")
        step(f"kernel {release}; making the ext4 disk")
        raw = work / "disk.raw"
        _run_logged(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                "root",
                "-d",
                str(root),
                "-F",
                str(raw),
                DISK_SIZE,
            ],
            log,
            step,
            env,
        )
        shutil.rmtree(root)
        _run_logged(
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")],
            log,
            step,
            env,
        )
        raw.unlink()
        host_key.private.unlink()  # the guest has it; the host needs only the public half
        image = BaseImage(
            guest=profile.name,
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
        _finish(image, work)
        step(f"done: {directory}")
        return load_image(directory, check_sum=False)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _finish(image: BaseImage, work: Path) -> None:
    """Write the manifest last, then move the finished directory into place."""
    data = image.to_json()
    del data["directory"]
    (work / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    if image.directory.exists():
        shutil.rmtree(image.directory)
    os.replace(work, image.directory)


def list_images(cache: Path) -> list[Path]:
    base = cache / "images"
    return sorted(p for p in base.glob("*-*") if p.is_dir()) if base.exists() else []
