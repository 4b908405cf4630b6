"""One Bluetooth adapter as the sources see it: its connection slots, its one shared discovery, the
bleak backend classes to use on it, and how to recover a connection a crashed run left behind.

Real adapters are BlueZ's (`hci0`, `hci1`, ...; `default` is whatever bleak picks); simulated ones come
from `adapters.ble.sim.Simulation`. Straps are spread over the adapters of a spec by `assign`, within
each adapter's slot budget.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

from adapters.ble.budget import ConnectionBudget
from adapters.ble.shared_scanner import SharedScanner, shared_scanner

log = logging.getLogger(__name__)

# Given an address: close any connection the adapter holds to it for a client that is gone, and return
# a device to connect to without scanning (None: scan for it).
StaleRecovery = Callable[[str], Awaitable[BLEDevice | None]]


async def bluez_recover_stale(address: str, bluez_adapter: str | None = None) -> BLEDevice | None:
    """BlueZ keeps a connection when the process that made it dies, and the strap then stops
    advertising. bleak-retry-connector finds the device in BlueZ's object tree (`get_device`) and
    disconnects what is still connected (`close_stale_connections_by_address`); both are no-ops off
    Linux or without BlueZ."""
    from bleak_retry_connector import close_stale_connections_by_address, get_device
    from bleak_retry_connector.bluez import get_device_by_adapter

    try:
        device = (
            await get_device_by_adapter(address, bluez_adapter)
            if bluez_adapter
            else await get_device(address)
        )
        await close_stale_connections_by_address(address)
    except Exception as exc:  # best effort: a D-Bus hiccup here must not stop the scan that follows
        log.warning("stale-connection check failed", extra={"address": address, "error": repr(exc)})
        return None
    return device


@dataclass
class BleAdapter:
    name: str
    budget: ConnectionBudget
    scanner_backend: type[BaseBleakScanner] | None = None
    client_backend: type[BaseBleakClient] | None = None
    bluez_adapter: str | None = None
    recover: StaleRecovery | None = field(default=None, repr=False)

    def scanner(self) -> SharedScanner:
        """This adapter's one discovery (per event loop)."""
        return shared_scanner(self.scanner_backend, self.bluez_adapter)

    def client_kwargs(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self.bluez_adapter}} if self.bluez_adapter else {}

    async def recover_stale(self, address: str) -> BLEDevice | None:
        if self.recover is not None:
            return await self.recover(address)
        if self.client_backend is None:
            return await bluez_recover_stale(address, self.bluez_adapter)
        return None


def assign(count: int, adapters: Sequence[BleAdapter]) -> list[BleAdapter] | None:
    """An adapter for each of `count` straps, spread evenly within every adapter's free slots; None
    when they do not fit."""
    free = [a.budget.available for a in adapters]
    if count > sum(free):
        return None
    out: list[BleAdapter] = []
    for _ in range(count):
        i = max(range(len(adapters)), key=lambda k: (free[k], -k))
        free[i] -= 1
        out.append(adapters[i])
    return out
