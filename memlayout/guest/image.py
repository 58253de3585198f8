"""Base images: what a finished one is, how it is checked, and how it is published.

A base image lives in ``<cache>/images/<guest>-<recipe hash>/`` and is never
written to once ``manifest.json`` exists (it is the last file written). VMs
boot copy-on-write overlays on top of it. Images are made by a builder (one
per profile kind: ``debian`` and ``cloud``), behind the :class:`ImageBuilder`
interface; ``cache.ensure_image`` picks one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ImageError
from ..progress import Step
from .keys import KeyPair
from .profiles import GuestProfile

RECIPE_VERSION = 3
MANIFEST = "manifest.json"


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


class ImageBuilder(Protocol):
    """Makes the base image of one profile kind."""

    def recipe(self) -> dict[str, object]:
        """Everything besides the profile and the client key that shapes the image."""
        ...

    def build(self, directory: Path, recipe: str, client: KeyPair, step: Step) -> BaseImage:
        """Build into a work directory, then :func:`publish` it as ``directory``."""
        ...


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def recipe_hash(profile: GuestProfile, client_public: str, builder: ImageBuilder) -> str:
    """Changes whenever anything that goes into the image changes."""
    recipe = {
        "version": RECIPE_VERSION,
        "profile": asdict(profile),
        "client_key": client_public.split()[1],
        "builder": builder.recipe(),
    }
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
    if check_sum and not _verified_before(image):
        if sha256_file(image.disk_path) != image.sha256:
            raise ImageError(f"{image.disk_path} does not match its recorded sha256")
        _record_verified(image)
    return image


def _verified_marker(image: BaseImage) -> Path:
    """Beside the image (never inside it): the disk's size and mtime when last hashed."""
    return image.directory.with_name(f".{image.directory.name}.verified")


def _disk_stamp(image: BaseImage) -> dict[str, int | str]:
    st = image.disk_path.stat()
    return {"sha256": image.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified_before(image: BaseImage) -> bool:
    """The disk is unchanged since it last matched its sha256 (a full hash is ~3 s)."""
    try:
        return bool(json.loads(_verified_marker(image).read_text()) == _disk_stamp(image))
    except (OSError, ValueError):
        return False


def _record_verified(image: BaseImage) -> None:
    marker = _verified_marker(image)
    tmp = marker.with_name(marker.name + f".{os.getpid()}")
    tmp.write_text(json.dumps(_disk_stamp(image)))
    tmp.replace(marker)


def publish(image: BaseImage, work: Path) -> BaseImage:
    """Write the manifest last into ``work``, then move it into place as ``image.directory``."""
    data = image.to_json()
    del data["directory"]
    (work / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    if image.directory.exists():
        shutil.rmtree(image.directory)
    os.replace(work, image.directory)
    return load_image(image.directory, check_sum=False)
