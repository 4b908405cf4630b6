"""The ride HTTP API: idempotent end, metadata, list, docs, series, rate limits."""

from __future__ import annotations

import asyncio

import pytest

from engine.backend.config import BackendConfig
from engine.backend.ratelimit import RateLimiter
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import T0, sample

RIDE = "ride-http"


async def _started(server: Server, n: int = 5) -> ReplicaStore:
    """bike-1 starts the ride (its first sync makes it the ride's owner) with `n` samples."""
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(n)])
    bike.fold(RIDE)
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
    return bike


async def test_end_replays_same_key_and_refuses_a_different_body(server: Server) -> None:
    bike = server.token("bike", "bike-1")
    path = f"/v1/rides/{RIDE}/end"
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        first = await server.send("POST", path, bike, {"t": T0 + 60}, key="k-1")
        again = await server.send("POST", path, bike, {"t": T0 + 60}, key="k-1")
        other = await server.send("POST", path, bike, {"t": T0 + 61}, key="k-1")
        missing = await server.send("POST", path, bike, {"t": T0 + 60})
        viewer = await server.send("POST", path, server.token("viewer", "v-1"), {}, key="k-9")
    assert first[0] == 200 and first[1]["ended"] is True
    assert first[2]["Idempotent-Replayed"] == "false"
    assert (again[0], again[1]) == (200, first[1])
    assert again[2]["Idempotent-Replayed"] == "true"
    assert (other[0], other[1]["error"]) == (422, "idempotency_conflict")
    assert (missing[0], missing[1]["error"]) == (400, "idempotency_key_required")
    assert (viewer[0], viewer[1]["error"]) == (403, "role_not_allowed")
    assert server.backend.store.view(RIDE).end_events_counted == 1


