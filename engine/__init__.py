"""ridesync engine: the core that never imports a radio or a serial port.

Sensors reach it as typed `engine.readings.Reading` values from adapters; rides live in Automerge
documents behind `engine.crdt`; the backend and the class hub are aiohttp applications.
"""

# The public API (docs/api.md): every name in engine.api, loaded on first use, so that `import engine`
# (and so every ridesync command) does not load bleak, bumble and pyserial.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import (
        BackendRefused,
        BikeOptions,
        BikeRide,
        Contact,
        DeviceSync,
        EndResult,
        HrProfile,
        HrSources,
        KeyRing,
        Kind,
        LivePublisher,
        Phase,
        Reading,
        ReplicaStore,
        RideProfile,
        RideView,
        Role,
        Sample,
        SampleBuilder,
        SensorSource,
        SerialSources,
        SourceEvent,
        SourceItem,
        SourceState,
        SyncState,
        SyncStatus,
        fetch_class,
        fetch_ride,
        open_hr_sources,
        open_serial_sources,
        post_ride_end,
    )

__all__ = [
    "BackendRefused",
    "BikeOptions",
    "BikeRide",
    "Contact",
    "DeviceSync",
    "EndResult",
    "HrProfile",
    "HrSources",
    "KeyRing",
    "Kind",
    "LivePublisher",
    "Phase",
    "Reading",
    "ReplicaStore",
    "RideProfile",
    "RideView",
    "Role",
    "Sample",
    "SampleBuilder",
    "SensorSource",
    "SerialSources",
    "SourceEvent",
    "SourceItem",
    "SourceState",
    "SyncState",
    "SyncStatus",
    "fetch_class",
    "fetch_ride",
    "open_hr_sources",
    "open_serial_sources",
    "post_ride_end",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import engine.api

        return getattr(engine.api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
