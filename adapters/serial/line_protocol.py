"""The DIY cadence sensor line protocol (v1), sans-I/O: parser, encoder. Specified in LINE_PROTOCOL.md.

    $I,<device_id>,<version>*CCCC\\n
    $C,<seq>,<revs>,<event_time>,<sensor_time>*CCCC\\n

CCCC is CRC-16/XMODEM (poly 0x1021, init 0) of the bytes between '$' and '*', as 4 hex digits. It is
`binascii.crc_hqx(body, 0)` here and `_crc_xmodem_update` in avr-libc, so both ends get it for free, and
unlike an NMEA-style XOR it catches two flipped bits in the same bit position.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import re
from dataclasses import dataclass

PROTOCOL_VERSION = 1
MAX_LINE = 64  # bytes from '$' to the last CRC digit, line ending excluded; a v1 line is at most 31
U16 = 0x10000
SEQ_MOD = 0x100
TICKS_PER_S = 1024

_LINE = re.compile(rb"\$([A-Z][\x20-\x23\x25-\x29\x2b-\x7e]*)\*([0-9A-Fa-f]{4})")
_IDENT = re.compile(rb"I,([A-Za-z0-9_.-]{1,16}),([0-9]{1,3})")
_RECORD = re.compile(rb"C,([0-9]{1,3}),([0-9]{1,5}),([0-9]{1,5}),([0-9]{1,5})")
_DEVICE_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")


class LineErrorReason(enum.StrEnum):
    MALFORMED = "malformed"
    BAD_CHECKSUM = "bad_checksum"
    TOO_LONG = "too_long"
    OUT_OF_RANGE = "out_of_range"
    UNSUPPORTED_VERSION = "unsupported_version"


class LineProtocolError(ValueError):
    """A line that is not a valid v1 line. `reason` says which check failed."""

    def __init__(self, reason: LineErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LineEncodeError(ValueError):
    """A value that does not fit the protocol's fields."""


@dataclass(frozen=True, slots=True)
class Ident:
    device_id: str
    version: int


@dataclass(frozen=True, slots=True)
class CrankRecord:
    """Cumulative crank revolutions and the sensor time of the last crank event, as BLE CSC reports them.

    seq counts lines (mod 256) so a receiver can count lost lines; revs, event_time and sensor_time roll
    over at 65536; times are in 1/1024 s.
    """

    seq: int
    revs: int
    event_time: int
    sensor_time: int


@dataclass(frozen=True, slots=True)
class UnknownLine:
    """A well-formed, checksummed line of a type this version does not know: ignored, counted."""

    kind: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class LineError:
    reason: LineErrorReason
    message: str
    raw: bytes


LineEvent = Ident | CrankRecord | UnknownLine | LineError


def _crc(body: bytes) -> int:
    return binascii.crc_hqx(body, 0)


def _frame(body: bytes) -> bytes:
    return b"$" + body + b"*%04X\n" % _crc(body)


def encode_ident(device_id: str, version: int = PROTOCOL_VERSION) -> bytes:
    if not _DEVICE_ID.fullmatch(device_id):
        raise LineEncodeError("device id must be 1-16 characters of A-Z a-z 0-9 _ . -")
    if not 0 <= version <= 999:
        raise LineEncodeError(f"version must be 0..999, got {version}")
    return _frame(f"I,{device_id},{version}".encode("ascii"))


def encode_record(seq: int, revs: int, event_time: int, sensor_time: int) -> bytes:
    if not 0 <= seq < SEQ_MOD:
        raise LineEncodeError(f"seq must be 0..255, got {seq}")
    for name, v in (("revs", revs), ("event_time", event_time), ("sensor_time", sensor_time)):
        if not 0 <= v < U16:
            raise LineEncodeError(f"{name} must be 0..65535, got {v}")
    return _frame(f"C,{seq},{revs},{event_time},{sensor_time}".encode("ascii"))


