"""Which ride each rider of a class is on: the join between the live lane (devices) and rides.

The hub's frames name devices, the durable lane names rides. Whoever knows the pairing registers it here:
the demo does for its riders; the backend does for every bike replica that opens a ride in a class. The
dashboard reads it to poll each tile's sync state, to link a tile to its ride page, and to list a class's
rides on its results page.

With a path (`rides.json` in the server's data dir, as `setup_dashboard` gives it) every registration is
written through, so that after a server restart a viewer can still open the class's results and its rides.
Every ride a device had in a class is kept (the results page lists them all); `class_rides` returns each
device's newest.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

DIRECTORY_FILE = "rides.json"

# (class, device) -> the rider's display name, when the hub knows it (engine/live/riders.py).
NameLookup = Callable[[str, str], str | None]


@dataclass(frozen=True, slots=True)
class RideEntry:
    ride_id: str
    class_id: str
    device: str
    name: str | None = None
    registered: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "ride_id": self.ride_id,
            "class": self.class_id,
            "device": self.device,
            "name": self.name,
            "registered": self.registered,
        }


class RideDirectory:
    def __init__(self, path: Path | None = None, names: NameLookup | None = None) -> None:
        self.path = path
        self.names = names
        self._by_ride: dict[str, RideEntry] = {}
        self._by_class: dict[str, dict[str, RideEntry]] = {}
        if path is not None:
            self._load(path)

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str], names: NameLookup | None = None) -> RideDirectory:
        return cls(Path(data_dir) / DIRECTORY_FILE, names)

    def _load(self, path: Path) -> None:
        try:
            obj = json.loads(path.read_text("utf-8"))
            rows = obj["rides"]
            entries = [
                RideEntry(
                    str(r["ride_id"]),
                    str(r["class"]),
                    str(r["device"]),
                    r["name"] if isinstance(r.get("name"), str) else None,
                    float(r.get("registered") or 0.0),
                )
                for r in rows
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "ride directory unreadable, starting afresh", extra={"path": str(path), "error": f"{exc}"}
            )
            return
        for entry in sorted(entries, key=lambda e: e.registered):
            self._put(entry)

    def _save(self) -> None:
        if self.path is None:
            return
        rows = [e.to_json() for e in sorted(self._by_ride.values(), key=lambda e: e.registered)]
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"rides": rows}, separators=(",", ":")), "utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the ride directory", extra={"path": str(self.path), "error": f"{exc}"})

    def _put(self, entry: RideEntry) -> None:
        self._by_ride[entry.ride_id] = entry
        current = self._by_class.setdefault(entry.class_id, {}).get(entry.device)
        if current is None or current.ride_id == entry.ride_id or current.registered <= entry.registered:
            self._by_class[entry.class_id][entry.device] = entry

    def register(self, class_id: str, device: str, ride_id: str, name: str | None = None) -> RideEntry:
        """A device's current ride in a class; a newer ride replaces the older one as that device's current.

        Registering the same ride again without a name keeps the name it had: the backend registers a
        bike's ride when it connects, and knows no display name (the hub's rider book may: `names`).
        """
        old = self._by_ride.get(ride_id)
        if name is None and old is not None:
            name = old.name
        if name is None and self.names is not None:
            name = self.names(class_id, device)
        if old is not None and old.class_id == class_id and old.device == device and old.name == name:
            current = self._by_class.get(class_id, {}).get(device)
            if current is not None and current.ride_id == ride_id:
                return old
        registered = old.registered if old is not None and old.class_id == class_id else time.time()
        entry = RideEntry(ride_id, class_id, device, name, registered)
        if old is not None and old.class_id != class_id:
            self._by_class.get(old.class_id, {}).pop(old.device, None)
        self._by_ride[ride_id] = entry
        self._by_class.setdefault(class_id, {})[device] = entry
        self._save()
        return entry

    def rename(self, class_id: str, device: str, name: str | None) -> None:
        """The rider on `device` told the hub its name: the device's current ride in the class carries it."""
        entry = self._by_class.get(class_id, {}).get(device)
        if entry is not None and name is not None and entry.name != name:
            self.register(class_id, device, entry.ride_id, name)

    def ride(self, ride_id: str) -> RideEntry | None:
        return self._by_ride.get(ride_id)

    def class_rides(self, class_id: str) -> dict[str, RideEntry]:
        """Each device's newest ride in the class."""
        return dict(self._by_class.get(class_id, {}))

    def class_history(self, class_id: str) -> list[RideEntry]:
        """Every ride ever registered in the class, oldest first."""
        return sorted(
            (e for e in self._by_ride.values() if e.class_id == class_id),
            key=lambda e: (e.registered, e.ride_id),
        )

    def classes(self) -> list[str]:
        return sorted(self._by_class)


RIDES = web.AppKey("ridesync.dashboard.rides", RideDirectory)
