"""The BLE bike source end to end: bleak on the simulated radio, simulated FTMS/CPS/CSC bikes (bumble
peripherals), readings and states out, sharing the strap's adapter."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from adapters.ble.adapter import BleAdapter
from adapters.ble.bike_factory import open_bike_sources
from adapters.ble.bike_source import BleBikeSource
from adapters.ble.budget import ConnectionBudget, ConnectionBudgetExceeded
from adapters.ble.connect import NotABike
from adapters.ble.factory import AdapterBudgetError
from adapters.ble.link_source import StrapSettings
from adapters.ble.sim import Simulation
from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim.profile import RideProfile
from engine.readings import Kind, SourceState

from .conftest import FAST, Recorder, recording, sim_source


def bike(
    sim: Simulation, address: str, settings: StrapSettings = FAST, battery_every_s: float = 300.0
) -> BleBikeSource:
    adapter = sim.adapters[0].ble_adapter()
    return BleBikeSource(address, adapter=adapter, settings=settings, battery_every_s=battery_every_s)


def kinds(rec: Recorder, kind: Kind) -> list[float]:
    return [r.value for r in rec.readings if r.kind is kind and r.value is not None]


def streaming(rec: Recorder, times: int = 1) -> bool:
    return rec.count_state(SourceState.STREAMING) >= times


STEADY = RideProfile((BikeSample(90, 200.0, 600),) * 30)


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("ftms", {Kind.CADENCE, Kind.POWER, Kind.SPEED, Kind.RESISTANCE}),
        ("cps", {Kind.CADENCE, Kind.POWER, Kind.SPEED}),
        ("csc", {Kind.CADENCE, Kind.SPEED}),
    ],
)
async def test_each_kind_streams_its_values_with_device_information(
    sim: Simulation, kind: str, expect: set[Kind]
) -> None:
    sim_bike = await sim.add_bike(kind)
    source = bike(sim, sim_bike.address)
    player = asyncio.create_task(sim_bike.play(STEADY, speed=20))
    try:
        async with recording(source) as rec:
            await rec.until(lambda r: len(kinds(r, Kind.CADENCE)) >= 3)
    finally:
        player.cancel()
    first = next(s for s in rec.states if s.state is SourceState.STREAMING)
    assert first.extra["service"] == kind
    manufacturer, model, firmware = {
        "ftms": ("ridesync", "sim-trainer FTMS", "1.0.0"),
        "cps": ("ridesync", "sim-powermeter CPS", "2.1.3"),
        "csc": ("ridesync", "sim-pod CSC", "0.9.1"),
    }[kind]
    info = {"manufacturer": manufacturer, "model": model, "firmware": firmware}
    assert first.extra["device_info"] == info == source.device_info
    assert first.to_json()["device_info"] == info
    measured = {r.kind for r in rec.readings} - {Kind.BATTERY}
    assert measured == expect, rec.items
    assert all(abs(c - 90) <= 3 for c in kinds(rec, Kind.CADENCE)), rec.items
    assert all(p == 200.0 for p in kinds(rec, Kind.POWER)), rec.items
    assert kinds(rec, Kind.BATTERY)[0] == 91.0
    assert [r.seq for r in rec.readings] == list(range(1, len(rec.readings) + 1))
    assert all(r.source == f"ble-bike:{sim_bike.address}" for r in rec.readings)


async def test_battery_notified_where_the_device_notifies_it(sim: Simulation) -> None:
    pod = await sim.add_bike("csc")
    source = bike(sim, pod.address)
    async with recording(source) as rec:
        await rec.until(lambda r: kinds(r, Kind.BATTERY) == [91.0])
        await pod.set_battery(55)
        await rec.until(lambda r: kinds(r, Kind.BATTERY) == [91.0, 55.0])


async def test_battery_re_read_where_the_device_does_not_notify_it(sim: Simulation) -> None:
    trainer = await sim.add_bike("ftms")
    assert not trainer.battery_notifies
    source = bike(sim, trainer.address, battery_every_s=0.2)
    async with recording(source) as rec:
        await rec.until(lambda r: kinds(r, Kind.BATTERY) == [91.0])
        await trainer.set_battery(40)  # no notification: only a later read sees it
        await rec.until(lambda r: 40.0 in kinds(r, Kind.BATTERY))


async def test_link_loss_reconnects_and_the_seq_never_restarts(sim: Simulation) -> None:
    pm = await sim.add_bike("cps")
    source = bike(sim, pm.address)
    player = asyncio.create_task(pm.play(STEADY, speed=20))
    try:
        async with recording(source) as rec:
            await rec.until(lambda r: len(kinds(r, Kind.POWER)) >= 2)
            pm.walk_out_of_range()
            await rec.until(lambda r: r.count_state(SourceState.LOST) == 1)
            pm.walk_back()
            await rec.until(lambda r: streaming(r, 2))
            seen = len(rec.readings)
            await rec.until(lambda r: len(kinds(r, Kind.POWER)[seen:]) >= 2 and len(r.readings) > seen + 2)
    finally:
        player.cancel()
    states = [s.state for s in rec.states]
    assert states[states.index(SourceState.LOST) + 1] is SourceState.BACKING_OFF
    seqs = [r.seq for r in rec.readings]
    assert seqs == list(range(1, len(seqs) + 1))
    lost = next(s for s in rec.states if s.state is SourceState.LOST)
    assert lost.extra["last_measurement_t"] is not None


async def test_a_silent_bike_goes_stale(sim: Simulation) -> None:
    trainer = await sim.add_bike("ftms")
    source = bike(sim, trainer.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await trainer.notify_raw(bytes.fromhex("45 00 b4 00 c8 00"))  # 90 rpm, 200 W
        await rec.until(lambda r: r.count_state(SourceState.STALE) == 1)
        await trainer.notify_raw(bytes.fromhex("45 00 b4 00 c8 00"))
        await rec.until(lambda r: streaming(r, 2))
    assert kinds(rec, Kind.POWER) == [200.0, 200.0]


async def test_hostile_bytes_on_the_radio_take_no_seq(sim: Simulation) -> None:
    pod = await sim.add_bike("csc")
    source = bike(sim, pod.address)
    async with recording(source) as rec:
        await rec.until(lambda r: kinds(r, Kind.BATTERY) == [91.0])
        for payload in ("", "03 01", "fc", "01 01 00 00 00 00 00 ff"):
            await pod.notify_raw(bytes.fromhex(payload))
        await pod.notify_raw(bytes.fromhex("02 0a 00 00 04"))  # crank only: 10 revs at 1.0 s
        await pod.notify_raw(bytes.fromhex("02 0b 00 aa 06"))  # 1 rev in 0.666 s: 90 rpm
        await rec.until(lambda r: len(kinds(r, Kind.CADENCE)) == 1)
    assert source.stats.malformed == 4
    assert kinds(rec, Kind.CADENCE) == [pytest.approx(90.1, abs=0.1)]
    assert [r.seq for r in rec.readings] == [1, 2]


async def test_a_strap_named_as_a_bike_is_refused_for_good(sim: Simulation) -> None:
    strap = await sim.add_strap()
    source = bike(sim, strap.address)
    with pytest.raises(NotABike, match="serves no bike service"):
        async for _ in source.stream():
            pass
    assert source.stats.connects == 0


async def test_bikes_and_straps_share_the_adapters_slots(sim: Simulation) -> None:
    strap = await sim.add_strap()
    trainer = await sim.add_bike("ftms")
    pod = await sim.add_bike("csc")
    shared = ConnectionBudget("sim", 2)
    adapter = BleAdapter(
        "sim",
        shared,
        scanner_backend=sim.scanner_backend,
        client_backend=sim.client_backend,
        recover=sim.adapters[0].recover_stale,
    )
    hr = sim_source(sim, strap.address, budget=shared)
    one = BleBikeSource(trainer.address, adapter=adapter, settings=FAST)
    two = BleBikeSource(pod.address, adapter=adapter, settings=FAST)
    async with recording(hr) as hr_rec, recording(one) as one_rec:
        await hr_rec.until(streaming)
        await one_rec.until(streaming)
        with pytest.raises(ConnectionBudgetExceeded, match=r"2 connection slot\(s\), 2 in use"):
            async for _ in two.stream():
                pass


async def test_simulated_bikes_join_the_straps_radio_and_adapter() -> None:
    sim = await Simulation.start()
    try:
        await sim.add_strap()
        sim.adapters[0].ble_adapter(slots=4)
        async with open_bike_sources("sim:3", speed=20, settings=FAST, simulation=sim) as bikes:
            assert bikes.simulation is sim and [b.kind for b in sim.bikes] == ["ftms", "cps", "csc"]
            recs = [Recorder(b) for b in bikes]
            for rec in recs:
                rec.task = asyncio.create_task(rec.run())
            try:
                for rec in recs:
                    await rec.until(lambda r: len(kinds(r, Kind.CADENCE)) >= 2)
            finally:
                for rec in recs:
                    assert rec.task is not None
                    rec.task.cancel()
                await asyncio.gather(*(r.task for r in recs if r.task), return_exceptions=True)
        with pytest.raises(AdapterBudgetError, match="need 5 connection slots, it has 4"):
            async with open_bike_sources("sim:1", simulation=sim):
                pass
    finally:
        await sim.close()


async def test_a_bike_that_does_not_advertise_is_retried_with_a_bike_hint(sim: Simulation) -> None:
    source = bike(sim, "KICKR CORE 0000", settings=replace(FAST, scan_timeout_s=0.3))
    async with recording(source) as rec:
        await rec.until(lambda r: r.count_state(SourceState.BACKING_OFF) >= 1)
    detail = next(s.detail for s in rec.states if s.state is SourceState.BACKING_OFF)
    assert "no bike matching 'KICKR CORE 0000' advertised within 0.3 s" in detail
    assert "pedal to wake it" in detail