def parse_line(line: bytes) -> Ident | CrankRecord | UnknownLine:
    """Parse one line (without or with its line ending). Raises LineProtocolError."""
    line = line.rstrip(b"\r\n")
    if len(line) > MAX_LINE:
        raise LineProtocolError(LineErrorReason.TOO_LONG, f"line longer than {MAX_LINE} bytes")
    m = _LINE.fullmatch(line)
    if m is None:
        raise LineProtocolError(LineErrorReason.MALFORMED, "expected $<body>*<crc16 hex>")
    body, crc_text = m.group(1), m.group(2)
    expected = _crc(body)
    if int(crc_text, 16) != expected:
        raise LineProtocolError(
            LineErrorReason.BAD_CHECKSUM, f"crc {crc_text.decode()} != computed {expected:04X}"
        )
    kind = body[:1]
    if kind == b"C":
        r = _RECORD.fullmatch(body)
        if r is None:
            raise LineProtocolError(LineErrorReason.MALFORMED, "C line needs seq,revs,event_time,sensor_time")
        seq, revs, event_time, sensor_time = (int(g) for g in r.groups())
        if seq >= SEQ_MOD or revs >= U16 or event_time >= U16 or sensor_time >= U16:
            raise LineProtocolError(LineErrorReason.OUT_OF_RANGE, "seq is 0..255, the others 0..65535")
        return CrankRecord(seq, revs, event_time, sensor_time)
    if kind == b"I":
        i = _IDENT.fullmatch(body)
        if i is None:
            raise LineProtocolError(LineErrorReason.MALFORMED, "I line needs device_id,version")
        version = int(i.group(2))
        if version != PROTOCOL_VERSION:
            raise LineProtocolError(
                LineErrorReason.UNSUPPORTED_VERSION, f"protocol version {version}, this parser speaks 1"
            )
        return Ident(i.group(1).decode("ascii"), version)
    return UnknownLine(kind.decode("ascii"), bytes(line))


@dataclass(slots=True)
class LineCounters:
    bytes_total: int = 0
    lines_ok: int = 0
    lines_bad_checksum: int = 0
    lines_malformed: int = 0
    lines_too_long: int = 0
    lines_unknown: int = 0
    lines_other_error: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class LineParser:
    """Streaming: splits on '\\n', bounds line length, never raises."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line, dropping bytes until its end
        self.counters = LineCounters()

    def feed(self, data: bytes | bytearray | memoryview) -> list[LineEvent]:
        self.counters.bytes_total += len(data)
        self._buf += data
        out: list[LineEvent] = []
        buf = self._buf
        start = 0
        while start < len(buf):
            # '$' always starts a line, so a line whose end was lost cannot take the next one with it.
            nl = buf.find(b"\n", start)
            # While dropping an overlong line a '$' right at `start` already begins the next line.
            first = start if self._discarding else start + 1
            dollar = buf.find(b"$", first, nl if nl >= 0 else len(buf))
            end = dollar if dollar >= 0 else nl
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            elif buf[start:end].strip(b"\r"):
                # Blank lines (a sensor's boot banner often ends with some) carry nothing and are no error.
                out.append(self._line(bytes(buf[start:end])))
            start = end if end == dollar else end + 1
        del buf[:start]
        # MAX_LINE + 1 leaves room for a '\r' whose '\n' has not arrived yet.
        if len(buf) > MAX_LINE + 1:
            if not self._discarding:
                out.append(self._error(LineErrorReason.TOO_LONG, f"no line end within {MAX_LINE} bytes", buf))
            self._discarding = True
            buf.clear()
        return out

    def flush(self) -> list[LineEvent]:
        """End of input: a last line without its '\\n' is still judged."""
        if self._discarding or not self._buf:
            self._buf.clear()
            self._discarding = False
            return []
        line = bytes(self._buf)
        self._buf.clear()
        return [self._line(line)] if line.strip(b"\r") else []

    def _line(self, raw: bytes) -> LineEvent:
        try:
            event = parse_line(raw)
        except LineProtocolError as exc:
            return self._error(exc.reason, str(exc), raw)
        if isinstance(event, UnknownLine):
            self.counters.lines_unknown += 1
        else:
            self.counters.lines_ok += 1
        return event

    def _error(self, reason: LineErrorReason, message: str, raw: bytes | bytearray) -> LineError:
        c = self.counters
        if reason is LineErrorReason.BAD_CHECKSUM:
            c.lines_bad_checksum += 1
        elif reason is LineErrorReason.MALFORMED:
            c.lines_malformed += 1
        elif reason is LineErrorReason.TOO_LONG:
            c.lines_too_long += 1
        else:
            c.lines_other_error += 1
        return LineError(reason, message, bytes(raw))
