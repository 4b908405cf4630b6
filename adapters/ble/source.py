"""The BLE heart-rate source: one strap, as an engine `SensorSource`.

It finds the strap (by address or name, advertising 0x180D), connects with a new BleakClient each time,
subscribes to Heart Rate Measurement before anything else (so no early notification is missed, bleak
#374), then reads Body Sensor Location and Battery Level. Every notification becomes a `Reading`
stamped with its arrival time and the next number of this strap's sequence, which never restarts
across reconnects, so consumers can see gaps and never see the same reading twice: callbacks from an
old connection are ignored. Link and signal states come from `StrapLinkMachine` as `SourceEvent`s.

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
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError

from adapters.ble.adapter import BleAdapter
from adapters.ble.budget import ConnectionBudget, ConnectionBudgetExceeded
from adapters.ble.connect import (
    BluezTooOld,
    NotAHeartRateDevice,
    StrapConnectError,
    StrapConnectTimeout,
    connect_strap,
)
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
from adapters.ble.link_state import StrapLinkMachine
from adapters.ble.scan import BluetoothUnavailable, StrapNotFound, is_address
from adapters.ble.timeouts import (
    DISCONNECT_TIMEOUT_S,
    GATT_TIMEOUT_S,
    HARDWARE_CONNECT_TIMEOUT_S,
    SCAN_TIMEOUT_S,
)
from engine.backoff import Backoff
from engine.readings import Contact, Kind, Reading, SourceEvent, SourceItem, SourceState

log = logging.getLogger(__name__)


# Errors that end a source for good (each says what to fix); everything else is retried with backoff.
FATAL_ERRORS: tuple[type[Exception], ...] = (
    BluetoothUnavailable,
    BluezTooOld,
    NotAHeartRateDevice,
    ConnectionBudgetExceeded,
)


@dataclass(frozen=True, slots=True)
class StrapSettings:
    # Defaults and where they come from: adapters/ble/timeouts.py.
    connect_timeout_s: float = HARDWARE_CONNECT_TIMEOUT_S
    scan_timeout_s: float = SCAN_TIMEOUT_S
    gatt_timeout_s: float = GATT_TIMEOUT_S
    stale_after_s: float = 3.0
    stable_after_s: float = 10.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
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


class BleHeartRateSource:
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
        self.selector = selector
        self.settings = settings or StrapSettings()
        self.stats = StrapStats()
        if adapter is None:
            if budget is None:
                raise TypeError("BleHeartRateSource needs an adapter or a budget")
            adapter = BleAdapter(
                budget.adapter, budget, scanner_backend=scanner_backend, client_backend=client_backend
            )
        self.adapter = adapter
        self._budget = adapter.budget
        self._client_backend = adapter.client_backend
        self._clock = clock
        self._source_id = f"ble-hr:{selector}"
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
        """Run the strap until the iterator is closed or cancelled. One stream per source at a time."""
        if self._running:
            raise RuntimeError(f"{self._source_id} is already streaming")
        self._running = True
        queue: asyncio.Queue[SourceItem | _End] = asyncio.Queue()
        runner = asyncio.create_task(self._run(queue.put_nowait), name=f"ble-hr {self.selector}")
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

    async def _run(self, out: Callable[[SourceItem], None]) -> None:
        with self._budget.reserve(self._source_id):
            try:
                await self._connect_loop(out)
            finally:
                # Nobody is listening any more; the machine only needs to be ready for a later stream.
                self._machine.stopped(self._clock())

    async def _connect_loop(self, out: Callable[[SourceItem], None]) -> None:
        while True:
            for event in self._machine.connecting(self._clock()):
                out(event)
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._generation += 1
            generation = self._generation
            try:
                client = await self._open(lost, generation)
            except (BluezTooOld, NotAHeartRateDevice) as exc:
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
                    # BlueZ forgets devices it has not seen for a while: find the strap afresh.
                    self._device = None
                await self._back_off_after(exc, out)
                continue
            self.stats.connects += 1
            try:
                reason = await self._session(client, lost, generation, out)
            finally:
                # Whatever ended the session (link loss, error, cancellation), this client is done.
                self._generation += 1
                with contextlib.suppress(BleakError, TimeoutError, OSError):
                    async with asyncio.timeout(self.settings.disconnect_timeout_s):
                        await asyncio.shield(client.disconnect())
            self.stats.links_lost += 1
            events, retry = self._machine.link_lost(self._clock(), reason)
            for event in events:
                out(event)
            await asyncio.sleep(retry.delay_s)

    async def _back_off_after(self, exc: Exception, out: Callable[[SourceItem], None]) -> None:
        self.stats.connect_failures += 1
        events, retry = self._machine.connect_failed(self._clock(), str(exc))
        for event in events:
            out(event)
        await asyncio.sleep(retry.delay_s)

    async def _open(self, lost: asyncio.Future[str], generation: int) -> BleakClient:
        # Re-scan by name every time (a strap may rotate its address); keep the device by address
        # once seen, since BlueZ connects fine to a known device that is in range.
        if self._device is None and is_address(self.selector):
            # A strap still connected from a crashed run does not advertise: close that connection
            # (and take the adapter's record of the device) before looking for it.
            self._device = await self.adapter.recover_stale(self.selector)
        if self._device is None or not is_address(self.selector):
            self._device, _ = await self.adapter.scanner().find(self.selector, self.settings.scan_timeout_s)
        device = self._device

        def on_disconnect(_client: BleakClient) -> None:
            if generation == self._generation and not lost.done():
                lost.set_result("link lost (strap disconnected or out of range)")

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
        # The device was found by name or address, not by an advertised 0x180D (some watches and
        # bands serve it without advertising it): check that it really serves heart rate.
        if client.services.get_service(HEART_RATE_SERVICE_UUID) is None:
            self._generation += 1
            with contextlib.suppress(BleakError, TimeoutError, OSError):
                async with asyncio.timeout(self.settings.disconnect_timeout_s):
                    await asyncio.shield(client.disconnect())
            raise NotAHeartRateDevice(self.selector, client.address)
        return client

    async def _session(
        self,
        client: BleakClient,
        lost: asyncio.Future[str],
        generation: int,
        out: Callable[[SourceItem], None],
    ) -> str:
        # A strap may notify as soon as its CCCD is written, before start_notify returns (bleak #374):
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
        try:
            # Bounded: a start_notify that never returns (bleak #484) must not freeze the source.
            async with asyncio.timeout(self.settings.gatt_timeout_s):
                await client.start_notify(HEART_RATE_MEASUREMENT_UUID, on_notify)
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
        ):
            out(event)
        held: list[tuple[float, bytes]] = early or []
        early = None
        self.stats.early_notifications += len(held)
        for t, payload in held:
            self._on_measurement(payload, out, t)
        await self._read_once(client, BODY_SENSOR_LOCATION_UUID, out)
        await self._read_once(client, BATTERY_LEVEL_UUID, out)
        while not lost.done():
            done, _ = await asyncio.wait({lost}, timeout=self.settings.tick_s)
            if not done:
                if not client.is_connected and not lost.done():
                    lost.set_result("link lost")
                for event in self._machine.tick(self._clock()):
                    out(event)
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

    async def _read_once(self, client: BleakClient, uuid: str, out: Callable[[SourceItem], None]) -> None:
        """Read an optional characteristic; a strap without it, or a bad value, is logged, not fatal."""
        try:
            if client.services.get_characteristic(uuid) is None:
                return
            async with asyncio.timeout(self.settings.gatt_timeout_s):
                data = bytes(await client.read_gatt_char(uuid))
        except (BleakError, TimeoutError) as exc:  # includes a link that dropped under the read
            log.warning(
                "strap read failed", extra={"source": self._source_id, "uuid": uuid, "error": str(exc)}
            )
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

    def _on_measurement(
        self, payload: bytes, out: Callable[[SourceItem], None], t: float | None = None
    ) -> None:
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

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
