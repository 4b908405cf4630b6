"""The simulated host adapter: one bumble central `Device` shared by every bleak scanner and client.

It behaves like one BlueZ adapter (hci0) seen from one process, which is one D-Bus client:

* discovery is one per client: while a scanner is discovering, a second `start` fails with the
  `BleakDBusError` bleak raises for BlueZ's answer, `[org.bluez.Error.InProgress] Operation already in
  progress` (bleak issue 618). The product scans once per adapter and fans results out;
* LE connects go one at a time (bumble's virtual controller, like many real ones, refuses a second LE
  Create Connection while one is pending), each within its caller's deadline;
* a connection outlives the client that made it: `strand(address)` connects on behalf of a client that
  then dies, as BlueZ keeps a connection when the process that asked for it crashes. The strap stops
  advertising while connected, so scanning never finds it; `stranded_connection` /
  `close_stranded` are what a BlueZ object-tree lookup and a D-Bus `Disconnect` give
  bleak-retry-connector's `get_device` / `close_stale_connections_by_address`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bleak.exc import BleakDBusError
from bumble import core, hci
from bumble.device import Connection, Device

from adapters.ble.sim.radio import RangeLink, SimController, new_node

log = logging.getLogger(__name__)

AdvertisementListener = Callable[[Any], None]

# What bleak's BlueZ backend raises when a second StartDiscovery from the same D-Bus client meets a
# discovery already running (bleak/backends/bluezdbus/manager.py: assert_reply -> BleakDBusError).
BLUEZ_IN_PROGRESS = "org.bluez.Error.InProgress"
BLUEZ_IN_PROGRESS_TEXT = "Operation already in progress"


class SimConnectError(Exception):
    """A connection attempt the virtual controller refused (not a timeout)."""


class SimCentral:
    def __init__(self, device: Device, controller: SimController, link: RangeLink) -> None:
        self.device = device
        self.controller = controller
        self.link = link
        self._listener: AdvertisementListener | None = None
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._stranded: dict[str, Connection] = {}
        # The BlueZ this adapter stands for; bleak refuses every connect below 5.55.
        self.bluez_version: tuple[int, int] = (5, 66)
        self.discoveries_refused = 0
        device.on("advertisement", self._dispatch)

    @classmethod
    async def create(
        cls, link: RangeLink, address: str = "C0:52:53:00:00:00", name: str = "ridesync-sim-adapter"
    ) -> SimCentral:
        device, controller = await new_node(link, name, address)
        return cls(device, controller, link)

    # --- scanning -----------------------------------------------------------------------------------

    def _dispatch(self, advertisement: Any) -> None:
        if self._listener is not None:
            self._listener(advertisement)

    @property
    def discovering(self) -> bool:
        return self._listener is not None

    async def start_discovery(self, listener: AdvertisementListener) -> None:
        """StartDiscovery for this process; InProgress (as bleak raises it) while one is running."""
        async with self._scan_lock:
            if self._listener is not None:
                self.discoveries_refused += 1
                raise BleakDBusError(BLUEZ_IN_PROGRESS, [BLUEZ_IN_PROGRESS_TEXT])
            await self.device.start_scanning(filter_duplicates=False)
            self._listener = listener

    async def stop_discovery(self, listener: AdvertisementListener) -> None:
        async with self._scan_lock:
            if self._listener != listener:
                return
            self._listener = None
            if self.device.is_scanning:
                await self.device.stop_scanning()

    async def close(self) -> None:
        self._listener = None
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

    # --- connections that outlive their client ------------------------------------------------------

    async def strand(self, address: str, timeout_s: float = 5.0) -> None:
        """Connect to `address` for a client that then dies without disconnecting (a crashed run)."""
        loop = asyncio.get_running_loop()
        connection = await self.connect(address, loop.time() + timeout_s)
        key = address.upper()
        self._stranded[key] = connection
        connection.on("disconnection", lambda _reason: self._stranded.pop(key, None))

    def stranded_connection(self, address: str) -> bool:
        """Whether the adapter holds a connection to `address` that no live client owns."""
        return address.upper() in self._stranded

    async def close_stranded(self, address: str) -> bool:
        """Disconnect a connection no client owns; True if there was one."""
        connection = self._stranded.pop(address.upper(), None)
        if connection is None:
            return False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await connection.disconnect()
        return True
