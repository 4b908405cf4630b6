"""`ridesync scan`: heart-rate straps advertising nearby (name, address, RSSI), strongest first."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from engine.cli.main import CliError
from engine.cli.output import emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scan", help="list nearby heart-rate straps (BLE service 0x180D): name, address, RSSI")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to listen (default 5)")
    p.add_argument(
        "--sim", type=int, default=0, metavar="N", help="scan N simulated straps on a virtual radio instead"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per strap")
    p.set_defaults(handler=handle)


async def _scan(args: argparse.Namespace) -> list[dict[str, Any]]:
    from adapters.ble.scan import scan_straps

    if not args.sim:
        return [s.to_json() for s in await scan_straps(args.timeout)]
    from adapters.ble.sim import Simulation

    sim = await Simulation.start()
    try:
        for _ in range(args.sim):
            await sim.add_strap()
        return [s.to_json() for s in await scan_straps(args.timeout, backend=sim.scanner_backend)]
    finally:
        await sim.close()


def handle(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 600:
        raise CliError("--timeout must be between 0 and 600 seconds")
    if not 0 <= args.sim <= 64:
        raise CliError("--sim takes 0..64 straps")
    from adapters.ble.scan import BluetoothUnavailable

    try:
        straps = asyncio.run(_scan(args))
    except BluetoothUnavailable as exc:
        raise CliError(f"{exc}; or try the simulator: ridesync scan --sim 3") from exc
    if args.json:
        for strap in straps:
            emit(strap)
    else:
        if straps:
            print(f"{'NAME':<28} {'ADDRESS':<20} RSSI")
        for strap in straps:
            print(f"{strap['name'] or '(no name)':<28} {strap['address']:<20} {strap['rssi']}")
        if not straps:
            print(
                f"no heart-rate strap advertised within {args.timeout:g} s "
                "(is it worn and awake, and not connected to a phone or watch?)"
            )
    return 0 if straps else 1
