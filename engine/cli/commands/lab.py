"""`ridesync lab`: the lab kit. One command runs every lab scenario against the straps and the bike (or
the simulator) and writes one JSON report; prompts and a summary table go to stderr.

    ridesync lab --hr AA:BB:CC:DD:EE:01,AA:BB:CC:DD:EE:02 --serial /dev/serial/by-id/usb-... --json
    ridesync lab --hr sim:2 --serial sim --yes --json         # the whole kit, simulated

Exit status 0 when no scenario failed (skipped ones say why), 1 when one did, 2 for bad options, 130
after Ctrl-C (the report of what ran is still written).
Scenarios and the report: hw_tests/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from engine.cli.main import CliError

DEFAULT_REPORT_DIR = "artifacts/hw"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.lab.report import SCENARIOS

    p = sub.add_parser(
        "lab",
        help="run the lab scenarios against real straps and a bike (or the simulator): one JSON report",
        description=(
            "Runs the lab kit: two straps at once, a strap out of range and back, a strap power-cycled, "
            "the process killed while connected and rerun, the USB serial adapter unplugged and "
            "replugged, the Peloton calibration table, and the DIY line sensor across its 70-minute "
            "tick overflow. On real hardware it prompts on stderr for each physical step and watches for "
            "its effect; 'sim' devices do the steps themselves. Scenarios: " + ", ".join(SCENARIOS)
        ),
    )
    p.add_argument("--hr", metavar="A,B|sim:2", help="the straps: two addresses or names (sim:2 simulated)")
    p.add_argument("--adapter", metavar="hci0,hci1", help="Bluetooth adapters to spread the straps over")
    p.add_argument("--serial", metavar="PORT|sim", help="the bike (or --protocol line: a DIY cadence sensor)")
    p.add_argument("--protocol", choices=["peloton", "line"], default="peloton", help="--serial's protocol")
    p.add_argument(
        "--mode", choices=["listen", "poll"], default="poll", help="Peloton bus mode (default poll)"
    )
    p.add_argument(
        "--baud", type=int, default=None, metavar="N", help="serial baud rate (default: the protocol's)"
    )
    p.add_argument(
        "--calibration", metavar="FILE", help="a Peloton calibration table file (builds that load one)"
    )
    p.add_argument("--data", metavar="DIR", help="data dir where builds that store tables per bike keep them")
    p.add_argument(
        "--bike-id", metavar="ID", help="the bike's id for a stored table (builds that store them)"
    )
    p.add_argument("--line", metavar="PORT|sim", help="a DIY line-protocol cadence sensor besides the bike")
    p.add_argument(
        "--line-run-min",
        type=float,
        default=None,
        metavar="MIN",
        help="real line sensor: stream this many minutes across its 70th minute of uptime",
    )
    p.add_argument(
        "--line-uptime-min",
        type=float,
        default=0.0,
        metavar="MIN",
        help="real line sensor: how many minutes it has been powered when the kit starts (default 0)",
    )
    p.add_argument("--only", metavar="ID,ID", help="run only these scenarios")
    p.add_argument("--skip", metavar="ID,ID", help="leave these scenarios out")
    p.add_argument("--speed", type=float, default=10.0, help="simulated devices' speed-up (default 10)")
    p.add_argument("--yes", "-y", action="store_true", help="never wait for Enter (prompts are still shown)")
    p.add_argument("--json", action="store_true", help="print the report (one JSON object) on stdout")
    p.add_argument(
        "--report",
        metavar="FILE",
        help=f"where to write the report (default {DEFAULT_REPORT_DIR}/lab-<utc time>.json, "
        "or under $RIDESYNC_REPORT_DIR)",
    )
    p.set_defaults(handler=handle)


def _ids(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else ()


def _terminal(stream: TextIO | None) -> bool:
    """Whether stdin is a person at a terminal (pytest without -s, a pipe or /dev/null are not)."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def handle(args: argparse.Namespace) -> int:
    import os

    from engine.lab.context import LabConfig
    from engine.lab.guide import Guide
    from engine.lab.kit import LabConfigError, run_lab

    if args.baud is not None and args.baud <= 0:
        raise CliError("--baud must be positive")
    if args.line_run_min is not None and args.line_run_min <= 0:
        raise CliError("--line-run-min must be positive")
    config = LabConfig(
        hr=args.hr,
        adapters=args.adapter,
        serial=args.serial,
        protocol=args.protocol,
        mode=args.mode,
        baud=args.baud,
        calibration=args.calibration,
        data_dir=args.data,
        bike_id=args.bike_id,
        line=args.line,
        line_run_min=args.line_run_min,
        line_uptime_min=args.line_uptime_min,
        speed=args.speed,
        interactive=not args.yes and _terminal(sys.stdin),
        only=_ids(args.only),
        skip=_ids(args.skip),
    )
    guide = Guide(sys.stderr, interactive=config.interactive)
    # bumble's own warnings about the virtual radio's internals are noise next to the kit's prompts.
    logging.getLogger("bumble").setLevel(logging.ERROR)
    from adapters.ble.factory import HrSpecError
    from adapters.serial.factory import SpecError

    try:
        report = asyncio.run(run_lab(config, guide))
    except (LabConfigError, HrSpecError, SpecError) as exc:
        raise CliError(str(exc)) from exc
    if args.report:
        path = Path(args.report)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = Path(os.environ.get("RIDESYNC_REPORT_DIR", DEFAULT_REPORT_DIR)) / f"lab-{stamp}.json"
    report.write(path)
    report.print_table(sys.stderr, path)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), allow_nan=False) + "\n")
        sys.stdout.flush()
    if report.interrupted:
        return 130
    return 0 if report.ok else 1
