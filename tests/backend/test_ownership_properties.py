"""Property: whatever the order in which bikes, apps and HTTP clients act on one ride id, the first bike to
sync it owns it, and nobody else (another bike, an app for another rider or none, anyone before the ride
exists) ever changes the ride's resolved view, its phase, its class, its owner or whether it exists.

Every example runs against a fresh real backend on 127.0.0.1 with real SQLite files (the `make_server`
fixture, one server per example, closed at its end) and real device replicas."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backend.state import ride_classes
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import setup_dashboard
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.backend.test_ownership import RIDE, _stable, _sync
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import T0, sample

BIKES = {"bike-1": ("alice", "spin-6am"), "a-evil": ("mallory", "evil")}  # device: (rider, class)
APPS = {"tablet-1": "alice", "app-evil": "mallory", "app-none": None}  # device: rider
STEPS = st.one_of(
    st.tuples(st.sampled_from(["sync", "end"]), st.sampled_from(sorted(BIKES))),
    st.tuples(st.just("app_sync"), st.sampled_from(sorted(APPS))),
    st.tuples(st.sampled_from(["meta", "http_end"]), st.sampled_from(sorted(BIKES) + sorted(APPS))),
)


@dataclass
class World:
    server: Server
    root: Path
    replicas: dict[str, ReplicaStore] = field(default_factory=dict)
    next_seq: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    owner: str | None = None  # the model: the first bike whose sync the backend took
    edits: int = 0

    def token(self, device: str) -> str:
        if device in BIKES:
            rider, cls = BIKES[device]
            return self.server.token("bike", device, classes=[cls], rider=rider)
        return self.server.token("app", device, rider=APPS[device])

    def replica(self, device: str) -> ReplicaStore:
        if device not in self.replicas:
            role = Role.BIKE if device in BIKES else Role.APP
            store = self.replicas[device] = ReplicaStore(self.root / device, device_id=device, role=role)
            if role is Role.BIKE:
                store.start_ride(RIDE, t=T0)
        return self.replicas[device]

    def entitled(self, kind: str, device: str) -> bool:
        """May this step write the ride, by the ownership rule?"""
        if device in BIKES:
            if kind in ("sync", "end"):
                return self.owner in (None, device)
            return self.owner == device  # HTTP: only once the ride exists, and only its own bike
        return self.owner is not None and APPS[device] is not None and APPS[device] == BIKES[self.owner][0]

    async def snapshot(self) -> dict[str, Any]:
        store = self.server.backend.store
        app = self.server.test_server.app
        entry = app[RIDES].ride(RIDE)
        owner = store.ride_owner(RIDE)
        snap: dict[str, Any] = {
            "exists": store.has_ride(RIDE),
            "owner": None if owner is None else owner.to_json(),
            "classes": ride_classes(app, RIDE),
            "directory": None if entry is None else (entry.class_id, entry.device),
        }
        if snap["exists"]:
            status, body, _ = await self.server.get(f"/v1/rides/{RIDE}", self.server.token("backend", "ops"))
            assert status == 200, body
            view = _stable(body)
            # The backend's own sync state may say `failed` for a refused write of an *entitled* device
            # only; a stranger's refusal never shows. Everything else must be identical.
            snap["view"] = view
            snap["phase"] = store.phase(RIDE).label
        return snap

    async def step(self, kind: str, device: str) -> object:
        server = self.server
        if kind in ("sync", "end"):
            bike = self.replica(device)
            if device not in self.ended:
                seq = self.next_seq.get(device, 0)
                bike.append_samples(RIDE, [sample(i) for i in range(seq, seq + 5)])
                bike.fold(RIDE)
                self.next_seq[device] = seq + 5
                if kind == "end":
                    bike.end_ride(RIDE, t=T0 + seq + 5)
                    self.ended.add(device)
            return await _sync(server, self.token(device), bike)
        if kind == "app_sync":
            app = self.replica(device)
            self.edits += 1
            app.edit_shared(RIDE, "notes", f"{device} {self.edits}")
            return await _sync(server, self.token(device), app)
        if kind == "meta":
            self.edits += 1
            status, _, _ = await server.send(
                "PUT", f"/v1/rides/{RIDE}/meta", self.token(device), {"title": f"{device} {self.edits}"}
            )
            return status
        status, _, _ = await server.send(
            "POST", f"/v1/rides/{RIDE}/end", self.token(device), {}, key=f"end-{device}"
        )
        return status


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(owner_first=st.booleans(), steps=st.lists(STEPS, min_size=1, max_size=7))
async def test_only_the_rides_owners_ever_change_it(
    make_server: MakeServer, owner_first: bool, steps: list[tuple[str, str]]
) -> None:
    if owner_first:  # half the examples start with the rightful bike, then anything may happen
        steps = [("sync", "bike-1"), *steps]
    server = await make_server(extra_setup=(setup_dashboard,))
    with tempfile.TemporaryDirectory(prefix="ownership-") as root:
        world = World(server, Path(root))
        try:
            async with asyncio.timeout(HANG_GUARD * 2):
                for kind, device in steps:
                    entitled = world.entitled(kind, device)
                    before = await world.snapshot()
                    outcome = await world.step(kind, device)
                    after = await world.snapshot()
                    if not entitled:
                        assert after == before, (kind, device, outcome)
                        assert outcome in (403, 404, 1008, -1), (kind, device, outcome)
                    elif kind in ("sync", "end") and world.owner is None:
                        assert outcome is None, (kind, device, outcome)
                        world.owner = device
            stored = server.backend.store.ride_owner(RIDE)
            assert (stored.device if stored is not None else None) == world.owner
            if world.owner is not None:
                assert ride_classes(server.test_server.app, RIDE) == {BIKES[world.owner][1]}
                view = server.backend.store.view(RIDE)
                assert set(view.samples) <= {world.owner, *APPS}
            else:
                assert not server.backend.store.rides()
        finally:
            for store in world.replicas.values():
                store.close()
            await server.close()
