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
    try:
        _fetch(url, part, report, timeout, chunk)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not part.exists():
            raise _unreachable(url, part, exc) from exc
        # Nothing past the end of the file: an earlier run fetched it all but did not
        # get to rename it. The part is the whole file if its checksum says so.
        if _sha256(part, chunk) != sha256.lower():
            report(f"download {url}: {part.name} is not the file; starting over")
            part.unlink()
            return download(url, dest, sha256, report=report, timeout=timeout, chunk=chunk)
        report(f"download {url}: {part.name} was complete already")
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(url, part, exc) from exc
    return _finish(url, part, dest, sha256, chunk)


def _fetch(url: str, part: Path, report: Reporter, timeout: float, chunk: int) -> None:
    """Append what is missing from ``part`` (all of it when the server ignores the range)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
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


def _unreachable(url: str, part: Path, exc: Exception) -> DownloadError:
    return DownloadError(
        f"cannot download {url}: {exc} (is the internet reachable? {part.name} is kept to resume)"
    )


def _sha256(path: Path, chunk: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _finish(url: str, part: Path, dest: Path, sha256: str, chunk: int) -> Path:
    """Rename ``part`` to ``dest`` if its checksum is right; delete it if not."""
    actual = _sha256(part, chunk)
    if actual != sha256.lower():
        part.unlink()
        raise ChecksumMismatch(
            f"{url}: sha256 {actual} does not match the expected {sha256}; "
            "the downloaded file was deleted"
        )
    part.rename(dest)
    return dest
