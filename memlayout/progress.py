"""Progress lines for long steps: elapsed seconds, step name, message."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Reporter = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def silent(message: str) -> None:
    del message


@dataclass
class Step:
    """Prefixes messages with the step's name and its elapsed time."""

    name: str
    report: Reporter = to_stderr
    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        self.report(f"[{self.name} {self.elapsed():6.1f}s] {message}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started
