"""A bleak backend over the simulated radio: ordinary `BleakScanner`/`BleakClient` code runs unchanged.

    scanner_cls, client_cls = bind_backend(central)
    async with BleakScanner(service_uuids=[...], backend=scanner_cls) as scanner: ...
    client = BleakClient(device, backend=client_cls)

bleak instantiates the backend class itself, so the classes returned by `bind_backend` carry their
radio as a class attribute. As with bleak 3.1's own backends, `connect()` discovers the GATT database
and fills `self.services`; it also exchanges a 247-byte ATT MTU, as BlueZ does, so notifications longer
than 20 bytes arrive whole. Like bleak's BlueZ client, `mtu_size` does not know that MTU until
`_acquire_mtu()` is called: before, it warns (bleak's own warning text) and answers 23.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
import warnings
from collections.abc import Awaitable
from typing import Any, ClassVar, Literal, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att, core
from bumble.core import AdvertisingData
from bumble.device import Connection, Peer

from adapters.ble.sim.central import SimCentral, SimConnectError

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUESTED_MTU = 247
DEFAULT_ATT_MTU = 23
# bleak/backends/bluezdbus/client.py, BleakClientBlueZDBus.mtu_size before _acquire_mtu().
BLUEZ_MTU_WARNING = (
    "Using default MTU value. Call _acquire_mtu() or set _mtu_size first to avoid this warning."
)
_HCI_REMOTE_USER_TERMINATED = 0x13

_UUID_LIST_TYPES = (
    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
)


def uuid_str(bumble_uuid: core.UUID) -> str:
    """bumble UUID (any width) to bleak's lower-case 128-bit string."""
    return str(uuid.UUID(bytes=bytes(reversed(bumble_uuid.to_bytes(force_128=True)))))


def advertisement_to_bleak(adv: Any) -> tuple[str, str | None, AdvertisementData]:
    # bumble types get()/get_all() as a union over every AD type; each type here has one shape.
    data: Any = adv.data
    name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
    service_uuids: list[str] = []
    for ad_type in _UUID_LIST_TYPES:
        for uuids in data.get_all(ad_type):
            service_uuids += [uuid_str(u) for u in uuids]
    # Active scanning merges the advertisement and the scan response, which may repeat the list.
    service_uuids = list(dict.fromkeys(service_uuids))
    manufacturer: dict[int, bytes] = {}
    for company, payload in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
        manufacturer[int(company)] = bytes(payload)
    service_data: dict[str, bytes] = {}
    for ad_type in (
        AdvertisingData.SERVICE_DATA_16_BIT_UUID,
        AdvertisingData.SERVICE_DATA_32_BIT_UUID,
        AdvertisingData.SERVICE_DATA_128_BIT_UUID,
    ):
        for svc_uuid, payload in data.get_all(ad_type):
            service_data[uuid_str(svc_uuid)] = bytes(payload)
    tx_power = data.get(AdvertisingData.TX_POWER_LEVEL)
    local_name = str(name) if name is not None else None
    address = adv.address.to_string(False)
    return (
        address,
        local_name,
        AdvertisementData(
            local_name=local_name,
            manufacturer_data=manufacturer,
            service_data=service_data,
            service_uuids=service_uuids,
            tx_power=int(tx_power) if tx_power is not None else None,
            rssi=int(adv.rssi),
            platform_data=(adv,),
        ),
    )


class SimBleakScanner(BaseBleakScanner):
    """Scanner backend: advertisements heard by the simulated adapter become bleak detections."""

    central: ClassVar[SimCentral]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._scanning = False

    async def start(self) -> None:
        self.seen_devices = {}
        if not self._scanning:
            # Raises BleakDBusError InProgress while another scanner of this process is discovering.
            await self.central.start_discovery(self._on_advertisement)
            self._scanning = True

    async def stop(self) -> None:
        if self._scanning:
            self._scanning = False
            await self.central.stop_discovery(self._on_advertisement)

    def _on_advertisement(self, adv: Any) -> None:
        try:
            address, name, data = advertisement_to_bleak(adv)
        except (ValueError, IndexError, struct.error) as exc:
            # Anything on the air may be garbage: skip it, as BlueZ drops what it cannot parse.
            log.debug("unparseable advertisement", extra={"error": repr(exc)})
            return
        if not self.is_allowed_uuid(data.service_uuids):
            return
        device = self.create_or_update_device(address, address, name, {"sim_address": address}, data)
        self.call_detection_callbacks(device, data)


