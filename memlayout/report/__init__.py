"""Stage 4, the report: a PDF built from a run directory, and the hand-in bundle.

context     one dict for the template, from the run's files
excerpts    the module's steps, quoted from procmem.c at render time
figures     the layout figure of one process
render      jinja2 (strict) into HTML, weasyprint into PDF
submission  who wrote it, README.txt for the grader, the bundle
"""

from __future__ import annotations

from .render import render

__all__ = ["render"]
