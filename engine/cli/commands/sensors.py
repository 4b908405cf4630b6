"""`ridesync sensors`: live readings from straps and bikes as JSON lines — the lab's first tool.

Each reading is one line `{"t", "source", "seq", "kind", "value", "unit", ...}`; link and signal state
changes (connecting, streaming, lost, backing off, stale, no contact) are lines with `"kind": "state"`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from engine.cli.main import CliError
from engine.cli.output import emit
from engine.readings import SensorSource


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sensors",
        help="print live readings from heart-rate straps and bikes as JSON lines",
        description=(
            "Stream readings from a heart-rate strap (--hr) and/or a serial bike or cadence sensor "
            "(--serial). 'sim' starts simulated devices (a bumble strap on a virtual radio, a bike on a "
            "pty); 'sim:N' starts N of them."
        ),
    )
    parser.add_argument(
        "--hr", metavar="sim|sim:N|sim:N@M|ADDRESS|NAME", help="heart-rate strap(s); sim:N@M: over M adapters"
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
    parser.add_argument("--duration", type=float, default=None, help="seconds; default: until Ctrl-C")
    parser.add_argument("--speed", type=float, default=1.0, help="simulation speed-up")
    parser.add_argument("--json", action="store_true", help="JSON lines (the default; kept for scripts)")
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="where Peloton calibration tables are kept ($RIDESYNC_DATA or ./ridesync-data; for simulated "
        "bikes only when given)",
    )
    from engine.cli.sensor_sources import add_serial_arguments

    add_serial_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.hr and not args.serial:
        raise CliError("give --hr and/or --serial (e.g. --hr sim --serial sim)")
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


async def _pump(source: SensorSource) -> None:
    async for item in source.stream():
        emit(item.to_json())


async def _stream(args: argparse.Namespace) -> None:
    from engine.cli.sensor_sources import open_sensor_sources, serial_options_from
    from engine.datadir import default_data_dir

    simulated = (args.serial or "").startswith("sim")
    data_dir = args.data or (None if simulated else default_data_dir())
    async with open_sensor_sources(
        hr=args.hr,
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
                    tg.create_task(_pump(source), name=f"sensors:{source.source_id}")
        emit(
            {
                "t": time.time(),
                "kind": "summary",
                "sources": len(sources),
                "elapsed_s": round(time.monotonic() - started, 3),
            }
        )
