"""The guest's serial console: what it shows when the kernel goes wrong."""

from __future__ import annotations

import re
from pathlib import Path

# Lines the kernel prints when something is wrong (panic, oops, BUG, WARN), or stuck:
# a task blocked past the hung-task timeout, an RCU stall (a soft lockup is a "BUG: ").
TROUBLE = re.compile(
    r"Kernel panic - not syncing"
    r"|\bBUG: "
    r"|\bOops(?:: |\[)"
    r"|\bWARNING: CPU: "
    r"|general protection fault"
    r"|\bCall Trace:"
    r"|\bINFO: task \S+ blocked for more than \d+ seconds"
    r"|\brcu: INFO: \S+ (?:self-)?detected stalls? on CPU"
    r"|\bINFO: rcu_\w+ (?:self-)?detected stalls?"
)


def find_trouble(text: str) -> str | None:
    """The first line of ``text`` that shows a kernel failure, if any."""
    for line in text.splitlines():
        if TROUBLE.search(line):
            return line.strip()
    return None


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file ("" if it does not exist yet)."""
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


class ConsoleWatcher:
    """Reads a growing console log incrementally and remembers the first trouble."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.trouble: str | None = None

    def poll(self) -> str | None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.trouble
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace").replace("\r", "")
        complete, _, self.partial = text.rpartition("\n")
        if self.trouble is None:
            self.trouble = find_trouble(complete)
        return self.trouble
