"""`ridesync decode PROTOCOL …`: decode sensor bytes offline into JSON lines.

Every error is a JSON object and a non-zero exit status, never a traceback: these commands are fed
captures from the field, which are hostile input by definition.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from engine.cli.output import emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("decode", help="decode raw sensor bytes into JSON lines")
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    protocols.required = True

    hrm = protocols.add_parser(
        "hrm",
        help="Heart Rate Measurement (0x2A37) payloads given as hex",
        description=(
            "Decode Heart Rate Measurement payloads, one JSON line each. Each argument is one payload "
            "in hex; spaces, colons and dashes inside it are ignored ('16 41 b1 03', '16:41:b1:03'). "
            "With no argument, payloads are read from standard input, one per line. "
            "Exit status 1 if any was invalid."
        ),
    )
    hrm.add_argument("payloads", nargs="*", metavar="HEX")
    hrm.set_defaults(handler=_decode_hrm)
    _register_fitness(protocols)
    _register_serial(protocols)


def _clean_hex(text: str) -> str:
    return "".join(ch for ch in text if ch not in " \t:-_").removeprefix("0x")


def _hex_payload(text: str) -> bytes | None:
    try:
        return bytes.fromhex(_clean_hex(text))
    except ValueError:
        return None


def _hrm_line(text: str) -> tuple[dict[str, Any], bool]:
    from adapters.ble.hrm import HrmError, parse_hrm

    payload = _hex_payload(text)
    if payload is None:
        return {"error": "not hexadecimal", "input": text}, False
    try:
        m = parse_hrm(payload)
    except HrmError as exc:
        error: dict[str, Any] = {"error": str(exc), "field": exc.field, "input": payload.hex()}
        if exc.hr is not None:
            error["hr"] = exc.hr  # what could be read, so the defect is not mistaken for a dead strap
        return error, False
    return {
        "hr": m.hr,
        "contact": m.contact.value,
        "energy_kj": m.energy_kj,
        "rr_s": list(m.rr_s),
        "uint16": m.uint16,
    }, True


_LineDecoder = Callable[[str], tuple[dict[str, Any], bool]]  # one hex text -> (JSON object, valid?)


def _decode_hex_lines(args: argparse.Namespace, decode_one: _LineDecoder) -> int:
    """One JSON line per payload argument, or per non-blank stdin line when there is none."""
    sources: list[str] = args.payloads or [line for line in sys.stdin.read().splitlines() if line.strip()]
    all_ok = True
    for text in sources:
        obj, ok = decode_one(text)
        all_ok &= ok
        emit(obj)
    return 0 if all_ok else 1


def _decode_hrm(args: argparse.Namespace) -> int:
    return _decode_hex_lines(args, _hrm_line)


# --- BLE fitness machine profiles (ftms, cps, csc) ------------------------------------------------------

_FITNESS = {
    "ftms": "Indoor Bike Data (Fitness Machine Service, 0x2AD2)",
    "cps": "Cycling Power Measurement (0x2A63)",
    "csc": "CSC Measurement (Cycling Speed and Cadence, 0x2A5B)",
}


def _register_fitness(protocols: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for profile, name in _FITNESS.items():
        parser = protocols.add_parser(
            profile,
            help=f"{name} payloads given as hex",
            description=(
                f"Decode {name} payloads, one JSON line each, with every key present (null for a field "
                "the payload does not carry). Each argument is one payload in hex; spaces, colons and "
                "dashes inside it are ignored. With no argument, payloads are read from standard input, "
                "one per line. Exit status 1 if any was invalid."
            ),
        )
        parser.add_argument("payloads", nargs="*", metavar="HEX")
        parser.set_defaults(handler=_decode_fitness, profile=profile)


def _fitness_line(profile: str, text: str) -> tuple[dict[str, Any], bool]:
    from adapters.ble.fitness_json import DECODERS
    from adapters.ble.gatt_fields import FitnessPayloadError

    payload = _hex_payload(text)
    if payload is None:
        return {"error": "not hexadecimal", "input": text}, False
    try:
        return DECODERS[profile](payload), True
    except FitnessPayloadError as exc:
        return {"error": str(exc), "field": exc.field, "input": payload.hex()}, False


def _decode_fitness(args: argparse.Namespace) -> int:
    return _decode_hex_lines(args, lambda text: _fitness_line(args.profile, text))


# --- serial protocols (peloton, line) ---------------------------------------------------------------

_READ_CHUNK = 1 << 16


def _register_serial(protocols: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    peloton = protocols.add_parser(
        "peloton",
        help="a raw Peloton bus capture (both directions) to JSON lines",
        description=(
            "Decode a raw capture of the Peloton bike bus: one JSON line per value "
            '({"kind", "value", "unit"}; power in W, resistance raw plus "pct" once a calibration table '
            'was seen), then {"summary": {...counters}}. FILE "-" reads standard input. '
            "Exit status 1 if the input held bytes but not one valid frame."
        ),
    )
    peloton.add_argument("file", metavar="FILE")
    peloton.add_argument("--errors", action="store_true", help="also print one line per discarded byte run")
    peloton.set_defaults(handler=_decode_peloton)

    line = protocols.add_parser(
        "line",
        help="a capture of the DIY cadence line protocol to JSON lines",
        description=(
            "Decode a capture of the DIY cadence line protocol (adapters/serial/LINE_PROTOCOL.md): one JSON "
            'line per cadence update and device identity, then {"summary": {...counters}}. '
            'FILE "-" reads standard input. Exit status 1 if the input held bytes but not one valid line.'
        ),
    )
    line.add_argument("file", metavar="FILE")
    line.add_argument("--errors", action="store_true", help="also print one line per rejected line")
    line.add_argument(
        "--stop-after",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds without a crank event before cadence is 0 (default 3)",
    )
    line.set_defaults(handler=_decode_line)


def _read_chunks(path: str) -> Iterator[bytes]:
    """Yields the file's bytes in chunks; unreadable input becomes a CliError, never a traceback."""
    from engine.cli.main import CliError

    if path == "-":
        stream: BinaryIO = sys.stdin.buffer
        yield from iter(lambda: stream.read(_READ_CHUNK), b"")
        return
    try:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(_READ_CHUNK), b"")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode_peloton(args: argparse.Namespace) -> int:
    from adapters.serial.peloton import PelotonParser
    from adapters.serial.peloton_json import peloton_event_json

    parser = PelotonParser()
    for chunk in _read_chunks(args.file):
        for ev in parser.feed(chunk):
            obj = peloton_event_json(ev, errors=args.errors)
            if obj is not None:
                emit(obj)
    for ev in parser.flush():
        obj = peloton_event_json(ev, errors=args.errors)
        if obj is not None:
            emit(obj)
    summary = parser.summary()
    emit({"summary": summary})
    return 1 if summary["bytes_total"] and not summary["frames_ok"] else 0


def _decode_line(args: argparse.Namespace) -> int:
    from adapters.serial.cadence import CrankCadence
    from adapters.serial.line_json import line_event_json
    from adapters.serial.line_protocol import CrankRecord, LineParser
    from engine.cli.main import CliError

    if not args.stop_after > 0:
        raise CliError("--stop-after must be > 0")
    parser = LineParser()
    cadence = CrankCadence(stop_after_s=args.stop_after)

    def show(events: list[Any]) -> None:
        for ev in events:
            update = cadence.on_record(ev) if isinstance(ev, CrankRecord) else None
            obj = line_event_json(ev, update, errors=args.errors)
            if obj is not None:
                emit(obj)

    for chunk in _read_chunks(args.file):
        show(parser.feed(chunk))
    show(parser.flush())
    summary = {**parser.counters.as_dict(), **cadence.counters.as_dict()}
    emit({"summary": summary})
    return 1 if summary["bytes_total"] and not summary["lines_ok"] else 0
