import json
from dataclasses import replace
from pathlib import Path

import pytest

from memlayout import image
from memlayout.guests import PROFILES, UnknownGuest, get_profile

BOOKWORM = PROFILES["debian-bookworm"]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake test"


def test_unknown_guest_names_the_known_ones() -> None:
    with pytest.raises(UnknownGuest, match="debian-bookworm"):
        get_profile("debian-potato")


def test_recipe_hash_is_stable_and_sensitive() -> None:
    h = image.recipe_hash(BOOKWORM, KEY)
    assert h == image.recipe_hash(BOOKWORM, KEY)
    assert h != image.recipe_hash(replace(BOOKWORM, packages=(*BOOKWORM.packages, "vim")), KEY)
    assert h != image.recipe_hash(PROFILES["debian-trixie"], KEY)
    assert h != image.recipe_hash(BOOKWORM, KEY.replace("Fake", "Real"))


def test_recipe_hash_follows_the_customize_hook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("echo one\n")
    monkeypatch.setattr(image, "CUSTOMIZE_HOOK", hook)
    first = image.recipe_hash(BOOKWORM, KEY)
    hook.write_text("echo two\n")
    assert image.recipe_hash(BOOKWORM, KEY) != first


def test_mmdebstrap_command_has_no_mirror_unless_given() -> None:
    cmd = image.mmdebstrap_command(BOOKWORM, Path("/tmp/root"), None)
    assert cmd[-2:] == ["bookworm", "/tmp/root"]
    assert "--variant=apt" in cmd
    included = next(a for a in cmd if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert {"dbus", "e2fsprogs", "linux-headers-amd64", "openssh-server"} <= set(included)
    with_mirror = image.mmdebstrap_command(BOOKWORM, Path("/tmp/root"), "http://mirror.test/d")
    assert with_mirror[-1] == "http://mirror.test/d"


def fake_image(directory: Path, disk_bytes: bytes = b"disk") -> image.BaseImage:
    directory.mkdir(parents=True)
    (directory / "disk.qcow2").write_bytes(disk_bytes)
    (directory / "vmlinuz").write_bytes(b"k")
    (directory / "initrd.img").write_bytes(b"i")
    img = image.BaseImage(
        "debian-bookworm",
        directory,
        "disk.qcow2",
        "vmlinuz",
        "initrd.img",
        "6.1.0",
        KEY,
        image.sha256_file(directory / "disk.qcow2"),
        "r",
        1.0,
    )
    data = img.to_json()
    del data["directory"]
    (directory / image.MANIFEST).write_text(json.dumps(data))
    return img


def test_finished_image_loads(tmp_path: Path) -> None:
    made = fake_image(tmp_path / "img")
    assert image.load_image(tmp_path / "img") == made


def test_half_built_image_is_rejected(tmp_path: Path) -> None:
    fake_image(tmp_path / "img")
    (tmp_path / "img" / image.MANIFEST).unlink()
    with pytest.raises(image.ImageError, match="half-built"):
        image.load_image(tmp_path / "img")


def test_corrupt_disk_is_rejected(tmp_path: Path) -> None:
    fake_image(tmp_path / "img")
    (tmp_path / "img" / "disk.qcow2").write_bytes(b"dusk")
    with pytest.raises(image.ImageError, match="sha256"):
        image.load_image(tmp_path / "img")


def test_missing_kernel_is_rejected(tmp_path: Path) -> None:
    fake_image(tmp_path / "img")
    (tmp_path / "img" / "vmlinuz").unlink()
    with pytest.raises(image.ImageError, match="missing"):
        image.load_image(tmp_path / "img")


def test_ensure_image_rebuilds_a_corrupt_cache_entry(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memlayout import keys

    client = keys.ensure_client_key(cache)
    directory = image.image_dir(cache, BOOKWORM, image.recipe_hash(BOOKWORM, client.public_line))
    fake_image(directory)
    (directory / "disk.qcow2").write_bytes(b"bit rot")
    built = []

    def fake_build(profile, directory, recipe, client, mirror, report, **kw):  # type: ignore[no-untyped-def]
        built.append(recipe)
        return "rebuilt"

    monkeypatch.setattr(image, "build_debian", fake_build)
    notes: list[str] = []
    assert image.ensure_image(BOOKWORM, cache, report=notes.append) == "rebuilt"  # type: ignore[comparison-overlap]
    assert built and "rebuilding" in notes[0]
