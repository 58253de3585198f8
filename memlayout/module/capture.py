"""One frozen moment of a process: the /proc views and the module's record, together.

guest/capture.sh stops the target (SIGSTOP), reads /proc/PID/{maps,stat,statm,
status,smaps,pagemap}, loads procmem.ko for it, reads the kernel log, unloads the
module and lets the target go on: all in one guest command, so the views and the
record describe the same moment.
"""

from __future__ import annotations

import errno
import re
import secrets
import shlex
from dataclasses import dataclass

from ..errors import RecordError
from ..guest.remote import Remote
from .build import CAPTURE_SH
from .records import ProcRecord, parse

CAPTURE_TIMEOUT = 300.0
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


@dataclass
class Capture:
    """The /proc views (by section name) and the module's record of one moment."""

    pid: int
    sections: dict[str, str]
    insmod_status: int
    insmod_output: str
    record: ProcRecord | None
    record_error: str | None = None

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

    def failure(self) -> str | None:
        """Why this capture has no usable record, or None when it has one."""
        if self.insmod_status != 0:
            errors = self.record.errors if self.record else []
            reason = "; ".join(" ".join(f"{k}={v}" for k, v in e.items()) for e in errors)
            return f"insmod failed ({self.errno_name}): {self.insmod_output}\n{reason}".strip()
        if self.record is None:
            return f"no record: {self.record_error}"
        return None


def module_args(*, va: int | None = None, walk: bool = False) -> list[str]:
    args = []
    if va is not None:
        args.append(f"va={va:#x}")
    if walk:
        args.append("walk=1")
    return args


def split_sections(text: str) -> dict[str, str]:
    """``=== name ===`` headed sections of snapshot.sh's output."""
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


def parse_capture(pid: int, output: str) -> Capture:
    sections = split_sections(output)
    insmod = sections.get("insmod", "")
    status_m = re.search(r"^insmod_status=(\d+)$", insmod, re.M)
    status = int(status_m.group(1)) if status_m else -1
    insmod_output = re.sub(r"^insmod_status=\d+$", "", insmod, flags=re.M).strip()
    record, error = None, None
    try:
        record = parse(sections.get("dmesg", ""))
    except RecordError as exc:
        error = str(exc)
    return Capture(pid, sections, status, insmod_output, record, error)


def capture(
    remote: Remote,
    pid: int,
    *,
    va: int | None = None,
    walk: bool = False,
    stop: bool = True,
    raw_args: list[str] | None = None,
    pid_arg: bool = True,
) -> Capture:
    """Freeze ``pid`` (unless ``stop`` is False), read /proc and load the module for it.

    ``raw_args`` replace the module arguments; ``pid_arg=False`` leaves out ``pid=``
    (to test the module's own checks).
    """
    tag = secrets.token_hex(6)
    args = raw_args if raw_args is not None else module_args(va=va, walk=walk)
    env = ("" if stop else "NOSTOP=1 ") + ("" if pid_arg else "NOPID=1 ")
    cmd = f"{env}sh {CAPTURE_SH} {pid} {tag} " + " ".join(shlex.quote(a) for a in args)
    return parse_capture(pid, remote.run(cmd, timeout=CAPTURE_TIMEOUT).stdout)
