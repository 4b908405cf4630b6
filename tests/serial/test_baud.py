"""The DIY sensor's baud rate: a pty has no baud, so the simulator reads the speed the reader set on its
end (termios, through the master) and sends what a UART at that speed would receive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.factory import open_serial_sources
from adapters.serial.line_protocol import LineError, LineParser, encode_record
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.pty_port import PtyPort
from adapters.serial.sim.uart import resample
from engine.cli.main import main
from engine.readings import SourceState
from tests.support.serial import FAST, Collector

RATES = (9600, 19200, 38400, 57600, 115200, 230400)


def test_the_pty_master_shows_the_speed_the_reader_set(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "ttyACM0")
    port.plug()
    try:
        with serial.Serial(port.path, 57600):
            assert port.reader_baud() == 57600
        with serial.Serial(port.path, 9600) as ser:
            assert port.reader_baud() == 9600
            ser.baudrate = 115200
            assert port.reader_baud() == 115200
    finally:
        port.close()
    assert port.reader_baud() is None


@given(st.binary(max_size=80), st.sampled_from(RATES))
def test_same_speed_is_transparent(data: bytes, rate: int) -> None:
    assert resample(data, rate, rate) == data


@given(
    st.tuples(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535)),
    st.sampled_from(RATES),
    st.sampled_from(RATES),
)
def test_another_speed_never_yields_a_good_line(
    record: tuple[int, int, int, int], sender: int, receiver: int
) -> None:
    if sender == receiver:
        return
    parser = LineParser()
    lines = encode_record(*record) * 4
    out = parser.feed(resample(lines, sender, receiver)) + parser.flush()
    assert all(isinstance(x, LineError) for x in out)


@pytest.mark.parametrize(("sensor", "reader"), [(115200, 9600), (9600, 115200), (115200, 57600)])
async def test_reader_at_another_baud_gets_no_reading_and_is_told_to_check_baud(
    sensor: int, reader: int
) -> None:
    async with open_serial_sources(
        "sim", protocol="line", speed=10, baud=reader, sim_baud=sensor, source_options=FAST
    ) as sources:
        c = Collector(sources[0])
        c.start()
        try:
            await c.wait_for(lambda c: SourceState.STALE in c.states(), "a stale state")
        finally:
            await c.stop()
        device = sources.simulators[0].device
        assert isinstance(device, LineSensor) and device.lines_garbled > 0
    stale = next(e for e in c.events if e.state is SourceState.STALE)
    assert stale.detail.endswith(f"and no good one at {reader} baud: check --baud"), stale.detail
    assert stale.extra["baud"] == reader
    assert c.readings == []


async def test_a_sensor_at_a_non_default_baud_streams_when_told() -> None:
    async with open_serial_sources(
        "sim", protocol="line", speed=10, baud=9600, source_options=FAST
    ) as sources:
        assert sources[0].baudrate == 9600
        c = Collector(sources[0])
        c.start()
        try:
            await c.wait_for(lambda c: len(c.readings) >= 3, "readings at 9600")
        finally:
            await c.stop()
        device = sources.simulators[0].device
        assert isinstance(device, LineSensor) and device.lines_garbled == 0
    assert SourceState.STALE not in c.states()


def test_sensors_cli_says_check_baud(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sensors", "--serial", "sim", "--protocol", "line", "--duration", "5", "--speed", "10"]
    assert main([*argv, "--baud", "9600", "--sim-baud", "115200"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    states = [x for x in lines if x.get("kind") == "state" and x["state"] == "stale"]
    assert states and states[0]["detail"].endswith("no good one at 9600 baud: check --baud")
    assert not [x for x in lines if x.get("kind") == "cadence"]
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main([*argv, "--baud", "0"])
    assert refused.value.code == 2
