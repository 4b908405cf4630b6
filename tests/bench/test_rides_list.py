"""`ridesync bench rides-list` runs and measures what it says: the client follows `next` over every stored
ride, the baseline walks them all (numbers are reported, never asserted)."""

from __future__ import annotations

import argparse

from engine.bench import rides_list


def test_bench_rides_list_smoke() -> None:
    out = rides_list.run(argparse.Namespace(rides=7, samples=10, limit=3))
    assert (out["paged"]["pages"], out["paged"]["rides"]) == (3, 7)
    assert out["unpaged_baseline"]["rides"] == 7
    assert out["paged"]["longest_loop_stall_ms"] >= 0 and out["unpaged_baseline"]["walk_ms"] > 0
