"""`ridesync bench bridge`: latency from a serial frame to the BLE notification the bridge sends for it.

The path measured: a Peloton power reply is written to a real pty -> pyserial -> the Peloton listen
source decodes a `Reading` -> the bridge (`adapters/ble/bridge`) encodes Indoor Bike Data and notifies
-> the simulated radio -> bumble central -> our bleak backend -> `BleBikeSource` yields the power
`Reading`: what a phone reading the bridge would get, on the simulated radio.

Baseline, from the very same frame in the same run: the time from the write to the listen source's
`Reading` (the serial path without BLE). Both are timed with perf_counter from just before the write;
one frame in flight at a time, each with a power the previous did not have, so every measurement
answers its own frame. The difference per frame is the BLE hop's own cost. `load_avg_1m` says how busy
the shared machine was: only the ratio is meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "bridge"
HELP = "serial frame -> BLE notification through the bridge (simulated radio), p50/p99, serial-only baseline"
WARM_UP = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=300, help="frames timed (default 300)")


def _stats(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1e3, 3),
        "p99_ms": round(q[98] * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


async def _bench(count: int) -> dict[str, Any]:
    from dataclasses import replace

    from adapters.ble.bike_source import BleBikeSource
    from adapters.ble.bridge.peripheral import open_bridge
    from adapters.ble.link_source import StrapSettings
    from adapters.ble.sim import Simulation
    from adapters.serial.peloton.wire import encode_power
    from adapters.serial.peloton_listen import PelotonListenSource
    from adapters.serial.sim.pty_port import PtyPort
    from engine.readings import Kind, Reading, SourceEvent, SourceState

    serial_at: dict[int, float] = {}
    ble_at: dict[int, float] = {}
    arrived = asyncio.Event()
    ble_ready = asyncio.Event()
    subscribed = asyncio.Event()
    serial_lat: list[float] = []
    ble_lat: list[float] = []
    hop: list[float] = []

    with tempfile.TemporaryDirectory(prefix="ridesync-bench-bridge-") as tmp:
        port = PtyPort(Path(tmp) / "bus")
        port.plug()
        sim = await Simulation.start()
        try:
            # The heartbeat is long so that every notification timed is the one the frame caused.
            async with open_bridge("sim", simulation=sim, with_hr=False, heartbeat_s=3600) as bridge:
                serial = PelotonListenSource([port.path], source_id="serial:bench", stale_after_s=3600)
                settings = replace(StrapSettings(), connect_timeout_s=5, scan_timeout_s=5, stale_after_s=3600)
                phone = BleBikeSource(
                    bridge.address, adapter=sim.adapters[0].ble_adapter(), settings=settings
                )

                async def serial_pump() -> None:
                    async for item in serial.stream():
                        if isinstance(item, Reading) and item.kind is Kind.POWER and item.value is not None:
                            serial_at[round(item.value)] = time.perf_counter()
                        bridge.offer(item)

                async def ble_pump() -> None:
                    async for item in phone.stream():
                        if isinstance(item, SourceEvent) and item.state is SourceState.STREAMING:
                            subscribed.set()
                        if isinstance(item, Reading) and item.kind is Kind.POWER and item.value is not None:
                            ble_at[round(item.value)] = time.perf_counter()
                            ble_ready.set()
                            arrived.set()

                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(serial_pump()), tg.create_task(ble_pump())]
                    async with asyncio.timeout(30):
                        await serial.port_open.wait()
                        await subscribed.wait()
                        await bridge.notify_now()  # its power (0 W) reaching the phone: the path is up
                        await ble_ready.wait()
                    for i in range(WARM_UP + count):
                        watts = 100 + i % 900  # differs from the previous frame's: each answers its own
                        serial_at.pop(watts, None)
                        ble_at.pop(watts, None)
                        arrived.clear()
                        t0 = time.perf_counter()
                        await port.write(encode_power(watts))
                        async with asyncio.timeout(10):
                            while watts not in ble_at:
                                await arrived.wait()
                                arrived.clear()
                        if i >= WARM_UP:
                            serial_lat.append(serial_at[watts] - t0)
                            ble_lat.append(ble_at[watts] - t0)
                            hop.append(ble_at[watts] - serial_at[watts])
                    for task in tasks:
                        task.cancel()
        finally:
            await sim.close()
            port.close()
    ble, base = _stats(ble_lat), _stats(serial_lat)
    return {
        "unit": "milliseconds from the frame written to the pty",
        "params": {"count": count, "transport": "sim", "protocol": "peloton listen", "value": "power"},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "serial_to_ble_notification": ble,
        "baseline_serial_to_reading": base,
        "ble_hop_only": _stats(hop),
        "ratios": {
            "p50_ble_over_serial": round(ble["p50_ms"] / base["p50_ms"], 2),
            "p99_ble_over_serial": round(ble["p99_ms"] / base["p99_ms"], 2),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.count < 100:
        from engine.cli.main import CliError

        raise CliError("--count must be >= 100 (for a p99)")
    return asyncio.run(_bench(args.count))
