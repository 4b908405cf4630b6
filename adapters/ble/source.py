"""The BLE heart-rate source: one strap, as an engine `SensorSource`.

The connection loop (find, connect within the adapter's budget, subscribe first, link states, a `seq`
that never restarts) is `link_source.BleLinkSource`; this module says what a strap is: a device serving
Heart Rate (0x180D), whose Heart Rate Measurement notifications become heart-rate readings, and whose
Body Sensor Location and Battery Level are read once per connection.

The bleak backend is injected through bleak's own `backend=` classes; with None this is BlueZ.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from bleak import BleakClient
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from adapters.ble.adapter import BleAdapter
from adapters.ble.budget import ConnectionBudget
from adapters.ble.connect import NotAHeartRateDevice
from adapters.ble.hrm import (
    BATTERY_LEVEL_UUID,
    BODY_SENSOR_LOCATION_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    HrmError,
    parse_battery_level,
    parse_body_sensor_location,
    parse_hrm_lenient,
)
from adapters.ble.link_source import FATAL_ERRORS, BleLinkSource, Out, StrapSettings, StrapStats
from engine.readings import Contact, Kind, Reading

log = logging.getLogger(__name__)

__all__ = ["FATAL_ERRORS", "BleHeartRateSource", "StrapSettings", "StrapStats"]


class BleHeartRateSource(BleLinkSource):
    def __init__(
        self,
        selector: str,
        *,
        budget: ConnectionBudget | None = None,
        settings: StrapSettings | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        adapter: BleAdapter | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """`adapter` is where the strap connects (its slots, its shared discovery, its backend);
        without one, an adapter is made of `budget` and the bleak backend classes."""
        if adapter is None:
            if budget is None:
                raise TypeError("BleHeartRateSource needs an adapter or a budget")
            adapter = BleAdapter(
                budget.adapter, budget, scanner_backend=scanner_backend, client_backend=client_backend
            )
        super().__init__(
            selector, f"ble-hr:{selector}", adapter=adapter, settings=settings, clock=clock, rng=rng
        )

    def _check_services(self, client: BleakClient) -> None:
        # Some watches and bands serve 0x180D without advertising it: the GATT database decides.
        if client.services.get_service(HEART_RATE_SERVICE_UUID) is None:
            raise NotAHeartRateDevice(self.selector, client.address)

    def _measurement_uuid(self) -> str:
        return HEART_RATE_MEASUREMENT_UUID

    async def _after_subscribe(self, client: BleakClient, generation: int, out: Out) -> None:
        await self._read_once(client, BODY_SENSOR_LOCATION_UUID, out)
        await self._read_once(client, BATTERY_LEVEL_UUID, out)

    async def _read_once(self, client: BleakClient, uuid: str, out: Out) -> None:
        """Read an optional characteristic; a strap without it, or a bad value, is logged, not fatal."""
        data = await self._read(client, uuid)
        if data is None:
            return
        t = self._clock()
        try:
            if uuid == BATTERY_LEVEL_UUID:
                reading = Reading(
                    t, self._source_id, self._next_seq(), Kind.BATTERY, float(parse_battery_level(data))
                )
            else:
                location = parse_body_sensor_location(data)
                reading = Reading(
                    t,
                    self._source_id,
                    self._next_seq(),
                    Kind.BODY_LOCATION,
                    float(location.value),
                    extra={"location": location.name.lower()},
                )
        except HrmError as exc:
            self.stats.malformed += 1
            log.warning("malformed strap value", extra={"source": self._source_id, "error": str(exc)})
            return
        out(reading)

    def _on_measurement(self, payload: bytes, out: Out, t: float | None = None) -> None:
        t = self._clock() if t is None else t
        try:
            m, defects = parse_hrm_lenient(payload)
        except HrmError as exc:
            # Hostile or torn bytes: reported and dropped; they consume no sequence number.
            self.stats.malformed += 1
            log.warning(
                "malformed heart rate measurement",
                extra={"source": self._source_id, "error": str(exc), "payload": payload.hex()},
            )
            return
        self.stats.notifications += 1
        extra: dict[str, object] = {}
        if defects:
            # The heart rate is whole; what followed it was damaged. Keep the rate, say what was wrong.
            self.stats.payload_defects += 1
            extra["defects"] = list(defects)
            log.info(
                "heart rate kept from a damaged payload",
                extra={"source": self._source_id, "defects": defects, "payload": payload.hex()},
            )
        for event in self._machine.measurement(t, m.contact):
            out(event)
        # "No contact" and a 0 are not heart rates: the value is absent, the state says why.
        value = float(m.hr) if m.contact is not Contact.NOT_DETECTED and m.hr > 0 else None
        out(
            Reading(
                t,
                self._source_id,
                self._next_seq(),
                Kind.HEART_RATE,
                value,
                contact=m.contact,
                rr_s=m.rr_s,
                energy_kj=m.energy_kj,
                extra=extra,
            )
        )
