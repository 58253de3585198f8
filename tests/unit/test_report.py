"""The PDF report, rendered from a real (trimmed) run directory: no VM needed."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from memlayout.errors import ReportError
from memlayout.experiments import select
from memlayout.experiments.base import Experiment
from memlayout.report import excerpts, render
from memlayout.rundir import RunDir

SAMPLE = Path(__file__).parents[1] / "data" / "run-sample"
GUEST = json.loads((SAMPLE / "run.json").read_text())["guests"][0]

SECTIONS = [
    "Contents",
    "Environment",
    "How the module works",
    "Sample output",
    "The layout of a process",
    "The top-level page table",
    "Verification against /proc",
    "Experiments",
    "insmod/rmmod cycles",
    "Appendix A: kernel-module/procmem.c",
    "Appendix B: guest/app.c",
    "Reproducing this run",
]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def render_pdf(run_dir: Path, *, sources: bool = True) -> Path:
    return render(RunDir(run_dir), sources=sources).report_pdf


def pdf_text(pdf: Path) -> str:
    text = "\n".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    return re.sub(r"\s+", " ", text)


def copy_sample(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(SAMPLE, run_dir)
    return run_dir


def set_submission(run_dir: Path, submission: dict[str, Any] | None) -> None:
    run = load(run_dir / "run.json")
    if submission is None:
        run.pop("submission", None)
    else:
        run["submission"] = submission
    (run_dir / "run.json").write_text(json.dumps(run))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sample, rendered once (without authors) for the content checks."""
    run_dir = copy_sample(tmp_path_factory.mktemp("report"))
    set_submission(run_dir, None)
    pdf = render_pdf(run_dir)
    return pdf, pdf_text(pdf)


def test_writes_html_and_pdf(rendered: tuple[Path, str]) -> None:
    pdf, _ = rendered
    assert pdf.name == "report.pdf" and pdf.stat().st_size > 10_000
    assert (pdf.parent / "report.html").exists()
    assert len(PdfReader(pdf).pages) > 10
    assert (pdf.parent / GUEST / "plots" / "layout.svg").exists()
    assert (pdf.parent / GUEST / "plots" / "layout.png").exists()


