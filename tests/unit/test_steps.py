"""Parsing and rules of the assignment's own steps, without a VM."""

from __future__ import annotations

import pytest

from memlayout.experiments import select
from memlayout.experiments.base import Experiment
from memlayout.experiments.demand import idle_noise
from memlayout.module import hello, procviews


def test_hello_lines_parse_into_records() -> None:
    load = hello.HelloLoad(
        ["insmod hello.ko whom=a times=2"],
        0,
        "",
        [
            "hello: init whom=a times=2",
            "hello: hello whom=a n=1",
            "hello: hello whom=a n=2",
            "hello: exit whom=a",
        ],
    )
    assert load.records() == hello.expected_records("a", 2)
    assert load.records() != hello.expected_records("a", 3)


@pytest.mark.parametrize(("cell", "kib"), [("39088", 39088), ("1.5m", 1536), ("2g", 2 * 1024**2)])
def test_top_cells_in_kib(cell: str, kib: float) -> None:
    assert procviews.top_kib(cell) == kib


def test_system_section_parses() -> None:
    text = "MemFree: 100\nAnonPages: 20\nnr_free_pages 25\nzone_DMA32_free 7\nbogus line here"
    assert procviews.parse_system(text) == {
        "MemFree": 100,
        "AnonPages": 20,
        "nr_free_pages": 25,
        "zone_DMA32_free": 7,
    }


def test_idle_noise_is_the_spread_of_each_counter() -> None:
    out = "nr_free_pages 100\nnr_anon_pages 50\n--\nnr_free_pages 96\nnr_anon_pages 53\n--\n"
    assert idle_noise(out) == {"nr_anon_pages": 3, "nr_free_pages": 4}


def touch(touched: int, app_anon: int, system_anon: int) -> dict[str, object]:
    return {
        "action": "touch",
        "touched": touched,
        "rss_anon_pages": app_anon,
        "region_vma": {"rss": touched},
        "system": {"nr_anon_pages": system_anon},
    }


@pytest.mark.parametrize(("system_after", "ok"), [(30_400, True), (31_000, False)])
def test_system_wide_anon_must_follow_the_apps_rss_anon(system_after: int, ok: bool) -> None:
    exp = Experiment("demand", "6.1", baseline={"noise_pages": {"nr_anon_pages": 10}})
    exp.points = [touch(0, 100, 14_000), touch(16_384, 16_484, system_after)]
    select("demand").check(exp)
    rule = next(r for r in exp.rules if r.name.startswith("system-wide"))
    assert rule.ok is ok, rule.detail
    assert select("demand").tables(exp)[0].rows[-1][-1] == "+16384 pages"
