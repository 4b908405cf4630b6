"""engine/metrics_scrape.py reads what prometheus_client writes: labelled counters, gauges, histograms."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.metrics_scrape import Scrape


def test_reads_counters_gauges_and_histograms_as_written() -> None:
    registry = CollectorRegistry()
    closes = Counter("ridesync_sync_closes", "closes", ["code"], registry=registry)
    closes.labels(code="4401").inc(3)
    closes.labels(code='odd "quoted"\\label').inc()
    Gauge("ridesync_rides_in_memory", "rides", registry=registry).set(7)
    seconds = Histogram("ridesync_sync_message_seconds", "s", buckets=(0.01, 0.1), registry=registry)
    for v in (0.005, 0.05, 0.05, 5.0):
        seconds.observe(v)

    scraped = Scrape.parse(generate_latest(registry).decode())

    assert scraped.by_label("ridesync_sync_closes_total", "code") == {"4401": 3.0, 'odd "quoted"\\label': 1.0}
    assert scraped.value("ridesync_sync_closes_total", code="4401") == 3.0
    assert scraped.value("ridesync_sync_closes_total", code="1000") is None
    assert scraped.total("ridesync_sync_closes_total") == 4.0
    assert scraped.value("ridesync_rides_in_memory") == 7.0
    assert scraped.buckets("ridesync_sync_message_seconds") == [(0.01, 1.0), (0.1, 3.0), (math.inf, 4.0)]
    assert scraped.buckets("ridesync_nothing") == []