def test_every_section_is_there(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    for title in SECTIONS:
        assert title in text, title


def test_numbers_come_from_the_data(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    run = load(SAMPLE / "run.json")
    guest = load(SAMPLE / GUEST / "guest.json")
    targets = load(SAMPLE / GUEST / "targets.json")
    cycles = load(SAMPLE / GUEST / "cycles.json")
    sshd = next(t for t in targets if t["name"] == "sshd")
    assert run["run_id"] in text
    assert run["commit"][:12] in text
    assert guest["kernel_release"] in text
    assert guest["image_sha256"][:16] in text
    assert run["host"]["hostname"] in text
    assert f"sshd (pid {sshd['pid']}) has {len(sshd['record']['vmas'])} VMAs" in text
    assert f"{cycles['p50_ms']} ms" in text
    assert f"{cycles['p99_ms']} ms" in text
    # the PGD table: the first present entry of the kernel copy, and the PTI discussion
    first = sshd["record"]["pgd"][0]
    assert f"{first['value']:#018x}" in text
    if sshd["record"]["header"]["pti"]:
        assert "user copy of the PGD" in text
    # every target's verification caption
    for t in targets:
        checks = t["verification"]["checks"]
        passed = sum(c["ok"] for c in checks)
        assert f"{passed}/{len(checks)} checks pass" in text, t["name"]


def test_experiments_show_the_recorded_numbers(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    exp_dir = SAMPLE / GUEST / "experiments"
    assert "Too few" not in text and "could not be summarised" not in text
    for path in sorted(exp_dir.glob("*.json")):
        exp = load(path)
        rules = exp["rules"]
        passed = sum(r["ok"] for r in rules)
        assert f"{len(exp['points'])} checkpoints" in text, path.stem
        assert f"{passed}/{len(rules)} rules pass" in text, path.stem
    # heap: the first malloc that glibc served outside the brk heap, and where it went
    mallocs = [p for p in load(exp_dir / "heap.json")["points"] if p["action"] == "malloc"]
    outside = next(p for p in mallocs if p["ptr_vma"]["kind"] != "heap")
    assert f"served outside the heap was malloc({outside['bytes']})" in text
    assert f"{outside['ptr_vma']['kind']} VMA of {outside['ptr_vma']['size']} bytes" in text
    # stack: the growth per frame between the shallowest and the deepest checkpoint
    deep = [p for p in load(exp_dir / "stack.json")["points"] if p["action"] == "recurse"]
    first, last = deep[0], deep[-1]
    moved = first["sp"] - last["sp"]
    per_frame = moved / (last["depth"] - first["depth"])
    assert per_frame > first["frame_bytes"]
    assert f"moved down by {moved} bytes: {per_frame:.0f} bytes per frame" in text


def test_code_excerpts_are_read_from_the_source(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    for needle in ("find_get_pid", "get_pid_task", "get_task_mm", "mmput", "rcu_read_lock"):
        assert needle in text, needle


def test_failures_are_shown(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    run = load(SAMPLE / "run.json")
    assert "FAIL" in text if not run["ok"] else "PASS" in text
    for failure in run["failures"]:
        assert failure.split(": ", 1)[1] in text


def test_missing_authors_say_so(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "Authors: not set (add them to submission.toml or pass invoke all --author)" in text


def test_authors_from_the_submission(tmp_path: Path) -> None:
    run_dir = copy_sample(tmp_path)
    set_submission(
        run_dir,
        {
            "course": "Operating Systems 2026",
            "title": "Lab 3",
            "authors": [{"name": "Ada Example", "id": "s1234567"}, {"name": "Linus Sample"}],
            "date": "2026-11-27",
        },
    )
    text = pdf_text(render_pdf(run_dir, sources=False))
    for needle in ("Operating Systems 2026", "Ada Example", "s1234567", "Linus Sample"):
        assert needle in text
    assert "Authors: not set" not in text


def test_a_failed_guest_still_renders(tmp_path: Path) -> None:
    run_dir = copy_sample(tmp_path)
    shutil.rmtree(run_dir / GUEST / "experiments")
    (run_dir / GUEST / "cycles.json").unlink()
    run = load(run_dir / "run.json")
    run["failures"] = [*run["failures"], f"{GUEST}: VMError: the guest crashed"]
    run["ok"] = False
    (run_dir / "run.json").write_text(json.dumps(run))
    text = pdf_text(render_pdf(run_dir, sources=False))
    assert "the guest crashed" in text
    assert "Missing from the run directory: experiments, cycles.json" in text
    assert "No experiment data" in text
    assert "FAIL" in text


def test_renders_without_any_guest_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / GUEST).mkdir(parents=True)
    (run_dir / "run.json").write_text(
        json.dumps({"run_id": "bare", "guests": [GUEST], "failures": [f"{GUEST}: boot failed"]})
    )
    text = pdf_text(render_pdf(run_dir, sources=False))
    assert "boot failed" in text
    assert "No guest.json" in text


def test_experiment_summaries_use_the_points() -> None:
    heap = {
        "points": [
            {"action": "start", "heap_bytes": 0, "total_vm_pages": 100},
            {
                "action": "malloc",
                "bytes": 1000,
                "heap_bytes": 135168,
                "total_vm_pages": 133,
                "ptr_vma": {"kind": "heap", "size": 135168},
            },
            {
                "action": "malloc",
                "bytes": 262144,
                "heap_bytes": 135168,
                "total_vm_pages": 198,
                "ptr_vma": {"kind": "anon", "size": 266240},
            },
        ]
    }
    text = " ".join(select("heap").summary(Experiment.from_json(heap)))
    assert "malloc(262144)" in text and "266240 bytes" in text and "1000 bytes" in text
    stack = {
        "points": [
            {
                "action": "recurse",
                "depth": d,
                "sp": 0x7FFF0000 - d * 4160,
                "frame_bytes": 4096,
                "stack_vma_bytes": 135168 + d * 4096,
                "stack_vma_end": 0x7FFF1000,
            }
            for d in (10, 20)
        ]
    }
    assert "4160 bytes per frame" in " ".join(select("stack").summary(Experiment.from_json(stack)))
    assert "Too few 'recurse'" in select("stack").summary(Experiment.from_json({}))[0]


def test_extract_function() -> None:
    source = excerpts.MODULE_SOURCE.read_text()
    found = excerpts.extract_function(source, "pm_find_by_pid")
    assert found is not None
    line, text = found
    assert "find_get_pid" in text and text.rstrip().endswith("}")
    assert source.splitlines()[line - 1] == text.splitlines()[0]
    assert excerpts.extract_function(source, "no_such_function") is None


def test_two_guests_are_compared(tmp_path: Path) -> None:
    run_dir = copy_sample(tmp_path)
    shutil.copytree(run_dir / GUEST, run_dir / "second-guest")
    run = load(run_dir / "run.json")
    run["guests"] = [GUEST, "second-guest"]
    (run_dir / "run.json").write_text(json.dumps(run))
    text = pdf_text(render_pdf(run_dir, sources=False))
    assert "Comparison of the guests" in text
    assert "second-guest" in text
    cycles = load(SAMPLE / GUEST / "cycles.json")
    assert text.count(f"{cycles['p50_ms']} ms") >= 4  # two cycle tables and two table rows


def test_a_missing_pdf_library_keeps_the_run_and_says_how_to_render_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = copy_sample(tmp_path)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import fails as without Pango
    with pytest.raises(ReportError) as caught:
        render_pdf(run_dir)
    message = str(caught.value)
    assert "bash ci/setup.sh" in message
    assert f"invoke report --run {run_dir}" in message
    assert not (run_dir / "report.pdf").exists()
    for rel, data in before.items():  # nothing of the run is lost or changed
        assert (run_dir / rel).read_bytes() == data, rel
    assert (run_dir / "report.html").stat().st_size > 10_000
