"""A running simulation: one virtual radio, one or more simulated adapters, N simulated straps.

This is the handle the factory exposes (`HrSources.simulation`): the adapters (each with its bleak
backend classes to inject), and the straps with their simulation controls (raw payloads, range,
battery, profile playback, a connection stranded by a crashed client).
"""

from __future__ import annotations

import logging

from bleak.backends.device import BLEDevice

from adapters.ble.adapter import BleAdapter
from adapters.ble.budget import DEFAULT_SLOTS, ConnectionBudget
from adapters.ble.hrm import BodySensorLocation
from adapters.ble.sim.bike import SimBike
from adapters.ble.sim.bleak_backend import SimBleakClient, SimBleakScanner, bind_backend
from adapters.ble.sim.central import SimCentral
from adapters.ble.sim.radio import RangeLink
from adapters.ble.sim.strap import SimStrap

log = logging.getLogger(__name__)

DEFAULT_SUPERVISION_TIMEOUT_S = 4.0
STRAP_NAME_PREFIX = "ridesync-sim-hr-"
BIKE_NAME_PREFIX = "ridesync-sim-bike-"


def strap_address(index: int) -> str:
    """Static random address of the index-th strap (two top bits set, as the spec requires)."""
    if not 1 <= index <= 0xFFFF:
        raise ValueError(f"strap index {index} outside 1..65535")
    return f"F0:52:53:48:{index >> 8:02X}:{index & 0xFF:02X}"


def bike_address(index: int) -> str:
    """Static random address of the index-th simulated BLE bike ("B" where a strap has "H")."""
    if not 1 <= index <= 0xFFFF:
        raise ValueError(f"bike index {index} outside 1..65535")
    return f"F0:52:53:42:{index >> 8:02X}:{index & 0xFF:02X}"


def adapter_address(index: int) -> str:
    return f"C0:52:53:00:00:{index:02X}"


class SimAdapter:
    """One simulated host adapter (sim0, sim1, ...): a central on the shared virtual radio."""

    def __init__(self, index: int, central: SimCentral) -> None:
        self.index = index
        self.name = f"sim{index}"
        self.central = central
        self.scanner_backend: type[SimBleakScanner]
        self.client_backend: type[SimBleakClient]
        self.scanner_backend, self.client_backend = bind_backend(central)
        self._ble_adapter: BleAdapter | None = None

    async def recover_stale(self, address: str) -> BLEDevice | None:
        """What bleak-retry-connector's close_stale_connections_by_address does on BlueZ."""
        await self.central.close_stranded(address)
        return None

    def ble_adapter(self, slots: int = DEFAULT_SLOTS) -> BleAdapter:
        """This adapter as the sources see it. One per simulated adapter, as for a real one, so straps
        and bikes share its connection slots; `slots` counts when the first caller asks."""
        if self._ble_adapter is None:
            self._ble_adapter = BleAdapter(
                self.name,
                ConnectionBudget(self.name, slots),
                scanner_backend=self.scanner_backend,
                client_backend=self.client_backend,
                recover=self.recover_stale,
            )
        return self._ble_adapter


class Simulation:
    def __init__(self, link: RangeLink, centrals: list[SimCentral]) -> None:
        self.link = link
        self.adapters = [SimAdapter(i, c) for i, c in enumerate(centrals)]
        self.straps: list[SimStrap] = []
        self.bikes: list[SimBike] = []
        # The first adapter, for code that uses one.
        self.central = centrals[0]
        self.scanner_backend: type[SimBleakScanner] = self.adapters[0].scanner_backend
        self.client_backend: type[SimBleakClient] = self.adapters[0].client_backend

    @classmethod
    async def start(
        cls, *, supervision_timeout_s: float = DEFAULT_SUPERVISION_TIMEOUT_S, adapters: int = 1
    ) -> Simulation:
        """Must run on the event loop that will use it (bumble binds its futures to the running loop)."""
        if not 1 <= adapters <= 16:
            raise ValueError(f"1..16 simulated adapters, got {adapters}")
        link = RangeLink(supervision_timeout_s=supervision_timeout_s)
        centrals = [
            await SimCentral.create(link, adapter_address(i), f"ridesync-sim-adapter-{i}")
            for i in range(adapters)
        ]
        return cls(link, centrals)

    async def add_strap(
        self,
        name: str | None = None,
        address: str | None = None,
        *,
        location: BodySensorLocation = BodySensorLocation.CHEST,
        notify_on_subscribe: bool = True,
        advertise_heart_rate: bool = True,
    ) -> SimStrap:
        """A strap on the radio. `notify_on_subscribe=False`: a strap that stays silent until its
        first beat after subscription (default: it notifies at once, as many real straps do)."""
        index = len(self.straps) + 1
        strap = await SimStrap.create(
            self.link,
            name or f"{STRAP_NAME_PREFIX}{index}",
            address or strap_address(index),
            location=location,
            notify_on_subscribe=notify_on_subscribe,
            advertise_heart_rate=advertise_heart_rate,
        )
        self.straps.append(strap)
        return strap

    async def add_bike(self, kind: str = "ftms", name: str | None = None) -> SimBike:
        """A BLE bike on the radio: "ftms" (trainer), "cps" (power meter) or "csc" (cadence pod)."""
        index = len(self.bikes) + 1
        bike = await SimBike.create(
            self.link, name or f"{BIKE_NAME_PREFIX}{index}", bike_address(index), kind
        )
        self.bikes.append(bike)
        return bike

    def strap(self, key: str) -> SimStrap:
        """The strap with this name or address (case-insensitive)."""
        for strap in self.straps:
            if key.lower() in (strap.name.lower(), strap.address.lower()):
                return strap
        raise KeyError(f"no simulated strap named or addressed {key!r}")

    async def strand(self, strap: SimStrap, adapter: int = 0) -> None:
        """A client on `adapter` connects to `strap`, then its process dies without disconnecting: the
        adapter keeps the link (as BlueZ does) and the strap stops advertising."""
        await self.adapters[adapter].central.strand(strap.address)

    async def close(self) -> None:
        for strap in self.straps:
            await strap.close()
        for bike in self.bikes:
            await bike.close()
        for adapter in self.adapters:
            await adapter.central.close()
        self.link.close()
