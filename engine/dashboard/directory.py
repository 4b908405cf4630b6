"""Which ride each rider of a class is on: the join between the live lane (devices) and rides.

The hub's frames name devices, the durable lane names rides. Whoever knows the pairing registers it here:
the demo does for its riders; the backend does for every bike replica that opens a ride in a class. The
dashboard reads it to poll each tile's sync state, to link a tile to its ride page, and to list a class's
rides on its results page.

The directory lives in SQLite (directory_db.py): `rides.sqlite3` in the server's data dir (`in_dir`, as
`setup_dashboard` opens it), or an in-memory database without a path. Nothing is kept in Python memory
between calls, so a server running classes all day holds no more for the rides of the morning, and a
registration writes its own row (one upsert), never the whole directory. Every ride a device had in a
class is kept (the results page lists them all); `class_rides` returns each device's newest.

The event loop calls every method, so each is one indexed statement (a registration reads its ride's row
by primary key first). A failing write or read (disk full, a file damaged while serving) is one WARNING
and the directory answers as if it did not know the ride: a bike's connection never fails over it.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.dashboard import directory_db
from engine.dashboard.directory_db import UPSERT, DirectoryCorrupt

log = logging.getLogger(__name__)

DIRECTORY_FILE = "rides.sqlite3"
# What earlier versions kept instead, rewritten whole at every registration; imported once at open.
LEGACY_FILE = "rides.json"

_SURROGATE = re.compile("[\ud800-\udfff]")

# (class, device) -> the rider's display name, when the hub knows it (engine/live/riders.py).
NameLookup = Callable[[str, str], str | None]
Clock = Callable[[], float]

_COLUMNS = "ride_id, class_id, device, name, registered"
_BY_RIDE = f"SELECT {_COLUMNS} FROM rides WHERE ride_id = ?"
# Oldest first; ties (a coarse clock) in ride id order, the order `class_rides` takes the newest from.
_HISTORY = f"SELECT {_COLUMNS} FROM rides WHERE class_id = ? ORDER BY registered, ride_id"
# Skip-scan over the (class, device, registered) index: one seek per device of the class for the next
# device, one for its newest ride; never a pass over the class's whole history.
_NEWEST_PER_DEVICE = f"""
WITH RECURSIVE dev(d) AS (
    SELECT (SELECT MIN(device) FROM rides WHERE class_id = :c)
    UNION ALL
    SELECT (SELECT MIN(device) FROM rides WHERE class_id = :c AND device > dev.d) FROM dev
    WHERE dev.d IS NOT NULL
)
SELECT {_COLUMNS} FROM dev JOIN rides ON rides.ride_id = (
    SELECT ride_id FROM rides WHERE class_id = :c AND device = dev.d
    ORDER BY registered DESC, ride_id DESC LIMIT 1)
"""
_DEVICE_NEWEST = (
    f"SELECT {_COLUMNS} FROM rides WHERE class_id = ? AND device = ? "
    "ORDER BY registered DESC, ride_id DESC LIMIT 1"
)
_CLASSES = """
WITH RECURSIVE cls(c) AS (
    SELECT (SELECT MIN(class_id) FROM rides)
    UNION ALL
    SELECT (SELECT MIN(class_id) FROM rides WHERE class_id > cls.c) FROM cls WHERE cls.c IS NOT NULL
)
SELECT c FROM cls WHERE c IS NOT NULL
"""


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


def _entry(row: tuple[Any, ...]) -> RideEntry:
    return RideEntry(*row)


def _storable(name: str | None) -> str | None:
    """A name SQLite can store: a lone surrogate (valid in JSON, not in UTF-8) becomes U+FFFD."""
    return None if name is None else _SURROGATE.sub("\ufffd", name)


class RideDirectory:
    def __init__(
        self, path: Path | None = None, names: NameLookup | None = None, *, clock: Clock = time.time
    ) -> None:
        """`path` is the SQLite file (None: in memory). A `rides.json` beside it is imported once. Raises
        DirectoryCorrupt (a StoreCorrupt naming the file) when the file is not a readable directory."""
        self.path = path
        self.names = names
        self._clock = clock
        self._label = ":memory:" if path is None else str(path)
        # One connection; the lock only matters if a caller ever uses the directory off the loop thread.
        self._lock = threading.Lock()
        self._conn = directory_db.connect(path)
        if path is not None:
            try:
                directory_db.import_legacy(self._conn, path.with_name(LEGACY_FILE), self._label)
            except BaseException:
                self._conn.close()
                raise

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str], names: NameLookup | None = None) -> RideDirectory:
        return cls(Path(data_dir) / DIRECTORY_FILE, names)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _rows(self, sql: str, params: tuple[object, ...] | dict[str, object]) -> list[tuple[Any, ...]] | None:
        """The rows of one statement, or None (after one WARNING) when SQLite cannot answer."""
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            log.warning("ride directory unreadable", extra={"path": self._label, "error": f"{exc}"})
            return None

    def register(self, class_id: str, device: str, ride_id: str, name: str | None = None) -> RideEntry:
        """A device's current ride in a class; a newer ride replaces the older one as that device's current.

        Registering the same ride again without a name keeps the name it had: the backend registers a
        bike's ride when it connects, and knows no display name (the hub's rider book may: `names`).
        A ride registered again in the same class keeps its time (its place in the class's history); in
        another class it moves there, registered now.
        """
        old = self.ride(ride_id)
        name = _storable(name)
        if name is None and old is not None:
            name = old.name
        if name is None and self.names is not None:
            name = _storable(self.names(class_id, device))
        if old is not None and (old.class_id, old.device, old.name) == (class_id, device, name):
            return old
        registered = old.registered if old is not None and old.class_id == class_id else self._clock()
        entry = RideEntry(ride_id, class_id, device, name, registered)
        try:
            with self._lock:
                self._conn.execute(UPSERT, (ride_id, class_id, device, name, registered))
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            log.warning("cannot save the ride directory", extra={"path": self._label, "error": f"{exc}"})
        return entry

    def rename(self, class_id: str, device: str, name: str | None) -> None:
        """The rider on `device` told the hub its name: the device's current ride in the class carries it."""
        if name is None:
            return
        rows = self._rows(_DEVICE_NEWEST, (class_id, device))
        if rows and rows[0][3] != _storable(name):
            self.register(class_id, device, rows[0][0], name)

    def ride(self, ride_id: str) -> RideEntry | None:
        rows = self._rows(_BY_RIDE, (ride_id,))
        return _entry(rows[0]) if rows else None

    def class_rides(self, class_id: str) -> dict[str, RideEntry]:
        """Each device's newest ride in the class (ties in registration time: the greatest ride id)."""
        rows = self._rows(_NEWEST_PER_DEVICE, {"c": class_id}) or []
        return {row[2]: _entry(row) for row in rows}

    def class_history(self, class_id: str) -> list[RideEntry]:
        """Every ride ever registered in the class, oldest first."""
        return [_entry(row) for row in self._rows(_HISTORY, (class_id,)) or []]

    def classes(self) -> list[str]:
        """The classes with at least one ride, sorted."""
        return [row[0] for row in self._rows(_CLASSES, ()) or []]


RIDES = web.AppKey("ridesync.dashboard.rides", RideDirectory)

__all__ = ["DIRECTORY_FILE", "LEGACY_FILE", "RIDES", "DirectoryCorrupt", "RideDirectory", "RideEntry"]
