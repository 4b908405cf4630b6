"""Bus traffic made from values: the frames a head unit and a bike exchange, for simulators and tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from adapters.serial.peloton.wire import (
    CALIBRATION_ENTRIES,
    Command,
    encode_cadence,
    encode_calibration_reply,
    encode_calibration_request,
    encode_power,
    encode_request,
    encode_resistance,
)

# The boot table a real bike returned in PeloMon's capture (raw ADC at 0, 3.33, ..., 100 %).
DEFAULT_CALIBRATION: tuple[int, ...] = (
    164, 169, 186, 222, 297, 369, 440, 497, 558, 609, 653, 687, 726, 757, 783, 803,
    827, 845, 861, 874, 889, 901, 911, 921, 930, 938, 944, 952, 958, 963, 967,
)  # fmt: skip
assert len(DEFAULT_CALIBRATION) == CALIBRATION_ENTRIES


@dataclass(frozen=True, slots=True)
class BikeSample:
    """What the bike measures at one instant: the values its next replies carry."""

    cadence: int
    power_w: float
    resistance_raw: int


def calibration_exchange(table: tuple[int, ...] = DEFAULT_CALIBRATION) -> Iterator[bytes]:
    """The boot read of the calibration table: `F7 k` then the bike's reply, for k = 0..30."""
    for index, raw in enumerate(table):
        yield encode_calibration_request(index)
        yield encode_calibration_reply(raw)


def reply_for(command: Command, sample: BikeSample) -> bytes:
    if command is Command.CADENCE:
        return encode_cadence(sample.cadence)
    if command is Command.POWER:
        return encode_power(sample.power_w)
    if command is Command.RESISTANCE:
        return encode_resistance(sample.resistance_raw)
    raise ValueError(f"no sample value for {command!r}")


def poll_exchange(sample: BikeSample) -> Iterator[bytes]:
    """One poll cycle: request and reply for cadence, power and resistance."""
    for command in (Command.CADENCE, Command.POWER, Command.RESISTANCE):
        yield encode_request(command)
        yield reply_for(command, sample)


def ride_frames(
    samples: Iterable[BikeSample], table: tuple[int, ...] | None = DEFAULT_CALIBRATION
) -> Iterator[bytes]:
    """A whole bus conversation: the calibration read (unless `table` is None) then a cycle per sample."""
    if table is not None:
        yield from calibration_exchange(table)
    for sample in samples:
        yield from poll_exchange(sample)