class SimBleakClient(BaseBleakClient):
    """Client backend: a GATT client (bumble `Peer`) over a connection of the simulated adapter."""

    central: ClassVar[SimCentral]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Any = None,
        timeout: float = 10.0,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._device_name = (
            address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._service_filter = {normalize_uuid_str(s) for s in services} if services else None
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._lost: asyncio.Future[int] | None = None
        self._mtu = att.ATT_DEFAULT_MTU
        self._mtu_size: int | None = None
        self._closing = False
        self._subscribers: dict[int, Any] = {}

    # --- properties ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._device_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        if self._mtu_size is None:
            warnings.warn(BLUEZ_MTU_WARNING, stacklevel=2)
            return DEFAULT_ATT_MTU
        return self._mtu_size

    async def _acquire_mtu(self) -> None:
        """What BlueZ's AcquireWrite/AcquireNotify tell bleak: the MTU the link negotiated."""
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        self._mtu_size = self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # --- connection ---------------------------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connection is not None:
            raise BleakError(f"{self.address}: already connected")
        if self.central.bluez_version < (5, 55):
            # bleak/backends/bluezdbus/client.py, BleakClientBlueZDBus.connect, word for word.
            raise BleakError("Bleak requires BlueZ >= 5.55.")
        if pair:
            log.debug("pairing requested; the simulated strap needs none", extra={"address": self.address})
        # Like bleak's BlueZ backend: a per-call timeout overrides the constructor's.
        timeout = float(kwargs.get("timeout", self._timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            connection = await self.central.connect(self.address, deadline)
        except SimConnectError as exc:
            raise BleakError(str(exc)) from exc
        self._connection = connection
        self._lost = loop.create_future()
        self._closing = False
        connection.on("disconnection", self._on_disconnection)
        try:
            async with asyncio.timeout_at(deadline):
                peer = Peer(connection)
                self._peer = peer
                self._mtu = await self._gatt(peer.request_mtu(REQUESTED_MTU))
                await self._gatt(peer.discover_all())  # type: ignore[no-untyped-call]
                self.services = self._collect_services(peer)
        except BaseException:
            await self._teardown()
            raise

    def _collect_services(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in peer.services:
            service_uuid = uuid_str(service.uuid)
            if self._service_filter is not None and service_uuid not in self._service_filter:
                continue
            bleak_service = BleakGATTService(service, service.handle, service_uuid)
            collection.add_service(bleak_service)
            for char in service.characteristics:
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    uuid_str(char.uuid),
                    list(gatt_char_props_to_strs(int(char.properties))),
                    lambda: self._mtu - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for desc in char.descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(desc, desc.handle, uuid_str(desc.type), bleak_char)
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        unsolicited = not self._closing
        self._connection = None
        self._peer = None
        self.services = None
        self._subscribers.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        log.info("simulated link down", extra={"address": self.address, "reason": reason})
        # bleak calls disconnected_callback only for disconnects it did not ask for.
        if unsolicited and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        await self._teardown()

    async def _teardown(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
            async with asyncio.timeout(5):
                await connection.disconnect(_HCI_REMOTE_USER_TERMINATED)
        # A link that died while we were tearing it down has already cleared the state.
        self._connection = None
        self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("the simulated strap does not support pairing")

    async def unpair(self) -> None:
        raise BleakError("the simulated strap does not support pairing")

    # --- GATT ---------------------------------------------------------------------------------------

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"{self.address}: not connected")
        return self._peer

    async def _gatt(self, operation: Awaitable[T]) -> T:
        """Run a GATT operation, failing fast with a BleakError if the link drops under it.

        bumble leaves a request waiting for its own 30 s ATT timeout when the link goes away.
        """
        lost = self._lost
        task = asyncio.ensure_future(operation)
        try:
            if lost is None:
                return await task
            racing: set[asyncio.Future[Any]] = {task, lost}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            # bumble cancels requests in flight when the link drops, so a cancelled operation means the
            # same as a lost link here (our own cancellation arrives as CancelledError from the wait).
            if not task.done() or task.cancelled():
                reason = f" (reason 0x{lost.result():02x})" if lost.done() else ""
                raise BleakError(f"{self.address}: disconnected during a GATT operation{reason}")
            try:
                return task.result()
            except att.ATT_Error as exc:
                raise BleakGATTProtocolError(int(exc.error_code)) from exc
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        return bytearray(await self._gatt(peer.read_value(characteristic.obj)))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        return bytearray(await self._gatt(peer.read_value(descriptor.obj)))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        peer = self._require_peer()
        await self._gatt(peer.write_value(characteristic.obj, bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        peer = self._require_peer()
        await self._gatt(peer.write_value(descriptor.obj, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require_peer()

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = deliver
        await self._gatt(peer.subscribe(characteristic.obj, deliver))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require_peer()
        deliver = self._subscribers.pop(characteristic.handle, None)
        await self._gatt(peer.unsubscribe(characteristic.obj, deliver))


def bind_backend(central: SimCentral) -> tuple[type[SimBleakScanner], type[SimBleakClient]]:
    """Backend classes for bleak's `backend=` argument, bound to one simulated adapter."""

    class BoundScanner(SimBleakScanner):
        pass

    class BoundClient(SimBleakClient):
        pass

    BoundScanner.central = central
    BoundClient.central = central
    # bleak reports backend.__name__ as the backend id.
    BoundScanner.__name__ = BoundScanner.__qualname__ = "SimBleakScanner"
    BoundClient.__name__ = BoundClient.__qualname__ = "SimBleakClient"
    return BoundScanner, BoundClient
