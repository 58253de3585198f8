"""The hand-in: who wrote it (title page) and the bundle the course asks for.

The bundle holds the report, the module's and the app's sources with their
Makefiles, a README.txt for the grader, and the raw logs the report quotes.
Files are picked from a list, never by walking a tree, so build products,
images and keys cannot slip in; a final scan refuses anything that looks
like a private key.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04): the same parser, from PyPI
    import tomli as tomllib

from ..errors import SubmissionError
from ..paths import REPO_ROOT
from ..rundir import RunDir

CONFIG = REPO_ROOT / "submission.toml"
SOURCES = (
    "kernel-module/hello/hello.c",
    "kernel-module/hello/Makefile",
    "kernel-module/procmem.c",
    "kernel-module/Makefile",
    "kernel-module/FORMAT.md",
    "guest/app.c",
    "guest/Makefile",
)
FORBIDDEN = (b"PRIVATE KEY-----", b"QFI\xfb")  # private keys, qcow2 images


@dataclass
class Author:
    name: str
    id: str = ""


@dataclass
class Submission:
    course: str = ""
    title: str = "Process memory layout with a kernel module"
    authors: list[Author] = field(default_factory=list)
    date: str = ""
    format: str = "tar.gz"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load(path: Path = CONFIG, cli_authors: list[str] | None = None) -> Submission:
    """Read ``path`` if it exists; ``cli_authors`` ("Name" or "Name:id") replace its list."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SubmissionError(f"{path}: {exc}") from exc
    sub = Submission(
        course=str(data.get("course", "")),
        title=str(data.get("title", Submission.title)),
        authors=[Author(str(a["name"]), str(a.get("id", ""))) for a in data.get("authors", [])],
        date=str(data.get("date", "")) or time.strftime("%Y-%m-%d"),
        format=str(data.get("format", "tar.gz")),
    )
    if cli_authors:
        sub.authors = [Author(*(part.strip() for part in a.split(":", 1))) for a in cli_authors]
    if sub.format not in ("tar.gz", "zip"):
        raise SubmissionError(f"format must be tar.gz or zip, not {sub.format!r}")
    return sub


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def readme_txt(run_dir: RunDir, sub: Submission) -> str:
    """README.txt for the grader, from the same run data as the report."""
    run = _json(run_dir.run_json) or {}
    authors = ", ".join(a.name + (f" ({a.id})" if a.id else "") for a in sub.authors)
    lines = [
        sub.title,
        "=" * len(sub.title),
        "",
        f"Course:  {sub.course or '(not set)'}",
        f"Authors: {authors or '(not set: add them to submission.toml or use --author)'}",
        f"Date:    {sub.date}",
        "",
        "Contents",
        "--------",
        "report.pdf               the report",
        "kernel-module/hello/     Step 1: the Hello World module",
        "kernel-module/procmem.c  the kernel module; Makefile builds it with kbuild",
        "kernel-module/FORMAT.md  every line the module prints, field by field",
        "guest/app.c              the app that grows and shrinks its heap and stack",
        "logs/<guest>/            the raw logs and data the report quotes",
        "",
        "Step 1: the Hello World module",
        "------------------------------",
        "    cd kernel-module/hello",
        "    make",
        "    sudo insmod hello.ko whom=grader times=2",
        "    sudo dmesg | grep 'hello: '         # init, two hello lines",
        "    sudo rmmod hello                    # the exit line",
        "",
        "Build and load the module (any x86_64 Linux with its kernel headers installed)",
        "-------------------------------------------------------------------------------",
        "    cd kernel-module",
        "    make",
        "    sudo insmod procmem.ko pid=$$      # describe this shell",
        "    sudo dmesg | grep 'procmem: '       # the output, one record per line",
        "    sudo rmmod procmem",
        "",
        "find=list finds the task by walking the process list from current (as the",
        "assignment describes) and cross-checks it with the pid lookup (the default).",
        "Optional parameters: va=0xADDR translates one user address through every",
        "page-table level and prints the first bytes of its frame; walk=1 counts the",
        "present entries of each level. A missing or bad pid makes insmod fail with",
        "EINVAL or ESRCH, and the log says why.",
        "",
        "Run the app",
        "-----------",
        "    cd guest && make",
        "    ./app heap     # also: stack, demand, mmap, thread",
        "",
        "At each checkpoint the app prints one line (what it just did, its pid) and",
        "waits for SIGUSR1; in another shell load the module for that pid, then",
        "`kill -USR1 PID` to let the app go on. APP_NOWAIT=1 runs it straight through.",
        "",
        "What the output means",
        "---------------------",
        "begin: pid, command, kernel, page size, paging levels, page-table isolation.",
        "region: code, data, heap (start_brk..brk), stack, arguments, environment.",
        "vma: one line per virtual memory area, as /proc/PID/maps shows it, with the",
        "     resident pages found by walking the page tables.",
        "counters: rss (file, anon, shmem), total_vm and the other mm counters, in pages.",
        "pgd/pgde: the top-level page table, each present entry decoded.",
        "end: the number of lines printed, so a lost line is noticed.",
    ]
    if run:
        lines += ["", "This submission's run", "---------------------"]
        lines.append(f"Run {run.get('run_id')}: {'PASS' if run.get('ok') else 'FAIL'}")
        for files in run_dir.guests(list(run.get("guests", []))):
            info = _json(files.guest_json) or {}
            checks = [c for v in _json(files.verify_json) or [] for c in v["checks"]]
            passed = sum(c["ok"] for c in checks)
            lines.append(
                f"  {files.name}: kernel {info.get('kernel_release', '?')}, "
                f"{passed}/{len(checks)} checks against /proc passed"
            )
        for failure in run.get("failures", []):
            lines.append(f"  FAILED: {failure}")
    return "\n".join(lines) + "\n"


def bundle_files(run_dir: RunDir, sub: Submission) -> dict[str, bytes]:
    """Archive name -> content, for everything that goes into the bundle."""
    files: dict[str, bytes] = {}
    if run_dir.report_pdf.exists():
        files["report.pdf"] = run_dir.report_pdf.read_bytes()
    for rel in SOURCES:
        files[rel] = (REPO_ROOT / rel).read_bytes()
    files["README.txt"] = readme_txt(run_dir, sub).encode()
    if run_dir.run_json.exists():
        files["logs/run.json"] = run_dir.run_json.read_bytes()
    for guest in run_dir.guests():
        for path in guest.logs():
            files[f"logs/{guest.name}/{path.name}"] = path.read_bytes()
    for name, content in files.items():
        if any(marker in content for marker in FORBIDDEN):
            raise SubmissionError(f"refusing to bundle {name}: it looks like a key or an image")
    return files


def make_bundle(run_dir: RunDir, sub: Submission) -> Path:
    """Write ``run_dir/submission.tar.gz`` (or ``.zip``); returns its path."""
    top = "procmem-submission"
    files = bundle_files(run_dir, sub)
    mtime = time.time()
    dest = run_dir.bundle(sub.format)
    if sub.format == "zip":
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in files.items():
                zf.writestr(f"{top}/{name}", content)
        return dest
    with tarfile.open(dest, "w:gz") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(content)
            info.mtime = int(mtime)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(content))
    return dest
