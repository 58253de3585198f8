"""One frozen moment of a process: the /proc views and the module's record, together.

guest/capture.sh stops the target (SIGSTOP), reads /proc/PID/{maps,stat,statm,
status,smaps,pagemap}, loads procmem.ko for it, reads the record from /proc/procmem
and the same lines from the kernel log, unloads the module and lets the target go
on: all in one guest command, so the views and the record describe the same moment.

The record comes from /proc/procmem, which holds every line whatever the kernel log
lost; the printk lines are checked against it (``PrintkCheck``): equal when the log
kept everything since the load, a suffix of it when the log overflowed.
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
from .records import ProcRecord, parse, parse_line

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


# capture.sh's first line of the dmesg section: whether the mark written just before
# insmod is still in the log (mark=0: the log overflowed and lost older lines).
LOG_MARK = re.compile(r"^memlayout-log mark=([01])$", re.M)


@dataclass(frozen=True)
class PrintkCheck:
    """The load's printk lines (dmesg) against its record read from /proc/procmem."""

    file_lines: int
    dmesg_lines: int
    log_overflowed: bool  # the mark before insmod was gone from the log
    status: str  # "equal", "suffix" (the log lost the start) or "mismatch"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "equal" or (self.status == "suffix" and self.log_overflowed)

    @property
    def expected(self) -> str:
        return "equal or suffix (log overflowed)" if self.log_overflowed else "equal"

    def to_json(self) -> dict[str, object]:
        return {
            "record_from": "/proc/procmem",
            "log_overflowed": self.log_overflowed,
            "file_lines": self.file_lines,
            "dmesg_lines": self.dmesg_lines,
            "lost_from_dmesg": self.file_lines - self.dmesg_lines,
            "status": self.status,
            "ok": self.ok,
            "detail": self.detail,
        }


def logged_lines(dmesg: str) -> list[str]:
    """The module's record lines in a kernel log, without the log's own prefix."""
    lines = []
    for line in dmesg.splitlines():
        parsed = parse_line(line)
        if parsed is not None and parsed[0] != "unload":
            lines.append(line[line.find("procmem: ") :])
    return lines


def compare_printk(file_lines: list[str], dmesg: str) -> PrintkCheck:
    """Equal when the log kept the whole load; else its lines must end the file's."""
    mark = LOG_MARK.search(dmesg)
    overflowed = mark is not None and mark.group(1) == "0"
    logged = logged_lines(dmesg)
    n, m = len(file_lines), len(logged)
    if logged == file_lines:
        return PrintkCheck(n, m, overflowed, "equal")
    if 0 < m < n and file_lines[n - m :] == logged:
        return PrintkCheck(n, m, overflowed, "suffix", f"the log lost the first {n - m} lines")
    tail = file_lines[n - m :] if m <= n else file_lines
    pairs = zip(tail, logged, strict=False)
    diff = next((f"; logged {b!r}, file {a!r}" for a, b in pairs if a != b), "")
    return PrintkCheck(n, m, overflowed, "mismatch", f"{m} lines logged, {n} in the file{diff}")


@dataclass
class Capture:
    """The /proc views (by section name) and the module's record of one moment."""

    pid: int
    sections: dict[str, str]
    insmod_status: int
    insmod_output: str
    record: ProcRecord | None
    record_error: str | None = None
    printk: PrintkCheck | None = None  # None when the record came from the log itself

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
            reason = error_text(self.record) if self.record else ""
            return f"insmod failed ({self.errno_name}): {self.insmod_output}\n{reason}".strip()
        if self.record is None:
            return f"no record: {self.record_error}"
        if self.record.errors:
            return "the module reported an error: " + error_text(self.record)
        return None


def error_text(record: ProcRecord) -> str:
    return "; ".join(" ".join(f"{k}={v}" for k, v in e.items()) for e in record.errors)


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
    # The file has the whole record; a load that failed left its error in the log only.
    from_file = bool(sections.get("record", "").strip())
    text = sections["record"] if from_file else sections.get("dmesg", "")
    record, error = None, None
    try:
        record = parse(text)
    except RecordError as exc:
        error = str(exc)
    printk = None
    if from_file:
        lines = record.lines if record is not None else logged_lines(text)
        printk = compare_printk(lines, sections.get("dmesg", ""))
    return Capture(pid, sections, status, insmod_output, record, error, printk)


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
