"""Which ride each rider of a class is on: the join between the live lane (devices) and rides.

The hub's frames name devices, the durable lane names rides. Whoever knows the pairing registers it here:
the demo does for its riders; the sync lane will for every bike replica that opens a ride. The dashboard
reads it to poll each tile's sync state and to link a tile to its ride page.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class RideEntry:
    ride_id: str
    class_id: str
    device: str
    name: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"ride_id": self.ride_id, "class": self.class_id, "device": self.device, "name": self.name}


class RideDirectory:
    def __init__(self) -> None:
        self._by_ride: dict[str, RideEntry] = {}
        self._by_class: dict[str, dict[str, RideEntry]] = {}

    def register(self, class_id: str, device: str, ride_id: str, name: str | None = None) -> RideEntry:
        """A device's current ride in a class; a newer ride replaces the older one for that device.

        Registering the same ride again without a name keeps the name it had: the backend registers a
        bike's ride when it connects, and knows no display name.
        """
        old = self._by_class.setdefault(class_id, {}).get(device)
        if name is None and old is not None and old.ride_id == ride_id:
            name = old.name
        entry = RideEntry(ride_id, class_id, device, name)
        if old is not None:
            self._by_ride.pop(old.ride_id, None)
        self._by_class[class_id][device] = entry
        self._by_ride[ride_id] = entry
        return entry

    def ride(self, ride_id: str) -> RideEntry | None:
        return self._by_ride.get(ride_id)

    def class_rides(self, class_id: str) -> dict[str, RideEntry]:
        return dict(self._by_class.get(class_id, {}))

    def classes(self) -> list[str]:
        return sorted(self._by_class)


RIDES = web.AppKey("ridesync.dashboard.rides", RideDirectory)
