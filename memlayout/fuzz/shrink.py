"""Delta debugging: the shortest sequence (by deletion) that still fails, in bounded time.

:func:`shrink` is ddmin (Zeller and Hildebrandt, "Simplifying and Isolating
Failure-Inducing Input", 2002) over the operations, removing chunks (halves,
quarters, ... single operations) while the sequence still fails. Every test
replays a whole sequence in the guest, so it stops at a deadline or a number
of tests and says whether it finished: an unfinished result still fails,
it is only not known to be 1-minimal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Shrunk(Generic[T]):
    items: list[T]
    tests: int  # sequences tried (the predicate's calls)
    complete: bool  # True: no single item can be removed (1-minimal)


def shrink(
    items: Sequence[T],
    fails: Callable[[list[T]], bool],
    *,
    deadline: float | None = None,
    max_tests: int = 500,
    clock: Callable[[], float] = time.monotonic,
) -> Shrunk[T]:
    """Remove chunks of ``items`` while ``fails`` holds; ``items`` itself must fail."""
    original = list(items)
    current = list(range(len(original)))  # positions in ``original``
    seen: dict[tuple[int, ...], bool] = {}
    tests = 0

    def done(complete: bool) -> Shrunk[T]:
        return Shrunk([original[i] for i in current], tests, complete)

    def out_of_time() -> bool:
        return tests >= max_tests or (deadline is not None and clock() >= deadline)

    def test(candidate: list[int]) -> bool:
        nonlocal tests
        key = tuple(candidate)
        if key not in seen:
            tests += 1
            seen[key] = fails([original[i] for i in candidate])
        return seen[key]

    n = 2
    while len(current) >= 2:
        size = -(-len(current) // n)  # ceil: n chunks of this size (the last may be short)
        reduced = False
        for start in range(0, len(current), size):
            if out_of_time():
                return done(False)
            complement = current[:start] + current[start + size :]
            if complement and test(complement):
                current = complement
                n = max(n - 1, 2)
                reduced = True
                break
        if reduced:
            continue
        if size == 1:
            return done(True)
        n = min(2 * n, len(current))
    return done(True)
