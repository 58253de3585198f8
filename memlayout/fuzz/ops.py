"""The churn operations: their grammar, a seeded generator, and replay files.

An operation is one line of words that guest/app.c's ``churn`` mode executes:

    map S PAGES PROT KIND FLAG PGOFF   mmap a slot (an old mapping there goes first)
    unmap S OFF PAGES                  munmap part of a slot, or all of it
    protect S OFF PAGES PROT           mprotect
    advise S OFF PAGES ADVICE          madvise
    remap S PAGES MODE                 mremap the whole slot, maymove or inplace
    touch S OFF PAGES ACCESS           one read or write per page (faults are caught)
    lock S OFF PAGES / unlock ...      mlock / munlock
    name S OFF PAGES LABEL             prctl(PR_SET_VMA_ANON_NAME) "churn_LABEL"
    fork / reap                        a child that keeps the COW state / kill the oldest
    thread / join                      a sleeping thread (a new stack) / cancel the newest
    brk DELTA                          grow (and write) or shrink the heap by DELTA pages

A slot is a region the app remembers (address and pages). Every operation is
valid in any state: the app cuts a range to its slot and does nothing with an
empty slot, so deleting operations from a sequence (shrinking) leaves a
sequence that still runs. :func:`generate` keeps a rough model of the slots
only to make most operations land on mapped memory.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

SLOTS = 8  # guest/app.c CHURN_SLOTS
USED_SLOTS = 6  # the generator's; fewer than the app allows, so slots get reused
HUGE = 512  # a 2 MiB page in 4 KiB pages
FILE_PAGES = 8192  # guest/app.c CHURN_FILE_PAGES: the churn file's size

PROTS = ("none", "r", "rw", "rx", "rwx")
KINDS = ("anon", "shared", "file", "fileshared", "hugetlb")
FLAGS = ("-", "populate", "locked", "noreserve")
ADVICES = (
    "dontneed",
    "free",
    "pageout",
    "cold",
    "willneed",
    "hugepage",
    "nohugepage",
    "mergeable",
    "unmergeable",
    "dontfork",
    "dofork",
    "wipeonfork",
    "keeponfork",
    "dontdump",
    "dodump",
    "remove",
    "collapse",
    "populate_read",
    "populate_write",
)
MODES = ("maymove", "inplace")
ACCESSES = ("read", "write")
LABELS = ("a", "b", "c")

_WORDS: dict[str, re.Pattern[str] | tuple[str, ...]] = {
    "slot": re.compile(rf"[0-{SLOTS - 1}]"),
    "pages": re.compile(r"[1-9]\d{0,4}"),
    "offset": re.compile(r"0|[1-9]\d{0,4}"),
    "delta": re.compile(r"0|-?[1-9]\d{0,3}"),
    "prot": PROTS,
    "kind": KINDS,
    "flag": FLAGS,
    "advice": ADVICES,
    "mode": MODES,
    "access": ACCESSES,
    "label": LABELS,
}

GRAMMAR: dict[str, tuple[str, ...]] = {
    "map": ("slot", "pages", "prot", "kind", "flag", "offset"),
    "unmap": ("slot", "offset", "pages"),
    "protect": ("slot", "offset", "pages", "prot"),
    "advise": ("slot", "offset", "pages", "advice"),
    "remap": ("slot", "pages", "mode"),
    "touch": ("slot", "offset", "pages", "access"),
    "lock": ("slot", "offset", "pages"),
    "unlock": ("slot", "offset", "pages"),
    "name": ("slot", "offset", "pages", "label"),
    "fork": (),
    "reap": (),
    "thread": (),
    "join": (),
    "brk": ("delta",),
}


def word_ok(kind: str, word: str) -> bool:
    allowed = _WORDS[kind]
    return word in allowed if isinstance(allowed, tuple) else bool(allowed.fullmatch(word))


@dataclass(frozen=True)
class Op:
    """One operation: its words, as the app reads them."""

    words: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.words[0]

    def __str__(self) -> str:
        return " ".join(self.words)

    @classmethod
    def of(cls, *words: object) -> Op:
        op = cls(tuple(str(w) for w in words))
        problem = op.problem()
        if problem:
            raise ValueError(problem)
        return op

    def problem(self) -> str | None:
        """What is wrong with this operation by the grammar; None if nothing."""
        if not self.words or self.words[0] not in GRAMMAR:
            return f"unknown operation {self!s:.40}; known: {', '.join(GRAMMAR)}"
        kinds = GRAMMAR[self.name]
        args = self.words[1:]
        if len(args) != len(kinds):
            return f"{self.name} takes {len(kinds)} words ({' '.join(kinds)}), not {len(args)}"
        for kind, word in zip(kinds, args, strict=True):
            if not word_ok(kind, word):
                return f"{self}: {word!r} is not a {kind}"
        return None


def parse(line: str) -> Op | None:
    """One line of a sequence: an Op, None for a blank or ``#`` line; ValueError if bad."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    return Op.of(*text.split())


