"""The knee search of `ridesync bench live`: the most riders with p99 < 1 s and every connection made, by
doubling from a start, then bisecting a few times (bounded by the open-file limit)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.bench.live.model import Point
from engine.bench.live.point import run_point


def ok(res: dict[str, Any]) -> bool:
    lat = res["latency_ms"]
    return bool(lat["n"]) and lat["p99"] < 1000 and res["connect_errors"] == 0


def knee(
    impl: str,
    *,
    start: int,
    hi_cap: int,
    steps: int,
    args: argparse.Namespace,
    data_dir: str,
    size: int,
    hubs: int = 1,
) -> dict[str, Any]:
    probes: list[dict[str, Any]] = []

    def measure(riders: int) -> bool:
        classes = max(1, riders // size)
        res = run_point(Point(impl, classes, size, args.viewers, hubs), args, data_dir)
        probes.append(res)
        return ok(res)

    good, bad = 0, None
    riders = start
    while True:
        if measure(riders):
            good = riders
            if riders >= hi_cap:
                break
            riders = min(hi_cap, riders * 2)
        else:
            bad = riders
            break
    if bad is not None:
        lo = good
        for _ in range(steps):
            mid = ((lo + bad) // 2) // size * size
            if mid <= lo or mid >= bad:
                break
            if measure(mid):
                lo = good = mid
            else:
                bad = mid
    return {
        "impl": impl if hubs == 1 else f"{impl}+redis-relay",
        "hubs": hubs,
        "knee_riders": good,
        "first_failing_riders": bad,
        "capped_at_max": bad is None,
        "probes": [
            {
                "riders": p["riders"],
                "p99_ms": p["latency_ms"]["p99"],
                "max_ms": p["latency_ms"]["max"],
                "hub_cpu_pct": p["hub_cpu_pct"],
                "redis_cpu_pct": p.get("redis_cpu_pct"),
            }
            for p in probes
        ],
    }
