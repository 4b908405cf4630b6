"""Finding straps: scan for the Heart Rate service (0x180D) and pick one by address or name.

`backend` is bleak's own `backend=` argument: None means the platform default (BlueZ on Linux); the
simulator passes its scanner class.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from adapters.ble.hrm import HEART_RATE_SERVICE_UUID

# Matched with fullmatch: `$` would also accept a trailing newline.
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
# macOS hides addresses behind per-host UUIDs.
_CB_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


class BluetoothUnavailable(RuntimeError):
    """The host's Bluetooth stack cannot scan at all (no BlueZ, no D-Bus, no adapter, powered off)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            f"Bluetooth unavailable ({type(cause).__name__}: {cause or 'no detail'}); "
            "run `ridesync doctor` to see what to fix"
        )


STRAP_NOT_FOUND_HINT = "is it worn and awake, and not connected to another phone or watch?"


class StrapNotFound(LookupError):
    """Nothing matching the selector advertised in time. `device` and `hint` say what was looked for
    and what usually keeps it quiet (a bike source says "bike", and why a trainer may not advertise)."""

    def __init__(
        self,
        selector: str,
        timeout_s: float,
        reason: str = "",
        *,
        device: str = "heart-rate strap",
        hint: str = STRAP_NOT_FOUND_HINT,
    ) -> None:
        super().__init__(
            f"no {device} matching {selector!r} advertised within {timeout_s:g} s ({reason or hint})"
        )
        self.selector = selector
        self.timeout_s = timeout_s
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StrapSighting:
    address: str
    name: str | None
    rssi: int

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "name": self.name, "rssi": self.rssi}


def is_address(selector: str) -> bool:
    return bool(_MAC.fullmatch(selector) or _CB_UUID.fullmatch(selector))


def matches(selector: str, device: BLEDevice, adv: AdvertisementData) -> bool:
    if is_address(selector):
        return device.address.lower() == selector.lower()
    return selector in (adv.local_name, device.name)


async def scan_straps(
    timeout_s: float, *, backend: type[BaseBleakScanner] | None = None
) -> list[StrapSighting]:
    """Every strap advertising 0x180D within `timeout_s`, strongest signal first."""
    try:
        async with BleakScanner(service_uuids=[HEART_RATE_SERVICE_UUID], backend=backend) as scanner:
            await asyncio.sleep(timeout_s)
    except (BleakError, OSError) as exc:
        raise BluetoothUnavailable(exc) from exc
    found = scanner.discovered_devices_and_advertisement_data
    sightings = [StrapSighting(d.address, adv.local_name or d.name, adv.rssi) for d, adv in found.values()]
    return sorted(sightings, key=lambda s: (-s.rssi, s.address))


async def find_strap(
    selector: str, timeout_s: float, *, backend: type[BaseBleakScanner] | None = None
) -> tuple[BLEDevice, AdvertisementData]:
    """The first strap advertising 0x180D whose address or name is `selector`; StrapNotFound otherwise."""
    hit: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = asyncio.get_running_loop().create_future()

    def on_detection(device: BLEDevice, adv: AdvertisementData) -> None:
        if not hit.done() and matches(selector, device, adv):
            hit.set_result((device, adv))

    try:
        async with (
            BleakScanner(on_detection, service_uuids=[HEART_RATE_SERVICE_UUID], backend=backend),
            asyncio.timeout(timeout_s),
        ):
            return await hit
    except TimeoutError:  # (a subclass of OSError: caught first)
        raise StrapNotFound(selector, timeout_s) from None
    except (BleakError, OSError) as exc:
        raise BluetoothUnavailable(exc) from exc
