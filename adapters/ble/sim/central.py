"""The simulated host adapter: one bumble central `Device` shared by every bleak scanner and client.

Like a real adapter (hci0) it is one radio for all: scanning is reference-counted across scanners, and
LE connects go one at a time (bumble's virtual controller, like many real ones, refuses a second LE
Create Connection while one is pending), each within its caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bumble import core, hci
from bumble.device import Connection, Device

from adapters.ble.sim.radio import RangeLink, SimController, new_node

log = logging.getLogger(__name__)

AdvertisementListener = Callable[[Any], None]


class SimConnectError(Exception):
    """A connection attempt the virtual controller refused (not a timeout)."""


class SimCentral:
    def __init__(self, device: Device, controller: SimController, link: RangeLink) -> None:
        self.device = device
        self.controller = controller
        self.link = link
        self._listeners: list[AdvertisementListener] = []
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        device.on("advertisement", self._dispatch)

    @classmethod
    async def create(cls, link: RangeLink, address: str = "C0:52:53:00:00:00") -> SimCentral:
        device, controller = await new_node(link, "ridesync-sim-adapter", address)
        return cls(device, controller, link)

    # --- scanning -----------------------------------------------------------------------------------

    def _dispatch(self, advertisement: Any) -> None:
        for listener in list(self._listeners):
            listener(advertisement)

    async def add_scan_listener(self, listener: AdvertisementListener) -> None:
        async with self._scan_lock:
            self._listeners.append(listener)
            if len(self._listeners) == 1:
                await self.device.start_scanning(filter_duplicates=False)

    async def remove_scan_listener(self, listener: AdvertisementListener) -> None:
        async with self._scan_lock:
            if listener not in self._listeners:
                return
            self._listeners.remove(listener)
            if not self._listeners and self.device.is_scanning:
                await self.device.stop_scanning()

    async def close(self) -> None:
        self._listeners.clear()
        with contextlib.suppress(Exception):
            if self.device.is_scanning:
                await self.device.stop_scanning()
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await connection.disconnect()

    # --- connecting ---------------------------------------------------------------------------------

    async def connect(self, address: str, deadline: float) -> Connection:
        """Connect to `address` by loop time `deadline`; TimeoutError when the strap never answers."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            await self._connect_lock.acquire()
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{address}: connect deadline passed while waiting for the radio")
            peer = hci.Address(address)
            try:
                # bumble's own timeout sends LE Create Connection Cancel, which SimController answers,
                # so this returns or raises by the deadline instead of hanging.
                connection: Connection = await self.device.connect(peer, timeout=remaining)
                return connection
            except core.TimeoutError as exc:
                raise TimeoutError(f"{address}: no answer within {remaining:.3g} s") from exc
            except core.ConnectionError as exc:
                raise SimConnectError(f"{address}: connection failed: {exc}") from exc
            except hci.HCI_Error as exc:
                raise SimConnectError(f"{address}: controller refused the connect: {exc}") from exc
            except asyncio.CancelledError:
                # Cancelled from outside (a caller's own timeout): bumble does not cancel the pending
                # connect in that case, so do it here or the radio refuses every later connect.
                await asyncio.shield(self._abort(peer))
                raise
        finally:
            self._connect_lock.release()

    async def _abort(self, peer: hci.Address) -> None:
        if self.controller.pending_le_connection is not None:
            with contextlib.suppress(hci.HCI_Error, core.BaseBumbleError):
                await self.device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        # The connect may have completed just as it was cancelled: nobody owns that link, drop it.
        for connection in list(self.device.connections.values()):
            if connection.peer_address == peer:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
