"""`ridesync bench ble`: notify -> reading latency and readings/s through the whole bleak path on the
simulated radio, next to the raw bumble path (bumble central's own GATT subscription) as baseline.

Two simulated straps on one virtual radio and one simulated adapter, both connected at once:
* bleak path (strap 1): strap notifies -> virtual radio -> bumble central -> our bleak backend ->
  BleakClient callback -> HRM parser -> `Reading` out of `BleHeartRateSource.stream()`;
* baseline (strap 2): strap notifies -> virtual radio -> bumble central -> a bumble `Peer.subscribe`
  callback holding the raw bytes.

The two are measured interleaved (one latency sample of each in turn, one burst of each in turn), so
load from other processes on a shared machine hits both alike; only their ratio is meaningful.
Latency: one notification in flight, perf_counter from just before the notify to the value in hand.
Throughput: a burst sent back to back, timed until the last value is consumed; the fastest of
`--repeats` bursts counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

NAME = "ble"
HELP = "BLE strap: notify->reading latency and readings/s, bleak path vs raw bumble baseline (simulated)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1000, help="latency samples per path")
    parser.add_argument("--burst", type=int, default=2000, help="notifications per throughput burst")
    parser.add_argument("--repeats", type=int, default=3, help="bursts per path; the fastest counts")


@dataclass
class _Path:
    send: Callable[[bytes], Awaitable[None]]
    receive: Callable[[], Awaitable[None]]
    latencies: list[float] = field(default_factory=list)
    best_burst_s: float = float("inf")

    async def one(self, payload: bytes) -> None:
        t0 = time.perf_counter()
        await self.send(payload)
        await self.receive()
        self.latencies.append(time.perf_counter() - t0)

    async def burst(self, payload: bytes, n: int) -> None:
        t0 = time.perf_counter()
        for _ in range(n):
            await self.send(payload)
        for _ in range(n):
            await self.receive()
        self.best_burst_s = min(self.best_burst_s, time.perf_counter() - t0)

    def result(self, burst: int) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        q = statistics.quantiles(ordered, n=100, method="inclusive")
        return {
            "p50_us": round(q[49] * 1e6, 1),
            "p99_us": round(q[98] * 1e6, 1),
            "max_us": round(ordered[-1] * 1e6, 1),
            "readings_per_s": round(burst / self.best_burst_s, 1),
        }


async def _bench(count: int, burst: int, repeats: int) -> dict[str, Any]:
    from bumble import gatt
    from bumble.device import Peer

    from adapters.ble.budget import ConnectionBudget
    from adapters.ble.hrm import encode_hrm
    from adapters.ble.sim import Simulation
    from adapters.ble.source import BleHeartRateSource, StrapSettings
    from engine.readings import Contact, Kind, Reading, SourceItem, SourceState

    payload = encode_hrm(72, contact=Contact.DETECTED, rr_raw=(830,))
    sim = await Simulation.start()
    try:
        # Silent on subscription, so every reading the bench waits for answers one notification of its own.
        bleak_strap = await sim.add_strap(notify_on_subscribe=False)
        raw_strap = await sim.add_strap(notify_on_subscribe=False)

        connection = await sim.central.device.connect(raw_strap.address, timeout=5)
        peer = Peer(connection)
        await peer.request_mtu(247)
        await peer.discover_all()  # type: ignore[no-untyped-call]
        hrm = peer.get_characteristics_by_uuid(gatt.GATT_HEART_RATE_MEASUREMENT_CHARACTERISTIC)[0]
        raw_values: asyncio.Queue[bytes] = asyncio.Queue()
        await peer.subscribe(hrm, raw_values.put_nowait)

        async def raw_receive() -> None:
            await raw_values.get()

        source = BleHeartRateSource(
            bleak_strap.address,
            budget=ConnectionBudget("sim", 1),
            settings=StrapSettings(connect_timeout_s=5, scan_timeout_s=5, stale_after_s=3600),
            scanner_backend=sim.scanner_backend,
            client_backend=sim.client_backend,
        )
        stream: AsyncGenerator[SourceItem, None]
        async with aclosing(source.stream()) as stream:

            async def bleak_receive() -> None:
                async for item in stream:
                    if isinstance(item, Reading) and item.kind is Kind.HEART_RATE:
                        return

            async for item in stream:
                if not isinstance(item, Reading) and item.state is SourceState.STREAMING:
                    break
            # The first heart rate comes after the one-off reads (location, battery): skip past them.
            await bleak_strap.notify_raw(payload)
            await bleak_receive()

            bleak_path = _Path(bleak_strap.notify_raw, bleak_receive)
            baseline = _Path(raw_strap.notify_raw, raw_receive)
            for _ in range(20):  # warm-up
                await bleak_path.one(payload)
                await baseline.one(payload)
            bleak_path.latencies.clear()
            baseline.latencies.clear()
            for i in range(count):
                first, second = (bleak_path, baseline) if i % 2 else (baseline, bleak_path)
                await first.one(payload)
                await second.one(payload)
            for _ in range(repeats):
                await baseline.burst(payload, burst)
                await bleak_path.burst(payload, burst)
        await connection.disconnect()
    finally:
        await sim.close()
    b, r = bleak_path.result(burst), baseline.result(burst)
    return {
        "unit": "latency in microseconds from notify to value in hand; throughput in readings/s",
        "params": {"count": count, "burst": burst, "repeats": repeats},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "bleak_path": b,
        "baseline_raw_bumble": r,
        "ratios": {
            "p50_latency_bleak_over_raw": round(b["p50_us"] / r["p50_us"], 2),
            "p99_latency_bleak_over_raw": round(b["p99_us"] / r["p99_us"], 2),
            "throughput_bleak_over_raw": round(b["readings_per_s"] / r["readings_per_s"], 3),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.count < 100 or args.burst < 1 or args.repeats < 1:
        from engine.cli.main import CliError

        raise CliError("--count must be >= 100 (for a p99), --burst and --repeats >= 1")
    return asyncio.run(_bench(args.count, args.burst, args.repeats))
