"""A viewer of the class, as the dashboard is one: subscribes to the hub and keeps what it saw per rider.

It is how the demo knows (and reports) that values really reached a viewer, and how the latency bench
measures sensor timestamp -> viewer receipt: every live value arrives with its sensor time `t`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from engine.backoff import Backoff
from engine.live.publisher import class_ws_url

log = logging.getLogger(__name__)

# Reconnecting to the hub: 0.2 s doubling up to 5 s, full jitter.
RECONNECT = Backoff(base=0.2, cap=5.0)


@dataclass(frozen=True, slots=True)
class LiveValue:
    device: str
    metric: str  # hr, cad, pwr, res
    value: float
    t: float  # the sensor timestamp the hub carried
    seq: int
    received: float  # local receipt time (unix seconds)


OnValue = Callable[[LiveValue], None]


@dataclass(slots=True)
class MetricSeen:
    values: int = 0  # distinct live values (by seq) received
    last_seq: int = -1
    last_value: float | None = None
    state: str = ""  # live | no_contact | stale, as the hub last said


@dataclass(slots=True)
class RiderSeen:
    presence: str = ""
    bike: str | None = None  # the kind of bike the hub's record said (engine/bike_kinds.py)
    metrics: dict[str, MetricSeen] = field(default_factory=dict)


class ClassMonitor:
    def __init__(self, base_url: str, token: str, class_id: str, on_value: OnValue | None = None) -> None:
        self.url = class_ws_url(base_url, class_id, mode="sub")
        self.token = token
        self.on_value = on_value
        self.riders: dict[str, RiderSeen] = {}
        self.frames = 0
        self.leaderboard_frames = 0
        self.connects = 0
        self.changed = asyncio.Event()

    def apply(self, frame: dict[str, object], received: float) -> None:
        """Apply one hub frame (pure bookkeeping; `received` is the local receipt time)."""
        self.frames += 1
        if frame.get("type") == "leaderboard":
            self.leaderboard_frames += 1
        riders = frame.get("riders")
        if frame.get("type") != "delta" or not isinstance(riders, dict):
            self.changed.set()
            return
        for device, record in riders.items():
            if not isinstance(record, dict):
                continue
            seen = self.riders.setdefault(device, RiderSeen())
            seen.presence = str(record.get("presence", ""))
            bike = record.get("bike")
            if isinstance(bike, str):
                seen.bike = bike
            for metric in ("hr", "cad", "pwr", "res"):
                m = record.get(metric)
                if not isinstance(m, dict):
                    continue
                ms = seen.metrics.setdefault(metric, MetricSeen())
                ms.state = str(m.get("state", ""))
                v, t, seq = m.get("v"), m.get("t"), m.get("seq")
                if ms.state != "live" or not isinstance(v, int | float) or not isinstance(seq, int):
                    continue
                if seq == ms.last_seq:
                    continue  # the same value again, in a frame carried by another metric's change
                ms.last_seq, ms.last_value = seq, float(v)
                ms.values += 1
                if self.on_value is not None and isinstance(t, int | float):
                    self.on_value(LiveValue(device, metric, float(v), float(t), seq, received))
        self.changed.set()

    async def run(self) -> None:
        """Subscribe until cancelled, reconnecting with full-jitter backoff."""
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(
                        self.url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=10.0
                    ) as ws:
                        attempt = 0
                        self.connects += 1
                        async for msg in ws:
                            if msg.type is not aiohttp.WSMsgType.TEXT:
                                break
                            received = time.time()
                            try:
                                frame = json.loads(msg.data)
                            except ValueError:
                                log.warning("monitor: frame is not JSON")
                                continue
                            if isinstance(frame, dict):
                                self.apply(frame, received)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.info("monitor reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(RECONNECT.delay(attempt))
                attempt += 1
