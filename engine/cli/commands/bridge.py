"""`ridesync bridge`: ride any bike ridesync reads, and advertise it as a standard BLE bike.

A bridge is a ride with an extra output: the same options, the same durable recording and live
publishing as `ridesync ride`, and every reading of the ride's sources also goes to a bumble peripheral
that serves Fitness Machine (Indoor Bike Data), Cycling Power and Cycling Speed and Cadence, plus Heart
Rate when a strap is paired (`--hr`), on `--transport` (adapters/ble/README.md, "The bridge").

With --json the lines are the ride's, plus `{"event": "bridge", "state": "advertising", ...}` once the
controller is up, `{"event": "bridge_readback", ...}` per reading with `--readback` (simulated radio
only: the project's own BLE bike source reads the bridge back), and a `bridge` object in the summary.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
MAX_NAME_BYTES = 29  # a Complete Local Name that fits a 31-byte scan response


def _ble_name(value: str) -> str:
    if not value or not value.isprintable() or len(value.encode()) > MAX_NAME_BYTES or value != value.strip():
        raise argparse.ArgumentTypeError(
            f"must be 1..{MAX_NAME_BYTES} bytes of printable text, no leading or trailing spaces"
        )
    return value


def _static_random_address(value: str) -> str:
    # A static random address has its two most significant bits set (Vol 6, Part B, 1.3.2.1).
    if not _ADDRESS.fullmatch(value) or int(value[:2], 16) & 0xC0 != 0xC0:
        raise argparse.ArgumentTypeError(
            "must be a static random address XX:XX:XX:XX:XX:XX whose first byte is C0..FF"
        )
    return value.upper()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.cli.commands.ride import add_ride_arguments

    p = sub.add_parser(
        "bridge",
        help="ride a serial (or BLE) bike and advertise it as a standard BLE bike (FTMS, CPS, CSC, HRS)",
        description=(
            "Everything `ridesync ride` does (record durably, sync, publish live with --class), and the "
            "bike is advertised over Bluetooth as a Fitness Machine (Indoor Bike Data), Cycling Power "
            "and Cycling Speed and Cadence sensor, plus Heart Rate with --hr, so Zwift, a Garmin or any "
            "head unit can use it. --transport sim uses the simulated radio; a real controller is a "
            "bumble transport: usb:0, hci-socket:0 (free it from BlueZ first), serial:/dev/ttyACM0,1000000."
        ),
    )
    p.add_argument(
        "--transport",
        required=True,
        metavar="sim|usb:N|hci-socket:N|serial:PORT,BAUD",
        help="the Bluetooth controller the bridge advertises on (any bumble transport)",
    )
    p.add_argument(
        "--ble-name", type=_ble_name, default=None, metavar="NAME", help="advertised name (ridesync bridge)"
    )
    p.add_argument(
        "--ble-address",
        type=_static_random_address,
        default=None,
        metavar="ADDR",
        help="static random address to advertise from (default F0:52:53:42:52:01)",
    )
    p.add_argument(
        "--readback",
        action="store_true",
        help="with --transport sim: read the bridge back with ridesync's own BLE bike source and print it",
    )
    add_ride_arguments(p)
    p.set_defaults(handler=_bridge)


def _bridge(args: argparse.Namespace) -> int:
    import contextlib
    from collections.abc import AsyncIterator

    from adapters.ble.bridge.peripheral import (
        DEFAULT_ADDRESS,
        DEFAULT_NAME,
        SIM_TRANSPORT,
        BridgePeripheral,
        BridgeTransportError,
        bridged,
        open_bridge,
    )
    from engine.cli.commands.ride import printer, run_ride, sensor_opener
    from engine.cli.main import CliError

    if not args.serial and not args.bike:
        raise CliError("give --serial (or --bike): the bike the bridge advertises")
    if args.readback and args.transport != SIM_TRANSPORT:
        raise CliError("--readback needs --transport sim: it reads the bridge on the simulated radio")
    name = args.ble_name or DEFAULT_NAME
    address = args.ble_address or DEFAULT_ADDRESS
    show = printer(args.json)
    running: list[BridgePeripheral] = []

    @contextlib.asynccontextmanager
    async def bridge_up() -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                bridge = await stack.enter_async_context(
                    open_bridge(args.transport, with_hr=bool(args.hr), name=name, address=address)
                )
            except BridgeTransportError as exc:
                raise CliError(str(exc)) from None
            running.append(bridge)
            show(_advertising_event(bridge))
            if args.readback:
                await stack.enter_async_context(_readback(bridge, show))
            yield

    @contextlib.asynccontextmanager
    async def sensors() -> AsyncIterator[list[Any]]:
        async with bridged(sensor_opener(args)(), running[0]) as sources:
            yield sources

    def summary() -> dict[str, Any]:
        if not running:
            return {}
        b = running[0]
        about = {k: v for k, v in _advertising_event(b).items() if k not in ("event", "state")}
        return {"bridge": {**about, **b.stats.to_json()}}

    return run_ride(args, sensors, before=bridge_up, add_to_summary=summary)


def _advertising_event(bridge: Any) -> dict[str, Any]:
    from adapters.ble.bridge.model import short_names

    return {
        "event": "bridge",
        "state": "advertising",
        "transport": bridge.transport,
        "name": bridge.name,
        "address": bridge.address,
        "services": short_names(bridge.services),
    }


def _readback(bridge: Any, show: Any) -> Any:
    """The project's own BLE bike source reading the bridge on the simulated radio, in an owned task."""
    import asyncio
    import contextlib
    from dataclasses import replace

    from adapters.ble.bike_source import BleBikeSource
    from adapters.ble.link_source import StrapSettings
    from adapters.ble.timeouts import SIM_CONNECT_TIMEOUT_S, SIM_SCAN_TIMEOUT_S
    from engine.readings import Reading

    @contextlib.asynccontextmanager
    async def run() -> Any:
        # The simulated radio's adapter, as a phone next to a real bridge: the bridge is a peripheral
        # on the same radio.
        adapter = bridge.simulation.adapters[0].ble_adapter()
        settings = replace(
            StrapSettings(), connect_timeout_s=SIM_CONNECT_TIMEOUT_S, scan_timeout_s=SIM_SCAN_TIMEOUT_S
        )
        source = BleBikeSource(bridge.address, adapter=adapter, settings=settings)

        async def pump() -> None:
            async for item in source.stream():
                if isinstance(item, Reading):
                    show({"event": "bridge_readback", **item.to_json()})

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(pump(), name="bridge readback")
            try:
                yield
            finally:
                task.cancel()

    return run()
