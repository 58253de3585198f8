"""The cloud builder without QEMU or the internet: pins, seeds, logs, the provisioning script."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from memlayout.errors import ImageError, UsageError, VMError
from memlayout.guest import cloud, image, keys, seed
from memlayout.guest.cloud import CloudBuilder
from memlayout.guest.image import BaseImage
from memlayout.guest.profiles import PROFILES
from memlayout.guest.qemu import create_overlay
from memlayout.guest.remote import Result
from memlayout.progress import Step
from memlayout.rundir import GuestDir

XENIAL = PROFILES["ubuntu-xenial"]
PIN = "ab" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake test"
needs_iso_tools = pytest.mark.skipif(
    shutil.which("genisoimage") is None or shutil.which("isoinfo") is None,
    reason="genisoimage/isoinfo not installed",
)


def config_of(user_data: str) -> dict[str, object]:
    header, body = user_data.split("\n", 1)
    assert header == "#cloud-config"
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def iso_file(iso: Path, name: str) -> str:
    return subprocess.run(
        ["isoinfo", "-J", "-x", f"/{name}", "-i", str(iso)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# -- the pin ---------------------------------------------------------------------


def test_the_xenial_pin_is_taken_from_the_environment_while_the_code_has_none() -> None:
    assert cloud.sha256_variable(XENIAL) == "MEMLAYOUT_UBUNTU_XENIAL_SHA256"
    builder = CloudBuilder.from_env(XENIAL, Path("/c"), {"MEMLAYOUT_UBUNTU_XENIAL_SHA256": PIN})
    assert builder.image_sha256 == (XENIAL.image_sha256 or PIN)


def test_a_pin_that_is_no_digest_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="64 hex digits"):
        CloudBuilder.from_env(XENIAL, Path("/c"), {"MEMLAYOUT_UBUNTU_XENIAL_SHA256": "abc"})


def test_the_environment_cannot_override_a_pin_in_the_code() -> None:
    pinned = replace(XENIAL, image_sha256="cd" * 32)
    with pytest.raises(ImageError, match="contradicts"):
        CloudBuilder.from_env(pinned, Path("/c"), {"MEMLAYOUT_UBUNTU_XENIAL_SHA256": PIN})
    assert CloudBuilder.from_env(pinned, Path("/c"), {}).image_sha256 == "cd" * 32


def test_without_a_pin_the_build_refuses_before_any_download(cache: Path) -> None:
    builder = CloudBuilder(replace(XENIAL, image_sha256=""), cache)
    client = keys.ensure_client_key(cache)
    with pytest.raises(ImageError, match="MEMLAYOUT_UBUNTU_XENIAL_SHA256") as info:
        builder.build(cache / "images" / "x", "r", client, Step("image", print))
    assert "SHA256SUMS.gpg" in str(info.value)
    assert not (cache / "downloads").exists()


# -- the seeds -------------------------------------------------------------------


def test_provisioning_user_data_runs_the_script_with_both_archives() -> None:
    builder = CloudBuilder.from_env(
        XENIAL, Path("/c"), {"MEMLAYOUT_UBUNTU_ARCHIVE": "http://ubuntu.example/ubuntu/"}
    )
    docs = cloud.seed_documents(KEY, "PRIV", "ssh-ed25519 H", builder.archive, "i-1", ("gcc",))
    config = config_of(docs.provision)
    assert config["write_files"] == [
        {
            "path": cloud.GUEST_SCRIPT,
            "permissions": "0755",
            "content": cloud.PROVISION_SCRIPT.read_text(),
        }
    ]
    assert config["runcmd"] == [
        [cloud.GUEST_SCRIPT, "http://ubuntu.example/ubuntu", cloud.OLD_RELEASES_ARCHIVE, "gcc"]
    ]
    assert "packages" not in config  # installed by the script, after the archive is chosen
    assert json.loads(docs.meta)["instance-id"] == "i-1"


def test_the_default_archive_is_ubuntus_with_old_releases_as_fallback() -> None:
    builder = CloudBuilder.from_env(XENIAL, Path("/c"), {})
    assert builder.archive == cloud.DEFAULT_ARCHIVE
    assert "old-releases" in cloud.OLD_RELEASES_ARCHIVE


def test_boot_user_data_has_no_secret() -> None:
    docs = cloud.seed_documents(KEY, "PRIVATE-HOST-KEY", "ssh-ed25519 H", "a", "i-1", ())
    assert "PRIVATE-HOST-KEY" in docs.provision
    assert "PRIVATE-HOST-KEY" not in docs.boot


# -- the recipe ------------------------------------------------------------------


def recipe_of(builder: CloudBuilder) -> str:
    return image.recipe_hash(builder.profile, KEY, builder)


def test_recipe_follows_the_provisioning_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "provision.sh"
    script.write_text("echo one\n")
    monkeypatch.setattr(cloud, "PROVISION_SCRIPT", script)
    builder = CloudBuilder(XENIAL, tmp_path, PIN)
    first = recipe_of(builder)
    script.write_text("echo two\n")
    assert recipe_of(builder) != first


def test_recipe_follows_the_seeds_and_the_pin_but_not_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = CloudBuilder(XENIAL, tmp_path, PIN)
    first = recipe_of(builder)
    assert recipe_of(replace(builder, archive="http://elsewhere/ubuntu")) == first
    assert recipe_of(replace(builder, image_sha256="cd" * 32)) != first
    monkeypatch.setattr(seed, "boot_user_data", lambda authorized_key: "#cloud-config\n{}\n")
    assert recipe_of(builder) != first


# -- a whole build, with a fake guest ---------------------------------------------


class FakeGuest:
    """Answers provisioning's commands; ``provisioned`` says whether the script succeeded."""

    def __init__(self, provisioned: bool, output_log: str) -> None:
        self.provisioned = provisioned
        self.output_log = output_log
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float | None = 600, check: bool = False) -> Result:
        self.commands.append(command)
        if command.startswith("test -f"):
            return Result(command, 0 if self.provisioned else 1, "", "")
        if command == "uname -r":
            return Result(command, 0, "4.4.0-210-generic\n", "")
        return Result(command, 0, "", "")

    def get(self, remote: str, local: Path) -> None:
        assert remote == "/var/log/cloud-init-output.log"
        local.write_text(self.output_log)


