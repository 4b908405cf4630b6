"""Ride ownership on the backend: the bike whose first sync starts a ride owns it; the apps it admits (a
token for the same rider, or a token for that ride) and the backend may write it too; nobody else can
create a document in it, end it, edit it or move it to another class. Real aiohttp on 127.0.0.1, real
SQLite files (tests/support/backend_server.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.auth.tokens import KeyRing
from engine.backend.state import ride_classes
from engine.cli.main import main
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import setup_dashboard
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore
from engine.sync.effects import CLOSE_POLICY_VIOLATION
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import T0, sample

RIDE = "ride-victim"
SYNC_WAIT = 10.0


def _stable(view: dict[str, Any]) -> dict[str, Any]:
    """The view without the sync state's timestamp and the connection count."""
    out = {**view, "sync": {**view["sync"], "updated": None}}
    out.pop("connected_devices", None)
    return out


async def _view(server: Server, ride: str = RIDE) -> dict[str, Any]:
    status, body, _ = await server.get(f"/v1/rides/{ride}", server.token("backend", "ops"))
    assert status == 200, body
    return _stable(body)


async def _upgrade(server: Server, token: str, *rides: str, cls: str | None = None) -> tuple[int, Any]:
    """A WebSocket upgrade of /v1/sync by hand, so a refusal's JSON body can be read."""
    params = [("ride", r) for r in rides] + [("token", token)] + ([("class", cls)] if cls else [])
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with server.http.get(server.url + "/v1/sync", params=params, headers=headers) as resp:
        if resp.status == 101:
            return 101, None
        return resp.status, await resp.json(content_type=None)


async def _sync(server: Server, token: str, store: ReplicaStore, ride: str = RIDE) -> int | None:
    """Sync `store`'s ride until the backend holds all of it or refuses: None if it was accepted, else the
    refusal (the upgrade's HTTP status, or the close code)."""
    try:
        async with server.client(token, store, ride) as client:
            await client.open_ride()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_WAIT):
                    await client.wait_for(
                        lambda: (
                            client.closed.is_set()
                            or bool(client.unavailable)
                            or server.holds_all_of(store, ride)
                        )
                    )
            if client.closed.is_set():
                return client.close_code
            return None if server.holds_all_of(store, ride) else -1
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def _bike(server: Server, device: str, n: int, *, ended: bool = False, first: int = 0) -> ReplicaStore:
    bike = server.replica(Role.BIKE, device)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(first, first + n)])
    bike.fold(RIDE)
    if ended:
        bike.end_ride(RIDE, t=T0 + n)
    return bike


# -- defect 1: a stranger's bike token takes the ride over -----------------------------------------------


async def test_a_stranger_bike_cannot_take_over_a_ride(server: Server) -> None:
    store = server.backend.store
    async with asyncio.timeout(HANG_GUARD):
        owner = _bike(server, "bike-1", 30)
        owner_token = server.token("bike", "bike-1")
        assert await _sync(server, owner_token, owner) is None
        # `a-evil` sorts before `bike-1`: it rides 20 s into the victim's ride id and ends it.
        evil = _bike(server, "a-evil", 20, ended=True)
        refused = await _sync(server, server.token("bike", "a-evil"), evil)
        status, body = await _upgrade(server, server.token("bike", "a-evil"), RIDE)
        # The real bike rides on: its later samples still reach the backend.
        owner.append_samples(RIDE, [sample(i) for i in range(30, 60)])
        owner.fold(RIDE)
        later = await _sync(server, owner_token, owner)
    view = store.view(RIDE)
    assert refused == 403
    assert (status, body["error"]) == (403, "not_ride_owner")
    assert "bike-1" in body["detail"]
    assert later is None
    assert view.samples == {"bike-1": 60}
    assert view.phase is Phase.ACTIVE
    assert all(ref.device != "a-evil" for ref in store.ride_refs(RIDE))


async def test_a_stranger_cannot_end_or_edit_a_ride_over_http(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        assert await _sync(server, server.token("bike", "bike-1"), _bike(server, "bike-1", 10)) is None
        before = await _view(server)
        answers = []
        for token in (
            server.token("bike", "a-evil"),
            server.token("app", "app-evil"),
            server.token("bike", "bike-2", rides=[RIDE]),  # a bike token for this ride, but not its bike
        ):
            answers.append(await server.send("PUT", f"/v1/rides/{RIDE}/meta", token, {"title": "pwned"}))
            answers.append(await server.send("POST", f"/v1/rides/{RIDE}/end", token, {}, key="evil-end"))
        after = await _view(server)
        async with server.http.get(server.url + "/metrics") as resp:
            metrics = await resp.text()
    assert [(a[0], a[1]["error"]) for a in answers] == [(403, "not_ride_owner")] * 6
    assert after == before
    assert (after["phase"], after["shared"], after["end_events_counted"]) == ("active", {}, 0)
    assert 'ridesync_auth_failures_total{code="not_ride_owner"} 6.0' in metrics


async def test_a_stranger_connected_before_the_ride_began_is_closed_when_it_writes(server: Server) -> None:
    store = server.backend.store
    snoop = server.replica(Role.APP, "app-evil")
    snoop.edit_shared(RIDE, "title", "pwned")
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(server.token("app", "app-evil"), snoop, RIDE) as early:
            # The owner starts the ride while the stranger's connection is open.
            assert await _sync(server, server.token("bike", "bike-1"), _bike(server, "bike-1", 10)) is None
            await early.open_ride()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_WAIT):
                    await early.wait_for(early.closed.is_set)
        view = store.view(RIDE)
    assert early.close_code == CLOSE_POLICY_VIOLATION
    assert any("not_ride_owner" in e for e in early.errors), early.errors
    assert view.shared == {}
    assert view.samples == {"bike-1": 10}


