"""Line mode through real pyserial on ptys: a simulated DIY cadence sensor."""

from __future__ import annotations

from collections.abc import Callable

from adapters.serial.cadence import CrankCadence
from adapters.serial.line_protocol import CrankRecord
from adapters.serial.line_source import LineSource
from adapters.serial.port_source import PortSource
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from engine.readings import Kind, Reading, SourceState
from tests.support.serial import FAST, Collector, wait_open

Collect = Callable[[PortSource], Collector]
Ptys = Callable[[str], PtyPort]


def expected_rpm(records: list[CrankRecord]) -> list[float]:
    cad = CrankCadence()
    return [u.rpm for u in (cad.on_record(r) for r in records) if u is not None]


def rpms(readings: list[Reading]) -> list[float]:
    return [r.value for r in readings if r.value is not None]


async def run_sensor(sensor: LineSensor, c: Collector, n_expected: int) -> None:
    await sensor.run()
    await c.wait_for(lambda c: len(c.readings) >= n_expected, f"{n_expected} cadence readings")


async def test_cadence_equals_what_the_sensor_sent(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("reed")
    source = LineSource(port.path, source_id="reed", **FAST)
    c = collect(source)
    await wait_open(source)
    profile = RideProfile.generated(120, seed=2)
    sensor = LineSensor(
        port, profile=profile, speed=40, device_id="reed-7", start_ticks=60000, start_revs=65500
    )
    exp = expected_rpm([r for _, r in sensor.records()])
    await run_sensor(sensor, c, len(exp))
    assert rpms(c.readings) == exp
    assert all(r.kind is Kind.CADENCE for r in c.readings)
    assert source.device is not None and source.device.device_id == "reed-7"
    # the sensor's counters rolled over during the ride and nothing noticed
    assert source.summary()["resyncs"] == 0
    assert any(r.extra["revs"] < 100 for r in c.readings)
    # and the cadence follows the profile
    assert abs(c.readings[-1].value - profile.at(120).cadence) < 6  # type: ignore[operator]


async def test_stopping_is_reported_as_zero_with_stopped(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("reed")
    source = LineSource(port.path, source_id="reed", **FAST)
    c = collect(source)
    await wait_open(source)
    samples = RideProfile.generated(10).samples + tuple(
        s.__class__(0, 0.0, s.resistance_raw) for s in RideProfile.generated(8).samples
    )
    sensor = LineSensor(port, profile=RideProfile(samples), speed=20)
    exp = expected_rpm([r for _, r in sensor.records()])
    await run_sensor(sensor, c, len(exp))
    last = c.readings[-1]
    assert last.value == 0.0
    assert last.extra["stopped"] is True
    assert any(r.extra["held"] for r in c.readings)  # between the last revolution and the stop timeout


async def test_faults_are_survived_and_counted(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("reed")
    source = LineSource(port.path, source_id="reed", **FAST)
    c = collect(source)
    await wait_open(source)
    faults = Faults(garbage=4, drop=5, truncate=3, flip=6, spacing=2, seed=8)
    sensor = LineSensor(port, profile=RideProfile.generated(90, seed=3), speed=40, faults=faults)
    await sensor.run()
    exp = expected_rpm(sensor.sent)
    await c.wait_for(lambda c: len(c.readings) >= len(exp), "all cadence readings")
    assert rpms(c.readings) == exp
    s = source.summary()
    assert faults.injected == {"garbage": 4, "drop": 5, "truncate": 3, "flip": 6}
    # Each flip is caught by the CRC or, if it made a byte the grammar refuses, as malformed; each cut
    # line and each run of noise is one malformed line. Nothing is counted twice, nothing is missed.
    assert s["lines_bad_checksum"] >= 1
    assert s["lines_bad_checksum"] + s["lines_malformed"] == 6 + 3 + 4
    # every record that did not arrive whole is a gap in seq (identity lines carry no seq)
    assert s["lines_lost"] == len(sensor.records()) - len(sensor.sent)
    assert s["lines_lost"] >= 5


async def test_unplug_and_replug_recovers(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("reed")
    source = LineSource(port.path, source_id="reed", stale_after_s=0.5, **FAST)
    c = collect(source)
    await wait_open(source)
    first = LineSensor(port, profile=RideProfile.generated(20), speed=40)
    await run_sensor(first, c, len(expected_rpm(first.sent)) or 1)
    stale = await c.wait_state(SourceState.STALE)  # the sensor went quiet: a state, not a frozen number
    assert stale.detail == "no record for 0.5 s"
    port.unplug()
    await c.wait_state(SourceState.LOST)
    port.plug()
    await wait_open(source)
    before = len(c.readings)
    second = LineSensor(port, profile=RideProfile.generated(20, seed=5), speed=40)
    await second.run()
    exp = expected_rpm(second.sent)
    await c.wait_for(lambda c: len(c.readings) >= before + len(exp), "readings after replug")
    assert rpms(c.readings[before:]) == exp
    assert source.counters["port_losses"] == 1
