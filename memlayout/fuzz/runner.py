"""Run churn sequences in a guest, verify the module at every checkpoint, shrink mismatches.

:class:`GuestExecutor` runs one sequence: it pushes the operations to the
guest, starts ``app churn FILE EVERY`` and, at every checkpoint, freezes the
app and compares the module's record with maps, smaps, statm, status and the
pagemap entry of the address the last operation worked on (module.capture and
module.verify, as every scenario does). :func:`fuzz` runs the sequences of
consecutive seeds until its time is up; the first checkpoint that disagrees
stops it, and :func:`shrink_mismatch` replays the sequence up to that
checkpoint and deletes operations (delta debugging) while the same checks
still fail, then writes the result as a replay file. :func:`replay` runs a
saved file again. Anything that runs sequences (a fake in the unit tests)
can stand in for the guest: see :class:`Executor`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import RemoteError
from ..experiments import zoo
from ..experiments.app import parse_checkpoint
from ..guest.remote import Remote
from ..humanize import short_value
from ..module.build import APP
from ..module.capture import Capture, capture
from ..module.verify import verify
from ..progress import Reporter, to_stderr
from ..rundir import GuestDir
from . import ops as ops_mod
from .ops import Op, Replay
from .shrink import shrink

DEFAULT_LENGTH = 20
DEFAULT_SHRINK_SECONDS = 300.0
CHECKPOINT_TIMEOUT = 120.0


@dataclass
class Checkpoint:
    """One frozen moment: what the last operation did and the checks that failed."""

    index: int  # of the last operation done, in the sequence
    op: str
    result: str  # ok, refused, noop
    err: str  # the errno name of a refused operation, else "-"
    region: int  # the address it worked on (0: none), translated with va=
    checks: int
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checks > 0 and not self.failed

    def fields(self) -> str:
        """The failed checks, one line each: name, /proc's value, the module's value."""
        return "\n".join(
            f"{f['name']}: /proc {short_value(f['expected'], 60)} | module "
            f"{short_value(f['actual'], 60)}" + (f" ({f['detail']})" if f.get("detail") else "")
            for f in self.failed
        )


@dataclass
class Run:
    """One sequence in the guest: its checkpoints, and the app's totals at the last one."""

    checkpoints: list[Checkpoint]
    totals: dict[str, int]
    complete: bool  # every operation ran (False: stopped at the deadline)
    seconds: float
    app_error: str = ""  # the app ended before its last checkpoint: its output

    def first_mismatch(self) -> Checkpoint | None:
        return next((c for c in self.checkpoints if not c.ok), None)


class Executor(Protocol):
    kernel: str

    def run(self, ops: Sequence[Op], every: int = 1, *, until: float | None = None) -> Run:
        """Run ``ops``, a checkpoint after every ``every``-th and the last; stop past ``until``."""
        ...


# khugepaged collapses THPs of any process at its own pace, frozen or not: a collapse
# between the capture's reads of smaps/pagemap and the module's load changes Rss
# (it fills empty PTEs) and the frame of a page, which is no fault of the module.
# It sleeps an hour while the fuzzer runs; MADV_COLLAPSE still collapses, at once.
KHUGEPAGED = f"{zoo.THP_DIR}/khugepaged"
PAUSE_KHUGEPAGED = (
    f"if [ -w {KHUGEPAGED}/scan_sleep_millisecs ]; then "
    f"echo khugepaged_sleep_ms=$(cat {KHUGEPAGED}/scan_sleep_millisecs); "
    f"echo 3600000 > {KHUGEPAGED}/scan_sleep_millisecs; fi"
)


def expected_checkpoints(count: int, every: int) -> int:
    """How many checkpoints the app makes for ``count`` operations (guest/app.c churn_main)."""
    return sum(1 for i in range(count) if (i + 1) % every == 0 or i == count - 1)


Corrupt = Callable[[Capture], None]


