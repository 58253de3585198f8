"""One exception base for everything the pipeline reports to a user.

``tasks.py`` catches :class:`MemlayoutError` once, prints its one-line summary
(and where the log is), and exits with its ``exit_code``:

====  =============================================================
code  meaning
====  =============================================================
0     every check passed
1     the run finished but a check failed (the report shows which)
2     bad arguments (unknown guest, a pid that is not a number, ...)
3     a stage could not run (image, QEMU, SSH, build, guest command)
130   interrupted (Ctrl-C)
====  =============================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

EXIT_CHECKS_FAILED = 1
EXIT_USAGE = 2
EXIT_STAGE = 3
EXIT_INTERRUPTED = 130


class MemlayoutError(Exception):
    """A failure with a message for the user and, where there is one, a log to read."""

    exit_code: ClassVar[int] = EXIT_STAGE

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log = log

    def __str__(self) -> str:
        return self.message

    def summary(self) -> str:
        """The message's first line, and the log's path when there is one."""
        first = (
            self.message.strip().splitlines()[0] if self.message.strip() else type(self).__name__
        )
        return f"{first} (log: {self.log})" if self.log else first


class UsageError(MemlayoutError):
    """An argument the pipeline cannot act on."""

    exit_code = EXIT_USAGE


class ChecksFailed(MemlayoutError):
    """The run finished, but the module disagreed with /proc or a rule broke."""

    exit_code = EXIT_CHECKS_FAILED


class ImageError(MemlayoutError):
    """A base image could not be built, fetched or trusted."""


class DownloadError(ImageError):
    """A download failed (the partial file is kept to resume)."""


class ChecksumMismatch(DownloadError):
    """A downloaded file does not match its published checksum (it was deleted)."""


class VMError(MemlayoutError):
    """QEMU or the guest failed; the message quotes the console's last lines."""


class AbnormalShutdown(VMError):
    """The guest did not power down when asked and QEMU had to be killed."""


class RemoteError(MemlayoutError):
    """SSH to the guest failed, or a guest command failed or timed out."""


class BuildError(MemlayoutError):
    """kbuild failed or printed a warning."""


class RecordError(MemlayoutError, ValueError):
    """The module's lines do not form one complete, well-formed record."""


class SubmissionError(MemlayoutError):
    """The hand-in bundle could not be made."""


class ReportError(MemlayoutError):
    """The report could not be rendered (the run's data stay on disk)."""
