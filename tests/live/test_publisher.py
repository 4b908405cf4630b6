"""The bike's live publisher against a real hub on loopback: streaming, contact loss, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp

from engine.live.config import HubConfig
from engine.live.publisher import LivePublisher, class_ws_url
from engine.readings import Contact, Kind, Reading, SourceEvent, SourceItem, SourceState
from engine.server.keys import DATA_DIR
from tests.support.live import HANG_GUARD_S, ServerFactory, start_server, until, viewing


class QueueSource:
    """A synthetic sensor source: yields whatever the test puts in its queue."""

    def __init__(self, source_id: str) -> None:
        self._id = source_id
        self.queue: asyncio.Queue[SourceItem] = asyncio.Queue()
        self.seq = 0

    @property
    def source_id(self) -> str:
        return self._id

    async def stream(self) -> AsyncIterator[SourceItem]:
        while True:
            yield await self.queue.get()

    def hr(self, bpm: float, contact: Contact = Contact.DETECTED) -> Reading:
        self.seq += 1
        return Reading(
            t=time.time(), source=self._id, seq=self.seq, kind=Kind.HEART_RATE, value=bpm, contact=contact
        )


@contextlib.asynccontextmanager
async def running(pub: LivePublisher, source: QueueSource) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(pub.run()), tg.create_task(pub.pump(source))]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()


async def test_readings_stream_then_no_contact_then_stale(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(stale_after_s=0.5, sweep_s=0.05)
    strap = QueueSource("hrm-1")
    pub = LivePublisher(srv.base, srv.token("bike", "bike-1"), "c1", name="Ann", max_hr=180)
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash, running(pub, strap):
        async with asyncio.timeout(HANG_GUARD_S):
            await pub.connected.wait()
        for bpm in (120.0, 150.0, 171.0):
            strap.queue.put_nowait(strap.hr(bpm))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 3)
        rider = dash.riders["bike-1"]
        assert rider["hr"]["v"] == 171.0 and rider["hr"]["src"] == "hrm-1" and rider["hr"]["state"] == "live"
        assert rider["name"] == "Ann" and rider["zone"] == 5  # 171/180 = 95 %
        # The strap drops: the link event becomes "no contact", then the value ages into "stale".
        strap.queue.put_nowait(SourceEvent(t=time.time(), source="hrm-1", state=SourceState.LOST))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "no_contact")
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "stale")
        assert dash.hr("bike-1") is not None and dash.hr("bike-1")["v"] is None  # type: ignore[index]
        hr_states = [
            f["riders"]["bike-1"]["hr"]["state"]
            for f in dash.frames
            if "hr" in f.get("riders", {}).get("bike-1", {})
        ]
        assert hr_states.index("no_contact") < hr_states.index("stale")
        # Contact is back with a fresh reading.
        strap.queue.put_nowait(strap.hr(140.0))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("state") == "live")


async def test_reconnect_after_hub_restart_restores_the_stream(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    strap = QueueSource("hrm-1")
    pub = LivePublisher(srv.base, srv.token("bike", "bike-1"), "c1", backoff_base_s=0.05, backoff_cap_s=0.3)
    async with running(pub, strap):
        async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
            await pub.connected.wait()
            strap.queue.put_nowait(strap.hr(100.0))
            await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 1)
        await srv.runner.cleanup()
        await until(lambda: not pub.connected.is_set())
        # While the hub is away, live values are dropped, not queued.
        dropped = pub.stats.dropped_offline
        for _ in range(5):
            strap.queue.put_nowait(strap.hr(110.0))
        await until(lambda: pub.stats.dropped_offline >= dropped + 5)
        srv2 = await start_server(srv.app[DATA_DIR], HubConfig(), srv.keyring, port=srv.port)
        try:
            async with viewing(session, srv2.ws_url("c1", srv2.token("viewer", "dash"))) as dash:
                async with asyncio.timeout(HANG_GUARD_S):
                    await pub.connected.wait()
                strap.queue.put_nowait(strap.hr(120.0))
                await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 7)
                assert dash.hr("bike-1")["v"] == 120.0  # type: ignore[index]
                assert pub.stats.connects == 2
                assert pub.state == "connected"
        finally:
            await srv2.runner.cleanup()


async def test_offer_is_latest_value_not_a_queue() -> None:
    pub = LivePublisher("http://127.0.0.1:9", "t", "c1")
    src = QueueSource("hrm")
    pub.offer(src.hr(90.0))
    assert pub.stats.dropped_offline == 1  # not connected: dropped
    pub.connected.set()  # as if a session were up but the socket busy
    for bpm in (100.0, 101.0, 102.0):
        pub.offer(src.hr(bpm))
    pending = list(pub._pending.values())
    assert len(pending) == 1 and json.loads(pending[0])["v"] == 102.0
    assert pub.stats.superseded == 2


async def test_non_live_kinds_are_never_offered() -> None:
    """Battery and body location are not live-lane metrics: neither they nor a link event of their source
    may produce a message (the hub would close the connection on an unknown kind)."""
    pub = LivePublisher("http://127.0.0.1:9", "t", "c1")
    pub.connected.set()
    pub.offer(Reading(t=time.time(), source="hrm", seq=1, kind=Kind.BATTERY, value=80.0))
    pub.offer(Reading(t=time.time(), source="hrm", seq=2, kind=Kind.BODY_LOCATION, value=1.0))
    assert pub._pending == {}
    pub.offer(Reading(t=time.time(), source="hrm", seq=3, kind=Kind.HEART_RATE, value=70.0))
    pub.offer(SourceEvent(t=time.time(), source="hrm", state=SourceState.LOST))
    assert list(pub._pending) == ["heart_rate"]
    assert json.loads(pub._pending["heart_rate"]) == {
        **json.loads(pub._pending["heart_rate"]),
        "type": "state",
        "state": "no_contact",
    }


async def test_cancel_while_backing_off_is_clean() -> None:
    pub = LivePublisher("http://127.0.0.1:1", "t", "c1", backoff_base_s=0.01, backoff_cap_s=0.05)
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.stats.failures >= 2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert "Connect" in pub.stats.last_error or "refused" in pub.stats.last_error.lower()


def test_class_ws_url() -> None:
    assert class_ws_url("http://h:1", "c1") == "ws://h:1/live/v1/classes/c1/ws?mode=pub"
    assert class_ws_url("https://h", "c1", "sub") == "wss://h/live/v1/classes/c1/ws?mode=sub"
