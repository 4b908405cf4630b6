"""The figures of `ridesync bench live`: one point's (latency percentiles, rates, CPU, memory, relay
traffic), the summary table's rows, and the run's comparisons and targets."""

from __future__ import annotations

import argparse
import array
import os
from typing import Any

from engine.bench.live.model import Point, Window


def summarise(
    point: Point, window: Window, args: argparse.Namespace, cpu_budget: float | None
) -> dict[str, Any]:
    """One point's figures, from what was read over its window."""
    lat: list[float] = []
    for r in window.results:
        a = array.array("d")
        a.frombytes(r.latencies)
        lat.extend(a)
    lat.sort()
    elapsed = window.elapsed
    cpu0, cpu1, stats0, stats1 = window.cpu0, window.cpu1, window.stats0, window.stats1
    relayed = point.hubs > 1
    per_hub_cpu = [
        round(100 * ((c1[0] - c0[0]) + (c1[1] - c0[1])) / elapsed, 1)
        for c0, c1 in zip(cpu0, cpu1, strict=True)
    ]
    user = sum(c1[0] - c0[0] for c0, c1 in zip(cpu0, cpu1, strict=True)) / elapsed
    system = sum(c1[1] - c0[1] for c0, c1 in zip(cpu0, cpu1, strict=True)) / elapsed
    gen_cpu = sum(r.cpu_s for r in window.results) / args.measure

    def rate(key: str) -> float:
        return sum(  # type: ignore[no-any-return]
            (b[key] - a[key]) / max(1e-3, b["ts"] - a["ts"]) for a, b in zip(stats0, stats1, strict=True)
        )

    def buckets(key: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for a, b in zip(stats0, stats1, strict=True):
            for k, v in bucket_delta(a[key], b[key]).items():
                total[k] = total.get(k, 0) + v
        return total

    out: dict[str, Any] = {
        "impl": point.impl if not relayed else f"{point.impl}+redis-relay",
        "hubs": point.hubs,
        "classes": point.classes,
        "riders_per_class": point.riders_per_class,
        "riders": point.riders,
        "viewers": point.classes * point.viewers_per_class,
        "latency_ms": {
            "p50": round(percentile(lat, 0.5) * 1000, 2),
            "p99": round(percentile(lat, 0.99) * 1000, 2),
            "p99_9": round(percentile(lat, 0.999) * 1000, 2),
            "max": round(lat[-1] * 1000, 2) if lat else None,
            "n": len(lat),
        },
        "deliveries_per_s": round(rate("deliveries")),
        "frames_per_s": round(rate("frames_sent")),
        # Every hub applies every sample (its own riders' and, through the relay, the others'): per hub.
        "samples_per_s": round(rate("samples_in") / point.hubs),
        "hub_cpu_pct": round(100 * (user + system), 1),
        "hub_cpu_user_pct": round(100 * user, 1),
        "hub_cpu_system_pct": round(100 * system, 1),
        "stats_window_s": round(min(b["ts"] - a["ts"] for a, b in zip(stats0, stats1, strict=True)), 2),
        "hub_rss_mb": round(window.rss_mb, 1),
        "loadgen_cpu_pct": round(100 * gen_cpu, 1),
        "live_over_1s": sum(r.live_over_1s for r in window.results),
        "non_live_records": sum(r.non_live_records for r in window.results),
        "connect_errors": sum(r.connect_errors for r in window.results),
        "disconnected_during_measure": sum(r.lost_during_measure for r in window.results),
        "stalls_disconnected": sum(s["stalls_disconnected"] for s in stats1),
        "tick_interval_s": stats1[0].get("tick_interval_s")
        if not relayed
        else [s.get("tick_interval_s") for s in stats1],
        "peer_skips": sum(b["peer_skips"] - a["peer_skips"] for a, b in zip(stats0, stats1, strict=True)),
        "hub_latency_le": buckets("latency_seconds_buckets"),
        "hub_tick_s_le": buckets("tick_seconds_buckets"),
        "ticks_per_s": round(rate("ticks"), 1),
        "connect_s": round(window.connect_s, 1),
        # Other work on this machine skews a point; the 1-minute load average at its end says how much.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if relayed:
        relay0 = [s.get("relay") or {} for s in stats0]
        relay1 = [s.get("relay") or {} for s in stats1]

        def relay_rate(key: str) -> float:
            return round(  # type: ignore[no-any-return]
                sum((b.get(key, 0) - a.get(key, 0)) for a, b in zip(relay0, relay1, strict=True)) / elapsed
            )

        out["per_hub_cpu_pct"] = per_hub_cpu
        out["redis_cpu_pct"] = round(100 * window.redis_cpu_s / elapsed, 1)
        out["redis_rss_mb"] = round(window.redis_rss_mb or 0.0, 1)
        out["hubs_plus_redis_cpu_pct"] = round(out["hub_cpu_pct"] + out["redis_cpu_pct"], 1)
        out["relay"] = {
            "messages_published_per_s": relay_rate("messages_published"),
            "messages_received_per_s": relay_rate("messages_received"),
            "batches_published_per_s": relay_rate("batches_published"),
            "events_published_per_s": relay_rate("events_published"),
            "batches_received_per_s": relay_rate("batches_received"),
            "batches_dropped": sum(r.get("batches_dropped", 0) for r in relay1),
            "malformed_ignored": sum(r.get("malformed_ignored", 0) for r in relay1),
        }
        out["relay_cpus"] = args.relay_cpus
        out["hub_cpu_budget_each"] = cpu_budget
    return out


def bucket_delta(b0: list[tuple[str, float]], b1: list[tuple[str, float]]) -> dict[str, int]:
    """Cumulative histogram counts within the window, as {upper bound: count <= bound}."""
    return {str(k1): int(v1 - v0) for (_k0, v0), (k1, v1) in zip(b0, b1, strict=True)}


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def row(r: dict[str, Any]) -> dict[str, Any]:
    """One line of the summary table."""
    lat = r["latency_ms"]
    return {
        "impl": r["impl"],
        "hubs": r.get("hubs", 1),
        "riders": r["riders"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "hub_cpu_pct": r["hub_cpu_pct"],
        "redis_cpu_pct": r.get("redis_cpu_pct"),
        "frames_per_s": r["frames_per_s"],
        "loadgen_cpu_pct": r["loadgen_cpu_pct"],
        "loadavg_1m": r["loadavg_1m"],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def naive_over_coalescing(co: dict[str, Any], nv: dict[str, Any]) -> dict[str, Any]:
    """How the naive baseline compares with the coalescing hub at the same point."""
    return {
        "riders": co["riders"],
        "naive_over_coalescing": {
            "p50": ratio(nv["latency_ms"]["p50"], co["latency_ms"]["p50"]),
            "p99": ratio(nv["latency_ms"]["p99"], co["latency_ms"]["p99"]),
            "max": ratio(nv["latency_ms"]["max"], co["latency_ms"]["max"]),
            "hub_cpu": ratio(nv["hub_cpu_pct"], co["hub_cpu_pct"]),
            "frames_per_s": ratio(nv["frames_per_s"], co["frames_per_s"]),
        },
    }


def relay_over_single(
    res: dict[str, Any], sco: dict[str, Any] | None, snv: dict[str, Any] | None
) -> dict[str, Any]:
    """How a relay point compares with the single coalescing hub and the naive baseline at its size."""
    return {
        "riders": res["riders"],
        "relay_over_coalescing": None
        if sco is None
        else {
            "p50": ratio(res["latency_ms"]["p50"], sco["latency_ms"]["p50"]),
            "p99": ratio(res["latency_ms"]["p99"], sco["latency_ms"]["p99"]),
            "max": ratio(res["latency_ms"]["max"], sco["latency_ms"]["max"]),
            "cpu_incl_redis": ratio(res["hubs_plus_redis_cpu_pct"], sco["hub_cpu_pct"]),
        },
        "naive_over_relay": None
        if snv is None
        else {
            "p99": ratio(snv["latency_ms"]["p99"], res["latency_ms"]["p99"]),
            "max": ratio(snv["latency_ms"]["max"], res["latency_ms"]["max"]),
        },
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rate_hz": args.rate,
        "warmup_s": args.warmup,
        "measure_s": args.measure,
        "loadgen_procs": args.procs,
        "probe_fraction": args.probe_fraction,
        "viewers_per_class": args.viewers,
        "metrics_per_sample": args.metrics,
        "publish_batch": args.publish_batch,
        "pinned": args.pin,
        "hub_cpu_budget": args.hub_cpu_budget,
        "hub_max_tick_s": args.hub_max_tick,
        "hub_loop": args.hub_loop,
        "relay_hubs": max(2, args.hubs),
        "relay_cpus": args.relay_cpus,
    }


def targets_2000(runs: list[dict[str, Any]]) -> dict[str, bool] | None:
    """The live lane's targets at 2,000 riders on the coalescing hub, when that point was measured."""
    target = next((r for r in runs if r["impl"] == "coalescing" and r["riders"] == 2000), None)
    if target is None:
        return None
    lat = target["latency_ms"]
    return {
        "p99_le_60ms": lat["p99"] <= 60,
        "max_le_250ms": lat["max"] is not None and lat["max"] <= 250,
        "hub_cpu_le_50pct": target["hub_cpu_pct"] <= 50,
        "nothing_over_1s_live": target["live_over_1s"] == 0,
    }