def to_text(ops: Iterable[Op]) -> str:
    return "".join(f"{op}\n" for op in ops)


# How often each operation is drawn (before the model's constraints).
WEIGHTS = {
    "map": 16,
    "unmap": 6,
    "protect": 12,
    "advise": 14,
    "remap": 7,
    "touch": 22,
    "lock": 4,
    "unlock": 2,
    "name": 3,
    "fork": 3,
    "reap": 2,
    "thread": 3,
    "join": 2,
    "brk": 4,
}
SIZES = (1, 1, 2, 3, 4, 8, 8, 16, 16, 32, 64, 128)


class Model:
    """What the generator believes the slots hold (pages; 0 when empty)."""

    def __init__(self) -> None:
        self.pages = [0] * USED_SLOTS
        self.kind = ["anon"] * USED_SLOTS

    def mapped(self) -> list[int]:
        return [s for s, n in enumerate(self.pages) if n]


def _size(rng: random.Random) -> int:
    return HUGE * rng.randint(1, 2) if rng.random() < 0.06 else rng.choice(SIZES)


def _range(rng: random.Random, pages: int) -> tuple[int, int]:
    """(offset, pages) inside a slot of ``pages``: the whole slot a third of the time."""
    if pages <= 1 or rng.random() < 0.35:
        return 0, max(pages, 1)
    off = rng.randrange(pages)
    return off, rng.randint(1, pages - off)


def _map(rng: random.Random, m: Model, slot: int) -> Op:
    kind = rng.choices(KINDS, weights=(10, 3, 3, 2, 1))[0]
    pages = _size(rng)
    if kind == "hugetlb":
        pages = HUGE * rng.randint(1, 2)
    flag = rng.choices(FLAGS, weights=(12, 2, 1, 1))[0] if kind != "hugetlb" else "-"
    pgoff = rng.randrange(0, 1024) if kind.startswith("file") else 0
    prot = rng.choices(PROTS, weights=(1, 3, 10, 1, 1))[0]
    m.pages[slot], m.kind[slot] = pages, kind
    return Op.of("map", slot, pages, prot, kind, flag, pgoff)


def next_op(rng: random.Random, m: Model) -> Op:
    """One operation drawn by WEIGHTS, on a mapped slot (mostly); updates ``m``."""
    name = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    mapped = m.mapped()
    if name in ("fork", "reap", "thread", "join"):
        return Op.of(name)
    if name == "brk":
        return Op.of("brk", rng.choice((1, 2, 4, 16, -1, -4, -16)))
    if name == "map" or not mapped or (rng.random() < 0.05):
        empty = [s for s in range(USED_SLOTS) if s not in mapped]
        slot = rng.choice(empty) if empty and rng.random() < 0.8 else rng.randrange(USED_SLOTS)
        return _map(rng, m, slot)
    slot = rng.choice(mapped)
    pages = m.pages[slot]
    if name == "remap":
        new = max(1, pages + rng.choice((-pages // 2, 1, 4, pages)))
        if m.kind[slot].startswith("file"):
            new = min(new, 1024)
        m.pages[slot] = new
        return Op.of("remap", slot, new, rng.choice(MODES))
    off, count = _range(rng, pages)
    if name == "unmap":
        if off == 0 and count == pages:
            m.pages[slot] = 0
        return Op.of("unmap", slot, off, count)
    if name == "protect":
        return Op.of("protect", slot, off, count, rng.choices(PROTS, weights=(2, 4, 6, 1, 1))[0])
    if name == "advise":
        return Op.of("advise", slot, off, count, rng.choice(ADVICES))
    if name == "touch":
        return Op.of("touch", slot, off, count, rng.choices(ACCESSES, weights=(1, 3))[0])
    if name == "name":
        return Op.of("name", slot, off, count, rng.choice(LABELS))
    return Op.of(name, slot, off, count)  # lock, unlock


def generate(seed: int, length: int) -> list[Op]:
    """The sequence of ``seed``: the same ``length`` operations on every host and run."""
    rng = random.Random(seed)
    model = Model()
    return [next_op(rng, model) for _ in range(length)]


@dataclass
class Replay:
    """A sequence saved to replay: its operations and what the header says."""

    ops: list[Op]
    meta: dict[str, str]


def write_replay(path: Path, ops: list[Op], meta: dict[str, object], notes: list[str]) -> Path:
    header = ["# memlayout churn sequence: invoke fuzz --replay THIS_FILE"]
    header += [f"# {key}={value}" for key, value in meta.items()]
    header += [f"# {line}" for line in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + to_text(ops))
    return path


def read_replay(path: Path) -> Replay:
    """A replay file (or any file of operations, one a line); UsageError if unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the replay file {path}: {exc}") from None
    ops, meta = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"#\s*(\w+)=(\S*)\s*", line)
        if m:
            meta[m.group(1)] = m.group(2)
        try:
            op = parse(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        if op is not None:
            ops.append(op)
    if not ops:
        raise UsageError(f"{path} holds no operations")
    return Replay(ops, meta)
