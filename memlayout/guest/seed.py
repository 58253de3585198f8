"""cloud-init NoCloud seeds: an ISO labelled "cidata" holding user-data and meta-data."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ImageError


def user_data(
    *,
    authorized_key: str,
    host_private: str,
    host_public: str,
    packages: tuple[str, ...] = (),
    runcmd: tuple[str, ...] = (),
) -> str:
    """A #cloud-config that lets root in with our key and pins the host key.

    JSON is valid YAML, so the document is written with json.dumps: no quoting
    pitfalls for keys or commands.
    """
    config: dict[str, object] = {
        "disable_root": False,
        "ssh_pwauth": False,
        "users": [{"name": "root", "ssh_authorized_keys": [authorized_key]}],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "package_update": bool(packages),
        "packages": list(packages),
        "runcmd": list(runcmd),
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


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
