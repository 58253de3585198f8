"""SSH keys: the cache's client key and each image's host key, made without ssh-keygen."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def public_blob(self) -> str:
        return self.public_line.split()[1]


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate(path: Path, comment: str) -> KeyPair:
    """Write a new ed25519 key to ``path`` (0600) and ``path.pub``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_line = f"{public.decode()} {comment}"
    _write_private(path, private)
    path.with_name(path.name + ".pub").write_text(public_line + "\n")
    return KeyPair(path, public_line)


def load(path: Path) -> KeyPair:
    return KeyPair(path, path.with_name(path.name + ".pub").read_text().strip())


def ensure_client_key(cache: Path) -> KeyPair:
    """The cache's one client key, created on first use; its mode is kept at 0600."""
    path = cache / "ssh" / "id_ed25519"
    if path.exists() and path.with_name(path.name + ".pub").exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return load(path)
    return generate(path, "memlayout-client")