async def test_two_bikes_starting_one_ride_at_once_bind_exactly_one_owner(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        statuses = await asyncio.gather(
            *(_upgrade(server, server.token("bike", f"bike-{i}"), "ride-race") for i in range(6))
        )
    codes = sorted(s for s, _ in statuses)
    assert codes == [101] + [403] * 5
    owner = server.backend.store.ride_owner("ride-race")
    assert owner is not None and owner.device in {f"bike-{i}" for i in range(6)}


# -- the owner's apps --------------------------------------------------------------------------------------


async def test_the_riders_app_and_a_ride_scoped_app_write_the_ride_others_do_not(server: Server) -> None:
    store = server.backend.store
    async with asyncio.timeout(HANG_GUARD):
        bike_token = server.token("bike", "bike-1", rider="alice")
        assert await _sync(server, bike_token, _bike(server, "bike-1", 10)) is None
        tablet = server.token("app", "tablet-1", rider="alice")
        scoped = server.token("app", "tablet-2", rides=[RIDE])
        other_rider = server.token("app", "tablet-3", rider="bob")
        meta = await server.send("PUT", f"/v1/rides/{RIDE}/meta", tablet, {"title": "Hill climb"})
        scoped_meta = await server.send("PUT", f"/v1/rides/{RIDE}/meta", scoped, {"notes": "n"})
        refused = await server.send("PUT", f"/v1/rides/{RIDE}/meta", other_rider, {"title": "x"})
        # The tablet syncs an edit of its own, then ends the ride.
        app = server.replica(Role.APP, "tablet-1")
        app.edit_shared(RIDE, "rating", 5)
        assert await _sync(server, tablet, app) is None
        bob = server.replica(Role.APP, "tablet-3")
        bob.edit_shared(RIDE, "rating", 1)
        bob_sync = await _sync(server, other_rider, bob)
        end = await server.send("POST", f"/v1/rides/{RIDE}/end", tablet, {}, key="tablet-end")
    assert (meta[0], scoped_meta[0]) == (200, 200)
    assert (refused[0], refused[1]["error"]) == (403, "not_ride_owner")
    assert bob_sync == 403
    assert end[0] == 200
    view = store.view(RIDE)
    assert view.shared == {"title": "Hill climb", "notes": "n", "rating": 5}
    assert view.phase is Phase.ENDED and view.end_events_counted == 1


async def test_an_app_cannot_start_a_ride(server: Server) -> None:
    app = server.replica(Role.APP, "tablet-1")
    app.edit_shared(RIDE, "title", "early")
    async with asyncio.timeout(HANG_GUARD):
        outcome = await _sync(server, server.token("app", "tablet-1", rides=[RIDE]), app)
    assert outcome == -1  # answered doc-unavailable: nothing created
    assert not server.backend.store.rides()


# -- defect 4: class hijack --------------------------------------------------------------------------------


async def test_a_strangers_bike_token_cannot_move_a_ride_to_its_class(make_server: MakeServer) -> None:
    server = await make_server(extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        owner = _bike(server, "bike-1", 10)
        assert await _sync(server, server.token("bike", "bike-1", classes=["spin-6am"]), owner) is None
        evil = server.replica(Role.BIKE, "a-evil")
        refused = await _sync(server, server.token("bike", "a-evil", classes=["evil"]), evil)
        rightful = await server.get(f"/v1/rides/{RIDE}", server.token("viewer", "v-1", classes=["spin-6am"]))
        hijacker = await server.get(f"/v1/rides/{RIDE}", server.token("viewer", "v-2", classes=["evil"]))
    app = server.test_server.app
    entry = app[RIDES].ride(RIDE)
    assert refused == 403
    assert ride_classes(app, RIDE) == frozenset({"spin-6am"})
    assert entry is not None and (entry.class_id, entry.device) == ("spin-6am", "bike-1")
    assert app[RIDES].class_rides("evil") == {}
    assert rightful[0] == 200
    assert (hijacker[0], hijacker[1]["error"]) == (403, "token_wrong_scope")


async def test_the_owners_class_is_set_once(make_server: MakeServer) -> None:
    server = await make_server(extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        owner = _bike(server, "bike-1", 10)
        assert await _sync(server, server.token("bike", "bike-1", classes=["spin-6am"]), owner) is None
        # Even the owner's later token for another class does not move the ride.
        again = await _sync(server, server.token("bike", "bike-1", classes=["spin-7am"]), owner)
    assert again is None
    assert ride_classes(server.test_server.app, RIDE) == frozenset({"spin-6am"})


# -- defect 6: writes to unknown rides ---------------------------------------------------------------------


async def test_writes_to_an_unknown_ride_are_404_and_create_nothing(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        answers = []
        for token in (server.token("bike", "bike-1"), server.token("app", "app-1", rides=[RIDE])):
            answers.append(await server.send("PUT", f"/v1/rides/{RIDE}/meta", token, {"title": "x"}))
            answers.append(await server.send("POST", f"/v1/rides/{RIDE}/end", token, {}, key="k"))
        view = await server.get(f"/v1/rides/{RIDE}", server.token("bike", "bike-1"))
    assert [(a[0], a[1]["error"]) for a in answers] == [(404, "unknown_ride")] * 4
    assert (view[0], view[1]["error"]) == (404, "unknown_ride")
    assert not server.backend.store.rides()


# -- persistence -------------------------------------------------------------------------------------------


async def test_ownership_and_class_survive_a_restart(make_server: MakeServer, tmp_path: Path) -> None:
    data = tmp_path / "restarted"
    first = await make_server(data=data, extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        owner = _bike(first, "bike-1", 10)
        token = first.token("bike", "bike-1", classes=["spin-6am"], rider="alice")
        assert await _sync(first, token, owner) is None
        await first.close()
        server = await make_server(data=data, extra_setup=(setup_dashboard,))
        evil = _bike(server, "a-evil", 5, ended=True)
        refused = await _sync(server, server.token("bike", "a-evil", classes=["evil"]), evil)
        tablet = await server.send(
            "PUT", f"/v1/rides/{RIDE}/meta", server.token("app", "tablet-1", rider="alice"), {"title": "t"}
        )
        viewer = await server.get(f"/v1/rides/{RIDE}", server.token("viewer", "v-1", classes=["spin-6am"]))
        owner.append_samples(RIDE, [sample(i) for i in range(10, 20)])
        owner.fold(RIDE)
        later = await _sync(server, token, owner)
    stored = server.backend.store.ride_owner(RIDE)
    assert stored is not None
    assert (stored.device, stored.rider, stored.class_id) == ("bike-1", "alice", "spin-6am")
    assert refused == 403
    assert tablet[0] == 200
    assert viewer[0] == 200
    assert later is None
    assert server.backend.store.view(RIDE).samples == {"bike-1": 20}


# -- the token CLI -----------------------------------------------------------------------------------------


def test_token_issue_carries_the_rider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "keys")
    argv = ["token", "issue", "--init", "--role", "app", "--device", "tablet-1", "--rider", "alice"]
    assert main([*argv, "--data", data]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    claims = KeyRing.load_or_create(data).verify(token)
    assert (claims.role.value, claims.device, claims.rider) == ("app", "tablet-1", "alice")
    assert main(["token", "issue", "--role", "bike", "--device", "b", "--data", data, "--json"]) == 0
    assert "rider" not in json.loads(capsys.readouterr().out)["claims"]  # no rider unless asked
    assert main(["token", "issue", "--role", "app", "--device", "t", "--rider", "a b", "--data", data]) != 0


async def test_a_ride_stored_before_owners_were_recorded_is_adopted_by_its_bike(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data = tmp_path / "legacy"
    first = await make_server(data=data)
    async with asyncio.timeout(HANG_GUARD):
        owner = _bike(first, "bike-1", 10)
        token = first.token("bike", "bike-1")
        assert await _sync(first, token, owner) is None
        await first.close()
        # As a data dir written before ride owners existed: the ride, but no owner row.
        with contextlib.closing(sqlite3.connect(data / "backend" / "ridesync.sqlite3")) as db:
            db.execute("DELETE FROM ride_owners")
            db.commit()
        server = await make_server(data=data)
        assert server.backend.store.ride_owner(RIDE) is None
        refused = await _sync(server, server.token("bike", "a-evil"), _bike(server, "a-evil", 5, ended=True))
        owner.append_samples(RIDE, [sample(i) for i in range(10, 20)])
        owner.fold(RIDE)
        later = await _sync(server, token, owner)
    stored = server.backend.store.ride_owner(RIDE)
    assert stored is not None and stored.device == "bike-1"
    assert (refused, later) == (403, None)
    assert server.backend.store.view(RIDE).samples == {"bike-1": 20}
