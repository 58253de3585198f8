import json
import shutil
import subprocess
from pathlib import Path

import pytest

from memlayout.guest import seed


def test_user_data_lets_root_in_and_pins_the_host_key() -> None:
    text = seed.user_data(
        authorized_key="ssh-ed25519 AAAA client",
        host_private="PRIV",
        host_public="ssh-ed25519 BBBB host",
        write_files=({"path": "/x", "content": "echo hi\n"},),
        runcmd=("echo hi", ("/x", "a b")),
    )
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])
    assert config["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA client"]
    assert config["ssh_keys"] == {
        "ed25519_private": "PRIV",
        "ed25519_public": "ssh-ed25519 BBBB host",
    }
    assert config["write_files"] == [{"path": "/x", "content": "echo hi\n"}]
    assert config["runcmd"] == ["echo hi", ["/x", "a b"]]
    assert config["disable_root"] is False
    assert "packages" not in config and "package_update" not in config


def test_boot_user_data_holds_no_host_key_and_keeps_the_provisioned_one() -> None:
    config = json.loads(seed.boot_user_data(authorized_key="ssh-ed25519 AAAA c").split("\n", 1)[1])
    assert "ssh_keys" not in config and "runcmd" not in config
    assert config["ssh_deletekeys"] is False and config["ssh_genkeytypes"] == []
    assert config["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA c"]


@pytest.mark.skipif(shutil.which("genisoimage") is None, reason="genisoimage not installed")
def test_seed_iso_is_labelled_cidata_and_holds_both_files(tmp_path: Path) -> None:
    iso = seed.make_seed_iso(tmp_path / "seed.iso", "#cloud-config\n{}\n", seed.meta_data("i-1"))
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True)
    assert "Volume id: cidata" in info.stdout
    listing = subprocess.run(
        ["isoinfo", "-J", "-f", "-i", str(iso)], capture_output=True, text=True
    ).stdout.split()
    assert sorted(listing) == ["/meta-data", "/user-data"]
    meta = subprocess.run(
        ["isoinfo", "-J", "-x", "/meta-data", "-i", str(iso)], capture_output=True, text=True
    ).stdout
    assert json.loads(meta)["instance-id"] == "i-1"
