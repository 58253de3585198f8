"""The cloud-image download path, against a local HTTP server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from memlayout.errors import ImageError
from memlayout.guest import cloud, download
from memlayout.guest.profiles import PROFILES, GuestProfile

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    served_ranges: ClassVar[list[str]] = []
    honour_range = True

    def do_GET(self) -> None:
        if self.path == "/SHA256SUMS":
            body = f"{SHA} *disk1.img\n{'0' * 64}  other.img\n".encode()
            self.send_response(200)
        elif self.path == "/disk1.img":
            rng = self.headers.get("Range")
            Handler.served_ranges.append(rng or "")
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
            if rng and self.honour_range and start >= len(PAYLOAD):
                # What real servers say to a range past the end: 416 and the full size.
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if rng and self.honour_range:
                body = PAYLOAD[start:]
                self.send_response(206)
            else:
                body = PAYLOAD
                self.send_response(200)
        else:
            self.send_error(404)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.served_ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_sums_are_parsed(server: str) -> None:
    sums = download.parse_sums(download.fetch_text(server + "/SHA256SUMS"))
    assert sums == {"disk1.img": SHA, "other.img": "0" * 64}


def test_download_verifies_and_keeps_the_file(server: str, tmp_path: Path) -> None:
    dest = download.download(server + "/disk1.img", tmp_path / "disk1.img", SHA, report=print)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "disk1.img.part").exists()


def test_download_resumes_a_partial_file(server: str, tmp_path: Path) -> None:
    (tmp_path / "disk1.img.part").write_bytes(PAYLOAD[:300_000])
    dest = download.download(server + "/disk1.img", tmp_path / "disk1.img", SHA, report=print)
    assert dest.read_bytes() == PAYLOAD
    assert Handler.served_ranges == ["bytes=300000-"]


def test_a_complete_part_file_is_finished_not_fetched_again(server: str, tmp_path: Path) -> None:
    """An earlier run fetched everything but did not rename: the server answers 416."""
    (tmp_path / "disk1.img.part").write_bytes(PAYLOAD)
    notes: list[str] = []
    dest = download.download(
        server + "/disk1.img", tmp_path / "disk1.img", SHA, report=notes.append
    )
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "disk1.img.part").exists()
    assert Handler.served_ranges == [f"bytes={len(PAYLOAD)}-"]
    assert any("complete already" in note for note in notes)


def test_a_wrong_part_file_past_the_end_is_fetched_again_from_the_start(
    server: str, tmp_path: Path
) -> None:
    (tmp_path / "disk1.img.part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    dest = download.download(server + "/disk1.img", tmp_path / "disk1.img", SHA, report=print)
    assert dest.read_bytes() == PAYLOAD
    assert Handler.served_ranges == [f"bytes={len(PAYLOAD) + 10}-", ""]


def test_checksum_mismatch_deletes_the_file_and_says_so(server: str, tmp_path: Path) -> None:
    with pytest.raises(download.ChecksumMismatch, match="deleted"):
        download.download(server + "/disk1.img", tmp_path / "disk1.img", "f" * 64, report=print)
    assert not (tmp_path / "disk1.img").exists()
    assert not (tmp_path / "disk1.img.part").exists()


def test_unreachable_server_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadError, match="internet"):
        download.fetch_text(f"http://127.0.0.1:{port}/SHA256SUMS", timeout=2)


def xenial_at(server: str, sums: str = "/SHA256SUMS") -> GuestProfile:
    return replace(
        PROFILES["ubuntu-xenial"], image_url=server + "/disk1.img", sums_url=server + sums
    )


def test_the_pinned_disk_is_fetched_when_sha256sums_agrees(server: str, tmp_path: Path) -> None:
    disk = cloud.fetch_cloud_disk(xenial_at(server), SHA, tmp_path, print)
    assert disk.read_bytes() == PAYLOAD and disk.name == f"{SHA[:16]}-disk1.img"


def test_a_sha256sums_that_contradicts_the_pin_stops_the_build(server: str, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="pinned"):
        cloud.fetch_cloud_disk(xenial_at(server), "f" * 64, tmp_path, print)
    assert Handler.served_ranges == []  # the disk was not even requested


def test_without_sha256sums_the_pin_alone_decides(server: str, tmp_path: Path) -> None:
    notes: list[str] = []
    disk = cloud.fetch_cloud_disk(xenial_at(server, "/missing"), SHA, tmp_path, notes.append)
    assert disk.read_bytes() == PAYLOAD
    assert any("pinned sha256 alone" in note for note in notes)
