"""The whole-document baseline of `bench sync` (engine/bench/sync_offline.py) is sent as a device would send
it and counted on the wire, not only as bodies."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from engine.bench.sync_offline import SimClock, build_ride, naive_wire
from engine.ride.schema import Role
from engine.store import ReplicaStore


async def test_naive_upload_carries_the_token_and_counts_headers_and_answers(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None, int]] = []

    async def upload(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.match_info["doc"], request.headers.get("Authorization"), len(body)))
        return web.json_response({"stored": len(body)})

    app = web.Application()
    app.router.add_post("/naive/{doc}", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    clock = SimClock()
    bike = ReplicaStore(tmp_path / "bike", device_id="bench-bike", role=Role.BIKE, clock=clock)
    try:
        build_ride(bike, clock, "r", 120, lazy=True)
        out = await naive_wire(bike, f"http://127.0.0.1:{runner.addresses[0][1]}", "tok.en", "r")
        docs = [r.doc_id for r in bike.ride_refs("r") if bike.heads(r.doc_id)]
        bodies = sum(len(bike.doc(d).save()) for d in docs)
    finally:
        bike.close()
        await runner.cleanup()
    assert sorted(d for d, _, _ in seen) == sorted(docs)
    assert {auth for _, auth, _ in seen} == {"Bearer tok.en"}
    assert out["body_bytes"] == bodies == sum(n for _, _, n in seen)
    # Each request carries a request line, headers (the token among them) and a body; each gets an answer.
    assert out["wire_bytes_up"] > bodies + len(docs) * len("Authorization: Bearer tok.en\r\n")
    assert out["wire_bytes"] - out["wire_bytes_up"] > len(docs) * len("HTTP/1.1 200 OK\r\n")
