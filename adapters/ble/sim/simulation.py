"""A running simulation: one virtual radio, one simulated adapter, N simulated straps.

This is the handle the factory exposes (`HrSources.simulation`): bleak backend classes to inject,
and the straps with their simulation controls (raw payloads, range, battery, profile playback).
"""

from __future__ import annotations

import logging

from adapters.ble.hrm import BodySensorLocation
from adapters.ble.sim.bleak_backend import SimBleakClient, SimBleakScanner, bind_backend
from adapters.ble.sim.central import SimCentral
from adapters.ble.sim.radio import RangeLink
from adapters.ble.sim.strap import SimStrap

log = logging.getLogger(__name__)

DEFAULT_SUPERVISION_TIMEOUT_S = 4.0
STRAP_NAME_PREFIX = "ridesync-sim-hr-"


def strap_address(index: int) -> str:
    """Static random address of the index-th strap (two top bits set, as the spec requires)."""
    if not 1 <= index <= 0xFFFF:
        raise ValueError(f"strap index {index} outside 1..65535")
    return f"F0:52:53:48:{index >> 8:02X}:{index & 0xFF:02X}"


class Simulation:
    def __init__(self, link: RangeLink, central: SimCentral) -> None:
        self.link = link
        self.central = central
        self.straps: list[SimStrap] = []
        self.scanner_backend: type[SimBleakScanner]
        self.client_backend: type[SimBleakClient]
        self.scanner_backend, self.client_backend = bind_backend(central)

    @classmethod
    async def start(cls, *, supervision_timeout_s: float = DEFAULT_SUPERVISION_TIMEOUT_S) -> Simulation:
        """Must run on the event loop that will use it (bumble binds its futures to the running loop)."""
        link = RangeLink(supervision_timeout_s=supervision_timeout_s)
        central = await SimCentral.create(link)
        return cls(link, central)

    async def add_strap(
        self,
        name: str | None = None,
        address: str | None = None,
        *,
        location: BodySensorLocation = BodySensorLocation.CHEST,
    ) -> SimStrap:
        index = len(self.straps) + 1
        strap = await SimStrap.create(
            self.link,
            name or f"{STRAP_NAME_PREFIX}{index}",
            address or strap_address(index),
            location=location,
        )
        self.straps.append(strap)
        return strap

    def strap(self, key: str) -> SimStrap:
        """The strap with this name or address (case-insensitive)."""
        for strap in self.straps:
            if key.lower() in (strap.name.lower(), strap.address.lower()):
                return strap
        raise KeyError(f"no simulated strap named or addressed {key!r}")

    async def close(self) -> None:
        for strap in self.straps:
            await strap.close()
        await self.central.close()
        self.link.close()
