"""What a point of `ridesync bench live` is, and what was read over its measured window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.bench.live.load import GenResult


@dataclass
class Point:
    impl: str
    classes: int
    riders_per_class: int
    viewers_per_class: int
    hubs: int = 1
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def riders(self) -> int:
        return self.classes * self.riders_per_class


@dataclass
class Window:
    """What was read at the two ends of the measured window, and what the load generators reported."""

    t0: float
    t1: float
    cpu0: list[tuple[float, float]]
    cpu1: list[tuple[float, float]]
    redis_cpu_s: float
    stats0: list[dict[str, Any]]
    stats1: list[dict[str, Any]]
    rss_mb: float
    redis_rss_mb: float | None
    results: list[GenResult]
    connect_s: float

    @property
    def elapsed(self) -> float:
        return self.t1 - self.t0
