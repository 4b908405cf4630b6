"""The class hub on loopback with real aiohttp sockets."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from engine.auth.tokens import CLOCK_LEEWAY_S
from engine.bench.naive_hub import NaiveHub
from tests.support.live import HANG_GUARD_S, RawClient, ServerFactory, View, sample, until, viewing


async def test_every_peer_sees_every_riders_latest_value(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    bikes = [await session.ws_connect(srv.ws_url("c1", srv.token("bike", f"bike-{i}"))) for i in range(3)]
    async with (
        viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash,
        viewing(session, srv.ws_url("c1", srv.token("app", "tablet-0"), mode="sub")) as tablet,
    ):
        for seq in range(1, 6):
            for i, ws in enumerate(bikes):
                await ws.send_str(sample(seq, hr=100.0 + 10 * i + seq))

        def all_latest(v: View) -> bool:
            return all((v.hr(f"bike-{i}") or {}).get("seq") == 5 for i in range(3))

        await dash.wait_for(all_latest)
        await tablet.wait_for(all_latest)
        for view in (dash, tablet):
            for i in range(3):
                hr = view.hr(f"bike-{i}")
                assert hr is not None
                assert hr["v"] == 100.0 + 10 * i + 5
                assert hr["state"] == "live"
                assert hr["src"] == "strap"
                assert view.riders[f"bike-{i}"]["presence"] == "here"
        # The bikes themselves subscribe too (default mode pubsub): each sees the others.
        seen: dict[str, int] = {}
        async with asyncio.timeout(HANG_GUARD_S):
            async for msg in bikes[0]:
                for dev, rec in json.loads(msg.data).get("riders", {}).items():
                    if "hr" in rec:
                        seen[dev] = rec["hr"]["seq"]
                if all(seen.get(f"bike-{i}") == 5 for i in range(3)):
                    break
    for ws in bikes:
        await ws.close()


async def test_nobody_sees_another_class(make_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    srv = await make_server()
    bike_a = await session.ws_connect(srv.ws_url("a", srv.token("bike", "bike-a", ("a",)), mode="pub"))
    bike_b = await session.ws_connect(srv.ws_url("b", srv.token("bike", "bike-b", ("b",)), mode="pub"))
    async with (
        viewing(session, srv.ws_url("a", srv.token("viewer", "va", ("a", "b")))) as va,
        viewing(session, srv.ws_url("b", srv.token("viewer", "vb", ("a", "b")))) as vb,
    ):
        for seq in range(1, 4):
            await bike_b.send_str(sample(seq))
        await vb.wait_for(lambda v: (v.hr("bike-b") or {}).get("seq") == 3)
        for seq in range(1, 4):
            await bike_a.send_str(sample(seq))
        await va.wait_for(lambda v: (v.hr("bike-a") or {}).get("seq") == 3)
        assert "bike-b" not in va.riders
        assert "bike-a" not in vb.riders
        assert {f["class"] for f in va.frames} == {"a"}
        assert {f["class"] for f in vb.frames} == {"b"}
    await bike_a.close()
    await bike_b.close()


@pytest.mark.slow
async def test_stalled_peer_does_not_delay_others_and_gets_only_newest(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    # Small buffers so the stall shows after a few dozen frames instead of megabytes; values never go stale
    # here (a staleness sweep would be a change of its own, and the hub's counters below count changes).
    limit = 2048
    srv = await make_server(
        peer_buffer_limit=limit, peer_sndbuf=4096, stall_limit_s=600.0, stale_after_s=600.0
    )
    stats = srv.hub.stats
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    await bike.send_str(json.dumps({"type": "hello", "name": "x" * 64}))
    stalled = await RawClient.connect(
        srv.port, f"/live/v1/classes/c1/ws?token={srv.token('viewer', 'slow')}", rcvbuf=2048
    )
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "fast"))) as fast:
        seq = 0
        # Publish until the hub has skipped the stalled peer for a while; the fast peer must see every
        # newest value meanwhile (it is waited on after each sample, so it cannot fall behind unseen).
        while stats.peer_skips < 20:
            seq += 1
            assert seq < 20_000, "the stalled peer never backed up"
            await bike.send_str(sample(seq, hr=float(60 + seq % 100)))
            await fast.wait_for(lambda v, s=seq: (v.hr("bike-1") or {}).get("seq") == s)  # type: ignore[misc]
        stall_seq = seq
        slow = next(p.link for p in srv.hub.classes["c1"].peers.values() if p.device == "slow")
        # The fast peer keeps getting fresh values while the other is still stalled. The kernel may still
        # move a few bytes on to the stalled reader now and then (its receive queue is compacted and its
        # window reopens, on the kernel's timers, more often on a loaded machine), and each time the hub
        # may hand it one catch-up frame. So what is asserted is the hub's own doing, step by step: it never
        # holds more than the limit plus one flush's writes for that peer (no queue in the socket), and
        # every frame it wrote that peer is counted (`deliveries`: one record per frame here; the fast peer
        # takes exactly one per value), so each value the stalled peer ends up with can be matched to the
        # step in which the hub wrote it: it was the newest value then, never an older one held back.
        catch_ups: dict[int, int] = {}  # value published in a step -> catch-up frames the hub wrote then
        for _ in range(100):
            seq += 1
            before = stats.deliveries
            await bike.send_str(sample(seq, hr=float(60 + seq % 100)))
            await fast.wait_for(lambda v, s=seq: (v.hr("bike-1") or {}).get("seq") == s)  # type: ignore[misc]
            assert slow.transport.get_write_buffer_size() <= 2 * limit, "the hub queued frames for it"
            wrote = stats.deliveries - before - 1
            assert wrote >= 0, (seq, wrote)
            if wrote:
                catch_ups[seq] = wrote
        assert srv.hub.classes["c1"].behind, "the slow peer should still be marked behind"
        last = seq

        # Now the slow peer reads: first what was already in flight, then one catch-up frame.
        frames_after_resume = 0
        seqs: list[int] = []
        async with asyncio.timeout(HANG_GUARD_S):
            while not seqs or seqs[-1] != last:
                got = await stalled.read_frames()
                assert got is not None, "hub closed the slow peer"
                for _op, payload in got:
                    frame = json.loads(payload)
                    if frame["type"] != "delta":
                        continue
                    frames_after_resume += 1
                    hr = frame["riders"].get("bike-1", {}).get("hr")
                    if hr is not None:
                        seqs.append(hr["seq"])
        # No backlog: what was in flight when it stopped reading (bounded by socket buffers), then a jump
        # straight to the newest value.
        assert seqs[-1] == last
        assert seqs == sorted(set(seqs)), "a value twice or out of order"
        # Every value published while it stalled that reached it was written in the step that published it
        # (the newest of that moment; a catch-up written just before a step's value arrived carries the
        # previous one), and there is one value per catch-up frame the hub counted, plus the final catch-up
        # after it resumed. A queue, even a short one, would hand it values after their step had passed.
        while_stalled = [s for s in seqs if s > stall_seq and s != last]
        for s in while_stalled:
            assert s in catch_ups or s + 1 in catch_ups, (s, sorted(catch_ups), seqs)
        assert len(while_stalled) <= sum(catch_ups.values()), (sorted(catch_ups), seqs)
        assert frames_after_resume <= stall_seq + sum(catch_ups.values()) + 1
    stalled.close()
    await bike.close()


async def test_peer_stalled_past_limit_is_disconnected(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(peer_buffer_limit=1024, peer_sndbuf=4096, stall_limit_s=0.3)
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    await bike.send_str(json.dumps({"type": "hello", "name": "y" * 64}))
    stalled = await RawClient.connect(
        srv.port, f"/live/v1/classes/c1/ws?token={srv.token('viewer', 'slow')}", rcvbuf=2048
    )
    seq = 0
    async with asyncio.timeout(HANG_GUARD_S):
        while srv.hub.stats.stalls_disconnected == 0:
            seq += 1
            await bike.send_str(sample(seq))
            await asyncio.sleep(0.005)  # pacing only: the loop's exit is the condition above
    # Reading now (within the close frame's grace), it finds the old frames and then the close frame with
    # its reason; its socket ends.
    closes: list[bytes] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while (got := await stalled.read_frames()) is not None:
            closes += [p for op, p in got if op == 0x8]
    assert len(closes) == 1
    assert int.from_bytes(closes[0][:2], "big") == 4408
    assert closes[0][2:].startswith(b"stalled")
    # The hub has let go of it: it is no longer a peer of the class (at once when the fan-out noticed the
    # stall, when its connection ended when the connection watchdog did).
    await until(lambda: all(p.device != "slow" for p in srv.hub.classes["c1"].peers.values()))
    stalled.close()
    await bike.close()


async def test_subscriber_reconnect_gets_newest_state(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    url = srv.ws_url("c1", srv.token("viewer", "dash"))
    async with viewing(session, url) as dash:
        await bike.send_str(sample(1))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 1)
    for seq in range(2, 6):
        await bike.send_str(sample(seq, hr=130.0))
    async with viewing(session, url) as again:
        await again.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 5)
        # A fresh subscriber's first frame is a snapshot of the newest values, not the history.
        first = next(f for f in again.frames if f["type"] == "delta")
        assert first["riders"]["bike-1"]["hr"]["seq"] == 5
    await bike.close()


async def test_presence_join_and_leave(make_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    srv = await make_server()
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "here")
        await bike.send_str(sample(1))
        await dash.wait_for(lambda v: v.hr("bike-1") is not None)
        await bike.close()
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "left")
        assert "hr" not in dash.riders["bike-1"], "a rider who left must not keep showing a number"


@pytest.mark.parametrize(
    ("role", "classes", "mode", "ttl", "status"),
    [
        (None, ("c1",), "sub", 60.0, 401),  # no token
        ("viewer", ("c1",), "sub", -3600.0, 401),  # expired
        ("viewer", ("other",), "sub", 60.0, 403),  # wrong class
        ("bike", ("other",), "pub", 60.0, 403),  # publishing into a class the token does not allow
        ("viewer", ("c1",), "pub", 60.0, 403),  # a viewer publishing
        ("viewer", ("c1",), "pubsub", 60.0, 403),
    ],
)
async def test_unauthorised_upgrade_is_refused(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    *,
    role: str | None,
    classes: tuple[str, ...],
    mode: str,
    ttl: float,
    status: int,
) -> None:
    srv = await make_server()
    token = None
    if role is not None:
        token = srv.token(
            role, "dev-1", classes, now=time.time() + ttl - 60.0 if ttl < 0 else None, ttl_s=60.0
        )
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(srv.ws_url("c1", token, mode))
    assert err.value.status == status
    assert sum(srv.hub.stats.rejected.values()) == 1


async def test_open_connection_ends_when_its_token_expires(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    # Valid now (inside the clock leeway), expiring about a second from now.
    ttl = 60.0
    token = srv.token("viewer", "v", now=time.time() - ttl - CLOCK_LEEWAY_S + 1.0, ttl_s=ttl)
    ws = await session.ws_connect(srv.ws_url("c1", token))
    async with asyncio.timeout(HANG_GUARD_S):
        while not ws.closed:
            await ws.receive()
    assert ws.close_code == 4401


async def test_bad_signature_is_refused(make_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    srv = await make_server()
    token = srv.token("viewer", "dev-1")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(srv.ws_url("c1", forged))
    assert err.value.status == 401
    assert srv.hub.stats.rejected == {"token_bad_signature": 1}


async def test_bearer_header_is_accepted(make_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    srv = await make_server()
    ws = await session.ws_connect(
        srv.ws_url("c1", mode="pub"), headers={"Authorization": f"Bearer {srv.token('bike', 'b')}"}
    )
    await ws.send_str(sample(1))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "v"))) as view:
        await view.wait_for(lambda v: v.hr("b") is not None)
    await ws.close()


async def test_viewer_sending_and_foreign_device_samples_are_closed(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    viewer = await session.ws_connect(srv.ws_url("c1", srv.token("viewer", "v1")))
    await viewer.send_str(sample(1))
    msg = await viewer.receive()
    while msg.type is aiohttp.WSMsgType.TEXT:  # a snapshot may precede the close
        msg = await viewer.receive()
    assert viewer.close_code == 4403

    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    forged = json.loads(sample(1))
    forged["device"] = "bike-2"
    await bike.send_str(json.dumps(forged))
    await bike.receive()
    assert bike.close_code == 4403
    assert "bike-2" not in srv.hub.classes["c1"].slots.riders


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "[1,2,3]",
        '{"type":"sample"}',
        '{"type":"sample","kind":"heart_rate","v":70,"t":"now","seq":1}',
        '{"type":"sample","kind":"heart_rate","v":-5,"t":1.0,"seq":1}',
        '{"type":"sample","kind":"heart_rate","v":70,"t":9e15,"seq":1}',
        '{"type":"warp"}',
    ],
)
async def test_malformed_frame_closes_only_its_connection(
    make_server: ServerFactory, session: aiohttp.ClientSession, garbage: str
) -> None:
    srv = await make_server()
    bad = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bad"), mode="pub"))
    good = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "good"), mode="pub"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "v"))) as view:
        await good.send_str(sample(1))
        await view.wait_for(lambda v: (v.hr("good") or {}).get("seq") == 1)
        await bad.send_str(garbage)
        await bad.receive()
        assert bad.close_code == 4400
        await good.send_str(sample(2))
        await view.wait_for(lambda v: (v.hr("good") or {}).get("seq") == 2)
        assert not good.closed
        assert srv.hub.stats.malformed_closed == 1
    await good.close()


async def test_binary_garbage_closes_only_its_connection(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    bad = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bad"), mode="pub"))
    await bad.send_bytes(b"\xff\xfe\x00garbage")
    await bad.receive()
    assert bad.close_code == 4400


async def test_no_contact_then_stale_never_a_frozen_number(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(stale_after_s=0.6, sweep_s=0.05)
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        await bike.send_str(sample(1, hr=140.0))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "live")
        # The strap reports it lost skin contact: no number, a state.
        await bike.send_str(sample(2, hr=None, contact="not_detected"))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "no_contact")
        assert dash.hr("bike-1") == {**dash.hr("bike-1"), "v": None}  # type: ignore[dict-item]
        # Then nothing at all: the value ages into "stale".
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "stale")
        hr = dash.hr("bike-1")
        assert hr is not None and hr["v"] is None and hr["seq"] == 2
        # Every frame that carried a number carried it as live; none carried 140 after contact was lost.
        states = [
            f["riders"]["bike-1"]["hr"] for f in dash.frames if "hr" in f.get("riders", {}).get("bike-1", {})
        ]
        assert [s["state"] for s in states][-2:] == ["no_contact", "stale"]
        assert all(s["v"] is None for s in states if s["state"] != "live")
        # A fresh sample brings it back to live.
        await bike.send_str(sample(3, hr=150.0))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "live")
    await bike.close()


async def test_leaderboard_full_then_deltas(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(leaderboard_s=0.2)
    bikes = {
        f"b{i}": await session.ws_connect(srv.ws_url("c1", srv.token("bike", f"b{i}"), mode="pub"))
        for i in range(3)
    }
    for i, ws in enumerate(bikes.values()):
        await ws.send_str(sample(1, hr=120.0 + i))
        await ws.send_str(sample(1, hr=200.0 + 50 * i, kind="power"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        await dash.wait_for(lambda v: len(v.leaderboard) == 3 and v.leaderboard["b2"].get("pwr") == 300)
        assert [dash.leaderboard[d]["rank_pwr"] for d in ("b0", "b1", "b2")] == [3, 2, 1]
        await bikes["b0"].send_str(sample(2, hr=400.0, kind="power"))
        await dash.wait_for(lambda v: v.leaderboard["b0"].get("pwr") == 400)
        assert dash.leaderboard["b0"]["rank_pwr"] == 1
        boards = [f for f in dash.frames if f["type"] == "leaderboard"]
        assert boards[0]["full"] is True
        assert any(
            (not b["full"] and "b1" not in b["rows"]) or b["rows"].get("b1", {}).get("rank_pwr") == 3
            for b in boards[1:]
        )
    for ws in bikes.values():
        await ws.close()


async def test_healthz_metrics_and_stats(make_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    srv = await make_server()
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        await bike.send_str(sample(1))
        await dash.wait_for(lambda v: v.hr("bike-1") is not None)
        async with session.get(srv.base + "/healthz") as r:
            assert (await r.json())["ok"] is True
        async with session.get(srv.base + "/metrics") as r:
            text = await r.text()
        assert 'ridesync_live_connections{mode="sub"} 1.0' in text
        assert "ridesync_live_frames_sent_total" in text
        assert "ridesync_live_tick_seconds_bucket" in text
        async with session.get(srv.base + "/live/v1/stats") as r:
            stats = await r.json()
        assert stats["samples_in"] == 1 and stats["frames_sent"] >= 1
        async with session.get(
            srv.base + "/live/v1/classes/c1", params={"token": srv.token("viewer", "v")}
        ) as r:
            snap = await r.json()
        assert snap["riders"]["bike-1"]["hr"]["seq"] == 1
        async with session.get(srv.base + "/live/v1/classes/c1") as r:
            assert r.status == 401
    await bike.close()


async def test_naive_baseline_hub_delivers_every_sample(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The benchmark's baseline must be a working hub, or its numbers mean nothing."""
    srv = await make_server(make_hub=NaiveHub)
    bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        for seq in range(1, 6):
            await bike.send_str(sample(seq, hr=float(100 + seq)))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 5)
        seqs = [
            f["riders"]["bike-1"]["hr"]["seq"] for f in dash.frames if "hr" in f["riders"].get("bike-1", {})
        ]
        assert seqs == [1, 2, 3, 4, 5]  # one frame per sample: no coalescing
    await bike.close()