class GuestExecutor:
    """Sequences in a booted guest whose module and app are built.

    ``corrupt`` changes each capture's record before it is compared (to prove
    that a mismatch is found and shrunk).
    """

    def __init__(self, remote: Remote, corrupt: Corrupt | None = None) -> None:
        self.remote = remote
        self.corrupt = corrupt
        self.kernel = remote.run("uname -r").stdout.strip()
        self.prepared: dict[str, object] = {}

    def prepare(self) -> dict[str, object]:
        """Swap for MADV_PAGEOUT and hugetlb pages for MAP_HUGETLB, as the zoo has them;
        khugepaged paused (see KHUGEPAGED)."""
        self.prepared = zoo.parse_prepare(
            self.remote.run(f"{zoo.PREPARE_COMMAND}; {PAUSE_KHUGEPAGED}").stdout
        )
        return self.prepared

    def cleanup(self) -> None:
        sleep = self.prepared.get("khugepaged_sleep_ms")
        if isinstance(sleep, int):
            self.remote.run(f"echo {sleep} > {KHUGEPAGED}/scan_sleep_millisecs")
        zoo.Zoo.cleanup(self.remote, self.prepared)
        self.prepared = {}

    def _next_point(self, pid: int, log: str, seen: int) -> dict[str, int | str] | None:
        """Let the app on from checkpoint ``seen`` (if any) and wait for the next one.

        One guest command (signal, wait, read): each SSH round trip costs about
        half a second under TCG. None once the app has ended without it.
        """
        polls = int(CHECKPOINT_TIMEOUT / 0.05)
        go = f"kill -USR1 {pid}; " if seen else ""
        script = (
            f"{go}i=0; while [ $(grep -c '^app ' {log}) -le {seen} ] && "
            f"kill -0 {pid} 2>/dev/null && [ $i -lt {polls} ]; do sleep 0.05; i=$((i+1)); done; "
            f"grep '^app ' {log} | sed -n '{seen + 1}p'; "
            f"kill -0 {pid} 2>/dev/null && echo alive=1"
        )
        out = self.remote.run(script, timeout=CHECKPOINT_TIMEOUT + 60).stdout.splitlines()
        line = next((ln for ln in out if ln.startswith("app ")), None)
        if line is not None:
            return parse_checkpoint(line)
        if "alive=1" in out:
            raise RemoteError(f"app churn: no checkpoint within {CHECKPOINT_TIMEOUT:.0f} s")
        return None

    def run(self, ops: Sequence[Op], every: int = 1, *, until: float | None = None) -> Run:
        started = time.monotonic()
        name = f"/tmp/churn-{secrets.token_hex(4)}"
        self.remote.run(f"cat > {name}.ops", stdin=ops_mod.to_text(ops), check=True)
        out = self.remote.run(
            f"setsid {APP} churn {name}.ops {every} >{name}.log 2>&1 </dev/null & echo $!",
            check=True,
        )
        pid, log = int(out.stdout.split()[-1]), f"{name}.log"
        checkpoints: list[Checkpoint] = []
        totals: dict[str, int] = {}
        complete, app_error = True, ""
        try:
            while (point := self._next_point(pid, log, len(checkpoints))) is not None:
                region = int(point.get("region", 0) or 0)
                cap = capture(self.remote, pid, va=region or None)
                if self.corrupt is not None and cap.record is not None:
                    self.corrupt(cap)
                v = verify(cap)
                checkpoints.append(
                    Checkpoint(
                        index=int(point.get("index", -1)),
                        op=str(ops[int(point.get("index", 0))]),
                        result=str(point.get("result", "")),
                        err=str(point.get("err", "")),
                        region=region,
                        checks=len(v.checks),
                        failed=[asdict(c) for c in v.failures],
                    )
                )
                totals = {
                    k: int(point[k])
                    for k in ("done", "refused", "noop", "faults")
                    if isinstance(point.get(k), int)
                }
                if until is not None and time.monotonic() > until:
                    complete = len(checkpoints) == expected_checkpoints(len(ops), every)
                    break
            else:
                if len(checkpoints) < expected_checkpoints(len(ops), every):
                    complete = False
                    app_error = self.remote.run(f"tail -c 2000 {log}").stdout.strip() or (
                        "the app ended without a word (killed by a signal?)"
                    )
        finally:
            self.remote.run(f"kill -KILL {pid} 2>/dev/null; rm -f {name}.ops {log}")
        return Run(checkpoints, totals, complete, time.monotonic() - started, app_error)


