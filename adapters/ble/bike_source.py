"""The BLE bike source: a smart trainer, connected bike, power meter or cadence pod, as a `SensorSource`.

The connection loop (find, connect within the adapter's budget through its one shared discovery,
subscribe first, link states, a `seq` that never restarts) is `link_source.BleLinkSource`, shared with
the heart-rate strap. This module says what a bike is:

* service discovery picks the first the device serves of Fitness Machine (Indoor Bike Data), Cycling
  Power, Cycling Speed and Cadence (`bike_services.BIKE_SERVICES`); a device with none of them is
  `NotABike`, fatal like `NotAHeartRateDevice`;
* before subscribing it reads Device Information (manufacturer, model, firmware) once per connection;
  they go into the `streaming` state (`service`, `device_info`) and stay on `source.device_info`;
* each measurement gives a reading per value it carries (cadence, power, speed, resistance), each with
  the next `seq`; cadence and speed that a CPS/CSC device only reports as cumulative counters are
  derived per connection, so the first notification after a (re)connect carries none;
* Battery Level is subscribed when the device notifies it, else read once per connection and again every
  `battery_every_s` (default 5 minutes).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from adapters.ble.adapter import BleAdapter
from adapters.ble.bike_services import (
    BIKE_SERVICES,
    DEVICE_INFO_FIELDS,
    BikeDataError,
    BikeDecoder,
    BikeService,
    device_info_text,
)
from adapters.ble.connect import NotABike
from adapters.ble.hrm import BATTERY_LEVEL_UUID, HrmError, parse_battery_level
from adapters.ble.link_source import BleLinkSource, Out, StrapSettings
from adapters.ble.scan import StrapNotFound
from engine.bike_kinds import ble_kind
from engine.readings import Contact, Kind, Reading

log = logging.getLogger(__name__)

# A battery that does not notify is read again this often: it changes over hours, not seconds.
BATTERY_EVERY_S = 300.0
# Trainers and pods sleep until pedalled, and many take one central only (Zwift or a watch may hold it).
BIKE_NOT_FOUND_HINT = "is it powered and awake (pedal to wake it), and not connected to another app or watch?"


class BleBikeSource(BleLinkSource):
    def __init__(
        self,
        selector: str,
        *,
        adapter: BleAdapter,
        settings: StrapSettings | None = None,
        battery_every_s: float = BATTERY_EVERY_S,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            selector, f"ble-bike:{selector}", adapter=adapter, settings=settings, clock=clock, rng=rng
        )
        if not battery_every_s > 0:
            raise ValueError(f"battery_every_s must be positive, got {battery_every_s}")
        self.battery_every_s = battery_every_s
        # What the last connection found: the service read, and Device Information (absent fields: None).
        self.service: BikeService | None = None
        self.device_info: dict[str, str | None] = {}
        self._decoder: BikeDecoder | None = None
        self._battery_due: float | None = None

    @property
    def bike_kind(self) -> str | None:
        """ "ble-ftms", "ble-cps" or "ble-csc" (engine/bike_kinds.py) once a connection found the service;
        None before."""
        return None if self.service is None else ble_kind(self.service.name)

    # --- the hooks of the connection loop -----------------------------------------------------------

    def _check_services(self, client: BleakClient) -> None:
        for service in BIKE_SERVICES:
            if client.services.get_characteristic(service.measurement_uuid) is not None:
                self.service = service
                # Cumulative counters are only comparable within one connection's notifications.
                self._decoder = service.decoder()
                return
        raise NotABike(self.selector, client.address)

    def _not_found(self, exc: StrapNotFound) -> StrapNotFound:
        return StrapNotFound(exc.selector, exc.timeout_s, exc.reason, device="bike", hint=BIKE_NOT_FOUND_HINT)

    def _measurement_uuid(self) -> str:
        assert self.service is not None, "_check_services picks the service first"
        return self.service.measurement_uuid

    async def _before_subscribe(self, client: BleakClient) -> dict[str, object]:
        info: dict[str, str | None] = {}
        for key, uuid in DEVICE_INFO_FIELDS:
            data = await self._read(client, uuid)
            info[key] = None if data is None else device_info_text(data)
        self.device_info = info
        assert self.service is not None
        return {"service": self.service.name, "device_info": dict(info)}

    async def _after_subscribe(self, client: BleakClient, generation: int, out: Out) -> None:
        self._battery_due = None
        battery = client.services.get_characteristic(BATTERY_LEVEL_UUID)
        if battery is None:
            return
        if "notify" in battery.properties:

            def on_battery(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                if generation == self._generation:
                    self._on_battery(bytes(data), out)

            try:
                # Bounded like every GATT call: a subscribe that never answers must not freeze the link.
                async with asyncio.timeout(self.settings.gatt_timeout_s):
                    await client.start_notify(battery, on_battery)
            except (BleakError, TimeoutError) as exc:  # optional: the measurement streams without it
                log.info("battery not subscribed", extra={"source": self._source_id, "error": str(exc)})
                self._battery_due = self._clock() + self.battery_every_s
        else:
            self._battery_due = self._clock() + self.battery_every_s
        # Notified or not, the current level now: a device notifies only when it changes.
        await self._read_battery(client, out)

    async def _on_tick(self, client: BleakClient, out: Out) -> None:
        if self._battery_due is not None and self._clock() >= self._battery_due:
            self._battery_due = self._clock() + self.battery_every_s
            await self._read_battery(client, out)

    async def _read_battery(self, client: BleakClient, out: Out) -> None:
        data = await self._read(client, BATTERY_LEVEL_UUID)
        if data is not None:
            self._on_battery(data, out)

    def _on_battery(self, data: bytes, out: Out) -> None:
        try:
            level = parse_battery_level(data)
        except HrmError as exc:
            self.stats.malformed += 1
            log.warning("malformed battery level", extra={"source": self._source_id, "error": str(exc)})
            return
        out(Reading(self._clock(), self._source_id, self._next_seq(), Kind.BATTERY, float(level)))

    def _on_measurement(self, payload: bytes, out: Out, t: float | None = None) -> None:
        t = self._clock() if t is None else t
        assert self._decoder is not None and self.service is not None
        try:
            values = self._decoder.decode(payload, t)
        except BikeDataError as exc:
            # Hostile or torn bytes: reported and dropped; they consume no sequence number.
            self.stats.malformed += 1
            log.warning(
                "malformed bike measurement",
                extra={"source": self._source_id, "error": str(exc), "payload": payload.hex()},
            )
            return
        self.stats.notifications += 1
        # A bike has no skin contact; any whole measurement keeps the link fresh (not stale).
        for event in self._machine.measurement(t, Contact.UNSUPPORTED):
            out(event)
        extra = {"service": self.service.name}
        for kind, value in values.items():
            out(Reading(t, self._source_id, self._next_seq(), kind, value, extra=dict(extra)))