class FakeBoot:
    """Stands in for QEMU + SSH: records the seed the guest was given, writes a console."""

    def __init__(self, guest: FakeGuest | None, console: str = "cloud-init finished\n") -> None:
        self.guest = guest
        self.console = console
        self.seed_given: Path | None = None
        self.provision_user_data = ""

    @contextlib.contextmanager
    def __call__(
        self, template: BaseImage, files: GuestDir, client: keys.KeyPair, cache: Path, step: Step
    ) -> Iterator[FakeGuest]:
        self.seed_given = template.seed_path
        assert self.seed_given is not None
        self.provision_user_data = iso_file(self.seed_given, "user-data")
        files.create()
        files.console_log.write_text(self.console)
        create_overlay(template.disk_path, files.overlay)
        if self.guest is None:
            raise VMError("ubuntu-xenial: no SSH banner within 180 s")
        yield self.guest


def builder_with(cache: Path, boot: FakeBoot) -> CloudBuilder:
    """A builder whose pinned disk is already downloaded (a tiny raw disk)."""
    disk = b"\0" * (1 << 20)
    pin = hashlib.sha256(disk).hexdigest()
    name = XENIAL.image_url.rsplit("/", 1)[-1]
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    (downloads / f"{pin[:16]}-{name}").write_bytes(disk)
    return CloudBuilder(XENIAL, cache, pin, boot=boot)


def build(cache: Path, builder: CloudBuilder) -> BaseImage:
    client = keys.ensure_client_key(cache)
    directory = image.image_dir(cache, XENIAL, recipe_of(builder))
    return builder.build(directory, "r", client, Step("image", print))


@needs_iso_tools
def test_the_host_key_reaches_the_guest_but_no_private_key_stays_in_the_cache(
    cache: Path,
) -> None:
    boot = FakeBoot(FakeGuest(provisioned=True, output_log="memlayout: provisioned\n"))
    built = build(cache, builder_with(cache, boot))
    # The first boot's seed carried the host's private key, and is gone with its directory.
    host_private = config_of(boot.provision_user_data)["ssh_keys"]["ed25519_private"]  # type: ignore[index]
    assert "OPENSSH PRIVATE KEY" in host_private
    assert boot.seed_given is not None and not boot.seed_given.parent.exists()
    # The seed kept with the image lets root in but holds no private key.
    assert built.seed_path is not None and built.seed_path.is_relative_to(cache)
    kept = iso_file(built.seed_path, "user-data")
    assert "PRIVATE KEY" not in kept and "ssh_keys" not in config_of(kept)
    assert json.loads(iso_file(built.seed_path, "meta-data"))["instance-id"].startswith("memlayout")
    # Nothing anywhere in the cache holds the host's private key (the client's own is fine).
    secret = "".join(host_private.strip().splitlines()[1:-1]).encode()
    for path in cache.rglob("*"):
        if path.is_file():  # the key's lines joined by newlines, or by JSON's "\\n"
            flat = path.read_bytes().replace(b"\\n", b"").replace(b"\n", b"")
            assert secret not in flat, path
    assert built.host_key.startswith("ssh-ed25519 ")
    assert (built.directory / "cloud-init-output.log").read_text() == "memlayout: provisioned\n"
    assert image.load_image(built.directory) == built