@dataclass
class Mismatch:
    """A checkpoint that disagreed, and the shortest sequence found that still does."""

    seed: int | None
    index: int  # of the operation after which the checks failed
    op: str
    failed: list[dict[str, Any]]
    prefix: list[str]  # the sequence up to that operation
    reproduced: bool = False  # the prefix, replayed, failed the same checks again
    shrunk: list[str] = field(default_factory=list)
    shrunk_failed: list[dict[str, Any]] = field(default_factory=list)
    tests: int = 0
    complete: bool = False  # the shrinker finished (1-minimal)
    shrink_seconds: float = 0.0
    replay: str = ""

    def names(self) -> list[str]:
        return [str(f["name"]) for f in self.failed]


@dataclass
class SeedResult:
    seed: int | None
    ops: int  # operations run
    checkpoints: int  # verified (compared) checkpoints
    totals: dict[str, int]
    seconds: float
    complete: bool
    mismatch: int | None = None  # index of the first mismatching operation
    app_error: str = ""


@dataclass
class FuzzResult:
    guest: str
    kernel: str
    mode: str  # fuzz or replay
    first_seed: int | None
    length: int
    every: int
    seconds: float = 0.0
    seeds: list[SeedResult] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    prepared: dict[str, object] = field(default_factory=dict)
    kernel_trouble: str | None = None

    @property
    def checkpoints(self) -> int:
        return sum(s.checkpoints for s in self.seeds)

    @property
    def ops(self) -> int:
        return sum(s.ops for s in self.seeds)

    @property
    def refused(self) -> int:
        return sum(s.totals.get("refused", 0) for s in self.seeds)

    @property
    def failures(self) -> list[str]:
        out = [
            f"fuzz seed {m.seed} op {m.index} ({m.op}): {', '.join(m.names())}"
            for m in self.mismatches
        ]
        out += [
            f"fuzz seed {s.seed}: the app failed: {s.app_error}" for s in self.seeds if s.app_error
        ]
        if self.kernel_trouble:
            out.append(f"dmesg: {self.kernel_trouble}")
        return out

    def to_json(self) -> dict[str, Any]:
        run_seconds = sum(s.seconds for s in self.seeds)
        return {
            "guest": self.guest,
            "kernel": self.kernel,
            "mode": self.mode,
            "first_seed": self.first_seed,
            "length": self.length,
            "every": self.every,
            "seconds": round(self.seconds, 1),
            "ops": self.ops,
            "checkpoints": self.checkpoints,
            "refused": self.refused,
            "checkpoints_per_second": round(self.checkpoints / run_seconds, 3)
            if run_seconds
            else 0.0,
            "ok": not self.failures,
            "failures": self.failures,
            "seeds": [asdict(s) for s in self.seeds],
            "mismatches": [asdict(m) for m in self.mismatches],
            "prepared": self.prepared,
            "kernel_trouble": self.kernel_trouble,
        }


def _names(checkpoint: Checkpoint | None) -> set[str]:
    return {str(f["name"]) for f in checkpoint.failed} if checkpoint else set()


def shrink_mismatch(
    ex: Executor,
    ops: Sequence[Op],
    at: Checkpoint,
    seed: int | None,
    files: GuestDir,
    *,
    seconds: float = DEFAULT_SHRINK_SECONDS,
    report: Reporter = to_stderr,
) -> Mismatch:
    """Replay up to ``at``; delete operations while the same checks fail; save a replay file.

    A candidate fails when its one checkpoint, after its last operation, fails
    any of the checks that failed at ``at``.
    """
    prefix = list(ops[: at.index + 1])
    m = Mismatch(seed, at.index, at.op, at.failed, [str(o) for o in prefix])
    wanted = _names(at)
    last_failed: dict[tuple[Op, ...], Checkpoint] = {}

    def fails(candidate: list[Op]) -> bool:
        run = ex.run(candidate, every=len(candidate))
        end = run.checkpoints[-1] if run.complete and run.checkpoints else None
        if end is not None and wanted & _names(end):
            last_failed[tuple(candidate)] = end
            return True
        return False

    started = time.monotonic()
    report(f"fuzz: seed {seed}: replaying the {len(prefix)} operations up to the mismatch")
    m.reproduced = fails(prefix)
    if m.reproduced:
        result = shrink(prefix, fails, deadline=started + seconds)
        m.shrunk, m.tests, m.complete = (
            [str(o) for o in result.items],
            result.tests,
            result.complete,
        )
        end = last_failed.get(tuple(result.items))
        m.shrunk_failed = end.failed if end else []
        shrunk = result.items
    else:
        shrunk = prefix
        m.shrunk = [str(o) for o in prefix]
    m.shrink_seconds = round(time.monotonic() - started, 1)
    notes = [f"failed at operation {at.index} ({at.op}): {', '.join(m.names())}"]
    notes += [f"  {line}" for line in at.fields().splitlines()]
    if not m.reproduced:
        notes.append("the replayed prefix did not fail again: the sequence is not shrunk")
    else:
        notes.append(
            f"shrunk from {len(prefix)} to {len(shrunk)} operations in {m.tests} replays"
            + ("" if m.complete else " (stopped at the time limit: maybe not minimal)")
        )
    path = files.fuzz_replay(seed)
    meta: dict[str, object] = {"seed": seed, "kernel": ex.kernel, "op": at.index}
    m.replay = str(ops_mod.write_replay(path, list(shrunk), meta, notes))
    return m


