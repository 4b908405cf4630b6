"""`ridesync_backend` and `ridesync_hub`: a real `ridesync serve`, its tokens and its class hub."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from engine.testing import RidesyncBackend, RidesyncHub


async def test_backend_serves_and_its_tokens_are_accepted(ridesync_backend: RidesyncBackend) -> None:
    assert ridesync_backend.url.startswith("http://127.0.0.1:")
    assert (ridesync_backend.data_dir / "token-keys.json").exists()
    token = ridesync_backend.token("app", "tablet-1", rider="alice")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ridesync_backend.url}/healthz") as r:
            assert r.status == 200
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{ridesync_backend.url}/v1/rides/nope", headers=headers) as r:
            assert r.status == 404  # known token, unknown ride
        async with http.get(
            f"{ridesync_backend.url}/v1/rides/nope", headers={"Authorization": "Bearer x"}
        ) as r:
            assert r.status == 401


async def test_hub_relays_a_riders_sample_to_a_viewer(ridesync_hub: RidesyncHub) -> None:
    bike = ridesync_hub.token("bike", "bike-1", "spin-6am")
    viewer = ridesync_hub.token("viewer", "dash-1", "spin-6am")
    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession() as http,
        http.ws_connect(ridesync_hub.ws_url("spin-6am", viewer)) as sub,
        http.ws_connect(ridesync_hub.ws_url("spin-6am", bike, mode="pub")) as pub,
    ):
        sample = {"type": "sample", "kind": "heart_rate", "v": 142, "seq": 1, "src": "hrm"}
        await pub.send_str(json.dumps({**sample, "t": time.time()}))
        while True:
            msg = json.loads((await sub.receive()).data)
            if "bike-1" in json.dumps(msg) and "142" in json.dumps(msg):
                break
