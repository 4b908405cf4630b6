"""The heart-rate source end to end: bleak on the simulated radio, readings and states out."""

from __future__ import annotations

import asyncio
import itertools
import warnings
from contextlib import aclosing
from dataclasses import replace

import pytest
from bleak import BleakScanner
from bleak.exc import BleakDBusError, BleakError
from bumble.core import AdvertisingData

from adapters.ble.budget import ConnectionBudget, ConnectionBudgetExceeded
from adapters.ble.connect import BluezTooOld, NotAHeartRateDevice
from adapters.ble.factory import AdapterBudgetError, open_hr_sources
from adapters.ble.hrm import encode_hrm
from adapters.ble.scan import StrapNotFound, find_strap
from adapters.ble.shared_scanner import is_transient
from adapters.ble.sim import Simulation
from adapters.ble.sim.radio import new_node
from adapters.ble.sim.simulation import strap_address
from adapters.ble.source import BleHeartRateSource
from engine.readings import Contact, Kind, Reading, SourceState
from tests.support.ble import FAST, sim_source
from tests.support.sources import HANG_GUARD_S, Recorder, recording


def streaming(rec: Recorder, times: int = 1) -> bool:
    return rec.count_state(SourceState.STREAMING) >= times


async def test_connects_reads_location_and_battery_then_streams(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    strap.set_battery(64)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(lambda r: any(i.kind is Kind.BATTERY for i in r.readings))
        await strap.notify(72)
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
    states = [s.state for s in rec.states]
    assert states[:2] == [SourceState.CONNECTING, SourceState.STREAMING]
    kinds = {r.kind: r for r in rec.readings}
    assert kinds[Kind.BATTERY].value == 64
    assert kinds[Kind.BODY_LOCATION].extra["location"] == "chest"
    hr = kinds[Kind.HEART_RATE]
    assert (hr.value, hr.contact, hr.source) == (72.0, Contact.DETECTED, f"ble-hr:{strap.address}")
    assert [r.seq for r in rec.readings] == [1, 2, 3]


EDGE_CASES: list[tuple[str, bytes, dict[str, object]]] = [
    ("8-bit, no contact support", bytes.fromhex("00 48"), {"value": 72.0, "contact": Contact.UNSUPPORTED}),
    (
        "contact and one RR",
        bytes.fromhex("16 41 b1 03"),
        {"value": 65.0, "contact": Contact.DETECTED, "rr_s": (945 / 1024,)},
    ),
    (
        "16-bit 300 bpm with energy and two RR",
        bytes.fromhex("1f 2c 01 d2 04 c8 00 cd 00"),
        {"value": 300.0, "energy_kj": 1234, "rr_s": (200 / 1024, 205 / 1024)},
    ),
    ("16-bit format for a value below 256", bytes.fromhex("01 48 00"), {"value": 72.0}),
    (
        "many RR intervals (more than 20 bytes)",
        encode_hrm(58, contact=Contact.DETECTED, rr_raw=tuple(range(1000, 1015))),
        {"value": 58.0, "rr_s": tuple(r / 1024 for r in range(1000, 1015))},
    ),
    (
        "contact lost",
        encode_hrm(0, contact=Contact.NOT_DETECTED),
        {"value": None, "contact": Contact.NOT_DETECTED},
    ),
    (
        "contact lost but a stale number sent",
        encode_hrm(88, contact=Contact.NOT_DETECTED),
        {"value": None, "contact": Contact.NOT_DETECTED},
    ),
    (
        "zero bpm with contact supported and detected",
        encode_hrm(0, contact=Contact.DETECTED),
        {"value": None},
    ),
]


async def test_every_injected_edge_case_decodes(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        for n, (_, payload, _) in enumerate(EDGE_CASES, start=1):
            await strap.notify_raw(payload)
            await rec.until(lambda r, n=n: len(r.heart_rates()) == n)  # type: ignore[misc]
    for (label, payload, expected), reading in zip(EDGE_CASES, rec.heart_rates(), strict=True):
        for attr, want in expected.items():
            assert getattr(reading, attr) == want, f"{label} ({payload.hex(' ')}): {attr}"
    assert rec.count_state(SourceState.NO_CONTACT) == 1  # once per transition, not per payload


async def test_malformed_payloads_change_nothing(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await strap.notify(70)
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
        for torn in (b"", b"\x01\x48"):  # no whole heart rate
            await strap.notify_raw(torn)
        await strap.notify(71)
        await rec.until(lambda _: len(rec.heart_rates()) == 2)
    assert [r.value for r in rec.heart_rates()] == [70.0, 71.0]
    seqs = [r.seq for r in rec.readings]
    assert seqs == list(range(1, len(seqs) + 1)), "malformed payloads must not consume sequence numbers"
    assert source.stats.malformed == 2
    assert not any(s.state in (SourceState.LOST, SourceState.FAILED) for s in rec.states)


async def test_damaged_payloads_keep_the_heart_rate_and_count_the_defect(sim: Simulation) -> None:
    """An odd trailing byte, or the RR flag with no RR value, loses only what is damaged."""
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await strap.notify_raw(bytes.fromhex("10 48"))  # RR flagged, none sent
        await strap.notify_raw(bytes.fromhex("16 41 b1 03 07"))  # one RR and an odd byte
        await strap.notify_raw(bytes.fromhex("08 49 01"))  # energy flagged, one byte of it
        await strap.notify(75)
        await rec.until(lambda _: len(rec.heart_rates()) == 4)
    rates = rec.heart_rates()
    assert [r.value for r in rates] == [72.0, 65.0, 73.0, 75.0]
    assert [r.extra.get("defects") for r in rates] == [
        ["rr_flag_without_rr"],
        ["rr_odd_trailing_byte"],
        ["energy_truncated"],
        None,
    ]
    assert rates[1].rr_s == (945 / 1024,)
    assert (source.stats.payload_defects, source.stats.malformed) == (3, 0)
    assert not any(s.state in (SourceState.LOST, SourceState.FAILED) for s in rec.states)


async def test_a_notification_before_start_notify_returns_is_kept(sim: Simulation) -> None:
    """The strap notifies inside the CCCD write (as many real straps do); bleak delivers it before
    start_notify returns. It becomes the first heart rate, after the streaming state."""
    strap = await sim.add_strap()
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
    first = rec.heart_rates()[0]
    assert (first.value, first.seq) == (70.0, 1)
    assert source.stats.early_notifications == 1
    assert rec.items.index(first) > next(
        i for i, item in enumerate(rec.items) if getattr(item, "state", None) is SourceState.STREAMING
    )


async def test_streaming_reports_the_negotiated_mtu_without_bleak_warning(sim: Simulation) -> None:
    """BlueZ-like: mtu_size warns and says 23 until _acquire_mtu(); the source asks for the real one."""
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with recording(source) as rec:
            await rec.until(streaming)
    up = next(s for s in rec.states if s.state is SourceState.STREAMING)
    assert up.extra["mtu"] == 247


async def test_contact_lost_and_restored_are_states(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await strap.notify(80, contact=Contact.DETECTED)
        await strap.notify(80, contact=Contact.NOT_DETECTED)
        await strap.notify(81, contact=Contact.DETECTED)
        await rec.until(lambda _: len(rec.heart_rates()) == 3)
    details = [(s.state, s.detail) for s in rec.states]
    assert (SourceState.NO_CONTACT, "strap reports no skin contact") in details
    assert (SourceState.STREAMING, "contact restored") in details
    assert [r.value for r in rec.heart_rates()] == [80.0, None, 81.0]


async def test_silence_becomes_stale_with_its_start_time_then_recovers(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await strap.notify(75)
        await rec.until(lambda r: len(r.heart_rates()) == 1)
        first_t = rec.heart_rates()[0].t
        # (A slow machine may also report stale before the first measurement; that one started earlier.)
        await rec.until(lambda r: any(s.extra.get("stale_since") == first_t for s in r.states))
        await strap.notify(76)
        await rec.until(lambda r: len(r.heart_rates()) == 2 and r.states[-1].detail == "measurements resumed")
    stale = next(s for s in rec.states if s.extra.get("stale_since") == first_t)
    assert stale.state is SourceState.STALE
    assert stale.detail.startswith(f"stale since {first_t:.3f}")
    assert stale.t - first_t >= FAST.stale_after_s


async def test_range_loss_reconnects_and_resubscribes_without_duplicates(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        for hr in (70, 71, 72):
            await strap.notify(hr)
        await rec.until(lambda _: len(rec.heart_rates()) == 3)
        strap.walk_out_of_range()
        await strap.notify(99)  # lost in the air
        await rec.until(lambda _: rec.count_state(SourceState.LOST) == 1)
        # While away, reconnect attempts time out and back off; they must not pile up as parallel connects.
        await rec.until(lambda _: rec.count_state(SourceState.CONNECTING) >= 3)
        strap.walk_back()
        await rec.until(lambda _: streaming(rec, 2))
        for hr in (80, 81):
            await strap.notify(hr)
        await rec.until(lambda _: len(rec.heart_rates()) == 5)
        assert strap.connection_count == 1
    assert [r.value for r in rec.heart_rates()] == [70.0, 71.0, 72.0, 80.0, 81.0]
    seqs = [r.seq for r in rec.readings]
    assert seqs == sorted(set(seqs)), "sequence numbers are unique and increasing across the reconnect"
    lost = next(s for s in rec.states if s.state is SourceState.LOST)
    assert lost.extra["last_measurement_t"] == rec.heart_rates()[2].t
    backoffs = [s for s in rec.states if s.state is SourceState.BACKING_OFF]
    assert any("did not accept a connection within 1 s" in s.detail for s in backoffs)
    assert all(0 <= float(s.extra["retry_in_s"]) <= FAST.backoff.cap for s in backoffs)
    # States alternate: never two connects in flight (each CONNECTING is followed by an outcome).
    phases = [s.state for s in rec.states if s.state in (SourceState.CONNECTING, SourceState.BACKING_OFF)]
    assert all(a != b for a, b in itertools.pairwise(phases))


async def test_three_straps_at_once() -> None:
    async with open_hr_sources("sim:3", speed=20, supervision_timeout_s=0.3) as sources:
        assert sources.simulation is not None
        assert len(sources) == 3
        async with recording(sources[0]) as r0, recording(sources[1]) as r1, recording(sources[2]) as r2:
            for rec in (r0, r1, r2):
                await rec.until(lambda r: len(r.heart_rates()) >= 3)
    ids = {rec.heart_rates()[0].source for rec in (r0, r1, r2)}
    assert ids == {f"ble-hr:{s.address}" for s in sources.simulation.straps}
    for rec in (r0, r1, r2):
        assert all(r.value is not None and 40 <= r.value <= 200 for r in rec.heart_rates())
        assert all(r.rr_s for r in rec.heart_rates()[1:])


async def test_budget_exceeded_is_a_typed_error_up_front() -> None:
    with pytest.raises(AdapterBudgetError) as info:
        async with open_hr_sources("sim:3", slots=2):
            pytest.fail("opened three straps on a two-slot adapter")
    assert str(info.value) == (
        "3 simulated straps need 2 adapters (2 connection slots each), 1 given: use --hr sim:3@2"
    )
    with pytest.raises(AdapterBudgetError, match=r"5 straps need 3 adapters .* add --adapter hci0,hci1,hci2"):
        async with open_hr_sources("A,B,C,D,E", slots=2, adapters=["hci0"]):
            pytest.fail("opened five straps on a two-slot adapter")


async def test_straps_spread_over_simulated_adapters_within_their_slots() -> None:
    async with open_hr_sources("sim:5@2", slots=3, speed=20) as sources:
        assert sources.simulation is not None
        placed = [s.adapter.name for s in sources if isinstance(s, BleHeartRateSource)]
        assert sorted(placed) == ["sim0", "sim0", "sim0", "sim1", "sim1"]
        recorders = [Recorder(s) for s in sources]
        tasks = [asyncio.create_task(r.run()) for r in recorders]
        try:
            for r in recorders:
                r.task = tasks[recorders.index(r)]
                await r.until(lambda rec: len(rec.heart_rates()) >= 2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_budget_exceeded_when_a_source_starts(sim: Simulation) -> None:
    s1 = await sim.add_strap(notify_on_subscribe=False)
    s2 = await sim.add_strap(notify_on_subscribe=False)
    budget = ConnectionBudget("sim", 1)
    first = sim_source(sim, s1.address, budget)
    second = sim_source(sim, s2.address, budget)
    async with recording(first) as rec:
        await rec.until(streaming)
        with pytest.raises(ConnectionBudgetExceeded, match=r"1 connection slot\(s\), 1 in use"):
            async with asyncio.timeout(HANG_GUARD_S), aclosing(second.stream()) as stream:
                await anext(stream)
    assert budget.holders == ()


async def test_closing_the_stream_disconnects_and_frees_the_slot(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    budget = ConnectionBudget("sim", 1)
    source: BleHeartRateSource = sim_source(sim, strap.address, budget)
    async with recording(source) as rec:
        await rec.until(streaming)
        assert budget.holders == (source.source_id,)
    async with asyncio.timeout(HANG_GUARD_S):
        await strap.wait_idle()
    assert not budget.holders


async def test_a_source_restarts_with_a_new_client_and_continues_its_sequence(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as first:
        await first.until(streaming)
        await strap.notify(70)
        await first.until(lambda r: len(r.heart_rates()) == 1)
    async with recording(source) as second:
        await second.until(streaming)
        await strap.notify(71)
        await second.until(lambda r: len(r.heart_rates()) == 1)
    seqs = [r.seq for r in first.readings + second.readings]
    assert seqs == list(range(1, len(seqs) + 1))
    assert source.stats.connects == 2


async def test_three_straps_lose_range_together_and_all_come_back(sim: Simulation) -> None:
    straps = [await sim.add_strap(notify_on_subscribe=False) for _ in range(3)]
    sources = [sim_source(sim, s.address) for s in straps]
    async with recording(sources[0]) as r0, recording(sources[1]) as r1, recording(sources[2]) as r2:
        recs = (r0, r1, r2)
        for rec in recs:
            await rec.until(streaming)
        for strap in straps:
            strap.walk_out_of_range()
        for rec in recs:
            await rec.until(lambda r: r.count_state(SourceState.LOST) == 1)
        for strap in straps:
            strap.walk_back()
        # The one simulated adapter connects one strap at a time; every strap still gets back.
        for rec in recs:
            await rec.until(lambda r: streaming(r, 2))
        for i, strap in enumerate(straps):
            await strap.notify(100 + i)
        for i, rec in enumerate(recs):
            await rec.until(lambda r, i=i: [h.value for h in r.heart_rates()] == [100.0 + i])  # type: ignore[misc]
        assert all(s.connection_count == 1 for s in straps)


async def test_a_discovery_already_in_progress_is_waited_out_not_fatal(sim: Simulation) -> None:
    """Another scanner of this process holds the adapter's one discovery (BlueZ: InProgress) when the
    strap starts: the source retries and streams once it is free, instead of failing for good."""
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address, settings=replace(FAST, scan_timeout_s=5.0))
    other = BleakScanner(backend=sim.scanner_backend)
    await other.start()
    try:
        async with recording(source) as rec:
            await rec.until(lambda _: source.adapter.scanner().transient_refusals >= 2)
            await other.stop()
            await rec.until(streaming)
    finally:
        await other.stop()
    assert not any(s.state is SourceState.FAILED for s in rec.states)
    assert sim.central.discoveries_refused >= 2


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]), True),
        (BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]), True),
        (BleakError("adapter hci0 is powering up"), True),
        (BleakDBusError("org.bluez.Error.NotPermitted", ["Not permitted"]), False),
        (BleakError("Bluetooth adapter not found"), False),
    ],
)
def test_which_discovery_refusals_are_transient(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_a_strap_left_connected_by_a_crashed_run_is_recovered(sim: Simulation) -> None:
    """BlueZ keeps a connection when the process that made it dies, and the strap stops advertising.
    Named by address, the source closes that stale connection first (bleak-retry-connector's
    close_stale_connections_by_address on BlueZ), then finds and streams the strap."""
    strap = await sim.add_strap(notify_on_subscribe=False)
    await sim.strand(strap)
    assert sim.central.stranded_connection(strap.address)
    with pytest.raises(StrapNotFound):  # a plain scan cannot see it any more
        await find_strap(strap.address, 0.5, backend=sim.scanner_backend)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await strap.notify(77)
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
    assert not sim.central.stranded_connection(strap.address)
    assert not any(s.state is SourceState.FAILED for s in rec.states)


async def test_bluez_stale_recovery_uses_bleak_retry_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    import bleak_retry_connector
    from bleak.backends.device import BLEDevice

    from adapters.ble import adapter as adapter_module

    known = BLEDevice("AA:BB:CC:DD:EE:FF", "strap", {"path": "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF"})
    calls: list[str] = []

    async def get_device(address: str) -> BLEDevice:
        calls.append(f"get_device {address}")
        return known

    async def close_stale(address: str, only_other_adapters: bool = False) -> None:
        calls.append(f"close_stale {address}")

    monkeypatch.setattr(bleak_retry_connector, "get_device", get_device)
    monkeypatch.setattr(bleak_retry_connector, "close_stale_connections_by_address", close_stale)
    device = await adapter_module.bluez_recover_stale("AA:BB:CC:DD:EE:FF")
    assert device is known
    assert calls == ["get_device AA:BB:CC:DD:EE:FF", "close_stale AA:BB:CC:DD:EE:FF"]


async def test_bluez_older_than_5_55_is_fatal_with_the_fix(sim: Simulation) -> None:
    """bleak raises "Bleak requires BlueZ >= 5.55." on every connect there: retrying cannot help."""
    sim.central.bluez_version = (5, 53)
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    states: list[SourceState] = []
    with pytest.raises(BluezTooOld, match=r"upgrade the bluez package"):
        async with asyncio.timeout(HANG_GUARD_S), aclosing(source.stream()) as stream:
            async for item in stream:
                if not isinstance(item, Reading):
                    states.append(item.state)
    assert states == [SourceState.CONNECTING, SourceState.FAILED]


def test_hardware_timeouts_cover_service_discovery_and_have_one_home() -> None:
    """The connect cap covers BlueZ's pre-steps and service discovery: bleak-retry-connector's 20 s,
    not the 10 s that only fits the radio connect. GATT operations keep their own, shorter bound."""
    from bleak_retry_connector import BLEAK_TIMEOUT

    from adapters.ble import timeouts
    from adapters.ble.source import StrapSettings

    settings = StrapSettings()
    assert settings.connect_timeout_s == timeouts.HARDWARE_CONNECT_TIMEOUT_S == BLEAK_TIMEOUT
    assert settings.gatt_timeout_s == timeouts.GATT_TIMEOUT_S < settings.connect_timeout_s
    assert settings.scan_timeout_s == timeouts.SCAN_TIMEOUT_S


async def test_streaming_state_reports_how_long_the_connect_took(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    source = sim_source(sim, strap.address)
    async with recording(source) as rec:
        await rec.until(streaming)
    up = next(s for s in rec.states if s.state is SourceState.STREAMING)
    assert isinstance(up.extra["connect_s"], float) and up.extra["connect_s"] > 0


@pytest.mark.parametrize("by", ["name", "address"])
async def test_a_device_serving_heart_rate_without_advertising_it_is_found(sim: Simulation, by: str) -> None:
    """Some watches and bands serve 0x180D but advertise only their name: a named device is looked
    for without the service filter, and the service is checked after connecting."""
    watch = await sim.add_strap(name="Mi Band 7", notify_on_subscribe=False, advertise_heart_rate=False)
    source = sim_source(sim, watch.name if by == "name" else watch.address)
    async with recording(source) as rec:
        await rec.until(streaming)
        await watch.notify(64)
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
    assert rec.heart_rates()[0].value == 64.0


async def test_a_named_device_without_heart_rate_is_a_clear_error(sim: Simulation) -> None:
    sensor, _ = await new_node(sim.link, "cadence", "F0:52:53:43:00:01")
    sensor.advertising_data = bytes(AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, b"cadence-1")]))
    await sensor.start_advertising(advertising_interval_min=50.0, advertising_interval_max=50.0)
    source = sim_source(sim, "cadence-1")
    states: list[SourceState] = []
    with pytest.raises(NotAHeartRateDevice, match=r"serves no Heart Rate service \(0x180D\)"):
        async with asyncio.timeout(HANG_GUARD_S), aclosing(source.stream()) as stream:
            async for item in stream:
                if not isinstance(item, Reading):
                    states.append(item.state)
    assert states == [SourceState.CONNECTING, SourceState.FAILED]


async def test_a_strap_that_rotates_its_address_is_found_again_by_name(sim: Simulation) -> None:
    phone = await sim.add_strap(name="Pixel Watch HR", notify_on_subscribe=False)
    source = sim_source(sim, phone.name)
    async with recording(source) as rec:
        await rec.until(streaming)
        phone.walk_out_of_range()
        await rec.until(lambda r: r.count_state(SourceState.LOST) == 1)
        await phone.wait_idle()
        phone.walk_back()
        await phone.rotate_address("F0:52:53:99:00:07")
        await rec.until(lambda r: streaming(r, 2))
        await phone.notify(66)
        await rec.until(lambda _: len(rec.heart_rates()) == 1)
    ups = [s for s in rec.states if s.state is SourceState.STREAMING]
    assert [u.extra["address"] for u in ups] == [strap_address(1), "F0:52:53:99:00:07"]
