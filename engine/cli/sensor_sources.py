"""Opening the sensors a command line names: the one place `--hr`, `--bike` and `--serial` become sources.

`ridesync sensors` and `ridesync ride` both use it; it lives in the composition root because it is where
the adapters are wired in (the engine itself never imports them).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from engine.cli.argtypes import positive_int
from engine.readings import SensorSource


@contextlib.asynccontextmanager
async def open_sensor_sources(
    *,
    hr: str | None,
    serial: str | None,
    protocol: str,
    mode: str,
    speed: float,
    adapters: str | None = None,
    sim_out_of_range: str | None = None,
    serial_options: Mapping[str, Any] | None = None,
    bike: str | None = None,
) -> AsyncIterator[list[SensorSource]]:
    """The strap sources for `hr`, the BLE bike sources for `bike` and the serial sources for `serial`,
    with any simulators they start running until the context exits. Simulated straps and bikes share
    one virtual radio and adapter, as real ones share an adapter. `adapters` is `--adapter hci0,hci1`;
    `sim_out_of_range` is `--sim-out-of-range STRAP:SECONDS@START` (both: adapters/ble/README.md);
    `serial_options`: keyword arguments for open_serial_sources (`serial_options_from(args)`)."""
    async with contextlib.AsyncExitStack() as stack:
        sources: list[SensorSource] = []
        simulation = None
        if hr:
            from adapters.ble.factory import open_hr_sources, parse_adapters
            from adapters.ble.sim.range_walk import RangeWalk

            walk = RangeWalk.parse(sim_out_of_range) if sim_out_of_range else None
            straps = await stack.enter_async_context(
                open_hr_sources(hr, speed=speed, adapters=parse_adapters(adapters), out_of_range=walk)
            )
            simulation = straps.simulation
            sources += straps
        if bike:
            from adapters.ble.bike_factory import open_bike_sources
            from adapters.ble.factory import parse_adapters

            sources += await stack.enter_async_context(
                open_bike_sources(bike, speed=speed, adapters=parse_adapters(adapters), simulation=simulation)
            )
        if serial:
            from adapters.serial.factory import open_serial_sources

            sources += await stack.enter_async_context(
                open_serial_sources(
                    serial, protocol=protocol, mode=mode, speed=speed, **dict(serial_options or {})
                )
            )
        yield sources


def fatal_sensor_error(exc: BaseException) -> str | None:
    """The one-line message of a sensor error no retry can fix (no permission on a serial port, no
    Bluetooth, BlueZ too old, the wrong kind of device, more devices than adapters), found inside the
    exception groups a TaskGroup wraps it in; None for anything else."""
    from adapters.ble.factory import HrSpecError
    from adapters.ble.source import FATAL_ERRORS
    from adapters.serial.link import SerialFatal

    # A spec that does not fit (bikes beyond the slots the straps left) can surface from inside the
    # straps' simulation TaskGroup, so it arrives grouped too.
    if isinstance(exc, (SerialFatal, HrSpecError, *FATAL_ERRORS)):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (message := fatal_sensor_error(inner)) is not None:
                return message
    return None


# How long `ridesync sensors` waits for a serial port that does not exist yet (say, an adapter still being
# plugged in) before it says which ports do exist and stops; `--wait` waits for ever.
PORT_WAIT_S = 10.0
PORT_POLL_S = 0.2


def serial_paths(spec: str | None) -> list[str]:
    """The device paths a `--serial` spec names (none for `sim`, `sim:N`)."""
    if not spec or spec.strip().startswith("sim"):
        return []
    return [p.strip() for p in spec.split(",") if p.strip()]


async def wait_for_ports(
    spec: str | None,
    *,
    wait: bool,
    timeout_s: float | None = None,
    on_wait: Callable[[list[str]], None] | None = None,
) -> None:
    """Return once every port `spec` names exists. Without `wait`, a port still missing after
    `timeout_s` (default PORT_WAIT_S) is a CliError that lists the ports this machine has. `on_wait` is
    called once with the missing ports when there are any."""
    import asyncio
    import os
    import time

    from engine.cli.main import CliError

    limit = PORT_WAIT_S if timeout_s is None else timeout_s
    started = time.monotonic()

    def missing_now() -> list[str]:
        return [p for p in serial_paths(spec) if not os.path.exists(p)]  # a stat: never blocks for long

    told = False
    while missing := missing_now():
        if not told and on_wait is not None:
            on_wait(missing)
        told = True
        if not wait and time.monotonic() - started >= limit:
            from adapters.serial.available import available_ports

            ports = available_ports()
            here = "; ".join(ports) if ports else "none (is the adapter plugged in? `ridesync doctor` checks)"
            raise CliError(
                f"serial port {', '.join(missing)} does not exist (waited {limit:g} s); ports on this "
                f"machine: {here}. Pass --wait to wait for it"
            )
        await asyncio.sleep(PORT_POLL_S)


def add_serial_arguments(parser: argparse.ArgumentParser) -> None:
    """--baud, --sim-baud, --calibration, --bike-id and --tablet-boots, shared by `sensors` and `ride`."""
    parser.add_argument(
        "--baud",
        type=positive_int,
        default=None,
        metavar="N",
        help="serial baud rate (default 19200 for Peloton, 115200 for a line sensor); simulated sensors "
        "run at it too",
    )
    parser.add_argument(
        "--sim-baud",
        type=positive_int,
        default=None,
        metavar="N",
        help="a simulated line sensor's own baud rate, to rehearse a mismatch (default: --baud)",
    )
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="Peloton resistance table: 31 raw values (JSON list, or as stored under DATA/calibration/)",
    )
    parser.add_argument(
        "--bike-id",
        metavar="ID",
        help="the name the bike's calibration table is stored under (default: the port's "
        "/dev/serial/by-id name)",
    )
    parser.add_argument(
        "--tablet-boots",
        action="store_true",
        help="simulated listen-mode bus: the tablet boots during the capture, so the table crosses it",
    )


def serial_options_from(args: argparse.Namespace, data_dir: Any) -> dict[str, Any]:
    """open_serial_sources keyword arguments for the options `add_serial_arguments` added."""
    for name in ("baud", "sim_baud"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            from engine.cli.main import CliError

            raise CliError(f"--{name.replace('_', '-')} must be positive")
    return {
        "baud": args.baud,
        "sim_baud": args.sim_baud,
        "calibration_file": args.calibration,
        "bike_id": args.bike_id,
        "tablet_boots": args.tablet_boots,
        "data_dir": data_dir,
    }
