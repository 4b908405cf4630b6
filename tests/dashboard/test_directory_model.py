"""The SQLite ride directory answers exactly like a plain dict of rides under random registrations, renames,
restarts and lookups, with a clock that repeats and goes backwards.

The model is the directory's documented semantics written the obvious way: every ride by id; a device's
current ride in a class is its newest there (greatest registration time, then greatest ride id); a ride
registered again keeps its name unless given one and its time unless it changes class.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.dashboard.directory import DIRECTORY_FILE, RideDirectory, RideEntry

CLASSES = st.sampled_from(["spin", "hiit", "yoga"])
DEVICES = st.sampled_from(["b1", "b2", "b3"])
RIDES = st.sampled_from([f"r{i}" for i in range(8)])
NAMES = st.none() | st.sampled_from(["Ann", "Ben", "Cid\ud800"])
# Repeats (ties) and steps back (a clock set back) on purpose.
TIMES = st.sampled_from([1.0, 2.0, 2.0, 3.0, 0.5])


def book(class_id: str, device: str) -> str | None:
    """The hub's rider book: knows one rider."""
    return "Booked" if (class_id, device) == ("spin", "b2") else None


def storable(name: str | None) -> str | None:
    if name is None:
        return None
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in name)


class Model:
    def __init__(self) -> None:
        self.rides: dict[str, RideEntry] = {}

    def register(self, class_id: str, device: str, ride_id: str, name: str | None, now: float) -> RideEntry:
        old = self.rides.get(ride_id)
        name = storable(name)
        if name is None and old is not None:
            name = old.name
        if name is None:
            name = book(class_id, device)
        if old is not None and (old.class_id, old.device, old.name) == (class_id, device, name):
            return old
        registered = old.registered if old is not None and old.class_id == class_id else now
        self.rides[ride_id] = RideEntry(ride_id, class_id, device, name, registered)
        return self.rides[ride_id]

    def class_rides(self, class_id: str) -> dict[str, RideEntry]:
        newest: dict[str, RideEntry] = {}
        for e in self.rides.values():
            if e.class_id != class_id:
                continue
            cur = newest.get(e.device)
            if cur is None or (e.registered, e.ride_id) > (cur.registered, cur.ride_id):
                newest[e.device] = e
        return newest

    def rename(self, class_id: str, device: str, name: str | None, now: float) -> None:
        cur = self.class_rides(class_id).get(device)
        if cur is not None and name is not None and cur.name != storable(name):
            self.register(class_id, device, cur.ride_id, name, now)

    def class_history(self, class_id: str) -> list[RideEntry]:
        return sorted(
            (e for e in self.rides.values() if e.class_id == class_id),
            key=lambda e: (e.registered, e.ride_id),
        )

    def classes(self) -> list[str]:
        return sorted({e.class_id for e in self.rides.values()})


class DirectoryVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ridesync-directory-"))
        self.now = 0.0
        self.model = Model()
        self.directory = self._open()

    def _open(self) -> RideDirectory:
        return RideDirectory(self.root / DIRECTORY_FILE, book, clock=lambda: self.now)

    @rule(class_id=CLASSES, device=DEVICES, ride_id=RIDES, name=NAMES, now=TIMES)
    def register(self, class_id: str, device: str, ride_id: str, name: str | None, now: float) -> None:
        self.now = now
        got = self.directory.register(class_id, device, ride_id, name)
        assert got == self.model.register(class_id, device, ride_id, name, now)

    @rule(class_id=CLASSES, device=DEVICES, name=NAMES, now=TIMES)
    def rename(self, class_id: str, device: str, name: str | None, now: float) -> None:
        self.now = now
        self.directory.rename(class_id, device, name)
        self.model.rename(class_id, device, name, now)

    @rule()
    def restart(self) -> None:
        self.directory.close()
        self.directory = self._open()

    @rule(ride_id=RIDES)
    def lookup(self, ride_id: str) -> None:
        assert self.directory.ride(ride_id) == self.model.rides.get(ride_id)

    @invariant()
    def answers_agree(self) -> None:
        assert self.directory.classes() == self.model.classes()
        for class_id in ("spin", "hiit", "yoga"):
            assert self.directory.class_rides(class_id) == self.model.class_rides(class_id)
            assert self.directory.class_history(class_id) == self.model.class_history(class_id)

    def teardown(self) -> None:
        self.directory.close()
        shutil.rmtree(self.root, ignore_errors=True)


# Each example opens real files; 30 steps reach every rule many times over 8 rides in 3 classes.
TestDirectoryVsModel = DirectoryVsModel.TestCase
TestDirectoryVsModel.settings = settings(stateful_step_count=30)
