"""matplotlib, set up once: every figure of the pipeline is made and saved here (SVG + PNG).

matplotlib is imported on the first figure, not with the package: it costs more than a
second, and most tasks (up, ssh, inspect, status) never draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIB = 1024
PNG_DPI = 130


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    """A figure with one set of axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_figure(
    fig: Figure,
    out: Path,
    name: str,
    *,
    rect: tuple[float, float, float, float] | None = None,
) -> list[Path]:
    """Write ``out/name.svg`` (text kept as text: crisp, quick to print) and ``name.png``."""
    import matplotlib
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.svg", out / f"{name}.png"]
    fig.tight_layout(rect=rect)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=PNG_DPI)
    plt.close(fig)
    return paths
