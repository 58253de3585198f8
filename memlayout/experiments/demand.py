"""Scenario "demand": touch a 64 MiB anonymous mapping page by page; rss follows the touches.

Anonymous memory becomes resident only when touched, at most a 2 MiB transparent
huge page at a time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..plotting import new_figure, save_figure
from .base import Experiment, Scenario, too_few

# Anonymous memory can become resident a 2 MiB transparent huge page at a time.
THP_PAGES = 512
# Before 6.2 each task caches its rss changes and folds them into the mm's
# counters every 64 page faults, so the counters may lag the page tables.
RSS_LAG = 64


class Demand(Scenario):
    name = "demand"
    title = "Demand paging: resident pages follow touches"
    actions = ("touch", "munmap")
    plots = ("demand",)

    def check(self, exp: Experiment) -> None:
        touches = exp.actions("touch")
        for p in touches:
            rss = int((p.get("region_vma") or {}).get("rss", -1))
            exp.rule(
                f"{p['touched']} pages touched: that many (up to one huge page more) are resident",
                int(p["touched"]) <= rss <= int(p["touched"]) + THP_PAGES,
                f"the region's VMA has {rss} resident pages (page-table walk)",
            )
        for prev, p in itertools.pairwise(touches):
            walked = int(p["region_vma"]["rss"]) - int(prev["region_vma"]["rss"])
            counted = p["rss_anon_pages"] - prev["rss_anon_pages"]
            exp.rule(
                f"touching {int(p['touched']) - int(prev['touched'])} more pages: "
                "rss_anon follows the page tables",
                abs(counted - walked) <= RSS_LAG + 8,
                f"rss_anon +{counted} pages, resident in the region +{walked} pages",
            )

    def summary(self, exp: Experiment) -> list[str]:
        touches = exp.actions("touch")
        if len(touches) < 2:
            return [too_few(exp, "touch")]
        first, last = touches[0], touches[-1]
        touched = int(last["touched"]) - int(first["touched"])
        grew = int(last["rss_anon_pages"]) - int(first["rss_anon_pages"])
        ratio = grew / touched if touched else 0.0
        return [
            f"Touching {touched} more pages (from {first['touched']} to {last['touched']}) of "
            f"the anonymous region raised rss_anon by {grew} pages: {ratio:.3f} resident pages "
            "per touched page. Mapped but untouched memory costs no frames.",
            f"The region's own VMA held {(last.get('region_vma') or {}).get('rss')} resident "
            f"pages at the last checkpoint; total rss was {last['rss_pages']} pages.",
        ]

    def draw(self, exp: Experiment, out: Path) -> None:
        points = exp.actions("touch")
        touched = [int(p["touched"]) for p in points]
        fig, ax = new_figure()
        ax.plot(touched, [p["rss_pages"] for p in points], "o-", label="rss (pages)")
        ax.plot(
            touched,
            [int((p.get("region_vma") or {}).get("rss") or 0) for p in points],
            "s--",
            label="resident pages of the region's VMA",
        )
        base = points[0]["rss_pages"] if points else 0
        ax.plot(
            touched, [base + t for t in touched], ":", color="grey", label="rss at start + touched"
        )
        ax.set_xlabel("pages touched (of a 64 MiB anonymous mapping)")
        ax.set_ylabel("pages (4 KiB)")
        ax.set_title(f"demand paging: rss follows touched pages — kernel {exp.kernel}")
        ax.legend(fontsize=8)
        save_figure(fig, out, "demand")
