"""A simulated heart-rate strap: a bumble peripheral serving Heart Rate (0x180D) and Battery (0x180F).

It advertises its name and the 0x180D service UUID, serves real GATT over the virtual radio, and offers
the simulation handles a test or a demo needs:

* `play(profile, speed)`: notify measurements following a profile, `speed` times faster than real time;
* `notify_raw(payload)`: send exact bytes, for what bumble's own encoder never produces (16-bit heart
  rate below 256, many RR intervals, contact lost, torn payloads);
* `walk_out_of_range()` / `walk_back()`: traffic to and from the strap is dropped; after the radio's
  supervision timeout its connections end with reason 0x08;
* `set_battery(pct)`.

Like many real straps it notifies its current heart rate as soon as a central enables notifications,
in the same breath as the CCCD write: the notification reaches the central before the write response,
so before bleak's `start_notify` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bumble import att, gatt, hci
from bumble.core import AdvertisingData
from bumble.device import Device
from bumble.profiles.battery_service import BatteryService
from bumble.profiles.heart_rate_service import HeartRateService

from adapters.ble.hrm import BodySensorLocation, encode_hrm
from adapters.ble.sim.profile import HrProfile, beats_between, rr_raw_for, validate_speed
from adapters.ble.sim.radio import RangeLink, SimController, new_node
from engine.readings import Contact

log = logging.getLogger(__name__)

# Straps advertise about once a second; the simulator advertises faster so reconnects are quick.
SIM_ADVERTISING_INTERVAL_MS = 50.0
# Real straps notify once a second; playback keeps that rhythm in simulated time.
NOTIFY_INTERVAL_S = 1.0


class SimStrap:
    """One simulated strap on a virtual radio. Create with `await SimStrap.create(...)`."""

    def __init__(
        self,
        device: Device,
        *,
        controller: SimController,
        link: RangeLink,
        hrs: HeartRateService,
        battery: BatteryService,
        name: str,
        address: str,
    ) -> None:
        self.device = device
        self.controller = controller
        self.link = link
        self.name = name
        self.address = address
        self.battery_pct = 87
        self.notifications_sent = 0
        self.notify_on_subscribe = True
        self._hrs = hrs
        self._battery = battery
        self._last_hr = 70
        self._last_contact = Contact.DETECTED
        self._connected = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        device.on("connection", self._on_connection)

    @classmethod
    async def create(
        cls,
        link: RangeLink,
        name: str,
        address: str,
        *,
        location: BodySensorLocation = BodySensorLocation.CHEST,
        notify_on_subscribe: bool = True,
        advertise_heart_rate: bool = True,
    ) -> SimStrap:
        """`advertise_heart_rate=False`: a device that serves 0x180D without listing it in its
        advertisement (some watches' HR broadcast, Mi Band, PineTime): only its name is advertised."""
        device, controller = await new_node(link, name, address)
        holder: list[SimStrap] = []

        def read_measurement(_connection: object) -> HeartRateService.HeartRateMeasurement:
            return HeartRateService.HeartRateMeasurement(holder[0]._last_hr, sensor_contact_detected=True)

        hrs = HeartRateService(
            read_heart_rate_measurement=read_measurement,
            body_sensor_location=HeartRateService.BodySensorLocation(int(location)),
        )
        battery = BatteryService(read_battery_level=lambda _connection: holder[0].battery_pct)
        device.add_service(hrs)
        device.add_service(battery)
        measurement: Any = hrs.heart_rate_measurement_characteristic

        def on_subscription(bearer: Any, notify_enabled: bool, _indicate_enabled: bool) -> None:
            if notify_enabled and holder and holder[0].notify_on_subscribe:
                holder[0]._notify_now(bearer, measurement.handle)

        measurement.on("subscription", on_subscription)
        strap = cls(
            device, controller=controller, link=link, hrs=hrs, battery=battery, name=name, address=address
        )
        strap.notify_on_subscribe = notify_on_subscribe
        holder.append(strap)
        fields: list[tuple[int, bytes]] = [
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode()),
        ]
        if advertise_heart_rate:
            fields.append(
                (
                    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                    bytes(gatt.GATT_HEART_RATE_SERVICE) + bytes(gatt.GATT_BATTERY_SERVICE),
                )
            )
        device.advertising_data = bytes(AdvertisingData(fields))
        await strap._advertise()
        return strap

    async def _advertise(self) -> None:
        # auto_restart: a strap advertises again as soon as its central is gone, as real straps do.
        await self.device.start_advertising(
            auto_restart=True,
            advertising_interval_min=SIM_ADVERTISING_INTERVAL_MS,
            advertising_interval_max=SIM_ADVERTISING_INTERVAL_MS,
        )

    async def rotate_address(self, address: str) -> None:
        """Take a new random address, as phones and watches do now and then (not while connected)."""
        if self.device.connections:
            raise RuntimeError(f"{self.name}: rotate the address while no central is connected")
        await self.device.stop_advertising()
        new = hci.Address(address)
        await self.device.send_sync_command(hci.HCI_LE_Set_Random_Address_Command(random_address=new))
        self.device.random_address = new
        self.address = address
        await self._advertise()

    # --- state --------------------------------------------------------------------------------------

    @property
    def in_range(self) -> bool:
        return self.link.is_in_range(self.controller)

    @property
    def connection_count(self) -> int:
        return len(self.device.connections)

    def _on_connection(self, connection: Any) -> None:
        self._connected.set()
        self._idle.clear()
        # bumble forgets the connection after its disconnection event; look once that has happened.
        connection.on("disconnection", lambda _reason: asyncio.get_running_loop().call_soon(self._check_idle))

    def _check_idle(self) -> None:
        if not self.device.connections:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no central is connected."""
        self._check_idle()
        await self._idle.wait()

    async def wait_connected(self) -> None:
        """Wait until a central has connected (since the last call)."""
        await self._connected.wait()
        self._connected.clear()

    def _notify_now(self, bearer: Any, handle: int) -> None:
        """Notify the current heart rate right away (inside the CCCD write, before its response)."""
        payload = encode_hrm(self._last_hr, contact=self._last_contact)
        pdu = att.ATT_Handle_Value_Notification(attribute_handle=handle, attribute_value=payload)
        self.device.gatt_server.send_gatt_pdu(bearer, bytes(pdu))
        self.notifications_sent += 1

    # --- simulation handles -------------------------------------------------------------------------

    async def notify_raw(self, payload: bytes) -> None:
        """Notify these exact bytes on 0x2A37 to every subscribed central.

        Bypasses bumble's encoder on purpose; payloads longer than a central's ATT_MTU - 3 are cut by
        the GATT server, as on a real strap.
        """
        # The characteristic's adapter serialises with bytes(value): bytes pass through unchanged.
        characteristic: Any = self._hrs.heart_rate_measurement_characteristic
        await self.device.notify_subscribers(characteristic, bytes(payload))
        self.notifications_sent += 1

    async def notify(
        self,
        hr: int,
        *,
        contact: Contact = Contact.DETECTED,
        energy_kj: int | None = None,
        rr_raw: tuple[int, ...] = (),
        uint16: bool | None = None,
    ) -> bytes:
        payload = encode_hrm(hr, contact=contact, energy_kj=energy_kj, rr_raw=rr_raw, uint16=uint16)
        self._last_hr = hr
        await self.notify_raw(payload)
        return payload

    def set_current(self, hr: int, contact: Contact = Contact.DETECTED) -> None:
        """What the strap notifies the moment a central subscribes (before its next beat)."""
        self._last_hr = hr
        self._last_contact = contact

    def set_battery(self, pct: int) -> None:
        if not 0 <= pct <= 100:
            raise ValueError(f"battery level {pct}% outside 0..100")
        self.battery_pct = pct

    def walk_out_of_range(self) -> None:
        log.info("strap walks out of range", extra={"strap": self.name})
        self.link.set_in_range(self.controller, False)

    def walk_back(self) -> None:
        log.info("strap walks back into range", extra={"strap": self.name})
        self.link.set_in_range(self.controller, True)

    async def play(self, profile: HrProfile, speed: float = 1.0, *, loop: bool = True) -> None:
        """Notify one measurement per simulated second of `profile`, `speed` times faster than real time.

        Runs until cancelled (or, with loop=False, until the profile ends). Playback keeps simulated time
        while out of range, so a strap that comes back reports what the rider's heart does now.
        """
        validate_speed(speed)
        period = NOTIFY_INTERVAL_S / speed
        start = time.monotonic()
        sim_t = 0.0
        beat = 0
        energy = 0.0
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
            prev, sim_t = sim_t, tick * NOTIFY_INTERVAL_S
            if not loop and sim_t > profile.duration_s:
                return
            t_in_profile = sim_t % profile.duration_s if profile.duration_s > 0 else 0.0
            bpm = profile.bpm_at(t_in_profile)
            n = beats_between(prev, sim_t, bpm)
            rr = tuple(rr_raw_for(bpm, beat + i) for i in range(min(n, 8)))
            beat += n
            # Roughly 0.05 kJ per beat at these rates; straps report cumulative kJ.
            energy += n * 0.05
            try:
                await self.notify(round(bpm), energy_kj=int(energy) if tick % 10 == 0 else None, rr_raw=rr)
            except Exception as exc:  # a link dropping mid-notify is normal; the strap keeps beating
                log.debug("notify failed", extra={"strap": self.name, "error": repr(exc)})

    async def close(self) -> None:
        self.link.set_in_range(self.controller, True)
        await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            try:
                async with asyncio.timeout(5):
                    await connection.disconnect()
            except Exception as exc:  # a dying link may refuse; the radio is being torn down anyway
                log.debug("strap disconnect on close failed", extra={"error": repr(exc)})
