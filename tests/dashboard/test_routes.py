"""The dashboard's pages and JSON on a real backend application over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import ASSETS, setup_dashboard
from engine.live.lane import live_lane
from engine.server.app import build_app
from engine.server.config import ServerConfig


@dataclass
class Backend:
    base: str
    keyring: KeyRing
    app: web.Application
    http: aiohttp.ClientSession

    def token(self, role: str = "viewer", classes: tuple[str, ...] = ("spin",), **kw: object) -> str:
        return self.keyring.issue(role, "dash-1", classes=classes, **kw)  # type: ignore[arg-type]

    async def get(self, path: str, token: str | None = None) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.http.get(self.base + path, headers=headers, allow_redirects=False)
        await resp.read()
        return resp


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    keyring = KeyRing.load_or_create(tmp_path)
    app = build_app(ServerConfig(data_dir=tmp_path, port=0), [live_lane(), setup_dashboard], keyring=keyring)
    app[RIDES].register("spin", "bike-1", "ride-1", "Ann")
    app[RIDES].register("other", "bike-9", "ride-9", "Zed")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        yield Backend(f"http://127.0.0.1:{port}", keyring, app, http)
    await runner.cleanup()


@pytest.mark.parametrize("path", ["/", "/classes/spin", "/rides/ride-1"])
async def test_pages_are_served_with_strict_headers(backend: Backend, path: str) -> None:
    resp = await backend.get(path)
    assert resp.status == 200
    assert resp.content_type == "text/html"
    # The token rides in the URL: it must never leak through a Referer, a cache, or foreign scripts.
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


async def test_every_asset_referenced_by_the_pages_is_served(backend: Backend) -> None:
    for name, ctype in ASSETS.items():
        resp = await backend.get(f"/dashboard/static/{name}")
        assert resp.status == 200, name
        assert resp.content_type == ctype
        assert len(await resp.read()) > 100, name


@pytest.mark.parametrize("name", ["../routes.py", "..%2Froutes.py", "README.md", "app.js.map", "x"])
async def test_only_known_assets_are_served(backend: Backend, name: str) -> None:
    resp = await backend.get(f"/dashboard/static/{name}")
    assert resp.status == 404


@pytest.mark.parametrize(
    "path", ["/classes/bad%20class", "/classes/%3Cscript%3E", "/rides/" + "x" * 200, "/rides/a%22b"]
)
async def test_malformed_ids_get_400(backend: Backend, path: str) -> None:
    resp = await backend.get(path)
    assert resp.status == 400
    assert (await resp.json())["error"] in ("bad_class", "bad_ride")


async def test_class_rides_needs_a_token_for_that_class(backend: Backend) -> None:
    assert (await backend.get("/dashboard/v1/classes/spin/rides")).status == 401
    bad = await backend.get("/dashboard/v1/classes/spin/rides", "rs1.nope.nope.nope")
    assert bad.status == 401
    other = await backend.get("/dashboard/v1/classes/spin/rides", backend.token(classes=("other",)))
    assert other.status == 403
    ok = await backend.get("/dashboard/v1/classes/spin/rides", backend.token())
    assert ok.status == 200
    body = await ok.json()
    entry = body["rides"]["bike-1"]
    assert body["class"] == "spin" and set(body["rides"]) == {"bike-1"}
    assert {k: entry[k] for k in ("ride_id", "class", "device", "name")} == {
        "ride_id": "ride-1",
        "class": "spin",
        "device": "bike-1",
        "name": "Ann",
    }
    assert entry["max_hr"] is None  # nobody told the hub this rider's max HR
    assert entry["bike"] is None  # nor its kind of bike
    assert body["started"] is None  # nobody has ridden in the class yet


async def test_class_rides_say_the_kind_of_bike_the_rider_s_hello_said(backend: Backend) -> None:
    from engine.live.routes import HUB

    backend.app[HUB].riders.remember("spin", "bike-1", None, 180, "ble-csc")
    body = await (await backend.get("/dashboard/v1/classes/spin/rides", backend.token())).json()
    assert (body["rides"]["bike-1"]["max_hr"], body["rides"]["bike-1"]["bike"]) == (180, "ble-csc")


async def test_ride_scoped_tokens_see_only_their_rides(backend: Backend) -> None:
    backend.app[RIDES].register("spin", "bike-2", "ride-2", "Ben")
    token = backend.token(rides=["ride-2"])
    body = await (await backend.get("/dashboard/v1/classes/spin/rides", token)).json()
    assert set(body["rides"]) == {"bike-2"}
    assert (await backend.get("/dashboard/v1/rides/ride-1", token)).status == 404
    assert (await backend.get("/dashboard/v1/rides/ride-2", token)).status == 200


async def test_ride_lookup_hides_rides_of_other_classes(backend: Backend) -> None:
    token = backend.token()
    ok = await backend.get("/dashboard/v1/rides/ride-1", token)
    assert (await ok.json())["device"] == "bike-1"
    # Another class's ride and an unknown ride answer alike.
    foreign = await backend.get("/dashboard/v1/rides/ride-9", token)
    unknown = await backend.get("/dashboard/v1/rides/ride-404", token)
    assert foreign.status == unknown.status == 404
    assert (await foreign.json())["error"] == (await unknown.json())["error"] == "unknown_ride"


async def test_me_reports_the_tokens_classes(backend: Backend) -> None:
    body = await (await backend.get("/dashboard/v1/me", backend.token(classes=("a", "b")))).json()
    assert body["role"] == "viewer"
    assert body["classes"] == ["a", "b"]
    expired = backend.token(ttl_s=1, now=1_000_000.0)
    resp = await backend.get("/dashboard/v1/me", expired)
    assert resp.status == 401
    assert (await resp.json())["error"] == "token_expired"


async def test_a_newer_ride_replaces_the_devices_older_one(backend: Backend) -> None:
    rides = backend.app[RIDES]
    rides.register("spin", "bike-1", "ride-1b")
    # The older ride stays known (the results page lists it, its page still opens); it is no longer current.
    old = rides.ride("ride-1")
    assert old is not None and old.name == "Ann"
    assert [e.ride_id for e in rides.class_history("spin")] == ["ride-1", "ride-1b"]
    assert rides.class_rides("spin")["bike-1"].ride_id == "ride-1b"
    assert rides.class_rides("spin")["bike-1"].name is None  # a new ride does not inherit a name


async def test_registering_the_same_ride_again_keeps_its_name(backend: Backend) -> None:
    rides = backend.app[RIDES]
    rides.register("spin", "bike-1", "ride-1")  # as the backend does when the bike connects
    entry = rides.ride("ride-1")
    assert entry is not None and entry.name == "Ann"
    rides.register("spin", "bike-1", "ride-1", "Annie")
    assert rides.class_rides("spin")["bike-1"].name == "Annie"
