"""`ridesync bench live` end to end at a tiny size: the harness works and reports both hubs."""

from __future__ import annotations

import argparse
import os

import pytest

from engine.bench import live
from tests.live.conftest import REDIS_SERVER


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
            "--relay-configs",
            "",
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


@pytest.mark.slow
def test_bench_live_relay_smoke() -> None:
    """Two hub processes over a real redis-server, every class's riders spread over both, batched messages."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server not found: install the Debian package `redis-server`")
    parser = argparse.ArgumentParser()
    live.add_arguments(parser)
    args = parser.parse_args(
        [
            *(
                "--configs",
                "",
                "--relay-configs",
                "2x6",
                "--hubs",
                "2",
                "--warmup",
                "0.5",
                "--measure",
                "1.5",
            ),
            *("--procs", "1", "--no-knee", "--probe-fraction", "1", "--metrics", "2", "--publish-batch"),
            *("--redis-server", REDIS_SERVER),
        ]
    )
    out = live.run(args)
    (r,) = out["runs"]
    assert r["impl"] == "coalescing+redis-relay" and r["hubs"] == 2 and r["connect_errors"] == 0
    assert r["latency_ms"]["n"] > 0 and r["frames_per_s"] > 0
    # Every class has riders on both hubs: batches flow both ways through redis, none malformed or dropped.
    assert r["relay"]["batches_received_per_s"] > 0 and r["relay"]["malformed_ignored"] == 0
    assert r["samples_per_s"] > 0 and len(r["per_hub_cpu_pct"]) == 2
