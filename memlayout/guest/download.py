"""Downloads that resume, and that never keep a file whose checksum is wrong."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ChecksumMismatch, DownloadError
from ..progress import Reporter, to_stderr

__all__ = ["ChecksumMismatch", "DownloadError", "download", "fetch_text", "parse_sums"]


def fetch_text(url: str, timeout: float = 15.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot fetch {url}: {exc} (is the internet reachable?)") from exc


def parse_sums(text: str) -> dict[str, str]:
    """A SHA256SUMS file: name -> hex digest ('*name' marks binary mode)."""
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def download(
    url: str,
    dest: Path,
    sha256: str,
    *,
    report: Reporter = to_stderr,
    timeout: float = 30.0,
    chunk: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part``; verify ``sha256``.

    On a mismatch the partial file is deleted and ChecksumMismatch says so.
    """
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resumed = resp.status == 206
            if have and not resumed:
                have = 0  # the server ignored the range: start over
            total = int(resp.headers.get("Content-Length") or 0) + have
            report(f"download {url} ({'resuming at ' + str(have) if resumed else 'new'})")
            with part.open("ab" if resumed else "wb") as out:
                done, next_note = have, have + (64 << 20)
                while block := resp.read(chunk):
                    out.write(block)
                    done += len(block)
                    if done >= next_note:
                        report(f"download {done >> 20} / {total >> 20} MiB")
                        next_note += 64 << 20
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot download {url}: {exc} (is the internet reachable? "
            f"{part.name} is kept to resume)"
        ) from exc
    digest = hashlib.sha256()
    with part.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        part.unlink()
        raise ChecksumMismatch(
            f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; "
            "the downloaded file was deleted"
        )
    part.rename(dest)
    return dest
