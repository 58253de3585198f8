"""cloud-init NoCloud seeds: an ISO labelled "cidata" holding user-data and meta-data."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ImageError


def cloud_config(config: dict[str, object]) -> str:
    """A #cloud-config document. JSON is valid YAML, so it is written with json.dumps:
    no quoting pitfalls for keys, scripts or commands."""
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def _root_login(authorized_key: str) -> dict[str, object]:
    return {
        "disable_root": False,
        "ssh_pwauth": False,
        "users": [{"name": "root", "ssh_authorized_keys": [authorized_key]}],
    }


def user_data(
    *,
    authorized_key: str,
    host_private: str,
    host_public: str,
    write_files: Sequence[Mapping[str, str]] = (),
    runcmd: Sequence[str | Sequence[str]] = (),
) -> str:
    """The first boot's #cloud-config: root in with our key, the host key pinned, a script run.

    It holds the host's private key: it must not outlive the provisioning boot.
    """
    config = _root_login(authorized_key) | {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "write_files": [dict(f) for f in write_files],
        "runcmd": [c if isinstance(c, str) else list(c) for c in runcmd],
    }
    return cloud_config(config)


def boot_user_data(*, authorized_key: str) -> str:
    """The #cloud-config kept with the image for every later boot: no secrets.

    With the first boot's instance-id cloud-init runs none of this again; should it ever
    run, it keeps the provisioned host key (no deletion, no new keys) and root's key.
    """
    config = _root_login(authorized_key) | {"ssh_deletekeys": False, "ssh_genkeytypes": []}
    return cloud_config(config)


def meta_data(instance_id: str, hostname: str = "memlayout-guest") -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"


def make_seed_iso(dest: Path, user: str, meta: str) -> Path:
    """Write the NoCloud ISO with genisoimage (or mkisofs / xorriso's emulation)."""
    tool = next((t for t in ("genisoimage", "mkisofs") if shutil.which(t)), None)
    if tool is None:
        raise ImageError("genisoimage is not installed (apt-get install genisoimage)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "user-data").write_text(user)
        (Path(tmp) / "meta-data").write_text(meta)
        proc = subprocess.run(
            [
                tool,
                "-quiet",
                "-output",
                str(dest),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                "user-data",
                "meta-data",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise ImageError(f"{tool} failed: {proc.stderr.strip()}")
    return dest
