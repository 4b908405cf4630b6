"""Read a heart-rate strap with bleak. `bleak_kwargs` go to BleakScanner/BleakClient unchanged: in
production nothing (bleak picks the platform's backend), in tests ridesync's simulated radio."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic

HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"


@dataclass
class Measurement:
    bpm: int
    contact: bool | None  # None: the strap does not report skin contact
    rr_s: list[float]


@dataclass
class HrLog:
    measurements: list[Measurement] = field(default_factory=list)
    malformed: int = 0
    disconnected: bool = False

    @property
    def bpm(self) -> list[int]:
        """Heart rates measured with skin contact (or from straps that do not report contact)."""
        return [m.bpm for m in self.measurements if m.contact is not False]


def parse_measurement(data: bytes) -> Measurement | None:
    """A Heart Rate Measurement (0x2A37), or None when it is too short to hold a heart rate."""
    if not data:
        return None
    flags = data[0]
    wide = flags & 0x01
    if len(data) < (3 if wide else 2):
        return None
    bpm = int.from_bytes(data[1:3], "little") if wide else data[1]
    i = 3 if wide else 2
    contact = bool(flags & 0x02) if flags & 0x04 else None
    if flags & 0x08:
        i += 2  # energy expended
    rr = []
    if flags & 0x10:
        while i + 1 < len(data):
            rr.append(int.from_bytes(data[i : i + 2], "little") / 1024)
            i += 2
    return Measurement(bpm, contact, rr)


async def find_strap(name_prefix: str, scan_s: float = 5.0, **bleak_kwargs: Any) -> str | None:
    """The address of the first heart-rate strap whose name starts with `name_prefix`."""
    found = await BleakScanner.discover(timeout=scan_s, return_adv=True, **bleak_kwargs)
    for device, adv in found.values():
        if HEART_RATE_SERVICE in adv.service_uuids and (device.name or "").startswith(name_prefix):
            return device.address
    return None


class StrapLogger:
    """`async with StrapLogger(address) as logger:` logs notifications into `logger.log` until the block
    ends or the strap drops the link (`logger.gone` is set then)."""

    def __init__(self, address: str, **bleak_kwargs: Any) -> None:
        self.log = HrLog()
        self.gone = asyncio.Event()
        self._client = BleakClient(address, disconnected_callback=self._on_disconnect, **bleak_kwargs)

    def _on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        m = parse_measurement(bytes(data))
        if m is None:
            self.log.malformed += 1
        else:
            self.log.measurements.append(m)

    def _on_disconnect(self, _client: BleakClient) -> None:
        self.log.disconnected = True
        self.gone.set()

    async def __aenter__(self) -> StrapLogger:
        await self._client.connect()
        await self._client.start_notify(HEART_RATE_MEASUREMENT, self._on_notify)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.disconnect()


async def log_heart_rate(address: str, seconds: float, **bleak_kwargs: Any) -> HrLog:
    """Log notifications for `seconds`; a strap that drops the link ends the log early."""
    async with StrapLogger(address, **bleak_kwargs) as logger:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await logger.gone.wait()
    return logger.log
