"""Hostile automerge-repo peers for the security campaign and the backend tests: hand-built Automerge sync
messages (changes whose dependency is withheld, so the server can only queue them), a raw joined peer on
an aiohttp WebSocket, and the close code such a peer reads while it keeps sending."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp

from engine.crdt import CrdtDoc, inspect_sync_message, new_actor_id
from engine.ride.schema import DocRef
from engine.sync import wire
from engine.sync.docid import document_id_from_bytes

SERVER_PEER = "ridesync-backend"


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def sync_message(chunks: list[bytes]) -> bytes:
    """An Automerge (v1) sync message: no heads, need or have, just these change chunks."""
    body = b"".join(_leb(len(c)) + c for c in chunks)
    return b"\x42\x00\x00\x00" + _leb(len(chunks)) + body


def orphan_changes(count: int, size: int, device: str = "flooder") -> list[bytes]:
    """`count` sync messages of one change each (`size` random bytes), every one depending, through the
    ones before it, on a first change that is never sent: a receiver can only queue them."""
    doc = CrdtDoc.new(new_actor_id(device))
    doc.put({"withheld": 1})
    heads = doc.heads()
    messages = []
    for i in range(count):
        doc.put({f"blob{i}": os.urandom(size)})
        (change,) = doc.changes_since(heads)
        heads = doc.heads()
        message = sync_message([change.data])
        assert inspect_sync_message(message).carries_changes
        messages.append(message)
    return messages


def sync_frame(peer_id: str, ref: DocRef, data: bytes) -> bytes:
    return wire.encode(wire.Sync(peer_id, SERVER_PEER, document_id_from_bytes(ref.raw_id), data))


def filler_frame(size: int) -> bytes:
    """A frame the server accepts and ignores (ephemeral data for a document the peer has not opened):
    what a peer that is still sending when the server closes keeps sending."""
    nowhere = document_id_from_bytes(bytes(16))
    return wire.encode(wire.Ephemeral("hostile", SERVER_PEER, nowhere, b"\x40" * size, 1, "session"))


@contextlib.asynccontextmanager
async def raw_peer(
    http: aiohttp.ClientSession, base_url: str, token: str, ride: str, peer_id: str = "hostile"
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A joined automerge-repo connection with nothing behind it."""
    url = base_url.replace("http://", "ws://") + "/v1/sync"
    async with http.ws_connect(
        url, params={"ride": ride, "token": token}, max_msg_size=0, heartbeat=None
    ) as ws:
        await ws.send_bytes(wire.encode(wire.Join(peer_id)))
        peer = wire.decode(await ws.receive_bytes())
        assert isinstance(peer, wire.Peer), peer
        yield ws


async def close_code_while_sending(ws: aiohttp.ClientWebSocketResponse, filler: bytes) -> int | None:
    """Keep sending `filler` frames (as a flooding peer would) until the server's close arrives; the close
    code this client saw (1006: the connection ended without a readable close frame)."""

    async def flood() -> None:
        with contextlib.suppress(Exception):
            while not ws.closed:
                await ws.send_bytes(filler)
                await asyncio.sleep(0)

    sender = asyncio.get_running_loop().create_task(flood())
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws.close_code
