"""One discovery per adapter, fanned out to every strap that is looking for its device.

BlueZ allows one discovery per D-Bus client and adapter, and bleak's BlueZ backend shares one D-Bus
connection per process: a second `BleakScanner` started while another runs in the same process gets
`[org.bluez.Error.InProgress] Operation already in progress` (bleak issue 618). So, as Home Assistant
does, one `SharedScanner` per adapter runs a single `BleakScanner` while at least one source is
looking for a device, and hands each detection to every waiter whose selector matches it.

The scan is not filtered by service: a user who names a device (address or name) may name one that
serves Heart Rate (0x180D) without advertising it (some watches, Mi Band, PineTime); the source checks
for the service after connecting.

Starting discovery can fail for a while on a healthy machine: `InProgress` (another scanner of this
process, or bleak's own lookup inside a connect), `NotReady` and an adapter that is still powering up.
Those are retried with full-jitter backoff until the caller's deadline; anything else (no BlueZ, no
adapter, no permission) is `BluetoothUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from dataclasses import dataclass
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakDBusError, BleakError

from adapters.ble.scan import BluetoothUnavailable, StrapNotFound, matches
from engine.backoff import Backoff

log = logging.getLogger(__name__)

BLUEZ_IN_PROGRESS = "org.bluez.Error.InProgress"
BLUEZ_NOT_READY = "org.bluez.Error.NotReady"
# BlueZ's texts for an adapter that is powering up or resetting (mgmt status Busy / Not Powered).
_TRANSIENT_TEXTS = ("operation already in progress", "resource not ready", "powering", "busy")

# Retrying a refused StartDiscovery: quick at first, never hammering the daemon.
SCAN_RETRY = Backoff(base=0.25, cap=2.0)


def is_transient(exc: BaseException) -> bool:
    """A discovery refusal that goes away by itself (InProgress, NotReady, adapter powering up)."""
    if isinstance(exc, BleakDBusError) and exc.dbus_error in (BLUEZ_IN_PROGRESS, BLUEZ_NOT_READY):
        return True
    text = str(exc).lower()
    return isinstance(exc, BleakError) and any(t in text for t in _TRANSIENT_TEXTS)


@dataclass(eq=False)
class _Waiter:
    selector: str
    found: asyncio.Future[tuple[BLEDevice, AdvertisementData]]


class SharedScanner:
    """The one discovery of one adapter. Get it with `shared_scanner(backend, adapter)`."""

    def __init__(
        self,
        backend: type[BaseBleakScanner] | None = None,
        bluez_adapter: str | None = None,
        *,
        retry: Backoff = SCAN_RETRY,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.bluez_adapter = bluez_adapter
        self._retry = retry
        self._rng = rng or random.Random()
        self._waiters: list[_Waiter] = []
        self._scanner: BleakScanner | None = None
        self._lock = asyncio.Lock()
        self.starts = 0
        self.transient_refusals = 0
        self.last_refusal: str | None = None

    @property
    def scanning(self) -> bool:
        return self._scanner is not None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _on_detection(self, device: BLEDevice, adv: AdvertisementData) -> None:
        for waiter in list(self._waiters):
            if not waiter.found.done() and matches(waiter.selector, device, adv):
                waiter.found.set_result((device, adv))

    async def find(self, selector: str, timeout_s: float) -> tuple[BLEDevice, AdvertisementData]:
        """The first device whose address or name is `selector`, within `timeout_s`.

        StrapNotFound when nothing matched in time (naming a refused discovery if that was why);
        BluetoothUnavailable when the stack cannot scan at all.
        """
        waiter = _Waiter(selector, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await self._ensure_scanning()
                return await waiter.found
        except TimeoutError:
            if not self.scanning and self.last_refusal:
                raise StrapNotFound(
                    selector, timeout_s, f"the adapter kept refusing discovery: {self.last_refusal}"
                ) from None
            raise StrapNotFound(selector, timeout_s) from None
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                # Stop even while being cancelled: a discovery left running blocks the next one.
                await asyncio.shield(self._stop_if_idle())

    async def _ensure_scanning(self) -> None:
        async with self._lock:
            attempt = 0
            while self._scanner is None:
                kwargs: dict[str, Any] = {}
                if self.bluez_adapter is not None:
                    kwargs["bluez"] = {"adapter": self.bluez_adapter}
                scanner = BleakScanner(self._on_detection, backend=self.backend, **kwargs)
                try:
                    await scanner.start()
                except TimeoutError:
                    raise
                except (BleakError, OSError) as exc:
                    if not is_transient(exc):
                        raise BluetoothUnavailable(exc) from exc
                    self.transient_refusals += 1
                    self.last_refusal = str(exc)
                    delay = self._retry.delay(attempt, self._rng)
                    attempt += 1
                    log.info(
                        "discovery refused, retrying",
                        extra={"adapter": self.bluez_adapter, "error": str(exc), "retry_in_s": delay},
                    )
                    await asyncio.sleep(delay)
                    continue
                self._scanner = scanner
                self.starts += 1
                self.last_refusal = None

    async def _stop_if_idle(self) -> None:
        async with self._lock:
            scanner = self._scanner
            if self._waiters or scanner is None:
                return
            self._scanner = None
            with contextlib.suppress(BleakError, OSError):
                await scanner.stop()


_REGISTRY: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[object, str | None], SharedScanner]
] = weakref.WeakKeyDictionary()


def shared_scanner(
    backend: type[BaseBleakScanner] | None = None, bluez_adapter: str | None = None
) -> SharedScanner:
    """The running loop's one scanner for this adapter (bleak backend + BlueZ adapter name)."""
    per_loop = _REGISTRY.setdefault(asyncio.get_running_loop(), {})
    key = (backend, bluez_adapter)
    scanner = per_loop.get(key)
    if scanner is None:
        scanner = per_loop[key] = SharedScanner(backend, bluez_adapter)
    return scanner