@needs_iso_tools
def test_a_failed_provisioning_keeps_and_quotes_both_logs(cache: Path) -> None:
    output = "".join(f"line {i}\n" for i in range(40)) + "E: Unable to locate package gcc\n"
    boot = FakeBoot(FakeGuest(provisioned=False, output_log=output), console="login: \n")
    builder = builder_with(cache, boot)
    with pytest.raises(ImageError) as info:
        build(cache, builder)
    message = str(info.value)
    assert "provisioning script did not succeed" in message
    assert "E: Unable to locate package gcc" in message and "line 39" in message
    assert "line 0\n" not in message  # a tail, not the whole log
    assert "login:" in message
    logs = cloud.ProvisionLogs.beside(cache / "images" / "x", "ubuntu-xenial")
    assert logs.cloud_init_output.read_text() == output
    assert logs.console.read_text() == "login: \n"
    assert info.value.log == logs.cloud_init_output
    assert not list((cache / "images").glob(".*.work"))
    assert boot.seed_given is not None and not boot.seed_given.parent.exists()


@needs_iso_tools
def test_an_unreachable_guest_keeps_the_console_and_says_the_output_log_is_missing(
    cache: Path,
) -> None:
    boot = FakeBoot(None, console="Kernel panic - not syncing: VFS\n")
    with pytest.raises(ImageError) as info:
        build(cache, builder_with(cache, boot))
    message = str(info.value)
    assert "no SSH banner" in message and "Kernel panic" in message
    assert "could not be copied: the guest was not reachable over SSH" in message
    assert info.value.log is not None and info.value.log.name.endswith("console.log")


# -- the provisioning script, with a fake apt-get -----------------------------------


FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >>"$CALLS"
case "$*" in *update*)
    if grep -q "$GONE" "$MEMLAYOUT_SOURCES_LIST"; then
        echo "W: The repository '$GONE xenial Release' does not have a Release file."
        echo "E: Failed to fetch $GONE/dists/xenial/main/binary-amd64/Packages  404  Not Found"
        exit 100
    fi;;
esac
"""


def run_script(
    tmp_path: Path, archive: str, gone: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "apt-get": FAKE_APT_GET,
        "uname": "#!/bin/sh\necho 4.4.0-210-generic\n",
        "systemctl": "#!/bin/sh\nexit 0\n",
        "python3": "#!/bin/sh\nexit 0\n",  # the lock probe: nothing holds apt's locks
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "modules" / "4.4.0-210-generic" / "build").mkdir(parents=True)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        CALLS=str(tmp_path / "calls"),
        GONE=gone,
        MEMLAYOUT_SOURCES_LIST=str(tmp_path / "sources.list"),
        MEMLAYOUT_STATE_DIR=str(tmp_path / "state"),
        MEMLAYOUT_MODULES_DIR=str(tmp_path / "modules"),
    )
    proc = subprocess.run(
        ["sh", str(cloud.PROVISION_SCRIPT), archive, cloud.OLD_RELEASES_ARCHIVE, "gcc", "make"],
        env=env,
        capture_output=True,
        text=True,
    )
    return proc, tmp_path


def test_the_script_uses_the_main_archive_while_it_serves_xenial(tmp_path: Path) -> None:
    proc, tmp = run_script(tmp_path, cloud.DEFAULT_ARCHIVE, gone="http://nowhere")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"deb {cloud.DEFAULT_ARCHIVE} xenial-security" in (tmp / "sources.list").read_text()
    calls = (tmp / "calls").read_text().splitlines()
    assert (
        calls[-1]
        == "apt-get -o Acquire::Retries=3 install -y gcc make linux-headers-4.4.0-210-generic"
    )
    assert (tmp / "state" / "provisioned").exists()


def test_the_script_falls_back_to_old_releases(tmp_path: Path) -> None:
    proc, tmp = run_script(tmp_path, cloud.DEFAULT_ARCHIVE, gone=cloud.DEFAULT_ARCHIVE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not serve xenial (any more); packages from" in proc.stdout
    sources = (tmp / "sources.list").read_text()
    assert cloud.OLD_RELEASES_ARCHIVE in sources and cloud.DEFAULT_ARCHIVE not in sources
    calls = (tmp / "calls").read_text().splitlines()
    assert [c.split()[-1] for c in calls] == ["update", "update", "linux-headers-4.4.0-210-generic"]
    assert (tmp / "state" / "provisioned").exists()


def test_the_script_fails_when_no_archive_serves_xenial(tmp_path: Path) -> None:
    proc, tmp = run_script(tmp_path, cloud.DEFAULT_ARCHIVE, gone="ubuntu")
    assert proc.returncode != 0
    assert "serves xenial" in proc.stderr
    assert not (tmp / "state" / "provisioned").exists()
