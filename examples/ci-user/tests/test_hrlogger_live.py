"""hrlogger publishing to a real ridesync class hub (`ridesync serve` on loopback)."""

from __future__ import annotations

import asyncio

from engine import fetch_class  # ridesync's public API (docs/api.md)

from hrlogger import publish_heart_rate


async def test_publishes_to_the_class(ridesync_hub):
    rider = ridesync_hub.token("bike", "bike-7", "spin-6am")
    viewer = ridesync_hub.token("viewer", "dash-1", "spin-6am")
    async with publish_heart_rate(ridesync_hub.ws_url("spin-6am", rider, mode="pub")) as link:
        await link.heart_rate(120)
        await link.heart_rate(131)
        for _ in range(100):
            state = await fetch_class(ridesync_hub.url, viewer, "spin-6am")
            if state["riders"].get("bike-7", {}).get("hr", {}).get("v") == 131:
                break
            await asyncio.sleep(0.05)
    assert state["riders"]["bike-7"]["hr"]["v"] == 131, state
