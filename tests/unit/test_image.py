import json
from dataclasses import replace
from pathlib import Path

import pytest

from memlayout.errors import ImageError, UsageError
from memlayout.guest import cache as cache_mod
from memlayout.guest import debian, image, keys
from memlayout.guest.cloud import CloudBuilder
from memlayout.guest.debian import DebianBuilder
from memlayout.guest.profiles import PROFILES, get_profile

BOOKWORM = PROFILES["debian-bookworm"]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake test"


def test_unknown_guest_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="debian-bookworm"):
        get_profile("debian-potato")


def recipe(profile: object = BOOKWORM, key: str = KEY) -> str:
    return image.recipe_hash(profile, key, DebianBuilder(profile))  # type: ignore[arg-type]


def test_recipe_hash_is_stable_and_sensitive() -> None:
    h = recipe()
    assert h == recipe()
    assert h != recipe(replace(BOOKWORM, packages=(*BOOKWORM.packages, "vim")))
    assert h != recipe(PROFILES["debian-trixie"])
    assert h != recipe(BOOKWORM, KEY.replace("Fake", "Real"))


@pytest.mark.parametrize("module", [debian, __import__("memlayout.guest.cloud").guest.cloud])
def test_recipe_hash_follows_the_disk_size(
    module: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    profile = PROFILES["ubuntu-xenial"] if module is not debian else BOOKWORM
    builder = CloudBuilder(profile, tmp_path) if module is not debian else DebianBuilder(profile)
    first = image.recipe_hash(profile, KEY, builder)
    monkeypatch.setattr(module, "DISK_SIZE", "64G")
    assert image.recipe_hash(profile, KEY, builder) != first


def test_recipe_hash_follows_the_customize_hook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("echo one\n")
    monkeypatch.setattr(debian, "CUSTOMIZE_HOOK", hook)
    first = recipe()
    hook.write_text("echo two\n")
    assert recipe() != first


def test_mmdebstrap_command_has_no_mirror_unless_given() -> None:
    cmd = debian.mmdebstrap_command(BOOKWORM, Path("/tmp/h"), Path("/tmp/out"), None)
    assert cmd[-2:] == ["bookworm", "/dev/null"]
    assert "--variant=apt" in cmd and "--format=null" in cmd and "--mode=root" in cmd
    included = next(a for a in cmd if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert {"dbus", "e2fsprogs", "linux-headers-amd64", "openssh-server"} <= set(included)
    hooks = [a for a in cmd if a.startswith("--customize-hook=")]
    assert hooks == [
        '--customize-hook=/tmp/h/debian-customize.sh "$1"',
        '--customize-hook=/tmp/h/debian-disk.sh "$1" /tmp/out 4G',
    ]
    with_mirror = debian.mmdebstrap_command(
        BOOKWORM, Path("/tmp/h"), Path("/tmp/out"), "http://mirror.test/d", mode="unshare"
    )
    assert with_mirror[-1] == "http://mirror.test/d" and "--mode=unshare" in with_mirror


def test_unshare_mode_needs_newuidmap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(ImageError, match="apt-get install uidmap"):
        debian.check_unshare_mode()


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
    with pytest.raises(ImageError, match="half-built"):
        image.load_image(tmp_path / "img")


def test_corrupt_disk_is_rejected(tmp_path: Path) -> None:
    fake_image(tmp_path / "img")
    (tmp_path / "img" / "disk.qcow2").write_bytes(b"dusk")
    with pytest.raises(ImageError, match="sha256"):
        image.load_image(tmp_path / "img")


def test_missing_kernel_is_rejected(tmp_path: Path) -> None:
    fake_image(tmp_path / "img")
    (tmp_path / "img" / "vmlinuz").unlink()
    with pytest.raises(ImageError, match="missing"):
        image.load_image(tmp_path / "img")


def test_ensure_image_rebuilds_a_corrupt_cache_entry(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = keys.ensure_client_key(cache)
    directory = image.image_dir(cache, BOOKWORM, recipe(BOOKWORM, client.public_line))
    fake_image(directory)
    (directory / "disk.qcow2").write_bytes(b"bit rot")
    built = []

    def fake_build(self, directory, recipe, client, step):  # type: ignore[no-untyped-def]
        built.append(recipe)
        return "rebuilt"

    monkeypatch.setattr(DebianBuilder, "build", fake_build)
    notes: list[str] = []
    assert cache_mod.ensure_image(BOOKWORM, cache, report=notes.append) == "rebuilt"  # type: ignore[comparison-overlap]
    assert built and "rebuilding" in notes[0]


def test_published_image_moves_into_place_with_its_manifest_last(tmp_path: Path) -> None:
    work = tmp_path / "work"
    made = fake_image(work)
    (work / image.MANIFEST).unlink()
    final = replace(made, directory=tmp_path / "final")
    assert image.publish(final, work) == final
    assert not work.exists() and (tmp_path / "final" / image.MANIFEST).exists()


def test_an_unchanged_disk_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_image(tmp_path / "img")
    hashed: list[Path] = []
    real = image.sha256_file
    monkeypatch.setattr(image, "sha256_file", lambda p: hashed.append(p) or real(p))
    image.load_image(tmp_path / "img")
    image.load_image(tmp_path / "img")
    assert len(hashed) == 1
    (tmp_path / "img" / "disk.qcow2").write_bytes(b"dusk")  # changed since: hashed again
    with pytest.raises(ImageError, match="sha256"):
        image.load_image(tmp_path / "img")
    assert len(hashed) == 2
