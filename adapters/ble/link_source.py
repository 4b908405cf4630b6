"""What every BLE `SensorSource` shares, whatever it measures: one device, as a stream of items.

It finds the device (by address or name) through its adapter's one shared discovery, connects with a new
BleakClient each time inside the adapter's connection budget, subscribes to the measurement before
anything else (so no early notification is missed, bleak #374), and runs until the stream is closed.
Every notification becomes `Reading`s stamped with their arrival time and the next numbers of this
device's sequence, which never restarts across reconnects, so consumers can see gaps and never see the
same reading twice: callbacks from an old connection are ignored. Link and signal states come from
`StrapLinkMachine` as `SourceEvent`s.

A subclass says what device it wants and what its bytes mean (the hooks at the end of the class): the
heart-rate strap (`source.py`) and the bike (`bike_source.py`) are the two.

The bleak backend is injected through bleak's own `backend=` classes; with None this is BlueZ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import warnings
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from adapters.ble.adapter import BleAdapter
from adapters.ble.budget import ConnectionBudgetExceeded
from adapters.ble.connect import (
    BluezTooOld,
    StrapConnectError,
    StrapConnectTimeout,
    WrongDevice,
    connect_strap,
)
from adapters.ble.link_state import BackoffPolicy, StrapLinkMachine
from adapters.ble.scan import BluetoothUnavailable, StrapNotFound, is_address
from adapters.ble.timeouts import (
    DISCONNECT_TIMEOUT_S,
    GATT_TIMEOUT_S,
    HARDWARE_CONNECT_TIMEOUT_S,
    SCAN_TIMEOUT_S,
)
from engine.readings import SourceEvent, SourceItem, SourceState

log = logging.getLogger(__name__)

# Errors that end a source for good (each says what to fix); everything else is retried with backoff.
FATAL_ERRORS: tuple[type[Exception], ...] = (
    BluetoothUnavailable,
    BluezTooOld,
    WrongDevice,
    ConnectionBudgetExceeded,
)

Out = Callable[[SourceItem], None]


@dataclass(frozen=True, slots=True)
class StrapSettings:
    """Timing of one BLE source (strap or bike). Defaults and where they come from: timeouts.py."""

    connect_timeout_s: float = HARDWARE_CONNECT_TIMEOUT_S
    scan_timeout_s: float = SCAN_TIMEOUT_S
    gatt_timeout_s: float = GATT_TIMEOUT_S
    stale_after_s: float = 3.0
    stable_after_s: float = 10.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # How often the watchdog looks for staleness; a fraction of stale_after_s.
    tick_s: float = 0.5
    disconnect_timeout_s: float = DISCONNECT_TIMEOUT_S


@dataclass
class StrapStats:
    notifications: int = 0
    malformed: int = 0
    # Readings kept although their payload was damaged past the heart rate (odd byte, RR flag, ...).
    payload_defects: int = 0
    # Notifications that arrived before start_notify returned (kept, not lost).
    early_notifications: int = 0
    connects: int = 0
    connect_failures: int = 0
    links_lost: int = 0


class _End:
    pass


_END = _End()


class BleLinkSource:
    """The connection loop; subclasses fill in the hooks below `_next_seq`."""

    def __init__(
        self,
        selector: str,
        source_id: str,
        *,
        adapter: BleAdapter,
        settings: StrapSettings | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.selector = selector
        self.settings = settings or StrapSettings()
        self.stats = StrapStats()
        self.adapter = adapter
        self._budget = adapter.budget
        self._client_backend = adapter.client_backend
        self._clock = clock
        self._source_id = source_id
        self._machine = StrapLinkMachine(
            self._source_id,
            backoff=self.settings.backoff,
            stale_after_s=self.settings.stale_after_s,
            stable_after_s=self.settings.stable_after_s,
            rng=rng or random.Random(),
        )
        self._seq = 0
        self._generation = 0
        self._device: BLEDevice | None = None
        self._running = False
        self._connect_s = 0.0

    @property
    def source_id(self) -> str:
        return self._source_id

    @property
    def machine(self) -> StrapLinkMachine:
        return self._machine

    async def stream(self) -> AsyncGenerator[SourceItem, None]:
        """Run the source until the iterator is closed or cancelled. One stream per source at a time."""
        if self._running:
            raise RuntimeError(f"{self._source_id} is already streaming")
        self._running = True
        queue: asyncio.Queue[SourceItem | _End] = asyncio.Queue()
        runner = asyncio.create_task(self._run(queue.put_nowait), name=self._source_id)
        runner.add_done_callback(lambda _t: queue.put_nowait(_END))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    runner.result()  # the reason the runner stopped, e.g. ConnectionBudgetExceeded
                    return
                yield item
        finally:
            # Stop accepting notifications now: what arrives while the runner winds down would take
            # sequence numbers for readings nobody receives.
            self._generation += 1
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            self._running = False

    # --- the connection loop ------------------------------------------------------------------------

    async def _run(self, out: Out) -> None:
        with self._budget.reserve(self._source_id):
            try:
                await self._connect_loop(out)
            finally:
                # Nobody is listening any more; the machine only needs to be ready for a later stream.
                self._machine.stopped(self._clock())

    async def _connect_loop(self, out: Out) -> None:
        while True:
            for event in self._machine.connecting(self._clock()):
                out(event)
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._generation += 1
            generation = self._generation
            try:
                client = await self._open(lost, generation)
            except (BluezTooOld, WrongDevice) as exc:
                # No connect can ever succeed on this machine, or the user named the wrong device:
                # say what to fix, and stop.
                out(SourceEvent(self._clock(), self._source_id, SourceState.FAILED, str(exc)))
                raise
            except BluetoothUnavailable as exc:
                # Before any connection this is a machine that is not set up: say so at once.
                # After one, it is more likely an adapter reset: retry like any other failure.
                if self.stats.connects == 0:
                    out(SourceEvent(self._clock(), self._source_id, SourceState.FAILED, str(exc)))
                    raise
                await self._back_off_after(exc, out)
                continue
            except (StrapNotFound, StrapConnectError) as exc:
                if not isinstance(exc, StrapConnectTimeout):
                    # BlueZ forgets devices it has not seen for a while: find the device afresh.
                    self._device = None
                await self._back_off_after(exc, out)
                continue
            self.stats.connects += 1
            try:
                reason = await self._session(client, lost, generation, out)
            finally:
                # Whatever ended the session (link loss, error, cancellation), this client is done.
                self._generation += 1
                await self._disconnect(client)
            self.stats.links_lost += 1
            events, retry = self._machine.link_lost(self._clock(), reason)
            for event in events:
                out(event)
            await asyncio.sleep(retry.delay_s)

    async def _disconnect(self, client: BleakClient) -> None:
        with contextlib.suppress(BleakError, TimeoutError, OSError):
            async with asyncio.timeout(self.settings.disconnect_timeout_s):
                await asyncio.shield(client.disconnect())

    async def _back_off_after(self, exc: Exception, out: Out) -> None:
        self.stats.connect_failures += 1
        events, retry = self._machine.connect_failed(self._clock(), str(exc))
        for event in events:
            out(event)
        await asyncio.sleep(retry.delay_s)

    async def _open(self, lost: asyncio.Future[str], generation: int) -> BleakClient:
        # Re-scan by name every time (a device may rotate its address); keep the device by address
        # once seen, since BlueZ connects fine to a known device that is in range.
        if self._device is None and is_address(self.selector):
            # A device still connected from a crashed run does not advertise: close that connection
            # (and take the adapter's record of the device) before looking for it.
            self._device = await self.adapter.recover_stale(self.selector)
        if self._device is None or not is_address(self.selector):
            try:
                self._device, _ = await self.adapter.scanner().find(
                    self.selector, self.settings.scan_timeout_s
                )
            except StrapNotFound as exc:
                raise self._not_found(exc) from None
        device = self._device

        def on_disconnect(_client: BleakClient) -> None:
            if generation == self._generation and not lost.done():
                lost.set_result("link lost (device disconnected or out of range)")

        started = time.monotonic()
        client = await connect_strap(
            device,
            timeout_s=self.settings.connect_timeout_s,
            client_backend=self._client_backend,
            disconnected_callback=on_disconnect,
            **self.adapter.client_kwargs(),
        )
        # How long the whole attempt took (BlueZ pre-steps, connect, service discovery): reported
        # with the streaming state, so a lab sees its margin under connect_timeout_s.
        self._connect_s = time.monotonic() - started
        # The device was found by name or address, not by an advertised service: check that it really
        # serves what this source reads.
        try:
            self._check_services(client)
        except WrongDevice:
            self._generation += 1
            await self._disconnect(client)
            raise
        return client

    async def _session(
        self,
        client: BleakClient,
        lost: asyncio.Future[str],
        generation: int,
        out: Out,
    ) -> str:
        # A device may notify as soon as its CCCD is written, before start_notify returns (bleak #374):
        # those are held and delivered once the link is reported as streaming.
        early: list[tuple[float, bytes]] | None = []

        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if generation != self._generation:
                return  # a late callback from a connection we already gave up: never a duplicate
            if early is not None:
                early.append((self._clock(), bytes(data)))
                return
            self._on_measurement(bytes(data), out)

        mtu = await self._acquire_mtu(client)
        extra = await self._before_subscribe(client)
        try:
            # Bounded: a start_notify that never returns (bleak #484) must not freeze the source.
            async with asyncio.timeout(self.settings.gatt_timeout_s):
                await client.start_notify(self._measurement_uuid(), on_notify)
        except TimeoutError:
            return f"subscribe got no answer within {self.settings.gatt_timeout_s:g} s"
        except BleakError as exc:
            return f"subscribe failed: {exc}"
        for event in self._machine.subscribed(
            self._clock(),
            address=client.address,
            mtu=mtu,
            backend=str(client.backend_id),
            adapter=self.adapter.name,
            connect_s=round(self._connect_s, 3),
            **extra,
        ):
            out(event)
        held: list[tuple[float, bytes]] = early or []
        early = None
        self.stats.early_notifications += len(held)
        for t, payload in held:
            self._on_measurement(payload, out, t)
        await self._after_subscribe(client, generation, out)
        while not lost.done():
            done, _ = await asyncio.wait({lost}, timeout=self.settings.tick_s)
            if not done:
                if not client.is_connected and not lost.done():
                    lost.set_result("link lost")
                for event in self._machine.tick(self._clock()):
                    out(event)
                if not lost.done():
                    await self._on_tick(client, out)
        return lost.result()

    async def _acquire_mtu(self, client: BleakClient) -> int | None:
        """The ATT MTU the link really uses, or None when the backend cannot say.

        BlueZ negotiates the MTU itself but bleak only learns it from `_acquire_mtu()` (bleak's own
        advice); until then `mtu_size` warns and answers 23. Best effort: the MTU is only reported.
        """
        backend = getattr(client, "_backend", None)
        acquire = getattr(backend, "_acquire_mtu", None)
        if acquire is not None:
            try:
                async with asyncio.timeout(self.settings.gatt_timeout_s):
                    await acquire()
            except (BleakError, TimeoutError, AssertionError, OSError) as exc:
                log.info("MTU not acquired", extra={"source": self._source_id, "error": str(exc)})
                return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mtu = client.mtu_size
        return mtu

    async def _read(self, client: BleakClient, uuid: str) -> bytes | None:
        """Read an optional characteristic: None when the device lacks it or the read fails (logged)."""
        try:
            if client.services.get_characteristic(uuid) is None:
                return None
            async with asyncio.timeout(self.settings.gatt_timeout_s):
                return bytes(await client.read_gatt_char(uuid))
        except (BleakError, TimeoutError) as exc:  # includes a link that dropped under the read
            log.warning("read failed", extra={"source": self._source_id, "uuid": uuid, "error": str(exc)})
            return None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- what a subclass says -----------------------------------------------------------------------

    def _check_services(self, client: BleakClient) -> None:
        """Raise a `WrongDevice` when the connected device does not serve what this source reads."""
        raise NotImplementedError

    def _not_found(self, exc: StrapNotFound) -> StrapNotFound:
        """The not-found error as this kind of device should say it (the strap's wording by default)."""
        return exc

    def _measurement_uuid(self) -> str:
        """The characteristic to subscribe to (chosen by `_check_services` for this connection)."""
        raise NotImplementedError

    def _on_measurement(self, payload: bytes, out: Out, t: float | None = None) -> None:
        raise NotImplementedError

    async def _before_subscribe(self, client: BleakClient) -> dict[str, object]:
        """Reads done before the subscription; returns extra fields for the `streaming` state."""
        return {}

    async def _after_subscribe(self, client: BleakClient, generation: int, out: Out) -> None:
        """One-off reads and extra subscriptions once the measurement streams."""

    async def _on_tick(self, client: BleakClient, out: Out) -> None:
        """Periodic work while the link is up (every `tick_s`)."""
