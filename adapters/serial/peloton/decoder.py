"""From frames to values: pairs replies with requests, builds the calibration table, decodes payloads.

Fed frames in the order they crossed the bus (from one framer over a capture of both lines, or from
two framers, one per line, merged by arrival). Never raises: odd replies become events and counters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adapters.serial.peloton.calibration import CalibrationCollector, CalibrationTable
from adapters.serial.peloton.framer import Frame, ReplyFrame, RequestFrame
from adapters.serial.peloton.wire import (
    CALIBRATION_ENTRIES,
    REQUEST_CALIBRATION,
    Command,
)


@dataclass(frozen=True, slots=True)
class Cadence:
    rpm: int


@dataclass(frozen=True, slots=True)
class Power:
    watts: float
    deciwatts: int


@dataclass(frozen=True, slots=True)
class Resistance:
    raw: int
    pct: float | None  # None until a complete calibration table was seen


@dataclass(frozen=True, slots=True)
class CalibrationEntry:
    index: int
    raw: int


@dataclass(frozen=True, slots=True)
class CalibrationComplete:
    table: CalibrationTable


@dataclass(frozen=True, slots=True)
class CalibrationRejected:
    """All 31 entries arrived but do not increase: resistance stays raw-only."""

    reason: str


@dataclass(frozen=True, slots=True)
class StartupReply:
    """Replies seen during the head unit's boot handshake (FE, and FB, the bike id)."""

    command: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UnknownReply:
    command: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class BadPayload:
    """A reply with a valid frame whose payload is not ASCII digits."""

    command: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UnpairedCalibration:
    """A calibration reply with no `F7 k` request before it: we cannot tell which entry it is."""

    raw: int


Value = Cadence | Power | Resistance
DecoderEvent = (
    Value
    | CalibrationEntry
    | CalibrationComplete
    | CalibrationRejected
    | StartupReply
    | UnknownReply
    | BadPayload
    | UnpairedCalibration
)


# Plain ints: comparing against enum members costs an attribute lookup per frame on the hot path.
_CADENCE = int(Command.CADENCE)
_POWER = int(Command.POWER)
_RESISTANCE = int(Command.RESISTANCE)
_CALIBRATION = int(Command.CALIBRATION)
_BIKE_ID = int(Command.BIKE_ID)
_VALUE_COMMANDS = frozenset({_CADENCE, _POWER, _RESISTANCE, int(Command.CALIBRATION)})
_STARTUP_COMMANDS = frozenset({int(Command.STARTUP), int(Command.BIKE_ID)})


@dataclass(slots=True)
class DecoderCounters:
    values: int = 0
    calibration_entries: int = 0
    replies_unknown: int = 0
    replies_bad_payload: int = 0
    replies_unpaired: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class BusDecoder:
    def __init__(self, calibration: CalibrationTable | None = None) -> None:
        self.counters = DecoderCounters()
        self._collector = CalibrationCollector()
        self.calibration: CalibrationTable | None = calibration
        self._pending_calibration: int | None = None
        # A tap on the bike's TX line alone hears no `F7 k` request. At the tablet's boot the bike answers
        # FE, then the bike-id read (FB), then the table entries 0..30 in order: after an FB reply,
        # unpaired calibration replies are taken as the next entry until a value reply ends the run.
        self._boot_index: int | None = None

    def on_frame(self, frame: Frame) -> list[DecoderEvent]:
        if isinstance(frame, RequestFrame):
            is_cal = frame.head == REQUEST_CALIBRATION and frame.command < CALIBRATION_ENTRIES
            self._pending_calibration = frame.command if is_cal else None
            return []
        return self._on_reply(frame)

    def _on_reply(self, frame: ReplyFrame) -> list[DecoderEvent]:
        c = self.counters
        command = frame.command
        pending, self._pending_calibration = self._pending_calibration, None
        if command not in _VALUE_COMMANDS:
            if command in _STARTUP_COMMANDS:
                if command == _BIKE_ID:
                    self._boot_index = 0
                    self._collector.reset()
                return [StartupReply(command, frame.payload)]
            c.replies_unknown += 1
            return [UnknownReply(command, frame.payload)]
        payload = frame.payload
        if not payload.isdigit():
            if command == _CALIBRATION and pending is None and self._boot_index is not None:
                # that entry is lost, but the ones after it keep their places
                self._boot_index = (
                    self._boot_index + 1 if self._boot_index + 1 < CALIBRATION_ENTRIES else None
                )
            c.replies_bad_payload += 1
            return [BadPayload(command, payload)]
        value = int(payload[::-1])
        if command != _CALIBRATION:
            self._boot_index = None
        if command == _CADENCE:
            c.values += 1
            return [Cadence(value)]
        if command == _POWER:
            c.values += 1
            return [Power(value / 10, value)]
        if command == _RESISTANCE:
            c.values += 1
            pct = self.calibration.percent(value) if self.calibration is not None else None
            return [Resistance(value, pct)]
        if pending is None and self._boot_index is not None:
            pending = self._boot_index
            self._boot_index = pending + 1 if pending + 1 < CALIBRATION_ENTRIES else None
        if pending is None:
            c.replies_unpaired += 1
            return [UnpairedCalibration(value)]
        return self._on_calibration(pending, value)

    def _on_calibration(self, index: int, raw: int) -> list[DecoderEvent]:
        self.counters.calibration_entries += 1
        # Entries may come in any order and repeat (a head unit retries); the table in use is only
        # replaced once a new read has delivered all 31.
        self._collector.add(index, raw)
        out: list[DecoderEvent] = [CalibrationEntry(index, raw)]
        try:
            table = self._collector.table()
        except ValueError as exc:
            self._collector.reset()
            out.append(CalibrationRejected(str(exc)))
            return out
        if table is not None:
            self.calibration = table
            self._collector.reset()
            out.append(CalibrationComplete(table))
        return out
