"""The hub's counters as plain integers on the hot path, exported to Prometheus by a collector at scrape time.

A prometheus_client Counter takes a lock per `inc()`, about a tenth of the cost of a frame send; the hub
counts in plain attributes instead and `HubCollector` reads them when /metrics is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class Hist:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.total += v

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += n
            out.append((bound, float(acc)))
        return out


@dataclass(slots=True)
class HubStats:
    samples_in: int = 0
    frames_sent: int = 0
    deliveries: int = 0
    superseded: int = 0
    peer_skips: int = 0
    stalls_disconnected: int = 0
    malformed_closed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ticks: int = 0
    tick_s: Hist = field(default_factory=lambda: Hist(TICK_BUCKETS))
    latency_s: Hist = field(default_factory=lambda: Hist(LATENCY_BUCKETS))

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def to_json(self) -> dict[str, object]:
        return {
            "samples_in": self.samples_in,
            "frames_sent": self.frames_sent,
            "deliveries": self.deliveries,
            "superseded": self.superseded,
            "peer_skips": self.peer_skips,
            "stalls_disconnected": self.stalls_disconnected,
            "malformed_closed": self.malformed_closed,
            "rejected": dict(self.rejected),
            "ticks": self.ticks,
            "tick_seconds_sum": round(self.tick_s.total, 6),
            "tick_seconds_buckets": self.tick_s.buckets(),
            "latency_seconds_buckets": self.latency_s.buckets(),
        }


class HubCollector(Collector):
    def __init__(self, stats: HubStats, connections: Callable[[], dict[str, int]]) -> None:
        self._stats = stats
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        conn = GaugeMetricFamily(
            "ridesync_live_connections", "Open hub WebSocket connections", labels=["mode"]
        )
        for mode, n in sorted(self._connections().items()):
            conn.add_metric([mode], n)
        yield conn
        for name, doc, value in (
            ("ridesync_live_samples", "Samples accepted from publishers", s.samples_in),
            ("ridesync_live_frames_sent", "WebSocket frames written to peers", s.frames_sent),
            (
                "ridesync_live_deliveries",
                "Rider records delivered to peers (across all frames)",
                s.deliveries,
            ),
            (
                "ridesync_live_superseded",
                "Values replaced by a newer one before any frame carried them",
                s.superseded,
            ),
            (
                "ridesync_live_peer_skips",
                "Ticks on which a peer was skipped because it was not keeping up",
                s.peer_skips,
            ),
            (
                "ridesync_live_stalls_disconnected",
                "Connections closed with 4408 for not reading (unsent bytes over the limit too long)",
                s.stalls_disconnected,
            ),
            (
                "ridesync_live_malformed_closed",
                "Connections closed for a malformed message",
                s.malformed_closed,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        rej = CounterMetricFamily("ridesync_live_rejected", "Upgrades or messages refused", labels=["reason"])
        for reason, n in sorted(s.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        yield HistogramMetricFamily(
            "ridesync_live_tick_seconds",
            "Time spent in one class flush (encode once, write to every peer keeping up)",
            buckets=s.tick_s.buckets(),
            sum_value=s.tick_s.total,
        )
        yield HistogramMetricFamily(
            "ridesync_live_latency_seconds",
            "Sensor timestamp to hub send, per rider record in a shared frame",
            buckets=s.latency_s.buckets(),
            sum_value=s.latency_s.total,
        )
