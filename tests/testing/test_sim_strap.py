"""The `sim_strap` fixture: every control observed through real bleak, as a user's test would."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic

from adapters.ble.hrm import parse_hrm
from adapters.ble.sim.simulation import Simulation
from engine.testing import SimStrapControl

HRM = "00002a37-0000-1000-8000-00805f9b34fb"
BATTERY = "00002a19-0000-1000-8000-00805f9b34fb"
HR_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
GUARD_S = 20


class Notes:
    """Notifications as bleak delivers them, with a wait for the n-th."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._more = asyncio.Event()

    def __call__(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.payloads.append(bytes(data))
        self._more.set()

    async def wait(self, n: int) -> list[bytes]:
        async with asyncio.timeout(GUARD_S):
            while len(self.payloads) < n:
                self._more.clear()
                await self._more.wait()
        return self.payloads


async def test_set_hr_reaches_bleak_client(sim_strap: SimStrapControl) -> None:
    sim_strap.set_hr(150)
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        payloads = await notes.wait(2)
    assert all(parse_hrm(p).hr == 150 for p in payloads[:2])


async def test_bleak_scanner_discovers_the_strap(sim_strap: SimStrapControl) -> None:
    found = await BleakScanner.discover(timeout=1.0, return_adv=True, **sim_strap.bleak_kwargs)
    device, adv = found[sim_strap.address]
    assert device.name == sim_strap.name
    assert HR_SERVICE in adv.service_uuids
    by_address = await BleakScanner.find_device_by_address(
        sim_strap.address, timeout=5, **sim_strap.bleak_kwargs
    )
    assert by_address is not None


async def test_ramp_on_a_paused_clock_moves_only_when_told(sim_strap: SimStrapControl) -> None:
    sim_strap.pause()
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        await notes.wait(1)  # the strap's notification on subscription
        await asyncio.sleep(1.5)
        assert len(notes.payloads) == 1  # a paused clock sends nothing
        sim_strap.ramp(100, 160, 6)
        await sim_strap.advance(6)
        payloads = await notes.wait(7)
    assert [parse_hrm(p).hr for p in payloads[1:]] == [110, 120, 130, 140, 150, 160]


async def test_profile_points(sim_strap: SimStrapControl) -> None:
    sim_strap.pause()
    sim_strap.profile([(0, 90), (2, 110), (4, 110)])
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        await sim_strap.advance(4)
        payloads = await notes.wait(5)
    assert [parse_hrm(p).hr for p in payloads] == [90, 100, 110, 110, 110]


async def test_contact_rr_and_battery(sim_strap: SimStrapControl) -> None:
    sim_strap.pause()
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        await notes.wait(1)
        sim_strap.set_contact(False)
        sim_strap.set_rr([0.5, 0.75])
        await sim_strap.advance(1)
        sim_strap.set_contact(True)
        sim_strap.set_rr([])
        await sim_strap.advance(1)
        payloads = await notes.wait(3)
        sim_strap.set_battery(5)
        battery = await client.read_gatt_char(BATTERY)
    lost, back = parse_hrm(payloads[1]), parse_hrm(payloads[2])
    assert lost.contact.value == "not_detected"
    assert lost.rr_s == (0.5, 0.75)
    assert back.contact.value == "detected"
    assert back.rr_s == ()
    assert battery[0] == 5


async def test_send_raw_delivers_malformed_bytes_verbatim(sim_strap: SimStrapControl) -> None:
    sim_strap.pause()
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        await notes.wait(1)
        await sim_strap.send_raw(b"\x01")  # 16-bit flag, no heart rate
        await sim_strap.send_raw(b"\x10\x48\x00")  # RR flag, odd trailing byte
        payloads = await notes.wait(3)
    assert payloads[1:] == [b"\x01", b"\x10\x48\x00"]


@pytest.fixture
def ridesync_speed() -> float:
    return 10.0  # a 0.5 s supervision timeout


async def test_out_of_range_drops_the_link_and_back_in_range_reconnects(sim_strap: SimStrapControl) -> None:
    gone = asyncio.Event()
    client = BleakClient(
        sim_strap.address, disconnected_callback=lambda _c: gone.set(), **sim_strap.bleak_kwargs
    )
    async with asyncio.timeout(GUARD_S):
        await client.connect()
        sim_strap.out_of_range()
        await gone.wait()
        assert not client.is_connected
        sim_strap.back_in_range()
        notes = Notes()
        async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as again:
            await again.start_notify(HRM, notes)
            await notes.wait(2)


async def test_speed_runs_simulated_time_faster(sim_strap: SimStrapControl) -> None:
    # ridesync_speed is 10 in this module: about 10 notifications per real second.
    notes = Notes()
    async with BleakClient(sim_strap.address, **sim_strap.bleak_kwargs) as client:
        await client.start_notify(HRM, notes)
        await asyncio.sleep(1.0)
    assert len(notes.payloads) >= 6
    assert sim_strap.sim_time_s >= 6


async def test_same_seed_same_bytes() -> None:
    async def run(seed: int) -> list[bytes]:
        sim = await Simulation.start()
        try:
            control = SimStrapControl(sim, await sim.add_strap(), speed=1.0, seed=seed)
            control.ramp(80, 170, 20)
            await control.advance(20)
            return control.payloads
        finally:
            await sim.close()

    first, second, other = await run(7), await run(7), await run(8)
    assert first == second
    assert first != other
