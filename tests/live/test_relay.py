"""The multi-process seam: two hubs joined by a relay serve one class together."""

from __future__ import annotations

import aiohttp

from engine.live.relay import LocalBus
from tests.support.live import ServerFactory, sample, viewing


async def test_rider_on_one_hub_reaches_viewer_on_another(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    bus = LocalBus()
    relay_a, relay_b = bus.relay(), bus.relay()
    hub_a = await make_server(relay=relay_a)
    hub_b = await make_server(relay=relay_b)
    bike = await session.ws_connect(hub_a.ws_url("c1", hub_a.token("bike", "bike-a"), mode="pub"))
    async with viewing(session, hub_b.ws_url("c1", hub_b.token("viewer", "dash-b"))) as dash:
        for seq in range(1, 4):
            await bike.send_str(sample(seq, hr=100.0 + seq))
        await dash.wait_for(lambda v: (v.hr("bike-a") or {}).get("seq") == 3)
        assert dash.hr("bike-a")["v"] == 103.0  # type: ignore[index]
    # One batch per class per 10 ms flush window, not one per sample (the join and a roster may add one each).
    assert 1 <= relay_a.batches_published <= 5
    assert relay_b.batches_published == 0  # hub B's own riders published nothing
    await bike.close()