def _seed_result(seed: int | None, ops: Sequence[Op], run: Run) -> SeedResult:
    done = run.checkpoints[-1].index + 1 if run.checkpoints else 0
    bad = run.first_mismatch()
    return SeedResult(
        seed=seed,
        ops=done,
        checkpoints=len(run.checkpoints),
        totals=run.totals,
        seconds=round(run.seconds, 2),
        complete=run.complete,
        mismatch=None if bad is None else bad.index,
        app_error=run.app_error,
    )


def fuzz(
    ex: Executor,
    files: GuestDir,
    *,
    guest: str,
    seconds: float,
    seed: int,
    length: int = DEFAULT_LENGTH,
    every: int = 1,
    shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    report: Reporter = to_stderr,
) -> FuzzResult:
    """Sequences of seeds ``seed``, ``seed + 1``, ... until ``seconds`` pass or one mismatches.

    A sequence in progress stops at the deadline (its checkpoints so far count).
    """
    result = FuzzResult(guest, ex.kernel, "fuzz", seed, length, every)
    started = time.monotonic()
    until = started + seconds
    current = seed
    while not result.seeds or time.monotonic() < until:
        ops = ops_mod.generate(current, length)
        run = ex.run(ops, every, until=until)
        s = _seed_result(current, ops, run)
        result.seeds.append(s)
        report(
            f"fuzz: seed {current}: {s.ops} ops, {s.checkpoints} checkpoints, "
            f"{s.totals.get('refused', 0)} refused, "
            + ("no mismatch" if s.mismatch is None else f"MISMATCH after op {s.mismatch}")
            + f" ({s.seconds:.0f} s)"
        )
        bad = run.first_mismatch()
        if bad is not None:
            report(f"fuzz: seed {current} op {bad.index} ({bad.op}):\n{bad.fields()}")
            result.mismatches.append(
                shrink_mismatch(ex, ops, bad, current, files, seconds=shrink_seconds, report=report)
            )
            break
        if run.app_error:
            break
        current += 1
    result.seconds = time.monotonic() - started
    return result


def replay(
    ex: Executor,
    saved: Replay,
    files: GuestDir,
    *,
    guest: str,
    every: int = 1,
    report: Reporter = to_stderr,
) -> FuzzResult:
    """Run a saved sequence, verifying at every ``every``-th operation; nothing is shrunk."""
    seed_text = saved.meta.get("seed", "")
    seed = int(seed_text) if seed_text.lstrip("-").isdigit() else None
    result = FuzzResult(guest, ex.kernel, "replay", seed, len(saved.ops), every)
    started = time.monotonic()
    run = ex.run(saved.ops, every)
    result.seeds.append(_seed_result(seed, saved.ops, run))
    for c in run.checkpoints:
        status = "ok" if c.ok else "MISMATCH"
        report(f"replay: op {c.index} {c.op}: {c.result} {c.err}, {c.checks} checks, {status}")
        if not c.ok:
            report(c.fields())
    bad = run.first_mismatch()
    if bad is not None:
        result.mismatches.append(
            Mismatch(
                seed,
                bad.index,
                bad.op,
                bad.failed,
                [str(o) for o in saved.ops[: bad.index + 1]],
                reproduced=True,
            )
        )
    result.seconds = time.monotonic() - started
    return result
