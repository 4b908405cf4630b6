"""Bytes on the Peloton bike bus: frame layout, checksum, digit payloads, and encoders.

Layout (as decoded by the PeloMon project and checked against its published capture):

    head unit -> bike   request  H C S F6            H in {F5 read, F7 calibration k, FE startup}
    bike -> head unit   reply    F1 C L payload S F6  L = payload length

S is the low byte of the sum of every byte before it. Replies carry ASCII digits, least significant
first, zero-padded. The reply to a calibration request `F7 k` carries C = F7, not k: only the request
before it says which table entry it is, which is why the bus decoder pairs them.
"""

from __future__ import annotations

import enum

REQUEST_READ = 0xF5
REQUEST_CALIBRATION = 0xF7
REQUEST_STARTUP = 0xFE
REPLY = 0xF1
TERMINATOR = 0xF6
REQUEST_HEADS = frozenset({REQUEST_READ, REQUEST_CALIBRATION, REQUEST_STARTUP})
FRAME_HEADS = REQUEST_HEADS | {REPLY}
REQUEST_LENGTH = 4
REPLY_OVERHEAD = 5  # F1 C L ... S F6
# The longest payload seen on a real bus is 7 bytes (the bike-id reply). A length byte well above that
# is noise; refusing it at once keeps a garbage F1 from holding back the real frames that follow.
MAX_PAYLOAD = 16

CALIBRATION_ENTRIES = 31


class Command(enum.IntEnum):
    """Command codes a head unit asks for, and that the bike echoes in its reply."""

    CADENCE = 0x41
    POWER = 0x44
    RESISTANCE = 0x4A
    CALIBRATION = 0xF7  # reply code for every calibration entry
    BIKE_ID = 0xFB
    STARTUP = 0xFE


# Payload widths the bike uses (PeloMon's emulator and the real capture agree).
PAYLOAD_WIDTH: dict[Command, int] = {
    Command.CADENCE: 3,
    Command.POWER: 5,
    Command.RESISTANCE: 4,
    Command.CALIBRATION: 4,
    Command.BIKE_ID: 7,
    Command.STARTUP: 3,
}

POLL_CYCLE = (Command.CADENCE, Command.POWER, Command.RESISTANCE)


class PelotonEncodeError(ValueError):
    """A value that cannot be put on the bus (negative, or too many digits for the payload)."""


def checksum(data: bytes | bytearray | memoryview) -> int:
    return sum(data) & 0xFF


def encode_request(command: int, *, head: int = REQUEST_READ) -> bytes:
    if head not in REQUEST_HEADS:
        raise PelotonEncodeError(f"request head must be one of F5/F7/FE, got {head:#04x}")
    if not 0 <= command <= 0xFF:
        raise PelotonEncodeError(f"command must be a byte, got {command}")
    body = bytes((head, command))
    return body + bytes((checksum(body), TERMINATOR))


def encode_calibration_request(index: int) -> bytes:
    if not 0 <= index < CALIBRATION_ENTRIES:
        raise PelotonEncodeError(f"calibration index must be 0..30, got {index}")
    return encode_request(index, head=REQUEST_CALIBRATION)


def encode_digits(value: int, width: int) -> bytes:
    """`value` as ASCII digits, least significant first, zero-padded to `width`."""
    if value < 0:
        raise PelotonEncodeError(f"bus values are unsigned, got {value}")
    text = str(value)
    if len(text) > width:
        raise PelotonEncodeError(f"{value} does not fit in {width} digits")
    return text.zfill(width)[::-1].encode("ascii")


def decode_digits(payload: bytes) -> int | None:
    """The integer a digit payload carries, or None if it holds anything but ASCII digits."""
    if not payload or not payload.isdigit():
        return None
    return int(payload[::-1])


def encode_reply_payload(command: int, payload: bytes) -> bytes:
    if not 0 <= command <= 0xFF:
        raise PelotonEncodeError(f"command must be a byte, got {command}")
    if len(payload) > MAX_PAYLOAD:
        raise PelotonEncodeError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes((REPLY, command, len(payload))) + payload
    return body + bytes((checksum(body), TERMINATOR))


def encode_reply(command: int, value: int, width: int | None = None) -> bytes:
    if width is None:
        try:
            width = PAYLOAD_WIDTH[Command(command)]
        except ValueError:
            raise PelotonEncodeError(f"no known payload width for command {command:#04x}") from None
    return encode_reply_payload(command, encode_digits(value, width))


def encode_cadence(rpm: int) -> bytes:
    return encode_reply(Command.CADENCE, rpm)


def encode_power(watts: float) -> bytes:
    """Power goes on the wire in deciwatts; `watts` is rounded to the nearest 0.1 W."""
    if watts < 0:
        raise PelotonEncodeError(f"power must be >= 0, got {watts}")
    return encode_reply(Command.POWER, round(watts * 10))


def encode_resistance(raw: int) -> bytes:
    return encode_reply(Command.RESISTANCE, raw)


def encode_calibration_reply(raw: int) -> bytes:
    return encode_reply(Command.CALIBRATION, raw)
