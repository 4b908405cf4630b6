"""A small device-side sync client for the backend tests and the security campaign: engine/sync/wire.py +
engine.crdt.SyncSession over a device-role ReplicaStore, on a real aiohttp WebSocket. Not the product
client (engine/device/); just enough to drive the server, plus raw access for hostile frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import aiohttp

from engine.crdt import CrdtDoc, SyncSession
from engine.ride.schema import DocRef
from engine.store import ReplicaStore
from engine.sync import wire
from engine.sync.docid import document_id_from_bytes, document_id_to_bytes
from engine.urls import ws_url

SERVER_PEER = "ridesync-backend"


class SyncClient:
    def __init__(
        self, base_url: str, token: str, store: ReplicaStore, ride_id: str, *, peer_id: str | None = None
    ) -> None:
        self.url = ws_url(base_url, "/v1/sync")
        self.token = token
        self.store = store
        self.ride_id = ride_id
        self.peer_id = peer_id or f"test-{store.device_id}"
        self.sessions: dict[str, SyncSession] = {}
        # Documents synced from outside the store (hostile content a real replica would never write).
        self.raw_docs: dict[str, CrdtDoc] = {}
        self.unavailable: set[str] = set()
        self.errors: list[str] = []
        self.received = 0
        self.dropped = 0  # frames sent after the connection closed (send_raw)
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._pump: asyncio.Task[None] | None = None
        self._event = asyncio.Event()
        self.closed = asyncio.Event()
        self.failure: Exception | None = None

    async def __aenter__(self) -> SyncClient:
        self._http = aiohttp.ClientSession()
        try:
            self.ws = await self._http.ws_connect(
                self.url,
                params={"ride": self.ride_id, "token": self.token},
                max_msg_size=64 * 1024 * 1024,
                heartbeat=None,
                compress=15,  # offer permessage-deflate, as the product client does
            )
        except BaseException:
            await self._http.close()
            raise
        await self.send(wire.Join(self.peer_id))
        msg = await self.ws.receive_bytes()
        peer = wire.decode(msg)
        assert isinstance(peer, wire.Peer), peer
        self._pump = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._http is not None:
            await self._http.close()

    @property
    def close_code(self) -> int | None:
        return None if self.ws is None else self.ws.close_code

    async def send(self, message: wire.Message) -> None:
        await self.send_raw(wire.encode(message))

    async def send_raw(self, frame: bytes) -> None:
        """Send one frame. Once the connection is closing (the server closed it: aiohttp answered its
        close frame and shut the transport) the frame is dropped and counted in `dropped`: a hostile
        peer that keeps sending meets the server's refusal, which the caller reads from `closed` and
        `close_code`; it is not the attack failing."""
        assert self.ws is not None
        try:
            await self.ws.send_bytes(frame)
        except ConnectionResetError:
            self.dropped += 1

    def _changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self.failure is not None:
                raise AssertionError(f"the client's reader failed: {self.failure!r}") from self.failure
            await self._event.wait()

    # -- syncing ------------------------------------------------------------------------------------------

    async def open_ride(self) -> None:
        """Open every document of the ride this replica holds or its shared index names."""
        for ref in self.store.ride_refs(self.ride_id):
            await self.open(ref)

    async def open(self, ref: DocRef) -> None:
        if ref.doc_id in self.sessions:
            return
        empty = not self.store.has_doc(ref.doc_id)
        self.store.ensure_doc(ref)
        session = self.sessions[ref.doc_id] = SyncSession()
        data = self.store.generate_sync(ref.doc_id, session)
        if data is None:
            return
        doc_id = document_id_from_bytes(ref.raw_id)
        cls = wire.Request if empty else wire.Sync
        await self.send(cls(self.peer_id, SERVER_PEER, doc_id, data))

    async def open_raw(self, ref: DocRef, doc: CrdtDoc) -> None:
        """Sync `doc` as document `ref` (bypassing the store), starting the exchange."""
        session = self.sessions[ref.doc_id] = SyncSession()
        self.raw_docs[ref.doc_id] = doc
        data = session.generate(doc)
        assert data is not None
        await self.send(wire.Sync(self.peer_id, SERVER_PEER, document_id_from_bytes(ref.raw_id), data))

    async def push(self) -> None:
        """Send what local changes the backend lacks, for every open document."""
        for hexid, session in list(self.sessions.items()):
            data = self.store.generate_sync(hexid, session)
            if data is not None:
                doc_id = document_id_from_bytes(bytes.fromhex(hexid))
                await self.send(wire.Sync(self.peer_id, SERVER_PEER, doc_id, data))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                await self._handle(wire.decode(msg.data))
                self.received += 1
                self._changed()
        except Exception as exc:  # a test waiting on this client must learn why it stopped
            self.failure = exc
            raise
        finally:
            self.closed.set()
            self._changed()

    async def _handle(self, message: wire.Message) -> None:
        match message:
            case wire.Sync(document_id=doc_id, data=data) | wire.Request(document_id=doc_id, data=data):
                hexid = document_id_to_bytes(doc_id).hex()
                session = self.sessions.get(hexid)
                if session is None:
                    return
                raw = self.raw_docs.get(hexid)
                if raw is not None:
                    session.receive(raw, data)
                    reply = session.generate(raw)
                else:
                    self.store.receive_sync(hexid, session, data)
                    reply = self.store.generate_sync(hexid, session)
                if reply is not None:
                    await self.send(wire.Sync(self.peer_id, SERVER_PEER, doc_id, reply))
                if hexid == _shared_hex(self.store, self.ride_id):
                    # The shared index may name documents this replica has not opened yet.
                    for ref in self.store.ride_refs(self.ride_id):
                        if ref.doc_id not in self.sessions:
                            await self.open(ref)
            case wire.DocUnavailable(document_id=doc_id):
                self.unavailable.add(document_id_to_bytes(doc_id).hex())
            case wire.Error(message=text):
                self.errors.append(text)


def _shared_hex(store: ReplicaStore, ride_id: str) -> str:
    from engine.ride.schema import shared_ref

    return shared_ref(ride_id).doc_id


__all__ = ["SERVER_PEER", "SyncClient", "TracebackType"]
