"""`ridesync decode PROTOCOL …`: decode sensor bytes offline into JSON lines.

Every error is a JSON object and a non-zero exit status, never a traceback: these commands are fed
captures from the field, which are hostile input by definition.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

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


def _clean_hex(text: str) -> str:
    return "".join(ch for ch in text if ch not in " \t:-_").removeprefix("0x")


def _hrm_line(text: str) -> tuple[dict[str, Any], bool]:
    from adapters.ble.hrm import HrmError, parse_hrm

    cleaned = _clean_hex(text)
    try:
        payload = bytes.fromhex(cleaned)
    except ValueError:
        return {"error": "not hexadecimal", "input": text}, False
    try:
        m = parse_hrm(payload)
    except HrmError as exc:
        return {"error": str(exc), "field": exc.field, "input": payload.hex()}, False
    return {
        "hr": m.hr,
        "contact": m.contact.value,
        "energy_kj": m.energy_kj,
        "rr_s": list(m.rr_s),
        "uint16": m.uint16,
    }, True


def _decode_hrm(args: argparse.Namespace) -> int:
    sources: list[str] = args.payloads or [line for line in sys.stdin.read().splitlines() if line.strip()]
    all_ok = True
    for text in sources:
        obj, ok = _hrm_line(text)
        all_ok &= ok
        emit(obj)
    return 0 if all_ok else 1
