"""Scenario "demand": touch a 64 MiB anonymous mapping page by page; rss follows the touches.

Anonymous memory becomes resident only when touched, at most a 2 MiB transparent
huge page at a time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..guest.remote import Remote
from ..module.procviews import parse_system
from ..plotting import new_figure, save_figure
from .base import Experiment, Point, Scenario, Table, too_few

# Anonymous memory can become resident a 2 MiB transparent huge page at a time.
THP_PAGES = 512
# Before 6.2 each task caches its rss changes and folds them into the mm's
# counters every 64 page faults, so the counters may lag the page tables.
RSS_LAG = 64
# System-wide counters read on the idle guest before the app starts, to measure their noise.
IDLE_SAMPLES = 10
IDLE_COMMAND = (
    f"for i in $(seq {IDLE_SAMPLES}); do "
    'awk \'$1 == "nr_free_pages" || $1 == "nr_anon_pages" { print $1, $2 }\' /proc/vmstat; '
    "echo --; sleep 0.2; done"
)
SYSTEM_ROWS = (
    ("MemFree", "/proc/meminfo", "kB"),
    ("AnonPages", "/proc/meminfo", "kB"),
    ("nr_free_pages", "/proc/vmstat", "pages"),
    ("nr_anon_pages", "/proc/vmstat", "pages"),
)


def idle_noise(output: str) -> dict[str, int]:
    """max - min of each counter over the idle samples."""
    samples = [parse_system(chunk) for chunk in output.split("--") if chunk.strip()]
    keys = {k for s in samples for k in s}
    return {k: max(s[k] for s in samples) - min(s[k] for s in samples) for k in sorted(keys)}


def system(p: Point, key: str) -> int | None:
    value = (p.get("system") or {}).get(key)
    return int(value) if value is not None else None


class Demand(Scenario):
    name = "demand"
    title = "Demand paging: resident pages follow touches"
    actions = ("touch", "munmap")
    plots = ("demand",)

    def prepare(self, remote: Remote, exp: Experiment) -> None:
        out = remote.run(IDLE_COMMAND, check=True).stdout
        exp.baseline = {"idle_samples": IDLE_SAMPLES, "noise_pages": idle_noise(out)}

    def system_tolerance(self, exp: Experiment, app_pages: int) -> int:
        """How far the system-wide anon count may stray from the app's own change."""
        noise = int((exp.baseline.get("noise_pages") or {}).get("nr_anon_pages", 0))
        return 2 * noise + RSS_LAG + abs(app_pages) // 100

    def check(self, exp: Experiment) -> None:
        self._check_system(exp)
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

    def _check_system(self, exp: Experiment) -> None:
        touches = exp.actions("touch")
        if len(touches) < 2 or system(touches[0], "nr_anon_pages") is None:
            return
        first, last = touches[0], touches[-1]
        app = int(last["rss_anon_pages"]) - int(first["rss_anon_pages"])
        whole = int(system(last, "nr_anon_pages") or 0) - int(system(first, "nr_anon_pages") or 0)
        tolerance = self.system_tolerance(exp, app)
        exp.rule(
            "system-wide anonymous pages (/proc/vmstat) grow by the app's rss_anon",
            abs(whole - app) <= tolerance,
            f"nr_anon_pages {whole:+d}, the app's rss_anon {app:+d} pages "
            f"(tolerance {tolerance}: twice the idle noise, the counters' lag, 1 %)",
        )

    def tables(self, exp: Experiment) -> list[Table]:
        touches = exp.actions("touch")
        if len(touches) < 2 or not touches[0].get("system"):
            return []
        first, last = touches[0], touches[-1]
        rows = []
        for key, source, unit in SYSTEM_ROWS:
            before, after = system(first, key), system(last, key)
            if before is not None and after is not None:
                rows.append(
                    [
                        key,
                        source,
                        f"{before} {unit}",
                        f"{after} {unit}",
                        f"{after - before:+d} {unit}",
                    ]
                )
        zones = sorted(k for k in first.get("system") or {} if k.startswith("zone_"))
        for key in zones:
            before, after = system(first, key), system(last, key)
            if before is not None and after is not None and (before or after):
                zone = key.removeprefix("zone_").removesuffix("_free")
                rows.append(
                    [
                        f"free pages, zone {zone}",
                        "/proc/zoneinfo",
                        f"{before}",
                        f"{after}",
                        f"{after - before:+d}",
                    ]
                )
        rows.append(
            [
                "the app's rss_anon",
                "module",
                f"{first['rss_anon_pages']} pages",
                f"{last['rss_anon_pages']} pages",
                f"{int(last['rss_anon_pages']) - int(first['rss_anon_pages']):+d} pages",
            ]
        )
        noise = exp.baseline.get("noise_pages") or {}
        caption = (
            f"System-wide memory at the first and the last touch checkpoint. On the idle guest, "
            f"before the app started, nr_anon_pages varied by {noise.get('nr_anon_pages', '?')} "
            f"and nr_free_pages by {noise.get('nr_free_pages', '?')} pages over "
            f"{exp.baseline.get('idle_samples', '?')} samples."
        )
        return [Table(caption, ["counter", "source", "first touch", "last touch", "change"], rows)]

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
