"""The bridge peripheral: a bumble device that advertises the ride's bike as a standard BLE bike.

`open_bridge(transport, with_hr=...)` opens a controller and starts advertising:

* `"sim"`: a node on the simulated virtual radio (`adapters/ble/sim`), the one simulated straps and bikes
  use, so the project's own bleak sources can read the bridge back;
* anything else is handed to bumble's `open_transport`: `usb:0`, `hci-socket:0`,
  `serial:/dev/ttyACM0,1000000`, `tcp-client:HOST:PORT`, ... (README.md, "The bridge"). A transport
  that cannot be opened, or a controller that does not answer, is `BridgeTransportError`, with what to
  check.

`BridgePeripheral.offer(item)` takes each reading and state event of the ride's sources (`BridgedSource`
wraps a source so that its stream feeds the bridge on the way to the ride). A changed value wakes the
notifier, which sends Indoor Bike Data, Cycling Power Measurement, CSC Measurement (and Heart Rate
Measurement) to every subscribed central at once; with nothing new it still sends once per
`heartbeat_s`, so a head unit sees a stopped crank as a repeated revolution count, as from a real
sensor. Control point writes are answered by indication from the same owned worker, after bumble has
sent the write response, as the spec orders them. Advertising restarts after each connection, so a
second central (a watch next to Zwift) can connect too, when the controller allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bumble import hci
from bumble.att import ATT_Error, ErrorCode
from bumble.device import Device

from adapters.ble.bridge.gatt import BridgeGatt, advertising, build_gatt
from adapters.ble.bridge.model import BridgeModel, ControlPointError, FtmsControlPoint
from engine.readings import SensorSource, SourceItem

if TYPE_CHECKING:
    from adapters.ble.sim import Simulation

log = logging.getLogger(__name__)

DEFAULT_NAME = "ridesync bridge"
# A static random address (two top bits set): stable across runs, so a head unit pairs with it once.
DEFAULT_ADDRESS = "F0:52:53:42:52:01"
HEARTBEAT_S = 1.0
OPEN_TIMEOUT_S = 10.0
ADVERTISING_INTERVAL_MS = 100
SIM_TRANSPORT = "sim"
HELP_URL = "adapters/ble/README.md#the-bridge"


class BridgeTransportError(Exception):
    """The Bluetooth controller the bridge was given cannot be opened or does not answer."""


def _transport_hint(transport: str) -> str:
    scheme = transport.split(":", 1)[0]
    if scheme == "hci-socket":
        return (
            "free the adapter from BlueZ first (sudo systemctl stop bluetooth, or sudo btmgmt --index N "
            "power off), and run with CAP_NET_RAW (sudo, or setcap cap_net_raw+eip on python)"
        )
    if scheme in ("usb", "pyusb"):
        return (
            "is the dongle plugged in and readable by this user (a udev rule for its VID:PID)? bumble "
            "detaches the kernel's btusb driver itself; `bumble-usb-probe` lists the dongles it can use"
        )
    if scheme == "serial":
        return "check the port and baud rate, e.g. serial:/dev/ttyACM0,1000000 for an HCI UART controller"
    return "use sim, usb:N, hci-socket:N, serial:PORT,BAUD or another bumble transport"


def _reason(exc: Exception) -> str:
    # bumble asserts on a transport without its parameters ("usb" for "usb:0"): an empty message.
    return str(exc) or f"{type(exc).__name__} (missing or malformed transport parameters?)"


@dataclass(slots=True)
class BridgeStats:
    notifications: int = 0  # measurement notifications sent (one per characteristic per round)
    rounds: int = 0  # rounds with at least one central connected
    centrals_connected: int = 0  # connections accepted over the whole run
    control_point_writes: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "notifications": self.notifications,
            "rounds": self.rounds,
            "centrals_connected": self.centrals_connected,
            "control_point_writes": self.control_point_writes,
        }


class BridgePeripheral:
    def __init__(
        self,
        device: Device,
        *,
        name: str,
        address: str,
        transport: str,
        with_hr: bool,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
        self.device = device
        self.name = name
        self.address = address
        self.transport = transport
        self.with_hr = with_hr
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self.model = BridgeModel(clock())
        self.stats = BridgeStats()
        self.simulation: Simulation | None = None
        self._wake = asyncio.Event()
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._control: dict[int, FtmsControlPoint] = {}
        self._answering: set[int] = set()  # connections whose control point answer is not sent yet
        self.gatt: BridgeGatt = build_gatt(
            with_hr=with_hr,
            on_control_point=self._on_control_point,
            model_number="ridesync bridge",
            firmware="1",
        )
        for service in self.gatt.services:
            device.add_service(service)
        device.on(device.EVENT_CONNECTION, self._on_connection)

    @property
    def services(self) -> list[str]:
        return list(self.gatt.service_uuids)

    async def start(self) -> None:
        data, scan_response = advertising(self.name, self.gatt.service_uuids)
        self.device.advertising_data = data
        self.device.scan_response_data = scan_response
        await self._advertise()

    async def _advertise(self) -> None:
        # auto_restart: advertise again as soon as a central disconnects.
        await self.device.start_advertising(
            auto_restart=True,
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    # --- inputs -----------------------------------------------------------------------------------------

    def offer(self, item: SourceItem) -> None:
        """One item of a ride source; a changed value is notified at once."""
        changed = self.model.offer(item, self._clock())
        if changed.bike or changed.hr:
            self._wake.set()

    def _on_connection(self, connection: Any) -> None:
        self.stats.centrals_connected += 1
        handle = connection.handle
        self._control[handle] = FtmsControlPoint()
        log.info("bridge: central connected", extra={"peer": str(connection.peer_address), "handle": handle})

        def on_disconnection(reason: int) -> None:
            self._control.pop(handle, None)
            self._answering.discard(handle)
            log.info("bridge: central disconnected", extra={"handle": handle, "reason": reason})

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
        self._jobs.put_nowait(self._readvertise)

    async def _readvertise(self) -> None:
        try:
            await self._advertise()
        except Exception as exc:  # a controller that holds one connection at a time refuses: that's fine
            log.info("bridge: controller will not advertise while connected", extra={"error": repr(exc)})

    def _on_control_point(self, connection: Any, value: bytes) -> None:
        self.stats.control_point_writes += 1
        handle = connection.handle
        if handle in self._answering:
            # One procedure at a time per central, as the profiles require: a central that writes again
            # before confirming the last answer gets "Procedure Already In Progress", and the queue of
            # answers stays bounded by the number of connections.
            raise ATT_Error(
                ErrorCode.PROCEDURE_ALREADY_IN_PROGRESS, message="control point procedure in progress"
            )
        control = self._control.setdefault(handle, FtmsControlPoint())
        try:
            response, status = control.handle(value)
        except ControlPointError as exc:
            raise ATT_Error(ErrorCode.INVALID_ATTRIBUTE_LENGTH, message=str(exc)) from None

        async def answer() -> None:
            try:
                await self.device.indicate_subscriber(connection, self.gatt.control_point, response)
                if status is not None:
                    await self.device.notify_subscribers(self.gatt.status, status)
            finally:
                self._answering.discard(handle)

        self._answering.add(handle)
        self._jobs.put_nowait(answer)

    # --- the owned loops --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Notify and answer until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._notifier(), name="bridge notifier")
            tg.create_task(self._worker(), name="bridge worker")

    async def _notifier(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.notify_now()

    async def notify_now(self) -> None:
        """One round: every measurement as it stands now, to every subscriber."""
        if not self.device.connections:
            return  # nobody to tell; the crank keeps counting in the model regardless
        now = self._clock()
        payloads: list[tuple[Any, bytes]] = [
            (self.gatt.indoor_bike_data, self.model.ftms()),
            (self.gatt.power, self.model.cps(now)),
            (self.gatt.csc, self.model.csc(now)),
        ]
        if self.gatt.heart_rate is not None and (hrm := self.model.hrm()) is not None:
            payloads.append((self.gatt.heart_rate, hrm))
        self.stats.rounds += 1
        for characteristic, payload in payloads:
            try:
                await self.device.notify_subscribers(characteristic, payload)
                self.stats.notifications += 1
            except Exception as exc:  # a link dropping mid-notify is normal; the others still get theirs
                log.debug("bridge: notify failed", extra={"error": repr(exc)})

    async def _worker(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception as exc:  # a central gone before its answer: nothing to answer
                log.debug("bridge: job failed", extra={"error": repr(exc)})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            try:
                async with asyncio.timeout(5):
                    await connection.disconnect()
            except Exception as exc:  # a dying link may refuse; the controller is being closed anyway
                log.debug("bridge: disconnect on close failed", extra={"error": repr(exc)})


async def _open_device(transport: str, name: str, address: str, stack: contextlib.AsyncExitStack) -> Device:
    from bumble.transport import open_transport

    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            hci_transport = await open_transport(transport)
    except Exception as exc:  # bumble raises a different type per transport; all mean "cannot open"
        raise BridgeTransportError(
            f"cannot open Bluetooth transport {transport!r}: {_reason(exc)}; "
            f"{_transport_hint(transport)} ({HELP_URL})"
        ) from None
    stack.push_async_callback(hci_transport.close)
    device = Device.with_hci(name, hci.Address(address), hci_transport.source, hci_transport.sink)
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            await device.power_on()
    except Exception as exc:
        raise BridgeTransportError(
            f"the controller on {transport!r} did not start: {_reason(exc)}; "
            f"{_transport_hint(transport)} ({HELP_URL})"
        ) from None
    return device


@contextlib.asynccontextmanager
async def open_bridge(
    transport: str,
    *,
    with_hr: bool,
    name: str = DEFAULT_NAME,
    address: str = DEFAULT_ADDRESS,
    simulation: Simulation | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncIterator[BridgePeripheral]:
    """A running, advertising bridge on `transport` until the context exits (see the module docstring).
    With `transport="sim"` it joins `simulation`'s radio, or a radio of its own (`bridge.simulation`)."""
    async with contextlib.AsyncExitStack() as stack:
        sim = simulation
        if transport == SIM_TRANSPORT:
            from adapters.ble.sim import Simulation
            from adapters.ble.sim.radio import new_node

            if sim is None:
                sim = await Simulation.start()
                stack.push_async_callback(sim.close)
            device, _controller = await new_node(sim.link, name, address)
        else:
            device = await _open_device(transport, name, address, stack)
        bridge = BridgePeripheral(
            device, name=name, address=address, transport=transport, with_hr=with_hr, heartbeat_s=heartbeat_s
        )
        bridge.simulation = sim
        await bridge.start()
        stack.push_async_callback(bridge.close)
        log.info(
            "bridge advertising",
            extra={"transport": transport, "ble_name": name, "address": address, "hr": with_hr},
        )
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(bridge.run(), name="bridge")
            try:
                yield bridge
            finally:
                runner.cancel()


class BridgedSource:
    """A ride source whose items also feed the bridge: the ride records exactly what it did without it."""

    def __init__(self, inner: SensorSource, bridge: BridgePeripheral) -> None:
        self.inner = inner
        self.bridge = bridge

    @property
    def source_id(self) -> str:
        return self.inner.source_id

    async def stream(self) -> AsyncIterator[SourceItem]:
        items = self.inner.stream()
        try:
            async for item in items:
                self.bridge.offer(item)
                yield item
        finally:
            close = getattr(items, "aclose", None)  # a generator's: ends the source's own cleanup now
            if close is not None:
                await close()


@contextlib.asynccontextmanager
async def bridged(
    sources: contextlib.AbstractAsyncContextManager[list[SensorSource]], bridge: BridgePeripheral
) -> AsyncIterator[list[SensorSource]]:
    """The sources `sources` opens, each feeding `bridge` as it streams."""
    async with sources as opened:
        yield [BridgedSource(s, bridge) for s in opened]
