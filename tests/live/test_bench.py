"""`ridesync bench live` end to end at a tiny size: the harness works and reports both hubs."""

from __future__ import annotations

import argparse

import pytest

from engine.bench import live


@pytest.mark.slow
def test_bench_live_smoke() -> None:
    parser = argparse.ArgumentParser()
    live.add_arguments(parser)
    args = parser.parse_args(
        [
            "--configs",
            "2x5",
            "--warmup",
            "0.5",
            "--measure",
            "1.5",
            "--procs",
            "1",
            "--no-knee",
            "--probe-fraction",
            "1",
        ]
    )
    out = live.run(args)
    assert [r["impl"] for r in out["runs"]] == ["coalescing", "naive"]
    for r in out["runs"]:
        assert r["riders"] == 10 and r["connect_errors"] == 0
        assert r["latency_ms"]["n"] > 0
        assert r["deliveries_per_s"] > 0 and r["frames_per_s"] > 0
        assert r["hub_rss_mb"] > 0
    assert "naive_over_coalescing" in out["comparison"][0]
