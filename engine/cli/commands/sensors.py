"""`ridesync sensors`: live readings from straps and bikes as JSON lines — the lab's first tool.

Each reading is one line `{"t", "source", "seq", "kind", "value", "unit", ...}`; link and signal state
changes (connecting, streaming, lost, backing off, stale, no contact) are lines with `"kind": "state"`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from engine.cli import argtypes
from engine.cli.main import CliError
from engine.cli.output import emit
from engine.readings import SensorSource


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sensors",
        help="print live readings from heart-rate straps and bikes as JSON lines",
        description=(
            "Stream readings from heart-rate straps (--hr), BLE bikes, trainers, power meters or cadence "
            "sensors (--bike: FTMS, Cycling Power or Cycling Speed and Cadence) and/or a serial bike or "
            "cadence sensor (--serial). 'sim' starts simulated devices (bumble straps and bikes on a "
            "virtual radio, a bike on a pty); 'sim:N' starts N of them."
        ),
    )
    parser.add_argument(
        "--hr", metavar="sim|sim:N|sim:N@M|ADDRESS|NAME", help="heart-rate strap(s); sim:N@M: over M adapters"
    )
    parser.add_argument(
        "--bike",
        metavar="sim|sim:N|ADDRESS|NAME",
        help="BLE bike(s): FTMS, Cycling Power or CSC; sim:N cycles FTMS, CPS, CSC simulated bikes",
    )
    parser.add_argument("--adapter", metavar="hci0,hci1", help="Bluetooth adapters to spread straps over")
    parser.add_argument(
        "--sim-out-of-range",
        metavar="STRAP:SECONDS@START",
        help="walk simulated strap STRAP out of range for SECONDS, starting START s in (e.g. 2:10@5)",
    )
    parser.add_argument("--serial", metavar="sim|sim:N|PORT", help="serial bike or cadence sensor(s)")
    parser.add_argument("--protocol", choices=["peloton", "line"], default="peloton")
    parser.add_argument("--mode", choices=["listen", "poll"], default="poll", help="Peloton bus mode")
    parser.add_argument(
        "--duration", type=argtypes.positive_float, default=None, help="seconds; default: until Ctrl-C"
    )
    parser.add_argument("--speed", type=argtypes.positive_float, default=1.0, help="simulation speed-up")
    parser.add_argument(
        "--json",
        action="store_true",
        help="JSON lines on a terminal too (they are the default whenever stdout is a pipe or a file; on a "
        "terminal the same readings print as readable lines)",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="where Peloton calibration tables are kept ($RIDESYNC_DATA or ./ridesync-data; for simulated "
        "bikes only when given)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for a --serial port that does not exist yet for as long as it takes (default: list the "
        "ports that do exist and stop after 10 s)",
    )
    from engine.cli.sensor_sources import add_serial_arguments

    add_serial_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.hr and not args.serial and not args.bike:
        raise CliError("give --hr, --bike and/or --serial (e.g. --hr sim --bike sim --serial sim)")
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be positive")
    if args.speed <= 0:
        raise CliError("--speed must be positive")
    from adapters.ble.budget import ConnectionBudgetExceeded
    from adapters.ble.factory import HrSpecError
    from adapters.ble.sim.range_walk import RangeWalkError
    from adapters.serial.factory import SpecError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_stream(args))
    except (HrSpecError, SpecError, RangeWalkError, ConnectionBudgetExceeded) as exc:
        raise CliError(str(exc)) from exc
    except BaseExceptionGroup as group:
        from engine.cli.sensor_sources import fatal_sensor_error

        if (message := fatal_sensor_error(group)) is None:
            raise
        raise CliError(message) from None
    return 0


def _printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """JSON lines, unless a person reads stdout at a terminal without --json: then readable lines."""
    import sys

    from engine.cli.output import human, say

    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if as_json or not terminal:
        return emit
    return lambda obj: say(human(obj))


async def _pump(source: SensorSource, show: Callable[[dict[str, Any]], None]) -> None:
    async for item in source.stream():
        show(item.to_json())


async def _stream(args: argparse.Namespace) -> None:
    from engine.cli.sensor_sources import (
        PORT_WAIT_S,
        open_sensor_sources,
        serial_options_from,
        wait_for_ports,
    )
    from engine.datadir import default_data_dir

    show = _printer(args.json)

    def waiting(paths: list[str]) -> None:
        limit = "until it appears" if args.wait else f"up to {PORT_WAIT_S:g} s"
        for path in paths:
            detail = f"{path} does not exist; waiting {limit}"
            show(
                {
                    "t": time.time(),
                    "source": f"serial:{path}",
                    "kind": "state",
                    "state": "waiting",
                    "detail": detail,
                }
            )

    await wait_for_ports(args.serial, wait=args.wait, on_wait=waiting)

    simulated = (args.serial or "").startswith("sim")
    data_dir = args.data or (None if simulated else default_data_dir())
    async with open_sensor_sources(
        hr=args.hr,
        bike=args.bike,
        serial=args.serial,
        protocol=args.protocol,
        mode=args.mode,
        speed=args.speed,
        adapters=args.adapter,
        sim_out_of_range=args.sim_out_of_range,
        serial_options=serial_options_from(args, data_dir),
    ) as sources:
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.duration), asyncio.TaskGroup() as tg:
                for source in sources:
                    tg.create_task(_pump(source, show), name=f"sensors:{source.source_id}")
        show(
            {
                "t": time.time(),
                "kind": "summary",
                "sources": len(sources),
                "elapsed_s": round(time.monotonic() - started, 3),
            }
        )
