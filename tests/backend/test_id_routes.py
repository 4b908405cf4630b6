"""Every HTTP and WebSocket route refuses ids outside the one grammar (engine/ids.py) with a JSON 4xx, and
never with a traceback: a trailing newline, `@`, a leading `_`, whitespace; in paths, queries and tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from urllib.parse import quote

import aiohttp
import pytest

from engine.dashboard.routes import setup_dashboard
from engine.ride.schema import Role
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import sample

BAD_IDS = ["ride-a\n", "ride-a\r\n", "a@b", "_x", " x", "x ", "x\ty"]
RIDE = "ride-a"


def _forge(server: Server, **claims: object) -> str:
    """A correctly signed token carrying claims `issue` refuses to write (ids outside the grammar)."""
    t = int(time.time())
    payload = {"r": "bike", "d": "bike-1", "c": [], "iat": t, "exp": t + 600, **claims}
    ring = server.ring

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signed = f"rs1.{ring.current}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(ring.keys[ring.current], signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(sig)}"


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


async def _status(
    server: Server, method: str, path: str, token: str | None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    async with server.http.request(method, server.url + path, headers=headers) as resp:
        assert resp.content_type == "application/json", (path, resp.status, await resp.text())
        return resp.status, await resp.json()


async def _upgrade(server: Server, path: str, params: dict[str, str]) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with server.http.ws_connect(server.url + path, params=params):
            pass
    return info.value.status


async def _ride_synced(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=1.0)
    bike.append_samples(RIDE, [sample(i) for i in range(3)])
    bike.fold(RIDE)
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as client:
        await client.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
    bike.close()


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_ride_ids_outside_the_grammar_get_400_on_every_route(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server(extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        await _ride_synced(server)
        token = server.token("bike", "bike-1")
        ride = quote(bad, safe="")
        key = {"Idempotency-Key": "k1"}
        for method, path, extra, body in (
            ("GET", f"/v1/rides/{ride}", {}, None),
            ("GET", f"/v1/rides/{ride}/docs", {}, None),
            ("GET", f"/v1/rides/{ride}/series", {}, None),
            ("POST", f"/v1/rides/{ride}/end", key, None),
            ("PUT", f"/v1/rides/{ride}/meta", {}, {"title": "look-alike"}),
            ("GET", f"/dashboard/v1/rides/{ride}", {}, None),
            ("GET", f"/rides/{ride}", {}, None),
        ):
            headers = {"Authorization": f"Bearer {token}", **extra}
            async with server.http.request(method, server.url + path, headers=headers, json=body) as resp:
                assert resp.status == 400, (method, path, resp.status, await resp.text())
                assert (await resp.json())["error"] == "bad_ride"
        assert await _upgrade(server, "/v1/sync", {"ride": bad, "token": token}) == 400
        assert set(server.backend.store.rides()) == {RIDE}, "no look-alike ride was created"
    _no_traceback(caplog)


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_class_ids_outside_the_grammar_get_400(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server(extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        token = server.token("viewer", "dash-1", classes=["c1"])
        cls = quote(bad, safe="")
        for path in (f"/live/v1/classes/{cls}", f"/dashboard/v1/classes/{cls}/rides", f"/classes/{cls}"):
            status, body = await _status(server, "GET", path, token)
            # 400 where the route checks the id first, 403 where the token's classes are checked first.
            assert status in (400, 403) and body["error"] in ("bad_class", "token_wrong_scope"), (path, body)  # type: ignore[index]
        assert await _upgrade(server, f"/live/v1/classes/{cls}/ws", {"token": token}) == 400
    _no_traceback(caplog)


@pytest.mark.parametrize("field", ["d", "c", "rd"])
@pytest.mark.parametrize("bad", ["a@b", "_x", "bike\n", " x"])
async def test_a_signed_token_with_a_bad_id_is_refused_not_a_traceback(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture, field: str, bad: str
) -> None:
    """Tokens issued before the grammar was one (a device `a@b` got a token) are refused with 401 on every
    route, where the sync upgrade used to raise ValueError."""
    caplog.set_level(logging.INFO)
    server = await make_server(extra_setup=(setup_dashboard,))
    async with asyncio.timeout(HANG_GUARD):
        await _ride_synced(server)
        claims: dict[str, object] = {"d": bad} if field == "d" else {field: [bad]}
        if field != "c":
            claims["c"] = ["c1"]
        token = _forge(server, **claims)
        for path in ("/v1/rides", f"/v1/rides/{RIDE}", "/dashboard/v1/me", "/dashboard/v1/classes/c1/rides"):
            status, body = await _status(server, "GET", path, token)
            assert status == 401 and body["error"] == "token_malformed", (path, status, body)  # type: ignore[index]
        status, body = await _status(
            server, "POST", f"/v1/rides/{RIDE}/end", token, headers={"Idempotency-Key": "k2"}
        )
        assert status == 401, body
        assert await _upgrade(server, "/v1/sync", {"ride": RIDE, "token": token}) == 401
        assert await _upgrade(server, "/live/v1/classes/c1/ws", {"token": token}) == 401
    _no_traceback(caplog)
