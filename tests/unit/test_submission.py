"""The hand-in: config, README.txt and the bundle's contents (no VM)."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from memlayout.errors import SubmissionError
from memlayout.report import submission
from memlayout.report.submission import Submission
from memlayout.rundir import RunDir


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "submission.toml"
    path.write_text(text)
    return path


def test_example_config_names_nobody() -> None:
    sub = submission.load(Path(__file__).parents[2] / "submission.example.toml")
    assert sub.authors == [] and sub.course and sub.format == "tar.gz"


def test_config_authors_and_cli_override(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, 'course = "OS"\n[[authors]]\nname = "Ada L"\nid = "s1"\n[[authors]]\nname = "B"\n'
    )
    assert [(a.name, a.id) for a in submission.load(path).authors] == [("Ada L", "s1"), ("B", "")]
    cli = submission.load(path, ["Grace H:s9", "Alan T"])
    assert [(a.name, a.id) for a in cli.authors] == [("Grace H", "s9"), ("Alan T", "")]
    assert cli.course == "OS"


def test_missing_config_is_empty_not_invented(tmp_path: Path) -> None:
    sub = submission.load(tmp_path / "absent.toml")
    assert sub.authors == [] and sub.date


@pytest.mark.parametrize("text", ['format = "rar"\n', "course = \n"])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(SubmissionError):
        submission.load(write_config(tmp_path, text))


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    files = run.guest("debian-bookworm").create()
    guest = files.path
    run.report_pdf.write_bytes(b"%PDF-1.7 test")
    run.run_json.write_text(
        json.dumps({"run_id": "r1", "ok": True, "guests": ["debian-bookworm"], "failures": []})
    )
    files.guest_json.write_text(json.dumps({"kernel_release": "6.1.0-56-amd64"}))
    files.verify_json.write_text(
        json.dumps([{"checks": [{"ok": True}, {"ok": True}, {"ok": False}]}])
    )
    files.dmesg.write_text("procmem: begin tag=x\n")
    files.console_log.write_text("console\n")
    files.overlay.write_bytes(b"QFI\xfb" + b"\0" * 100)
    (guest / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return run


def test_bundle_holds_what_the_course_asks_and_nothing_secret(run_dir: RunDir) -> None:
    sub = Submission(course="OS", authors=[submission.Author("Ada L", "s1")])
    path = submission.make_bundle(run_dir, sub)
    with tarfile.open(path) as tf:
        names = set(tf.getnames())
        readme = tf.extractfile("procmem-submission/README.txt").read().decode()  # type: ignore[union-attr]
    expected = {
        "report.pdf",
        "README.txt",
        "kernel-module/procmem.c",
        "kernel-module/Makefile",
        "guest/app.c",
        "guest/Makefile",
        "logs/debian-bookworm/dmesg.txt",
        "logs/debian-bookworm/console.log",
    }
    assert {f"procmem-submission/{n}" for n in expected} <= names
    assert not any(n.endswith((".qcow2", ".ko", ".o", "id_ed25519")) for n in names)
    assert "make" in readme and "sudo insmod procmem.ko pid=$$" in readme
    assert "Ada L (s1)" in readme
    assert "kernel 6.1.0-56-amd64, 2/3 checks against /proc passed" in readme


def test_bundle_as_zip_and_without_authors(run_dir: RunDir) -> None:
    path = submission.make_bundle(run_dir, Submission(format="zip"))
    with zipfile.ZipFile(path) as zf:
        readme = zf.read("procmem-submission/README.txt").decode()
    assert path.name == "submission.zip"
    assert "Authors: (not set" in readme


def test_a_key_in_a_quoted_log_is_refused(run_dir: RunDir) -> None:
    run_dir.guest("debian-bookworm").build_log.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(SubmissionError, match=r"build\.log"):
        submission.make_bundle(run_dir, Submission())
