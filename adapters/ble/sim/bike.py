"""A simulated BLE bike: a bumble peripheral serving one standard bike service on the virtual radio.

`kind` picks what it is, as on the market: "ftms" a smart trainer / connected bike (Fitness Machine
0x1826, Indoor Bike Data 0x2AD2 plus Fitness Machine Feature), "cps" a crank power meter (Cycling Power
0x1818, Measurement 0x2A63, Feature, Sensor Location), "csc" a cadence/speed pod (0x1816, Measurement
0x2A5B, Feature). Each also serves Device Information (manufacturer, model, firmware) and Battery Level:
the power meter and the pod notify their battery, the mains-powered trainer only lets it be read.

`play(profile, speed)` rides a serial simulator `RideProfile` (one measurement per simulated second,
`speed` times faster than real time), encoded by `bike_model.BikeModel`; `notify_raw` sends exact bytes;
range and battery controls are the strap's.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

from bumble import gatt
from bumble.core import UUID, AdvertisingData
from bumble.device import Device
from bumble.profiles.device_information_service import DeviceInformationService

from adapters.ble.bike_services import BIKE_SERVICES
from adapters.ble.gatt_fields import uuid16
from adapters.ble.hrm import BATTERY_LEVEL_UUID
from adapters.ble.sim.bike_model import BikeModel
from adapters.ble.sim.profile import validate_speed
from adapters.ble.sim.radio import RangeLink, SimController, new_node
from adapters.ble.sim.strap import SIM_ADVERTISING_INTERVAL_MS
from adapters.serial.sim.profile import RideProfile

log = logging.getLogger(__name__)

NOTIFY_INTERVAL_S = 1.0
_SERVICES = {s.name: s for s in BIKE_SERVICES}
# (manufacturer, model, firmware) per kind: what a lab report shows for each simulated device.
DEVICE_INFO = {
    "ftms": ("ridesync", "sim-trainer FTMS", "1.0.0"),
    "cps": ("ridesync", "sim-powermeter CPS", "2.1.3"),
    "csc": ("ridesync", "sim-pod CSC", "0.9.1"),
}
# Feature characteristics, read by head units to learn which fields to expect.
_FEATURES: dict[str, tuple[int, bytes]] = {
    # Fitness Machine Feature: cadence (bit 1), resistance level (bit 7), power (bit 14); no targets.
    "ftms": (0x2ACC, struct.pack("<II", 1 << 1 | 1 << 7 | 1 << 14, 0)),
    # Cycling Power Feature: wheel (bit 2) and crank (bit 3) revolution data.
    "cps": (0x2A65, struct.pack("<I", 1 << 2 | 1 << 3)),
    # CSC Feature: wheel (bit 0) and crank (bit 1) revolution data.
    "csc": (0x2A5C, struct.pack("<H", 0b11)),
}
_READABLE = gatt.Characteristic.Properties.READ
_NOTIFY = gatt.Characteristic.Properties.NOTIFY


class SimBike:
    """One simulated bike on a virtual radio. Create with `await SimBike.create(...)`."""

    def __init__(
        self,
        device: Device,
        *,
        controller: SimController,
        link: RangeLink,
        kind: str,
        measurement: Any,
        battery: Any,
        name: str,
        address: str,
    ) -> None:
        self.device = device
        self.controller = controller
        self.link = link
        self.kind = kind
        self.name = name
        self.address = address
        self.model = BikeModel(kind)
        self.battery_pct = 91
        self.battery_notifies = kind != "ftms"
        self.notifications_sent = 0
        self._measurement = measurement
        self._battery = battery

    @classmethod
    async def create(cls, link: RangeLink, name: str, address: str, kind: str) -> SimBike:
        model = BikeModel(kind)  # checks the kind before a node joins the radio
        device, controller = await new_node(link, name, address)
        holder: list[SimBike] = []
        service = _SERVICES[kind]
        measurement: Any = gatt.Characteristic(
            service.measurement_uuid, _NOTIFY, gatt.Characteristic.READABLE, b""
        )
        feature_uuid, feature = _FEATURES[kind]
        characteristics: list[Any] = [
            measurement,
            gatt.Characteristic(uuid16(feature_uuid), _READABLE, gatt.Characteristic.READABLE, feature),
        ]
        if kind == "cps":
            # Sensor Location: left crank (5).
            characteristics.append(
                gatt.Characteristic(uuid16(0x2A5D), _READABLE, gatt.Characteristic.READABLE, bytes([5]))
            )
        device.add_service(gatt.Service(service.service_uuid, characteristics))
        manufacturer, model_number, firmware = DEVICE_INFO[kind]
        device.add_service(
            DeviceInformationService(
                manufacturer_name=manufacturer, model_number=model_number, firmware_revision=firmware
            )
        )
        battery: Any = gatt.Characteristic(
            BATTERY_LEVEL_UUID,
            _READABLE | (_NOTIFY if kind != "ftms" else gatt.Characteristic.Properties(0)),
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=lambda _connection: bytes([holder[0].battery_pct])),
        )
        device.add_service(gatt.Service(gatt.GATT_BATTERY_SERVICE, [battery]))
        bike = cls(
            device,
            controller=controller,
            link=link,
            kind=kind,
            measurement=measurement,
            battery=battery,
            name=name,
            address=address,
        )
        bike.model = model
        holder.append(bike)
        device.advertising_data = bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),
                    (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode()),
                    (
                        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                        bytes(UUID(service.service_uuid)),
                    ),
                ]
            )
        )
        # auto_restart: a bike advertises again as soon as its central is gone, as real ones do.
        await device.start_advertising(
            auto_restart=True,
            advertising_interval_min=SIM_ADVERTISING_INTERVAL_MS,
            advertising_interval_max=SIM_ADVERTISING_INTERVAL_MS,
        )
        return bike

    @property
    def connection_count(self) -> int:
        return len(self.device.connections)

    async def notify_raw(self, payload: bytes) -> None:
        """Notify these exact bytes on the measurement characteristic to every subscribed central."""
        await self.device.notify_subscribers(self._measurement, bytes(payload))
        self.notifications_sent += 1

    async def set_battery(self, pct: int) -> None:
        """A new battery level; notified to subscribers where this kind notifies it."""
        if not 0 <= pct <= 100:
            raise ValueError(f"battery level {pct}% outside 0..100")
        self.battery_pct = pct
        if self.battery_notifies:
            await self.device.notify_subscribers(self._battery, bytes([pct]))

    def walk_out_of_range(self) -> None:
        log.info("bike walks out of range", extra={"bike": self.name})
        self.link.set_in_range(self.controller, False)

    def walk_back(self) -> None:
        log.info("bike walks back into range", extra={"bike": self.name})
        self.link.set_in_range(self.controller, True)

    async def play(self, profile: RideProfile, speed: float = 1.0) -> None:
        """Ride `profile` (looping) one measurement per simulated second, `speed` times faster than real
        time, until cancelled. The ride goes on while nobody listens or the bike is out of range."""
        validate_speed(speed)
        period = NOTIFY_INTERVAL_S / speed
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
            sim_t = tick * NOTIFY_INTERVAL_S
            self.model.advance(NOTIFY_INTERVAL_S, profile.at(sim_t % profile.duration_s))
            try:
                await self.notify_raw(self.model.measurement())
            except Exception as exc:  # a link dropping mid-notify is normal; the bike keeps riding
                log.debug("notify failed", extra={"bike": self.name, "error": repr(exc)})

    async def close(self) -> None:
        self.link.set_in_range(self.controller, True)
        await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            try:
                async with asyncio.timeout(5):
                    await connection.disconnect()
            except Exception as exc:  # a dying link may refuse; the radio is being torn down anyway
                log.debug("bike disconnect on close failed", extra={"error": repr(exc)})
