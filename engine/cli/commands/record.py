"""`ridesync record PORT FILE`: capture a serial port's raw bytes for later decode and replay."""

from __future__ import annotations

import argparse

from engine.cli import argtypes
from engine.cli.output import emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="record a serial port's raw bytes to a capture file",
        description=(
            "Record the raw bytes of a serial port (a Peloton bus tap, a DIY cadence sensor, or a "
            "`ridesync sim` pty) to FILE, plus FILE.timing (one JSON line per read) so `ridesync sim replay` "
            "can reproduce the timing. Stops after --duration, on Ctrl-C, or when the port is lost "
            "(exit status 1). Prints a JSON summary."
        ),
    )
    p.add_argument("port", metavar="PORT")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--duration", type=argtypes.positive_float, default=None, metavar="S", help="stop after S seconds"
    )
    p.add_argument(
        "--baud", type=argtypes.positive_int, default=19200, help="baud rate (default 19200, the Peloton bus)"
    )
    p.add_argument("--no-timing", action="store_true", help="do not write FILE.timing")
    p.set_defaults(handler=_record)


def _record(args: argparse.Namespace) -> int:
    from adapters.serial.recorder import RecordError, record
    from engine.cli.main import CliError

    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be > 0")
    try:
        result = record(
            args.port, args.file, baudrate=args.baud, duration_s=args.duration, timing=not args.no_timing
        )
    except RecordError as exc:
        raise CliError(str(exc)) from None
    emit(
        {
            "summary": {
                "file": result.file,
                "bytes": result.bytes,
                "reads": result.reads,
                "duration_s": result.duration_s,
                "port_lost": result.port_lost,
            }
        }
    )
    return 1 if result.port_lost else 0
