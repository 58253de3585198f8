"""The image cache: the base image of a profile, built by its builder when missing.

``$MEMLAYOUT_CACHE`` (or ``$XDG_CACHE_HOME/memlayout``) holds ``images/``, the
client key in ``ssh/``, saved states in ``saved/`` and downloads.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from ..errors import ImageError
from ..progress import Reporter, Step, to_stderr
from . import keys
from .cloud import CloudBuilder
from .debian import DebianBuilder
from .image import BaseImage, ImageBuilder, image_dir, load_image, recipe_hash
from .profiles import GuestProfile


def builder_for(
    profile: GuestProfile, cache: Path, *, mirror: str | None = None, allow_expired: bool = False
) -> ImageBuilder:
    if profile.kind == "debian":
        return DebianBuilder(profile, mirror, allow_expired)
    if profile.kind == "cloud":
        return CloudBuilder.from_env(profile, cache)
    raise ImageError(f"{profile.name}: no builder for images of kind {profile.kind!r}")


def ensure_image(
    profile: GuestProfile,
    cache: Path,
    *,
    mirror: str | None = None,
    allow_expired: bool = False,
    rebuild: bool = False,
    report: Reporter = to_stderr,
) -> BaseImage:
    """The cached image for ``profile``, built when missing, half-built or corrupt."""
    client = keys.ensure_client_key(cache)
    builder = builder_for(profile, cache, mirror=mirror, allow_expired=allow_expired)
    recipe = recipe_hash(profile, client.public_line, builder)
    directory = image_dir(cache, profile, recipe)
    with locked(directory.with_name(f".{directory.name}.lock"), report):
        if directory.exists() and not rebuild:
            try:
                return load_image(directory)
            except ImageError as exc:
                report(f"image: {exc}; rebuilding")
        return builder.build(directory, recipe, client, Step(f"image {profile.name}", report))


@contextlib.contextmanager
def locked(path: Path, report: Reporter) -> Iterator[None]:
    """An exclusive lock on ``path``: a second pipeline waits while one builds or saves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"another pipeline holds {path}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