async def test_bike_and_app_ending_the_same_ride_count_once(server: Server) -> None:
    store = server.backend.store
    bike, app = server.token("bike", "bike-1"), server.token("app", "app-1", rides=[RIDE])
    path = f"/v1/rides/{RIDE}/end"
    async with asyncio.timeout(HANG_GUARD):
        bike_r = await _started(server)
        bike_r.end_ride(RIDE, t=T0 + 5)
        answers = await asyncio.gather(
            server.send("POST", path, app, {}, key="app-key"),
            server.send("POST", path, bike, {}, key="bike-key"),
            server.send("POST", path, app, {}, key="app-key"),
            server.send("POST", path, bike, {}, key="bike-key"),
        )
        assert [a[0] for a in answers] == [200] * 4
        assert store.view(RIDE).end_events_counted == 1
        assert store.phase(RIDE).label == "ended"  # the bike's claim with its count has not synced yet
        # The bike's own `ended` claim (same logical key) syncs in: still one end, and now finalized.
        async with server.client(bike, bike_r, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")
    status, body, _ = await server.get(f"/v1/rides/{RIDE}", app)
    assert status == 200
    assert body["end_events_counted"] == 1
    assert body["phase"] == "finalized"
    assert body["authority"] == "backend"
    assert body["sync_state"] == "reconciled"
    # Every answer describes the one event, whoever reported it first.
    assert len({a[1]["reported_by"] for a in answers}) == 1


async def test_meta_put_writes_shared_fields_as_the_device(server: Server) -> None:
    app = server.token("app", "app-1", rides=[RIDE])
    path = f"/v1/rides/{RIDE}/meta"
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        ok = await server.send(
            "PUT", path, app, {"title": "Hill repeats", "rating": 4, "targets": {"power_w": 210}}
        )
        same = await server.send("PUT", path, app, {"title": "Hill repeats"})
        bad = await server.send("PUT", path, app, {"rating": 9})
        unknown = await server.send("PUT", path, app, {"totals": 1})
        keyed = await server.send("PUT", path, app, {"notes": "n"}, key="m-1")
        keyed_again = await server.send("PUT", path, app, {"notes": "n"}, key="m-1")
        keyed_other = await server.send("PUT", path, app, {"notes": "x"}, key="m-1")
        viewer = await server.send("PUT", path, server.token("viewer", "v"), {"title": "x"})
    assert ok[0] == 200
    assert sorted(ok[1]["written"]) == ["rating", "target.power_w", "title"]
    assert same[1]["written"] == []  # a repeated PUT changes nothing
    assert (bad[0], bad[1]["error"]) == (422, "bad_meta")
    assert (unknown[0], unknown[1]["error"]) == (422, "bad_meta")
    assert keyed_again[1] == keyed[1] and keyed_again[2]["Idempotent-Replayed"] == "true"
    assert keyed_other[0] == 422
    assert viewer[0] == 403
    view = server.backend.store.view(RIDE)
    assert view.shared == {"title": "Hill repeats", "rating": 4, "target.power_w": 210, "notes": "n"}
    edits = server.backend.store.ride_docs(RIDE).shared
    assert edits is not None
    assert {(e.device, e.role) for e in edits.edits} == {("app-1", "app")}


async def test_list_docs_and_series(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    samples = [sample(i) for i in range(20)] + [sample(i) for i in range(50, 60)]  # a 30 s hole
    samples[3] = sample(3, contact="not_detected")
    bike.append_samples(RIDE, samples)
    bike.fold(RIDE)
    token = server.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(token, bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: server.backend.store.view(RIDE).samples.get("bike-1") == 30)
        listed = await server.get("/v1/rides", token)
        scoped = await server.get("/v1/rides", server.token("app", "a", rides=["elsewhere"]))
        docs = await server.get(f"/v1/rides/{RIDE}/docs", token)
        series = await server.get(f"/v1/rides/{RIDE}/series", token)
        small = await server.get(f"/v1/rides/{RIDE}/series?max_points=10", token)
        unknown = await server.get("/v1/rides/nope/series", token)
    assert [r["ride_id"] for r in listed[1]["rides"]] == [RIDE]
    assert listed[1]["rides"][0]["phase"] == "active"
    assert scoped[1]["rides"] == []
    assert sorted(d["kind"] for d in docs[1]["docs"]) == ["bike", "shared"]
    assert all(d["url"].startswith("automerge:") for d in docs[1]["docs"])
    body = series[1]
    assert body["t0"] == T0
    hr = body["series"]["hr"]
    assert hr[3] == [3.0, None]  # no contact is a hole, never a 0
    assert hr[0] == [0.0, 120.0]
    gap = [p for p in hr if 19.0 < p[0] < 50.0]
    assert gap and all(v is None for _, v in gap)
    assert body["series"]["pwr"][0] == [0.0, 150.0]
    assert len(small[1]["series"]["hr"]) <= 10
    assert (unknown[0], unknown[1]["error"]) == (404, "unknown_ride")


async def test_rate_limit_answers_429_with_retry_after(make_server: MakeServer) -> None:
    server = await make_server(rate_per_s=0.1, burst=3)
    token = server.token("app", "app-limited")
    async with asyncio.timeout(HANG_GUARD):
        statuses = [(await server.get("/v1/rides", token))[0] for _ in range(3)]
        status, body, headers = await server.get("/v1/rides", token)
        other = await server.get("/v1/rides", server.token("app", "app-other"))
        upgrade = await server.http.get(server.url + "/v1/sync", params={"token": token, "ride": RIDE})
    assert statuses == [200, 200, 200]
    assert (status, body["error"]) == (429, "rate_limited")
    assert int(headers["Retry-After"]) >= 1
    assert other[0] == 200  # per device
    assert upgrade.status == 429 and int(upgrade.headers["Retry-After"]) >= 1


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.check("d"), limiter.check("d")] == [0, 0]
    assert limiter.check("d") == 1
    now[0] += 0.5  # one token back
    assert limiter.check("d") == 0
    assert limiter.check("d") == 1
    assert limiter.check("other") == 0


def test_config_from_env() -> None:
    cfg = BackendConfig.from_env({"RIDESYNC_MAX_MESSAGE_BYTES": "1048576", "RIDESYNC_RATE_PER_S": "5"})
    assert (cfg.max_message_bytes, cfg.rate_per_s, cfg.burst) == (1048576, 5.0, BackendConfig().burst)
    with pytest.raises(ValueError, match="RIDESYNC_HEARTBEAT_S"):
        BackendConfig.from_env({"RIDESYNC_HEARTBEAT_S": "-1"})


# Bad for both routes; the meta-only ones below are fine for an end (which ignores fields but `t`).
HOSTILE_BODIES = [
    b"null",
    b"[]",
    b'"x"',
    b"\xff\xfe",
    b"[" * 50_000,
    b'{"t": "x"}',
    b'{"t": 1e999}',
    b'{"t": true}',
    b"{" + b" " * (70 * 1024) + b"}",
]
HOSTILE_META = [
    b"",
    b'{"title": 5}',
    b'{"targets": []}',
    b'{"targets": {"power_w": -1}}',
    b'{"rating": true}',
    b'{"notes": "' + b"x" * 5000 + b'"}',
    b'{"title": "x", "extra": 1}',
]
CASES = [(b, True) for b in HOSTILE_BODIES] + [(b, False) for b in HOSTILE_META]


@pytest.mark.parametrize(("body", "for_end"), CASES, ids=range(len(CASES)))
async def test_hostile_bodies_get_a_clear_4xx_and_change_nothing(
    server: Server, body: bytes, for_end: bool
) -> None:
    token = server.token("app", "app-1", rides=[RIDE])
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "hostile"}
    routes = [("PUT", f"/v1/rides/{RIDE}/meta")] + ([("POST", f"/v1/rides/{RIDE}/end")] if for_end else [])
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        before = server.backend.store.ride_json(RIDE)
        for method, path in routes:
            async with server.http.request(method, server.url + path, data=body, headers=headers) as resp:
                answer = await resp.json()
            assert 400 <= resp.status < 500, (method, resp.status, answer)
            assert isinstance(answer["error"], str) and answer["detail"]
    assert server.backend.store.ride_json(RIDE) == before
