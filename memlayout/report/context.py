"""The report's context: one dict built from a run directory, for the template.

Everything shown comes from the run's files (read through RunDir/GuestDir) or
from the sources in the repository, read at render time. Missing files are
reported as missing, never filled in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import experiments
from ..errors import UsageError
from ..experiments.base import Experiment, select
from ..humanize import hexaddr, human_bytes, short_value
from ..rundir import GuestDir, RunDir
from .excerpts import APP_SOURCE, MODULE_SOURCE, module_steps, pygments_css, source_appendix
from .figures import draw_layout

TITLE = "Process memory layout with a kernel module"
HOST_KEYS = ("hostname", "os", "kernel", "python", "qemu")
SAMPLE_LINES = 40
PAGE = 4096
USER_ENTRIES = 256  # PGD entries 0..255 map user space, 256..511 the kernel

Json = dict[str, Any]


def load_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def truncate(lines: list[str], limit: int = SAMPLE_LINES) -> tuple[list[str], int]:
    """The first ``limit`` lines and how many were left out."""
    return lines[:limit], max(0, len(lines) - limit)


# ---- per-guest sections ----------------------------------------------------------


def pick_target(targets: list[Json]) -> Json | None:
    """The sshd target, else the first with a record."""
    with_record = [t for t in targets if t.get("record")]
    sshd = next((t for t in with_record if t.get("name") == "sshd"), None)
    return sshd or (with_record[0] if with_record else None)


def environment(info: Json | None, stages: Json) -> list[tuple[str, str]]:
    if not info:
        return []
    rows = [
        ("distribution", info.get("distro")),
        ("kernel", info.get("kernel_release")),
        ("accelerator", info.get("accel")),
        ("why", info.get("accel_reason")),
        ("QEMU CPU model", info.get("cpu")),
        ("CPU (guest /proc/cpuinfo)", info.get("cpu_model_name")),
        ("meltdown (sysfs)", info.get("meltdown")),
        ("clocksource", info.get("clocksource")),
        ("image sha256", info.get("image_sha256")),
        ("boot time", f"{info['boot_seconds']} s" if "boot_seconds" in info else None),
    ]
    if stages:
        rows.append(("stages", ", ".join(f"{k} {v} s" for k, v in stages.items())))
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def sample_output(target: Json | None) -> Json | None:
    if target is None:
        return None
    lines, lines_more = truncate(list(target.get("lines") or []))
    maps, maps_more = truncate(str(target.get("maps") or "").splitlines())
    return {
        "name": target.get("name"),
        "pid": target.get("pid"),
        "lines": lines,
        "lines_more": lines_more,
        "maps": maps,
        "maps_more": maps_more,
    }


def layout_section(record: Json, target: Json, files: GuestDir, run: RunDir) -> Json:
    header = record.get("header") or {}
    title = f"{target.get('name')} (pid {record.get('pid')}) — kernel {record.get('kernel')}"
    try:
        paths, ratio = draw_layout(record, title, files.plots_dir)
        figure: str | None = str(paths[0].relative_to(run.path))
        error = None
    except Exception as exc:  # a plot must not stop the report
        figure, error, ratio = None, f"{type(exc).__name__}: {exc}", 1.0
    regions = [
        {
            "name": name,
            "start": hexaddr(r.get("start")),
            "end": hexaddr(r.get("end")),
            "size": human_bytes(r.get("size")),
        }
        for name, r in (record.get("regions") or {}).items()
    ]
    counters = record.get("counters") or {}
    kinds: dict[str, int] = {}
    for v in record.get("vmas") or []:
        kinds[str(v.get("kind"))] = kinds.get(str(v.get("kind")), 0) + 1
    return {
        "figure": figure,
        "figure_width_mm": round(min(170.0, 165.0 / ratio)),
        "error": error,
        "target": target.get("name"),
        "pid": record.get("pid"),
        "regions": regions,
        "vma_count": len(record.get("vmas") or []),
        "kinds": kinds,
        "rss_pages": counters.get("rss"),
        "total_vm_pages": counters.get("total_vm"),
        "task_size": hexaddr(header.get("task_size")),
    }


def entry_index(entry: Json) -> int:
    return int(entry.get("index", entry.get("idx")) or 0)


def pgd_section(record: Json) -> Json:
    header = record.get("header") or {}
    entries = record.get("pgd") or []
    tables_meta = record.get("pgd_tables") or {}
    summaries = record.get("pgd_summary") or {}
    tables = []
    for name in tables_meta or sorted({str(e.get("table")) for e in entries}):
        rows = [e for e in entries if e.get("table") == name]
        tables.append(
            {
                "name": name,
                "pa": hexaddr((tables_meta.get(name) or {}).get("pa", "?")),
                "summary": {
                    k: (summaries.get(name) or {}).get(k, "?")
                    for k in ("present", "user", "kernel")
                },
                "rows": [
                    {
                        "index": entry_index(e),
                        "va_start": hexaddr(e.get("va_start")),
                        "va_end": hexaddr(e.get("va_end")),
                        "value": f"{int(e['value']):#018x}"
                        if isinstance(e.get("value"), int)
                        else str(e.get("value")),
                        "next_pa": hexaddr(e.get("next_pa")),
                        "flags": str(e.get("flags")),
                        "user_half": entry_index(e) < USER_ENTRIES,
                    }
                    for e in rows
                ],
            }
        )
    return {
        "levels": header.get("levels"),
        "pti": header.get("pti"),
        "va_bits": header.get("va_bits"),
        "tables": tables,
        "pti_notes": pti_notes(header, entries, tables_meta),
    }


def pti_notes(header: Json, entries: list[Json], tables_meta: Json) -> list[str]:
    """What the data shows about page-table isolation (each claim checked on the data)."""
    if not header.get("pti"):
        return [
            "The module reports pti=0: this kernel runs with a single PGD per process "
            "(no page-table isolation), so only one table is dumped."
        ]
    notes = []
    kpa = (tables_meta.get("kernel") or {}).get("pa")
    upa = (tables_meta.get("user") or {}).get("pa")
    if isinstance(kpa, int) and isinstance(upa, int):
        relation = (
            "exactly one 4 KiB page above"
            if upa - kpa == PAGE
            else f"{upa - kpa:+#x} bytes away from"
        )
        notes.append(
            f"The user copy of the PGD is at physical address {upa:#x}, {relation} the "
            f"kernel copy at {kpa:#x} (the two halves of an 8 KiB PGD allocation)."
        )
    else:
        notes.append("pti=1, but the record holds no user copy of the PGD.")

    def by(table: str, user: bool) -> list[Json]:
        return [
            e
            for e in entries
            if e.get("table") == table and (entry_index(e) < USER_ENTRIES) == user
        ]

    k_user, u_user = by("kernel", True), by("user", True)
    nx = [e for e in k_user if "NX" in str(e.get("flags")).split("|")]
    if k_user:
        notes.append(
            f"{len(nx)} of the {len(k_user)} user-half entries of the kernel copy carry NX: "
            + (
                "user code cannot run on the kernel's tables, so a return to user space "
                "that forgot to switch to the user copy faults instead of running with the "
                "kernel mapped."
                if len(nx) == len(k_user)
                else "not all of them, so this kernel does not poison every user entry."
            )
        )
    if u_user:
        u_nx = [e for e in u_user if "NX" in str(e.get("flags")).split("|")]
        same = {int(e.get("next_pa") or 0) for e in u_user} == {
            int(e.get("next_pa") or 0) for e in k_user
        }
        notes.append(
            f"The user copy has {len(u_user)} user-half entries, {len(u_nx)} with NX; "
            + (
                "they point to the same lower-level tables as the kernel copy."
                if same
                else "their next-level tables differ from the kernel copy's."
            )
        )
    k_kern, u_kern = by("kernel", False), by("user", False)
    if k_kern or u_kern:
        notes.append(
            f"The kernel half holds {len(k_kern)} present entries in the kernel copy but "
            f"{len(u_kern)} in the user copy: in user mode only the entry trampoline and "
            "the CPU entry area stay mapped, which is what blocks Meltdown."
        )
    return notes


def verification_section(targets: list[Json]) -> list[Json]:
    out = []
    for t in targets:
        v = t.get("verification") or {}
        checks = [
            {
                "name": c.get("name"),
                "ok": bool(c.get("ok")),
                "expected": short_value(c.get("expected")),
                "actual": short_value(c.get("actual")),
                "detail": "" if c.get("ok") else str(c.get("detail") or "")[:200],
            }
            for c in v.get("checks") or []
        ]
        out.append(
            {
                "name": t.get("name"),
                "pid": t.get("pid"),
                "comm": v.get("comm"),
                "ok": bool(v.get("ok")),
                "checks": checks,
                "passed": sum(c["ok"] for c in checks),
                "tools": [
                    (name, text.strip())
                    for name, text in (t.get("tools") or {}).items()
                    if str(text).strip()
                ],
            }
        )
    return out


# ---- experiments and cycles ------------------------------------------------------------


def figure_path(files: GuestDir, name: str, run: RunDir) -> str | None:
    for ext in ("svg", "png"):
        path = files.plot(name, ext)
        if path.exists():
            return str(path.relative_to(run.path))
    return None


def experiment_entry(name: str, data: Json | None, files: GuestDir, run: RunDir) -> Json:
    if data is None:
        return {"name": name, "title": name, "error": "unreadable JSON"}
    exp = Experiment.from_json(data)
    try:
        scenario = select(name)
    except UsageError:
        return {"name": name, "title": name, "error": "not a scenario this version knows"}
    try:
        text = scenario.summary(exp)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        text = [f"The numbers could not be summarised ({type(exc).__name__}: {exc})."]
    rules = data.get("rules") or []
    return {
        "name": name,
        "title": scenario.title,
        "error": None,
        "ok": bool(data.get("ok")),
        "kernel": exp.kernel,
        "points": len(exp.points),
        "text": text,
        "tables": [asdict(t) for t in scenario.tables(exp)],
        "figures": [
            {"path": p, "name": n}
            for n in scenario.plots
            if (p := figure_path(files, n, run)) is not None
        ],
        "rules": rules,
        "rules_passed": sum(bool(r.get("ok")) for r in rules),
        "verifications": len(exp.verifications),
        "verifications_passed": sum(bool(v.get("ok")) for v in exp.verifications),
    }


def experiments_section(files: GuestDir, run: RunDir) -> list[Json]:
    return [experiment_entry(n, d, files, run) for n, d in experiments.load(files).items()]


def cycles_section(files: GuestDir, run: RunDir) -> Json:
    def summary(stress: bool) -> Json | None:
        data = load_json(files.cycles_json(stress))
        if not isinstance(data, dict):
            return None
        return {k: v for k, v in data.items() if k != "latencies_ms"}

    return {
        "cycles": summary(False),
        "stress": summary(True),
        "figure": figure_path(files, "cycles", run),
    }


def hello_section(files: GuestDir) -> Json | None:
    data = load_json(files.hello_json)
    if not isinstance(data, dict):
        return None
    loads = []
    for key, label in (("load", "load and unload"), ("bad", "a bad parameter")):
        entry = data.get(key) or {}
        loads.append(
            {
                "label": label,
                "commands": entry.get("commands") or [],
                "lines": entry.get("lines") or [],
                "status": entry.get("status"),
            }
        )
    return {
        "ok": not data.get("failures"),
        "failures": data.get("failures") or [],
        "whom": data.get("whom"),
        "times": data.get("times"),
        "loads": loads,
    }


def lookup_section(files: GuestDir) -> Json | None:
    data = load_json(files.lookup_json)
    if not isinstance(data, dict):
        return None
    comparisons = [
        {
            "name": c.get("name"),
            "pid": c.get("pid"),
            "same": bool(c.get("same")),
            "pid_found": (c.get("found") or {}).get("pid"),
            "list_found": (c.get("found") or {}).get("list"),
        }
        for c in data.get("comparisons") or []
    ]
    costs = []
    for c in data.get("costs") or []:
        ns = c.get("median_ns") or {}
        by_pid, by_list = int(ns.get("pid", -1)), int(ns.get("list", -1))
        ratio = f"{by_list / by_pid:.0f}×" if by_pid > 0 and by_list > 0 else "–"
        costs.append(
            {
                "target": c.get("target"),
                "pid": c.get("pid"),
                "processes": c.get("processes"),
                "pid_us": f"{by_pid / 1000:.1f}",
                "list_us": f"{by_list / 1000:.1f}",
                "ratio": ratio,
            }
        )
    return {"comparisons": comparisons, "costs": costs}


# ---- one guest, all guests ------------------------------------------------------------


def guest_section(run: RunDir, files: GuestDir, summary: Json) -> Json:
    info = load_json(files.guest_json)
    info = info if isinstance(info, dict) else None
    targets = load_json(files.targets_json)
    targets = targets if isinstance(targets, list) else []
    target = pick_target(targets)
    record = (target or {}).get("record")
    prefix = f"{files.name}: "
    sshd = next((t for t in targets if t.get("name") == "sshd" and t.get("record")), None)
    return {
        "name": files.name,
        "info": info,
        "environment": environment(info, (summary.get("stages") or {}).get(files.name) or {}),
        "failures": [
            f[len(prefix) :] for f in summary.get("failures") or [] if f.startswith(prefix)
        ],
        "missing": [name for name, path in files.expected().items() if not path.exists()],
        "sample": sample_output(target),
        "layout": layout_section(record, target or {}, files, run) if record else None,
        "pgd": pgd_section(record) if record else None,
        "header": (record or {}).get("header") or {},
        "verification": verification_section(targets),
        "hello": hello_section(files),
        "lookup": lookup_section(files),
        "experiments": experiments_section(files, run),
        "cycles": cycles_section(files, run),
        "sshd_vmas": len(sshd["record"].get("vmas") or []) if sshd else None,
    }


def comparison(guests: list[Json]) -> list[Json]:
    rows = []
    for g in guests:
        verif, exps = g["verification"], g["experiments"]
        cyc = g["cycles"]["cycles"] or {}
        rules = sum(len(e.get("rules") or []) for e in exps)
        rows.append(
            {
                "guest": g["name"],
                "kernel": g["header"].get("kernel") or (g["info"] or {}).get("kernel_release"),
                "levels": g["header"].get("levels"),
                "pti": g["header"].get("pti"),
                "sshd_vmas": g["sshd_vmas"],
                "p50": cyc.get("p50_ms"),
                "verified": f"{sum(t['ok'] for t in verif)}/{len(verif)}",
                "rules": f"{sum(e.get('rules_passed', 0) for e in exps)}/{rules}",
            }
        )
    return rows


def submission_context(summary: Json) -> Json:
    sub = summary.get("submission") or {}
    authors = [
        {"name": str(a["name"]), "id": str(a.get("id") or "")}
        for a in sub.get("authors") or []
        if isinstance(a, dict) and a.get("name")
    ]
    return {
        "course": sub.get("course"),
        "title": sub.get("title"),
        "date": sub.get("date"),
        "authors": authors,
    }


def build_context(run: RunDir, *, sources: bool = True) -> Json:
    """Everything the template shows, from ``run``'s files."""
    summary = load_json(run.run_json)
    summary = summary if isinstance(summary, dict) else {}
    order = [str(g) for g in summary.get("guests") or []]
    guests = [guest_section(run, files, summary) for files in run.guests(order)]
    commit = str(summary.get("commit") or "unknown")
    source = MODULE_SOURCE.read_text() if MODULE_SOURCE.exists() else ""
    return {
        "title": TITLE,
        "submission": submission_context(summary),
        "run": {
            "started": summary.get("started"),
            "seconds": summary.get("seconds"),
            "dirty": bool(summary.get("dirty")),
        },
        "run_id": summary.get("run_id") or run.name,
        "run_ok": bool(summary.get("ok")) and not summary.get("failures"),
        "run_json_missing": not run.run_json.exists(),
        "commit": commit,
        "commit_short": commit[:12],
        "host": {k: (summary.get("host") or {}).get(k) for k in HOST_KEYS},
        "failures": summary.get("failures") or [],
        "guests": guests,
        "comparison": comparison(guests) if len(guests) > 1 else [],
        "steps": module_steps(source),
        "sources": [source_appendix(MODULE_SOURCE), source_appendix(APP_SOURCE)] if sources else [],
        "guest_args": " ".join(f"--guest {g['name']}" for g in guests) or "--guest debian-bookworm",
        "pygments_css": pygments_css(),
    }
