"""Render the report: the context into report_templates/report.html.j2, then a PDF."""

from __future__ import annotations

import jinja2

from ..errors import ReportError
from ..humanize import hexaddr, human_bytes
from ..paths import REPO_ROOT
from ..rundir import RunDir
from .context import Json, build_context

TEMPLATES = REPO_ROOT / "report_templates"


def environment() -> jinja2.Environment:
    """Strict: a name the context lacks is an error, not a blank in the PDF."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hexaddr"] = hexaddr
    env.filters["bytes"] = human_bytes
    return env


def render_html(context: Json) -> str:
    css = (TEMPLATES / "report.css").read_text()
    return environment().get_template("report.html.j2").render(css=css, **context)


def render(run: RunDir, *, sources: bool = True) -> RunDir:
    """Write the run's report.html and report.pdf.

    ``sources=False`` leaves out the source appendices (a quicker draft).
    """
    html = render_html(build_context(run, sources=sources))
    run.report_html.write_text(html)
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # it loads Pango and HarfBuzz when imported
        raise ReportError(
            f"cannot render the PDF: {exc} (install the libraries with bash ci/setup.sh); "
            f"the run's data and report.html are in {run.path}: "
            f"render it later with invoke report --run {run.path}"
        ) from exc
    HTML(string=html, base_url=str(run.path)).write_pdf(run.report_pdf)
    return run
