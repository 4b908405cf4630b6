"""Real bleak code (BleakScanner, BleakClient, bleak-retry-connector) against the simulated radio."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDBusError, BleakError
from bumble import hci
from bumble.core import AdvertisingData
from bumble.device import LegacyAdvertisement

from adapters.ble.connect import StrapConnectTimeout, connect_strap
from adapters.ble.hrm import (
    BATTERY_LEVEL_UUID,
    BATTERY_SERVICE_UUID,
    BODY_SENSOR_LOCATION_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    BodySensorLocation,
    parse_hrm,
)
from adapters.ble.scan import StrapNotFound, find_strap, scan_straps
from adapters.ble.sim import Simulation
from adapters.ble.sim.radio import new_node
from engine.readings import Contact
from tests.support.sources import HANG_GUARD_S

CADENCE_SENSOR = "F0:52:53:43:00:01"


async def add_cadence_sensor(sim: Simulation) -> None:
    """A peripheral that is not a heart-rate strap: advertises Cycling Speed and Cadence (0x1816)."""
    device, _ = await new_node(sim.link, "cadence", CADENCE_SENSOR)
    device.advertising_data = bytes(
        AdvertisingData(
            [
                (AdvertisingData.COMPLETE_LOCAL_NAME, b"cadence-1"),
                (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes.fromhex("1618")),
            ]
        )
    )
    await device.start_advertising(advertising_interval_min=50.0, advertising_interval_max=50.0)


async def test_discovery_filters_on_heart_rate_service(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    await add_cadence_sensor(sim)
    heard: dict[str, int] = {}
    enough = asyncio.Event()

    def count(device: BLEDevice, _adv: AdvertisementData) -> None:
        heard[device.address] = heard.get(device.address, 0) + 1
        if min(heard.get(a, 0) for a in (strap.address, CADENCE_SENSOR)) >= 3:
            enough.set()

    unfiltered = BleakScanner(count, backend=sim.scanner_backend)
    async with asyncio.timeout(HANG_GUARD_S), unfiltered:
        await enough.wait()
    # One discovery at a time, as on BlueZ: the filtered scan runs after. Both nodes advertise at the
    # same interval, so by the strap's third advertisement the cadence sensor has been offered too.
    strap_heard = asyncio.Event()
    strap_count = [0]

    def count_strap(device: BLEDevice, _adv: AdvertisementData) -> None:
        strap_count[0] += 1
        if strap_count[0] >= 3:
            strap_heard.set()

    filtered = BleakScanner(count_strap, service_uuids=[HEART_RATE_SERVICE_UUID], backend=sim.scanner_backend)
    async with asyncio.timeout(HANG_GUARD_S), filtered:
        await strap_heard.wait()
    everything = unfiltered.discovered_devices_and_advertisement_data
    straps = filtered.discovered_devices_and_advertisement_data
    assert set(everything) == {strap.address, CADENCE_SENSOR}
    assert set(straps) == {strap.address}
    _, adv = straps[strap.address]
    assert adv.local_name == strap.name
    assert HEART_RATE_SERVICE_UUID in adv.service_uuids
    assert isinstance(adv.rssi, int)


async def test_second_concurrent_discovery_is_refused_like_bluez(sim: Simulation) -> None:
    """BlueZ allows one discovery per D-Bus client; bleak raises its InProgress reply as it is."""
    first = BleakScanner(backend=sim.scanner_backend)
    second = BleakScanner(backend=sim.scanner_backend)
    async with first:
        with pytest.raises(BleakDBusError) as refused:
            await second.start()
    assert refused.value.dbus_error == "org.bluez.Error.InProgress"
    assert str(refused.value) == "[org.bluez.Error.InProgress] Operation already in progress"
    async with second:  # once the first has stopped, the adapter discovers again
        pass


async def test_garbage_advertisements_are_skipped(sim: Simulation) -> None:
    seen: list[str] = []
    scanner = sim.scanner_backend(lambda d, _a: seen.append(d.address), None)
    # A name that is not UTF-8 (bumble raises decoding it), then a well-formed advertisement.
    junk = LegacyAdvertisement(
        address=hci.Address("F0:52:53:4A:00:01"), data_bytes=bytes([4, 0x09, 0xFF, 0xFE, 0xFD])
    )
    good = LegacyAdvertisement(
        address=hci.Address("F0:52:53:4A:00:02"), data_bytes=bytes([4, 0x09]) + b"abc", rssi=-60
    )
    scanner._on_advertisement(junk)
    scanner._on_advertisement(good)
    assert seen == ["F0:52:53:4A:00:02"]
    assert set(scanner.seen_devices) == {"F0:52:53:4A:00:02"}


async def test_scan_and_find_by_name_or_address(sim: Simulation) -> None:
    s1 = await sim.add_strap(notify_on_subscribe=False)
    s2 = await sim.add_strap(notify_on_subscribe=False)
    async with asyncio.timeout(HANG_GUARD_S):
        sightings = await scan_straps(1.5, backend=sim.scanner_backend)
        by_name, _ = await find_strap(s2.name, 2.0, backend=sim.scanner_backend)
        by_address, _ = await find_strap(s1.address.lower(), 2.0, backend=sim.scanner_backend)
    assert {(s.address, s.name) for s in sightings} == {(s1.address, s1.name), (s2.address, s2.name)}
    assert by_name.address == s2.address
    assert by_address.address == s1.address


async def test_find_absent_strap_is_a_clear_error(sim: Simulation) -> None:
    await sim.add_strap(notify_on_subscribe=False)
    with pytest.raises(StrapNotFound, match="no heart-rate strap matching 'nobody'"):
        await find_strap("nobody", 0.3, backend=sim.scanner_backend)


async def test_connect_read_and_subscribe(sim: Simulation) -> None:
    strap = await sim.add_strap()
    strap.set_battery(42)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with asyncio.timeout(HANG_GUARD_S):
        device, _ = await find_strap(strap.address, 2.0, backend=sim.scanner_backend)
        async with BleakClient(device, backend=sim.client_backend, timeout=2.0) as client:
            assert client.is_connected
            hrm = client.services.get_characteristic(HEART_RATE_MEASUREMENT_UUID)
            assert hrm is not None and "notify" in hrm.properties
            assert await client.read_gatt_char(BATTERY_LEVEL_UUID) == bytearray([42])
            location = await client.read_gatt_char(BODY_SENSOR_LOCATION_UUID)
            assert location == bytearray([BodySensorLocation.CHEST])
            await client.start_notify(
                HEART_RATE_MEASUREMENT_UUID, lambda _c, data: got.put_nowait(bytes(data))
            )
            # Like real straps, the current rate comes with the CCCD write, before start_notify has
            # returned.
            assert got.qsize() == 1
            assert parse_hrm(got.get_nowait()).hr == 70
            await strap.notify_raw(bytes.fromhex("16 41 b1 03"))
            payload = await got.get()
        assert not client.is_connected
    m = parse_hrm(payload)
    assert (m.hr, m.contact, m.rr_raw) == (65, Contact.DETECTED, (945,))


async def test_notifications_longer_than_default_mtu_arrive_whole(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    payload = bytes([0x10, 80]) + b"".join(
        r.to_bytes(2, "little") for r in range(700, 740)
    )  # 40 RR: 82 bytes
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with asyncio.timeout(HANG_GUARD_S):
        device, _ = await find_strap(strap.address, 2.0, backend=sim.scanner_backend)
        async with BleakClient(device, backend=sim.client_backend, timeout=2.0) as client:
            # As on BlueZ, bleak does not know the negotiated MTU: it warns and says 23 ...
            with pytest.warns(UserWarning, match="Using default MTU value"):
                assert client.mtu_size == 23
            # ... until asked to acquire it; notifications are whole either way.
            await client._backend._acquire_mtu()  # type: ignore[attr-defined]
            assert client.mtu_size == 247 > len(payload) + 3
            await client.start_notify(
                HEART_RATE_MEASUREMENT_UUID, lambda _c, data: got.put_nowait(bytes(data))
            )
            await strap.notify_raw(payload)
            assert await got.get() == payload


async def test_establish_connection_with_injected_backend(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    async with asyncio.timeout(HANG_GUARD_S):
        device, _ = await find_strap(strap.address, 2.0, backend=sim.scanner_backend)
        client = await connect_strap(device, timeout_s=2.0, client_backend=sim.client_backend)
        try:
            assert client.is_connected
            assert client.backend_id == "SimBleakClient"
        finally:
            await client.disconnect()


async def test_absent_strap_times_out_cleanly_and_radio_still_works(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    strap.walk_out_of_range()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(TimeoutError, match="no answer"):
            await BleakClient(strap.address, backend=sim.client_backend, timeout=0.3).connect()
        # Through bleak-retry-connector and our own deadline: the typed error names the strap and limit.
        # The strap is out of range, so it cannot be scanned: connect to a known address, as after a loss.
        device = BLEDevice(strap.address, strap.name, {"sim_address": strap.address})
        with pytest.raises(StrapConnectTimeout, match=r"within 0\.3 s") as info:
            await connect_strap(device, timeout_s=0.3, client_backend=sim.client_backend)
        assert info.value.address == strap.address
        # The virtual controller must not be left with a pending connect: a present strap connects.
        strap.walk_back()
        started = loop.time()
        client = BleakClient(strap.address, backend=sim.client_backend, timeout=5.0)
        await client.connect()
        assert client.is_connected, f"connect after a timed-out one failed ({loop.time() - started:.2f} s)"
        await client.disconnect()


async def test_range_loss_reports_disconnect_to_bleak(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    lost = asyncio.Event()
    async with asyncio.timeout(HANG_GUARD_S):
        client = BleakClient(strap.address, lambda _c: lost.set(), backend=sim.client_backend, timeout=2.0)
        await client.connect()
        strap.walk_out_of_range()
        await lost.wait()
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL_UUID)


async def test_short_absence_within_supervision_timeout_keeps_the_link(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with asyncio.timeout(HANG_GUARD_S):
        async with BleakClient(strap.address, backend=sim.client_backend, timeout=2.0) as client:
            await client.start_notify(
                HEART_RATE_MEASUREMENT_UUID, lambda _c, data: got.put_nowait(bytes(data))
            )
            sim.link.supervision_timeout_s = 30  # so a slow machine cannot turn the short absence into a loss
            strap.walk_out_of_range()
            await strap.notify(90)  # dropped: nobody hears it
            strap.walk_back()  # back before the supervision timeout
            await strap.notify(91)
            assert parse_hrm(await got.get()).hr == 91
            assert client.is_connected
    assert got.empty()


async def test_strap_serves_heart_rate_and_battery_services(sim: Simulation) -> None:
    strap = await sim.add_strap(notify_on_subscribe=False)
    async with (
        asyncio.timeout(HANG_GUARD_S),
        BleakClient(strap.address, backend=sim.client_backend) as client,
    ):
        uuids = {s.uuid for s in client.services}
        hrm = client.services.get_characteristic(HEART_RATE_MEASUREMENT_UUID)
        assert hrm is not None
        cccd = [d.uuid for d in hrm.descriptors]
    assert {HEART_RATE_SERVICE_UUID, BATTERY_SERVICE_UUID} <= uuids
    assert "00002902-0000-1000-8000-00805f9b34fb" in cccd
