"""A minimal sync server for the interop tests: wire.py + session.py over aiohttp, documents from
engine/crdt.py, no access control. The product server (`ridesync serve`) is built elsewhere; this one only
proves that a stock automerge-repo client and our protocol code understand each other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from engine.crdt import CrdtDecodeError, CrdtDoc, SyncSession
from engine.sync import effects as fx
from engine.sync import server_session as s

SERVER_PEER_ID = "ridesync-interop-server"
TOKEN = "interop-token"


@dataclass
class Hub:
    docs: dict[str, CrdtDoc] = field(default_factory=dict)
    peers: dict[s.ServerSession, web.WebSocketResponse] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    joined: list[str] = field(default_factory=list)

    async def apply(self, origin: s.ServerSession, effects: list[s.Effect]) -> None:
        ws = self.peers.get(origin)
        if ws is None:
            return
        for effect in effects:
            match effect:
                case fx.Send(frame):
                    if ws.closed:
                        return  # a dead link: the peer resyncs when it reconnects
                    try:
                        await ws.send_bytes(frame)
                    except ConnectionError:
                        return
                case fx.Close(code, reason):
                    await ws.close(code=code, message=reason.encode())
                case fx.Joined(peer_id, _):
                    self.joined.append(peer_id)
                case s.DocumentChanged(doc_id):
                    self.changed.set()
                    await self.broadcast(doc_id, exclude=origin)
                case s.EphemeralReceived():
                    pass

    async def broadcast(self, doc_id: str, exclude: s.ServerSession | None = None) -> None:
        for other in list(self.peers):
            if other is not exclude:
                await self.apply(other, other.document_changed(doc_id))

    async def wait_for(self, doc_id: str, key: str, value: object) -> None:
        while self.docs[doc_id].get(key) != value:
            self.changed.clear()
            await self.changed.wait()


class CrdtProvider:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions: dict[str, SyncSession] = {}

    def is_known(self, doc_id: str) -> bool:
        return doc_id in self.hub.docs

    def open(self, doc_id: str) -> None:
        self.sessions[doc_id] = SyncSession()

    def receive_sync(self, doc_id: str, data: bytes) -> s.SyncOutcome:
        doc = self.hub.docs[doc_id]
        before = doc.heads()
        try:
            self.sessions[doc_id].receive(doc, data)
        except CrdtDecodeError as exc:
            return s.Rejected(str(exc))
        return s.Applied(changed=doc.heads() != before)

    def generate_sync(self, doc_id: str) -> bytes | None:
        return self.sessions[doc_id].generate(self.hub.docs[doc_id])


@asynccontextmanager
async def serve(hub: Hub) -> AsyncIterator[str]:
    """Run the server on 127.0.0.1, port 0; yields its ws:// URL."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("token") != TOKEN:
            return web.Response(status=401, text="bad token")
        ws = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        session = s.ServerSession(server_peer_id=SERVER_PEER_ID, provider=CrdtProvider(hub))
        hub.peers[session] = ws
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    effects = session.receive(msg.data)
                else:
                    effects = session.fail("only binary frames carry messages")
                await hub.apply(session, effects)
                if session.state is s.SessionState.CLOSED:
                    break
        finally:
            del hub.peers[session]
        return ws

    app = web.Application()
    app.router.add_get("/v1/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/sync"
    finally:
        await runner.cleanup()
