"""Listen mode through real pyserial on ptys: a simulated running bus, one or two ports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.serial.peloton import CalibrationTable
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION
from adapters.serial.peloton_listen import PelotonListenSource
from adapters.serial.port_source import PortSource
from adapters.serial.sim.bus import BusEmitter, SentValue
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from engine.cli.main import main
from engine.readings import Kind, Reading, SourceState
from tests.support.serial import FAST, Collector, wait_open

Collect = Callable[[PortSource], Collector]
Ptys = Callable[[str], PtyPort]


def as_sent(readings: list[Reading]) -> list[SentValue]:
    return [SentValue(r.kind, r.value) for r in readings if r.value is not None]


async def play(emitter: BusEmitter, collector: Collector) -> None:
    """Run the emitter to the end, then wait until the source has decoded every value it sent."""
    await emitter.run()
    await collector.wait_for(lambda c: len(c.readings) >= len(emitter.sent), "all values")


async def test_values_equal_what_the_bus_carried_with_calibrated_percent(
    pty_factory: Ptys, collect: Collect
) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    # a capture of both lines while the tablet boots: the table crosses the bus
    emitter = BusEmitter(port, profile=RideProfile.generated(30, seed=3), speed=10, lines="both", boot=True)
    await play(emitter, c)
    assert as_sent(c.readings) == emitter.sent
    assert len(emitter.sent) == 300  # 30 s of bus time, one value per 100 ms
    table = CalibrationTable(DEFAULT_CALIBRATION)
    for r in c.readings:
        assert r.source == "bike"
        if r.kind is Kind.RESISTANCE:
            assert r.value is not None
            assert r.pct == table.percent(int(r.value))
    assert [r.seq for r in c.readings] == list(range(1, 301))
    assert source.summary()["bytes_skipped"] == 0
    assert c.states()[:2] == [SourceState.CONNECTING, SourceState.STREAMING]


async def test_two_port_tap(pty_factory: Ptys, collect: Collect) -> None:
    hu, bike = pty_factory("hu"), pty_factory("bike")
    source = PelotonListenSource([hu.path, bike.path], source_id="tap", **FAST)
    c = collect(source)
    await wait_open(source)
    emitter = BusEmitter(hu, bike, profile=RideProfile.generated(20, seed=4), speed=10, boot=True)
    await play(emitter, c)
    assert as_sent(c.readings) == emitter.sent
    s = source.summary()
    # startup, bike id, 31 calibration requests, the ride's polls
    assert s["requests_ok"] == emitter.requests
    assert s["calibration_entries"] == 31
    # the calibration replies, read from the other port, still met the requests before them
    assert any(r.pct is not None for r in c.readings)


async def test_listen_mode_and_decode_cli_give_identical_readings(
    pty_factory: Ptys, collect: Collect, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    faults = Faults(garbage=5, flip=5, truncate=5, spacing=4, seed=11)
    emitter = BusEmitter(
        port, profile=RideProfile.generated(20, seed=5), speed=10, faults=faults, lines="both", boot=True
    )
    await play(emitter, c)
    capture = tmp_path / "bus.bin"
    capture.write_bytes(bytes(emitter.wire))
    assert main(["decode", "peloton", str(capture)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    decoded = [
        (x["kind"], x["value"], x.get("pct"))
        for x in lines
        if x.get("kind") in ("cadence", "power", "resistance")
    ]
    live = [(r.kind.value, r.value, r.pct) for r in c.readings]
    assert live == decoded
    summary = lines[-1]["summary"]
    assert summary["frames_bad_checksum"] == source.summary()["frames_bad_checksum"] == 5


async def test_each_fault_is_survived_with_exact_counts(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    faults = Faults(
        garbage=6, drop=4, truncate=7, flip=8, spacing=4, seed=2
    )  # odd period: hits both directions
    emitter = BusEmitter(
        port, profile=RideProfile.generated(30, seed=6), speed=15, faults=faults, table=None, lines="both"
    )
    await play(emitter, c)
    assert faults.injected == {"garbage": 6, "drop": 4, "truncate": 7, "flip": 8}
    assert as_sent(c.readings) == emitter.sent
    s = source.summary()
    assert s["frames_bad_checksum"] == 8
    assert s["frames_truncated"] == 7
    assert s["frames_malformed"] == 0
    assert s["bytes_skipped"] == faults.garbage_bytes + faults.damaged_bytes
    assert len(emitter.sent) < 300  # faults did hit replies


async def test_silent_bus_is_reported_stale_then_streaming_again(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", stale_after_s=0.3, idle_flush_s=0.1, **FAST)
    c = collect(source)
    await wait_open(source)
    first = BusEmitter(port, profile=RideProfile.generated(3), speed=10, table=None)
    await play(first, c)
    stale = await c.wait_state(SourceState.STALE)
    assert stale.detail == "no frames on the bus"
    n = len(c.events)
    await play(BusEmitter(port, profile=RideProfile.generated(3), speed=10, table=None), c)
    await c.wait_state(SourceState.STREAMING, after=n)


async def test_unplug_and_replug_recovers_without_restart(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    await play(BusEmitter(port, profile=RideProfile.generated(2), speed=10, table=None), c)
    before = len(c.readings)
    port.unplug()
    lost = await c.wait_state(SourceState.LOST)
    assert lost.extra["port"] == port.path
    await c.wait_state(SourceState.BACKING_OFF, after=c.events.index(lost))
    port.plug()
    await wait_open(source)
    n = len(c.events)
    second = BusEmitter(port, profile=RideProfile.generated(2), speed=10, table=None)
    await second.run()
    await c.wait_for(lambda c: len(c.readings) >= before + len(second.sent), "readings after replug")
    await c.wait_state(SourceState.STREAMING, after=n)
    assert as_sent(c.readings[before:]) == second.sent
    seqs = [r.seq for r in c.readings]
    assert seqs == list(range(1, len(seqs) + 1))  # seq continues across the reconnect
    assert source.counters["port_losses"] == 1
    assert source.counters["opens"] == 2


async def test_port_that_never_existed_backs_off_without_crashing(tmp_path: Path, collect: Collect) -> None:
    source = PelotonListenSource([str(tmp_path / "nothing")], source_id="ghost", **FAST)
    c = collect(source)
    await c.wait_for(lambda c: c.states().count(SourceState.BACKING_OFF) >= 3, "three backoffs")
    delays = [e.extra["retry_in_s"] for e in c.events if e.state is SourceState.BACKING_OFF]
    assert all(d >= 0.05 / 4 for d in delays)  # never a zero delay: no busy loop
    assert source.counters["open_failures"] >= 3
    assert c.readings == []


@pytest.mark.slow
async def test_thirty_minute_profile_at_speed_600_arrives_complete_in_order_without_duplicates(
    pty_factory: Ptys, collect: Collect
) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    # 600x: 18,000 frames in 3 s of wall time, a harder pace for the reader than a real bus's.
    emitter = BusEmitter(
        port, profile=RideProfile.generated(1800, seed=9), speed=600, lines="both", boot=True
    )
    async with asyncio.timeout(300):
        await play(emitter, c)
    assert len(emitter.sent) == 18000
    assert port.bytes_dropped == 0
    assert as_sent(c.readings) == emitter.sent  # every sample, in order
    assert [r.seq for r in c.readings] == list(range(1, 18001))  # none duplicated, none missing
    t = [r.t for r in c.readings]
    assert t == sorted(t)
