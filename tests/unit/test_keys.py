from pathlib import Path

import paramiko

from memlayout.guest import keys


def test_generated_key_is_private_and_loadable(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path / "k" / "id_ed25519", "test")
    assert pair.private.stat().st_mode & 0o777 == 0o600
    assert pair.public_line.startswith("ssh-ed25519 ") and pair.public_line.endswith(" test")
    loaded = paramiko.Ed25519Key.from_private_key_file(str(pair.private))
    assert loaded.get_base64() == pair.public_blob


def test_client_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = keys.ensure_client_key(tmp_path)
    first.private.chmod(0o644)
    second = keys.ensure_client_key(tmp_path)
    assert second.public_line == first.public_line
    assert second.private.stat().st_mode & 0o777 == 0o600
