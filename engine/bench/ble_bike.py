"""`ridesync bench ble-bike`: notify -> readings latency and notifications/s of the BLE bike source through
the whole bleak path on the simulated radio, next to the raw bumble path and the strap source.

Three simulated devices on one virtual radio and one simulated adapter, all connected at once:
* bike path: an FTMS trainer notifies Indoor Bike Data (cadence, power, speed, resistance) -> virtual
  radio -> bumble central -> our bleak backend -> BleakClient callback -> FTMS parser -> four `Reading`s
  out of `BleBikeSource.stream()` (timed until the last of the four is in hand);
* strap path: the same for a heart-rate strap and `BleHeartRateSource` (one reading per notification), the
  other user of the shared connection loop (`adapters/ble/link_source.py`);
* baseline: a second FTMS trainer -> virtual radio -> bumble central -> a bumble `Peer.subscribe` callback
  holding the raw bytes.

Measured interleaved (`engine/bench/ble.py` `_Path`), so load from other processes hits all alike; only
the ratios are meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from typing import Any

from engine.bench.ble import _Path

NAME = "ble-bike"
HELP = "BLE bike (FTMS): notify->readings latency and notifications/s, vs strap source and raw bumble (sim)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1000, help="latency samples per path")
    parser.add_argument("--burst", type=int, default=2000, help="notifications per throughput burst")
    parser.add_argument("--repeats", type=int, default=3, help="bursts per path; the fastest counts")


async def _bench(count: int, burst: int, repeats: int) -> dict[str, Any]:
    from bumble import core
    from bumble.device import Peer

    from adapters.ble.bike_source import BleBikeSource
    from adapters.ble.ftms import INDOOR_BIKE_DATA_UUID, IndoorBikeData, encode_indoor_bike_data
    from adapters.ble.hrm import encode_hrm
    from adapters.ble.link_source import StrapSettings
    from adapters.ble.sim import Simulation
    from adapters.ble.source import BleHeartRateSource
    from engine.readings import Contact, Kind, Reading, SourceItem, SourceState

    bike_payload = encode_indoor_bike_data(
        IndoorBikeData(speed_raw=3050, cadence_raw=180, resistance=40, power_w=210)
    )
    hr_payload = encode_hrm(72, contact=Contact.DETECTED, rr_raw=(830,))
    settings = StrapSettings(connect_timeout_s=5, scan_timeout_s=5, stale_after_s=3600)
    sim = await Simulation.start()
    try:
        trainer = await sim.add_bike("ftms")
        raw_trainer = await sim.add_bike("ftms")
        strap = await sim.add_strap(notify_on_subscribe=False)
        adapter = sim.adapters[0].ble_adapter()

        connection = await sim.central.device.connect(raw_trainer.address, timeout=5)
        peer = Peer(connection)
        await peer.request_mtu(247)
        await peer.discover_all()  # type: ignore[no-untyped-call]
        data = peer.get_characteristics_by_uuid(core.UUID(INDOOR_BIKE_DATA_UUID))[0]
        raw_values: asyncio.Queue[bytes] = asyncio.Queue()
        await peer.subscribe(data, raw_values.put_nowait)

        async def raw_receive() -> None:
            await raw_values.get()

        bike_source = BleBikeSource(trainer.address, adapter=adapter, settings=settings)
        hr_source = BleHeartRateSource(strap.address, adapter=adapter, settings=settings)
        async with AsyncExitStack() as stack:
            bike_stream: AsyncGenerator[SourceItem, None] = await stack.enter_async_context(
                aclosing(bike_source.stream())
            )
            hr_stream: AsyncGenerator[SourceItem, None] = await stack.enter_async_context(
                aclosing(hr_source.stream())
            )

            async def until(stream: AsyncGenerator[SourceItem, None], kind: Kind) -> None:
                async for item in stream:
                    if isinstance(item, Reading) and item.kind is kind:
                        return

            async def bike_receive() -> None:
                await until(bike_stream, Kind.RESISTANCE)  # the last of the four readings

            async def hr_receive() -> None:
                await until(hr_stream, Kind.HEART_RATE)

            for stream in (bike_stream, hr_stream):
                async for item in stream:
                    if not isinstance(item, Reading) and item.state is SourceState.STREAMING:
                        break
            # Past the one-off reads (battery; the strap's location): one value through each first.
            await trainer.notify_raw(bike_payload)
            await bike_receive()
            await strap.notify_raw(hr_payload)
            await hr_receive()

            paths = {
                "bike_path": (_Path(trainer.notify_raw, bike_receive), bike_payload),
                "strap_path": (_Path(strap.notify_raw, hr_receive), hr_payload),
                "baseline_raw_bumble": (_Path(raw_trainer.notify_raw, raw_receive), bike_payload),
            }
            order = list(paths.values())
            for _ in range(20):  # warm-up
                for path, payload in order:
                    await path.one(payload)
            for path, _ in order:
                path.latencies.clear()
            for i in range(count):
                for path, payload in order[i % 3 :] + order[: i % 3]:
                    await path.one(payload)
            for _ in range(repeats):
                for path, payload in order:
                    await path.burst(payload, burst)
        await connection.disconnect()
    finally:
        await sim.close()
    results = {name: path.result(burst) for name, (path, _) in paths.items()}
    for r in results.values():
        r["notifications_per_s"] = r.pop("readings_per_s")
    bike, strap_r, raw = results["bike_path"], results["strap_path"], results["baseline_raw_bumble"]
    return {
        "unit": "latency in microseconds from notify to the last reading of that notification in hand "
        "(4 readings per bike notification, 1 per strap notification); throughput in notifications/s",
        "params": {"count": count, "burst": burst, "repeats": repeats},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **results,
        "ratios": {
            "p50_latency_bike_over_raw": round(bike["p50_us"] / raw["p50_us"], 2),
            "p99_latency_bike_over_raw": round(bike["p99_us"] / raw["p99_us"], 2),
            "p50_latency_bike_over_strap": round(bike["p50_us"] / strap_r["p50_us"], 2),
            "throughput_bike_over_raw": round(bike["notifications_per_s"] / raw["notifications_per_s"], 3),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.count < 100 or args.burst < 1 or args.repeats < 1:
        from engine.cli.main import CliError

        raise CliError("--count must be >= 100 (for a p99), --burst and --repeats >= 1")
    return asyncio.run(_bench(args.count, args.burst, args.repeats))
