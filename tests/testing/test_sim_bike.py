"""The `sim_bike` fixture: values, modes and faults observed through real pyserial."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import serial

from adapters.serial.line_protocol import CrankRecord, LineProtocolError, parse_line
from adapters.serial.peloton import BadChecksum, PelotonFramer, ReplyFrame, SkippedBytes
from adapters.serial.peloton.wire import encode_request
from engine.testing.plugin import SimBikeFactory

CADENCE, POWER = 0x41, 0x44


def replies(data: bytes) -> tuple[list[ReplyFrame], list[object]]:
    events = list(PelotonFramer().feed(data))
    return [e for e in events if isinstance(e, ReplyFrame)], [
        e for e in events if not isinstance(e, ReplyFrame)
    ]


def value(frame: ReplyFrame) -> float:
    digits = int(bytes(frame.payload)[::-1])
    return digits / 10 if frame.command == POWER else float(digits)


def read_open(s: serial.Serial, seconds: float) -> bytes:
    out = bytearray()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out += s.read(4096)
    return bytes(out)


def whole_lines(
    s: serial.Serial, arm: Callable[[], None], done: Callable[[], bool], more: int, guard_s: float = 10.0
) -> list[bytes]:
    """The whole lines that start after a line boundary seen before `arm()`, read until `done()` holds and
    `more` further lines have ended (a fault is counted just before its line is written): waiting for
    state, not for a time. The port opens mid-line, and a loaded machine may stop reading mid-line; either
    fragment would parse as a bad line, so neither is returned."""
    data, mark = bytearray(), None
    end = time.monotonic() + guard_s
    while b"\n" not in data:
        assert time.monotonic() < end, f"no line within {guard_s} s"
        data += s.read(4096)
    start = data.rfind(b"\n") + 1
    arm()
    while mark is None or data.count(b"\n", mark) < more:
        assert time.monotonic() < end, f"no {more} whole lines after the condition within {guard_s} s"
        if mark is None and done():
            mark = len(data)
        data += s.read(4096)
    return bytes(data[start : data.rfind(b"\n") + 1]).splitlines(keepends=True)


def read_for(port: str, seconds: float, baud: int = 19200) -> bytes:
    with serial.Serial(port, baud, timeout=0.1) as s:
        return read_open(s, seconds)


@pytest.fixture
def ridesync_speed() -> float:
    return 20.0


def test_listen_mode_carries_pinned_values(sim_bike: SimBikeFactory) -> None:
    sim_bike.set_cadence(90)
    sim_bike.set_power(250.5)
    frames, _ = replies(read_for(sim_bike.port, 1.0))
    cadences = {value(f) for f in frames if f.command == CADENCE}
    powers = {value(f) for f in frames if f.command == POWER}
    assert cadences == {90.0}
    assert powers == {250.5}


def test_poll_mode_answers_after_the_boot_handshake(sim_bike: SimBikeFactory) -> None:
    bike = sim_bike(protocol="peloton", mode="poll")
    bike.set_cadence(77)
    with serial.Serial(bike.port, 19200, timeout=0.5) as s:
        s.write(encode_request(CADENCE))
        assert s.read(16) == b""  # a bike whose head unit has not booted is silent
        s.write(encode_request(0, head=0xFE))
        s.read(16)
        s.write(encode_request(0xFB))
        s.read(16)
        s.write(encode_request(CADENCE))
        frames, _ = replies(s.read(9))
    assert [value(f) for f in frames] == [77.0]


def test_line_protocol_and_seeded_faults(sim_bike: SimBikeFactory) -> None:
    bike = sim_bike(protocol="line")
    bike.set_cadence(120)  # two revolutions per second
    with serial.Serial(bike.port, 115200, timeout=0.1) as s:
        records = [parse_line(line) for line in whole_lines(s, lambda: None, lambda: True, 8)]
    cranks = [r for r in records if isinstance(r, CrankRecord)]
    assert len(cranks) >= 5
    assert cranks[-1].revs - cranks[1].revs == 2 * (len(cranks) - 2)
    bad = 0
    with serial.Serial(bike.port, 115200, timeout=0.1) as s:
        lines = whole_lines(s, lambda: bike.flip(2), lambda: bike.injected["flip"] == 2, 2)
    for line in lines:
        try:
            parse_line(line)
        except LineProtocolError:
            bad += 1
    assert bad == 2
    assert bike.injected["flip"] == 2


@pytest.mark.parametrize("sim_bike", [{"protocol": "peloton", "mode": "listen"}], indirect=True)
def test_flip_and_garbage_on_the_bus(sim_bike: SimBikeFactory) -> None:
    # Faults hit the next frames on the wire: arm them once the port is open (pyserial flushes on open).
    with serial.Serial(sim_bike.port, 19200, timeout=0.1) as s:
        s.read(64)
        sim_bike.flip(3)
        _, others = replies(read_open(s, 1.0))
        assert sum(isinstance(e, BadChecksum) for e in others) == 3
        sim_bike.garbage(2)
        _, others = replies(read_open(s, 1.0))
        assert sum(isinstance(e, SkippedBytes) for e in others) == 2
    assert sim_bike.injected == {"garbage": 2, "drop": 0, "truncate": 0, "flip": 3}


def test_unplug_and_replug(sim_bike: SimBikeFactory) -> None:
    path = sim_bike.port
    with serial.Serial(path, 19200, timeout=0.2) as s:
        assert s.read(64)
        sim_bike.unplug()
        with pytest.raises(serial.SerialException):
            for _ in range(20):
                s.read(64)
    assert not os.path.exists(path)
    sim_bike.replug()
    assert os.path.exists(path)
    frames, _ = replies(read_for(path, 0.5))
    assert frames


def test_same_seed_same_ride(sim_bike: SimBikeFactory) -> None:
    a, b, c = sim_bike(seed=3), sim_bike(seed=3), sim_bike(seed=4)
    assert [a.profile.at(t) for t in range(60)] == [b.profile.at(t) for t in range(60)]
    assert [a.profile.at(t) for t in range(60)] != [c.profile.at(t) for t in range(60)]


def test_unknown_protocol_is_one_clear_error(sim_bike: SimBikeFactory) -> None:
    with pytest.raises(ValueError, match="protocol='peloton' with mode='listen' or 'poll'"):
        sim_bike(protocol="ant+")
