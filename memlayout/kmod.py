"""The procmem module in a guest: push its sources, build with kbuild, load it."""

from __future__ import annotations

import errno
import hashlib
import re
import secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import REPO_ROOT
from .records import ProcRecord, parse
from .remote import Remote

REMOTE_ROOT = "/root/memlayout"
# The kernel log is read and cleared load by load (short reads); what was read
# is appended here, so this file followed by `dmesg` is the whole log.
KMSG_KEEP = f"{REMOTE_ROOT}/kmsg.log"


def full_dmesg(remote: Remote) -> str:
    """Everything the guest kernel logged since boot (kept part, then the rest)."""
    return remote.run(f"cat {KMSG_KEEP} 2>/dev/null; dmesg", check=True).stdout


SOURCE_DIRS = ("kernel-module", "guest")
_PRODUCT = re.compile(r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|\.order|\.symvers|\.d)$")
# "file.c:12:3: warning: ..." from gcc, and kbuild's own "WARNING: modpost: ..."
WARNING_RE = re.compile(r"^\S+:\d+:(\d+:)? warning: |^WARNING: ", re.MULTILINE)
# insmod's words for an errno (kmod rewords some: ESRCH reads "wrong symbol version").
ERRNO_NAMES = {
    "No such process": "ESRCH",
    "Module has wrong symbol version": "ESRCH",
    "Invalid parameters": "EINVAL",
    "Invalid argument": "EINVAL",
    "Bad address": "EFAULT",
    "Cannot allocate memory": "ENOMEM",
    "Operation not permitted": "EPERM",
}


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildResult:
    seconds: float
    log: str
    warnings: list[str]
    skipped: bool = False


def push_sources(remote: Remote, root: Path = REPO_ROOT) -> int:
    """Copy kernel-module/ and guest/ (sources only) to the guest."""
    count = 0
    for name in SOURCE_DIRS:
        local = root / name
        target = f"{REMOTE_ROOT}/{name}"
        remote.run(f"mkdir -p {target}", check=True)
        for path in sorted(local.rglob("*")):
            rel = path.relative_to(local)
            if path.is_dir() or _PRODUCT.search(path.name) or rel.parts[0].startswith("."):
                continue
            remote.run(f"mkdir -p {shlex.quote(str(Path(target) / rel.parent))}")
            remote.put(path, f"{target}/{rel.as_posix()}")
            count += 1
    return count


def source_digest(root: Path = REPO_ROOT) -> str:
    """A hash of every source file that is pushed to the guest."""
    digest = hashlib.sha256()
    for name in SOURCE_DIRS:
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and not _PRODUCT.search(path.name):
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(remote: Remote, digest: str | None = None) -> BuildResult:
    """kbuild the module (and the app if guest/Makefile exists); warnings fail it.

    With ``digest``, a guest that already built exactly these sources skips the build.
    """
    started = time.monotonic()
    stamp = f"{REMOTE_ROOT}/.built-{digest}"
    if (
        digest
        and remote.run(f"test -f {stamp} -a -f {REMOTE_ROOT}/kernel-module/procmem.ko").status == 0
    ):
        return BuildResult(0.0, "up to date", [], skipped=True)
    script = (
        f"set -e; rm -f {REMOTE_ROOT}/.built-*; make -C {REMOTE_ROOT}/kernel-module 2>&1; "
        f"if [ -f {REMOTE_ROOT}/guest/Makefile ]; then make -C {REMOTE_ROOT}/guest 2>&1; fi"
    )
    result = remote.run(script, timeout=900)
    log = result.stdout + result.stderr
    warnings = [
        m.group(0)
        for m in re.finditer(r"^.*(warning: |WARNING: ).*$", log, re.M)
        if WARNING_RE.search(m.group(0))
    ]
    seconds = time.monotonic() - started
    if result.status != 0:
        raise BuildError(f"the build failed (exit {result.status}):\n{log[-3000:]}")
    if warnings:
        raise BuildError("the build printed warnings:\n" + "\n".join(warnings))
    if digest:
        remote.run(f"touch {stamp}", check=True)
    return BuildResult(seconds, log, warnings)


def new_tag() -> str:
    return secrets.token_hex(6)


def module_args(*, va: int | None = None, walk: bool = False) -> list[str]:
    args = []
    if va is not None:
        args.append(f"va={va:#x}")
    if walk:
        args.append("walk=1")
    return args


@dataclass
class Snapshot:
    """One frozen moment of a process: the /proc views and the module's record."""

    pid: int
    tag: str
    sections: dict[str, str]
    insmod_status: int
    insmod_output: str
    record: ProcRecord | None
    record_error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def errno_name(self) -> str | None:
        """The errno of a failed load: the module's error record says it exactly."""
        if self.record is not None and self.record.errors:
            code = abs(int(self.record.errors[0].get("errno", 0)))
            if code in errno.errorcode:
                return errno.errorcode[code]
        for text, name in ERRNO_NAMES.items():
            if text in self.insmod_output:
                return name
        return None


def split_sections(text: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        m = re.fullmatch(r"=== (\w+) ===", line)
        if m:
            if name is not None:
                sections[name] = "\n".join(lines)
            name, lines = m.group(1), []
        else:
            lines.append(line)
    if name is not None:
        sections[name] = "\n".join(lines)
    return sections


def snapshot(
    remote: Remote,
    pid: int,
    *,
    va: int | None = None,
    walk: bool = False,
    stop: bool = True,
    raw_args: list[str] | None = None,
    pid_arg: bool = True,
) -> Snapshot:
    """Freeze ``pid``, read /proc and load the module for it, all in one guest call."""
    tag = new_tag()
    args = raw_args if raw_args is not None else module_args(va=va, walk=walk)
    env = ("" if stop else "NOSTOP=1 ") + ("" if pid_arg else "NOPID=1 ")
    cmd = f"{env}sh {REMOTE_ROOT}/guest/snapshot.sh {pid} {tag} " + " ".join(
        shlex.quote(a) for a in args
    )
    out = remote.run(cmd, timeout=300).stdout
    sections = split_sections(out)
    insmod = sections.get("insmod", "")
    status_m = re.search(r"^insmod_status=(\d+)$", insmod, re.M)
    status = int(status_m.group(1)) if status_m else -1
    insmod_output = re.sub(r"^insmod_status=\d+$", "", insmod, flags=re.M).strip()
    record, error = None, None
    try:
        record = parse(sections.get("dmesg", ""))
    except ValueError as exc:
        error = str(exc)
    return Snapshot(pid, tag, sections, status, insmod_output, record, error)
