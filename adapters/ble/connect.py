"""Opening one connection to a strap the way Home Assistant does, through bleak-retry-connector.

`establish_connection` works with an injected backend: it hands `backend=` through to `BleakClient`,
and its BlueZ-only steps (looking for an already-connected D-Bus device, validating BlueZ's service
cache, waiting on D-Bus for the disconnect) look for a D-Bus object path in `BLEDevice.details` and
are skipped when there is none, as with the simulator. Two of its habits are handled here:

* it always passes `timeout=20` to `connect()` (bleak's per-call timeout wins over the constructor's),
  so our own configurable connect timeout is enforced around it with `asyncio.timeout`;
* its retry loop would multiply that timeout, so it gets `max_attempts=1`: retries, with full-jitter
  backoff, belong to the link state machine (adapters/ble/link_state.py).

Each call builds a new BleakClient: a client is never reused across connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bleak import BleakClient
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from adapters.ble.timeouts import HARDWARE_CONNECT_TIMEOUT_S

__all__ = [
    "HARDWARE_CONNECT_TIMEOUT_S",
    "BluezTooOld",
    "NotABike",
    "NotAHeartRateDevice",
    "StrapConnectError",
    "StrapConnectTimeout",
    "WrongDevice",
    "connect_strap",
]


# bleak's BlueZ client raises this on every connect when bluetoothd is older than 5.55.
BLEAK_BLUEZ_TOO_OLD = "Bleak requires BlueZ >= 5.55"
MIN_BLUEZ = (5, 55)


class BluezTooOld(RuntimeError):
    """BlueZ is too old for bleak: no connect can ever succeed, so this is fatal, not retried."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"{address}: cannot connect: bleak needs BlueZ >= 5.55 and this machine's is older. "
            "Fix: upgrade the bluez package (Debian 11, Ubuntu 22.04 and later ship a new enough one) "
            "and restart bluetoothd; `ridesync doctor` shows the installed version"
        )
        self.address = address


class WrongDevice(LookupError):
    """The named device connected but serves nothing this source reads: the wrong device was named."""


class NotAHeartRateDevice(WrongDevice):
    """The named device connected but serves no Heart Rate service."""

    def __init__(self, selector: str, address: str) -> None:
        super().__init__(
            f"{selector!r} ({address}) connected but serves no Heart Rate service (0x180D): "
            "name a heart-rate strap or watch (`ridesync scan` lists those that advertise it)"
        )
        self.selector = selector
        self.address = address


class NotABike(WrongDevice):
    """The named device connected but serves none of FTMS, Cycling Power or Cycling Speed and Cadence."""

    def __init__(self, selector: str, address: str) -> None:
        super().__init__(
            f"{selector!r} ({address}) connected but serves no bike service (Fitness Machine 0x1826, "
            "Cycling Power 0x1818 or Cycling Speed and Cadence 0x1816): name a smart trainer, bike, "
            "power meter or cadence sensor"
        )
        self.selector = selector
        self.address = address


class StrapConnectError(ConnectionError):
    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address


class StrapConnectTimeout(StrapConnectError, TimeoutError):
    def __init__(self, address: str, timeout_s: float) -> None:
        super().__init__(address, f"strap did not accept a connection within {timeout_s:g} s")
        self.timeout_s = timeout_s


async def connect_strap(
    device: BLEDevice,
    *,
    timeout_s: float,
    client_backend: type[BaseBleakClient] | None = None,
    disconnected_callback: Callable[[BleakClient], None] | None = None,
    **client_kwargs: Any,
) -> BleakClient:
    """A new, connected BleakClient for `device`, or StrapConnectTimeout / StrapConnectError."""
    try:
        async with asyncio.timeout(timeout_s):
            return await establish_connection(
                BleakClient,
                device,
                device.name or device.address,
                disconnected_callback=disconnected_callback,
                max_attempts=1,
                backend=client_backend,
                timeout=timeout_s,
                **client_kwargs,
            )
    except TimeoutError:
        raise StrapConnectTimeout(device.address, timeout_s) from None
    except BleakError as exc:
        if BLEAK_BLUEZ_TOO_OLD in str(exc):
            raise BluezTooOld(device.address) from exc
        raise StrapConnectError(device.address, str(exc)) from exc
