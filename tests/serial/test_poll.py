"""Poll mode through real pyserial on ptys: the adapter is the head unit, the simulator is the bike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from adapters.serial.peloton import CalibrationTable
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION
from adapters.serial.peloton_poll import PelotonPollSource
from adapters.serial.port_source import PortSource
from adapters.serial.sim.bike import BikeSimulator
from adapters.serial.sim.bus import SentValue
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from engine.readings import Kind, Reading, SourceState
from tests.support.serial import FAST, Collector

Collect = Callable[[PortSource], Collector]
Ptys = Callable[[str], PtyPort]
# Generous reply timeout: a loaded CI machine can be slow to schedule the simulator; still < interval.
POLL: dict[str, Any] = {"interval_s": 0.05, "reply_timeout_s": 0.045, **FAST}


def as_sent(readings: list[Reading]) -> list[SentValue]:
    return [SentValue(r.kind, r.value) for r in readings if r.value is not None]


def start_bike(bike: BikeSimulator, tasks: list[asyncio.Task[None]]) -> None:
    tasks.append(asyncio.create_task(bike.run()))


async def test_reads_calibration_then_polls_values_equal_to_what_the_bike_sent(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600, seed=1), speed=20)
    start_bike(bike, tasks)
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_for(lambda c: len(c.readings) >= 30, "30 readings")
    await c.stop()
    assert bike.calibration_replies >= 31  # more only if a slow moment forced a retry
    assert source.decoder.calibration == CalibrationTable(DEFAULT_CALIBRATION)
    # Every value the bike sent is reported, in order; the last reply may still have been in flight.
    sent = bike.sent[: len(c.readings)]
    assert as_sent(c.readings) == sent
    if source.poll_counters["timeouts"] == 0:  # a retry on a loaded machine would repeat a command
        kinds = [r.kind for r in c.readings[:6]]
        assert kinds == [Kind.CADENCE, Kind.POWER, Kind.RESISTANCE] * 2  # polled in turn
    resistance = [r for r in c.readings if r.kind is Kind.RESISTANCE]
    assert all(r.pct is not None for r in resistance)


async def test_silent_bike_times_out_is_retried_reported_and_recovers(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600), speed=5)
    start_bike(bike, tasks)
    source = PelotonPollSource(port.path, source_id="bike", stale_after=3, retries=2, **POLL)
    c = collect(source)
    await c.wait_for(lambda c: len(c.readings) >= 6, "first readings")
    bike.faults.silent = True
    stale = await c.wait_state(SourceState.STALE)
    assert stale.detail == "bike not answering: 3 requests without a reply"
    assert source.poll_counters["timeouts"] >= 3
    assert source.poll_counters["retries"] >= 2
    n_events, n_readings = len(c.events), len(c.readings)
    bike.faults.silent = False
    await c.wait_state(SourceState.STREAMING, after=n_events)
    await c.wait_for(lambda c: len(c.readings) >= n_readings + 6, "readings after the bike is back")
    assert source.poll_counters["stale_reports"] == 1
    assert as_sent(c.readings) == bike.sent[: len(c.readings)]


async def test_bike_silent_from_the_start_then_calibrates_when_it_answers(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600), speed=5, faults=Faults(silent=True))
    start_bike(bike, tasks)
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_state(SourceState.STALE)
    assert source.decoder.calibration is None
    bike.faults.silent = False
    await c.wait_for(lambda c: any(r.pct is not None for r in c.readings), "a calibrated resistance")
    assert source.decoder.calibration == CalibrationTable(DEFAULT_CALIBRATION)


async def test_corrupted_replies_are_survived_and_counted(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    faults = Faults(seed=3)
    bike = BikeSimulator(port, profile=RideProfile.generated(600), speed=5, faults=faults)
    start_bike(bike, tasks)
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_for(lambda c: len(c.readings) >= 3, "calibrated and polling")
    faults.spacing = 1
    faults.flip, faults.truncate, faults.garbage = 4, 3, 5
    await c.wait_for(lambda c: not faults.armed and len(c.readings) >= 40, "faults played out")
    await c.stop()
    assert faults.injected == {"garbage": 5, "drop": 0, "truncate": 3, "flip": 4}
    s = source.summary()
    assert s["frames_bad_checksum"] == 4
    assert s["frames_truncated"] == 3
    assert as_sent(c.readings) == bike.sent[: len(c.readings)]
    assert s["timeouts"] >= 7  # every corrupted reply left its request unanswered


async def test_unplug_and_replug_recovers_without_restart(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600), speed=5)
    start_bike(bike, tasks)
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_for(lambda c: len(c.readings) >= 6, "first readings")
    port.unplug()
    await c.wait_state(SourceState.LOST)
    n_readings = len(c.readings)
    port.plug()
    await c.wait_for(lambda c: len(c.readings) >= n_readings + 6, "readings after replug")
    assert source.counters["port_losses"] == 1
    assert source.poll_counters["calibrations"] == 2  # re-read at the new connection, as a head unit does
    seqs = [r.seq for r in c.readings]
    assert seqs == list(range(1, len(seqs) + 1))
