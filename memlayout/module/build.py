"""Stage 2a: push kernel-module/ and guest/ to the guest and kbuild them there.

Warnings fail the build. A guest that already built exactly these sources
(same digest) skips the build. kbuild's output always lands in build.log.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from ..guest.remote import Remote
from ..paths import REPO_ROOT, cache_dir
from ..rundir import GuestDir

# Where things live inside the guest.
REMOTE_ROOT = "/root/memlayout"
MODULE_KO = f"{REMOTE_ROOT}/kernel-module/procmem.ko"
HELLO_KO = f"{REMOTE_ROOT}/kernel-module/hello/hello.ko"
APP = f"{REMOTE_ROOT}/guest/app"
CYCLER = f"{REMOTE_ROOT}/guest/cycler"
PRODUCTS = (MODULE_KO, HELLO_KO, APP, CYCLER)
CAPTURE_SH = f"{REMOTE_ROOT}/guest/capture.sh"
# The kernel log is read and cleared load by load (short reads); what was read
# is appended here, so this file followed by `dmesg` is the whole log.
KMSG_KEEP = f"{REMOTE_ROOT}/kmsg.log"

SOURCE_DIRS = ("kernel-module", "guest")
_PRODUCT = re.compile(r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|\.order|\.symvers|\.d)$")
# "file.c:12:3: warning: ..." from gcc, and kbuild's own "WARNING: modpost: ..."
WARNING_RE = re.compile(r"^\S+:\d+:(\d+:)? warning: |^WARNING: ")
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class BuildResult:
    seconds: float
    log: str
    pushed: int
    skipped: bool = False

    def describe(self) -> str:
        what = (
            "unchanged, build skipped"
            if self.skipped
            else (f"built in {self.seconds:.1f} s, no warnings")
        )
        return f"pushed {self.pushed} files; {what}"


def source_files(root: Path = REPO_ROOT) -> list[tuple[Path, str]]:
    """(local path, path relative to the repository) of every source pushed to the guest."""
    files = []
    for name in SOURCE_DIRS:
        for path in sorted((root / name).rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_file()
                and not _PRODUCT.search(path.name)
                and not any(part.startswith(".") for part in rel.parts)
            ):
                files.append((path, rel.as_posix()))
    return files


def source_digest(root: Path = REPO_ROOT) -> str:
    """A hash of every source file that is pushed to the guest."""
    digest = hashlib.sha256()
    for path, rel in source_files(root):
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def push_sources(remote: Remote, root: Path = REPO_ROOT) -> int:
    """Copy kernel-module/ and guest/ (sources only) to the guest; returns files copied."""
    files = source_files(root)
    dirs = sorted({str(Path(REMOTE_ROOT) / rel).rsplit("/", 1)[0] for _, rel in files})
    remote.run("mkdir -p " + " ".join(shlex.quote(d) for d in dirs), check=True)
    for path, rel in files:
        remote.put(path, f"{REMOTE_ROOT}/{rel}")
    return len(files)


def warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if WARNING_RE.search(line)]


def build(remote: Remote, files: GuestDir | None = None, *, force: bool = False) -> BuildResult:
    """Push the sources and kbuild the module and the app; warnings fail it.

    A guest that built these sources already skips the build; so does a guest of a
    kernel whose products for these sources are in the host's build cache (a freshly
    resumed guest would otherwise build again after every boot). The build's output
    goes to ``files.build_log`` whether it passes or fails.
    """
    started = time.monotonic()
    digest = source_digest()
    stamp = f"{REMOTE_ROOT}/.built-{digest}"
    products = " -a -f ".join(PRODUCTS)
    if not force and remote.run(f"test -f {stamp} -a -f {products}").status == 0:
        # The stamp is written after these very sources were pushed and built: the guest
        # has them already, so a later task on the same guest pushes nothing.
        result = BuildResult(0.0, "up to date", 0, skipped=True)
    else:
        pushed = push_sources(remote)
        kept = BuildCache(cache_dir() / "builds", digest, kernel_id(remote))
        if not force and kept.restore(remote, stamp):
            result = BuildResult(time.monotonic() - started, kept.log(), pushed, skipped=True)
        else:
            result = _kbuild(remote, stamp, pushed, started, files)  # writes build.log itself
            kept.save(remote, result.log)
            return result
    if files is not None:
        files.create()
        files.build_log.write_text(result.log)
    return result


def kernel_id(remote: Remote) -> str:
    """The guest kernel's release and build (what the products were built against)."""
    return remote.run("uname -r; uname -v", check=True).stdout.strip()


@dataclass(frozen=True)
class BuildCache:
    """Build products on the host, keyed by the sources' digest and the guest kernel."""

    root: Path
    digest: str
    kernel: str

    @property
    def directory(self) -> Path:
        key = hashlib.sha256(f"{self.digest}\0{self.kernel}".encode()).hexdigest()[:16]
        return self.root / f"{self.kernel.split()[0]}-{key}"

    def log(self) -> str:
        return (self.directory / "build.log").read_text()

    def restore(self, remote: Remote, stamp: str) -> bool:
        """Put the kept products into the guest; False when there are none."""
        if not (self.directory / "done").exists():
            return False
        for product in PRODUCTS:
            remote.put(self.directory / Path(product).name, product)
        # One stamp at a time: the products in the guest are those of this digest only.
        remote.run(
            f"rm -f {REMOTE_ROOT}/.built-* && chmod 755 {' '.join(PRODUCTS)} && touch {stamp}",
            check=True,
        )
        return True

    def save(self, remote: Remote, log: str) -> None:
        tmp = self.directory.with_name(self.directory.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for product in PRODUCTS:
            remote.get(product, tmp / Path(product).name)
        (tmp / "build.log").write_text(log + "\n(kept in the host's build cache)\n")
        (tmp / "done").write_text(self.kernel + "\n")
        shutil.rmtree(self.directory, ignore_errors=True)
        os.replace(tmp, self.directory)


def _kbuild(
    remote: Remote, stamp: str, pushed: int, started: float, files: GuestDir | None
) -> BuildResult:
    script = (
        f"set -e; rm -f {REMOTE_ROOT}/.built-*; make -C {REMOTE_ROOT}/kernel-module 2>&1; "
        f"make -C {REMOTE_ROOT}/kernel-module/hello 2>&1; make -C {REMOTE_ROOT}/guest 2>&1"
    )
    ran = remote.run(script, timeout=BUILD_TIMEOUT)
    log = ran.stdout + ran.stderr
    log_path = files.build_log if files is not None else None
    if files is not None:
        files.create()
        files.build_log.write_text(log)
    if ran.status != 0:
        raise BuildError(f"the build failed (exit {ran.status}):\n{log[-3000:]}", log=log_path)
    warnings = warnings_in(log)
    if warnings:
        raise BuildError("the build printed warnings:\n" + "\n".join(warnings), log=log_path)
    remote.run(f"touch {stamp}", check=True)
    return BuildResult(time.monotonic() - started, log, pushed)


def full_dmesg(remote: Remote) -> str:
    """Everything the guest kernel logged since boot (kept part, then the rest)."""
    return remote.run(f"cat {KMSG_KEEP} 2>/dev/null; dmesg", check=True).stdout
