"""The hub's own WebSocket server side: the sans-I/O parser and handshake, then on loopback: fragmented
messages, control frames, protocol violations closing only their connection, and the heartbeat."""

from __future__ import annotations

import asyncio
import json
import os
import struct

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.live.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientFrameParser,
    FrameError,
    HandshakeError,
    accept_handshake,
    parse_close,
)
from tests.support.live import HANG_GUARD_S, RawClient, ServerFactory, sample, viewing


def frame(op: int, payload: bytes, *, fin: bool = True, mask: bytes | None = b"\x01\x02\x03\x04") -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


# --- sans-I/O --------------------------------------------------------------------------------------------


def test_handshake_answer_matches_rfc_6455_example() -> None:
    shake = accept_handshake(
        {
            "Upgrade": "websocket",
            "Connection": "keep-alive, Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "chat, ridesync-live.2",
        },
        ("ridesync-live.2",),
    )
    assert shake.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert shake.protocol == "ridesync-live.2"
    assert shake.headers["Sec-WebSocket-Protocol"] == "ridesync-live.2"


@pytest.mark.parametrize(
    "change",
    [
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": "short"},
        {"Sec-WebSocket-Key": "not base64!!"},
    ],
)
def test_bad_handshakes_are_refused(change: dict[str, str]) -> None:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with pytest.raises(HandshakeError):
        accept_handshake(headers | change, ())


@given(
    st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]), st.binary(max_size=300), st.integers(1, 4))),
    st.integers(1, 64),
    st.binary(min_size=4, max_size=4),
)
def test_any_split_of_fragmented_masked_messages_comes_out_whole(
    messages: list[tuple[int, bytes, int]], chunk: int, mask: bytes
) -> None:
    wire = b""
    for op, payload, parts in messages:
        cuts = [len(payload) * i // parts for i in range(parts + 1)]
        for i in range(parts):
            wire += frame(op if i == 0 else 0, payload[cuts[i] : cuts[i + 1]], fin=i == parts - 1, mask=mask)
        wire += frame(OP_PING, b"p", mask=mask)  # control frames may not be fragmented, but may follow
    parser = ClientFrameParser(max_msg=1024)
    got: list[tuple[int, bytes]] = []
    for i in range(0, len(wire), chunk):
        got += parser.feed(wire[i : i + chunk])
    want: list[tuple[int, bytes]] = []
    for op, payload, _parts in messages:
        want += [(op, payload), (OP_PING, b"p")]
    assert got == want


@given(st.binary(max_size=400))
def test_parser_fuzz_only_frame_errors(data: bytes) -> None:
    parser = ClientFrameParser(max_msg=256)
    try:
        for op, payload in parser.feed(data):
            assert op in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
            assert len(payload) <= 256
    except FrameError as exc:
        assert exc.close_code in (1002, 1009)


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(OP_TEXT, b"hi", mask=None), 1002),  # unmasked client frame
        (bytes((0xC1, 0x82)) + b"\0\0\0\0hi", 1002),  # RSV1 without an extension
        (frame(0x3, b"x"), 1002),  # reserved data opcode
        (frame(0xB, b"x"), 1002),  # reserved control opcode
        (frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(OP_PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(0, b"x"), 1002),  # continuation of nothing
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),  # new message mid-fragment
        (frame(OP_TEXT, b"x" * 300)[:10], 1009),  # refused from the header, before the payload arrives
        (frame(OP_TEXT, b"x" * 200, fin=False) + frame(0, b"x" * 100)[:4], 1009),
    ],
)
def test_protocol_violations(wire: bytes, code: int) -> None:
    with pytest.raises(FrameError) as err:
        ClientFrameParser(max_msg=256).feed(wire)
    assert err.value.close_code == code


def test_close_codes() -> None:
    assert parse_close(b"") == 1000
    assert parse_close((4000).to_bytes(2, "big") + b"bye") == 4000
    for bad in (b"\x03", (1005).to_bytes(2, "big"), (999).to_bytes(2, "big"), (5000).to_bytes(2, "big")):
        with pytest.raises(FrameError):
            parse_close(bad)


# --- on loopback ------------------------------------------------------------------------------------------


async def raw_publisher(port: int, token: str, mode: str = "pub") -> RawClient:
    return await RawClient.connect(port, f"/live/v1/classes/c1/ws?mode={mode}&token={token}", rcvbuf=65536)


async def read_until_closed(client: RawClient) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while (got := await client.read_frames()) is not None:
            frames += got
    return frames


async def test_fragmented_sample_and_ping_from_a_raw_client(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    raw = await raw_publisher(srv.port, srv.token("bike", "bike-1"), mode="pubsub")
    loop = asyncio.get_running_loop()
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        msg = sample(7).encode()
        wire = frame(OP_TEXT, msg[:10], fin=False) + frame(OP_PING, b"are you there") + frame(0, msg[10:])
        await loop.sock_sendall(raw.sock, wire)
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 7)
        got: list[tuple[int, bytes]] = []
        async with asyncio.timeout(HANG_GUARD_S):
            while (OP_PONG, b"are you there") not in got:
                frames = await raw.read_frames()
                assert frames is not None
                got += frames
        # Closing handshake: the hub answers a Close with a Close (same code) and ends the connection.
        await loop.sock_sendall(raw.sock, frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        rest = await read_until_closed(raw)
        assert [(op, p[:2]) for op, p in rest if op == OP_CLOSE] == [(OP_CLOSE, (1000).to_bytes(2, "big"))]
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "left")
    raw.close()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(OP_TEXT, b'{"type":"hello"}', mask=None), 1002),
        (frame(OP_TEXT, b"x" * 70_000), 1009),
        (frame(OP_TEXT, b"\xff\xfe not utf-8"), 4400),
    ],
)
async def test_protocol_violation_closes_only_its_connection(
    make_server: ServerFactory, session: aiohttp.ClientSession, wire: bytes, code: int
) -> None:
    srv = await make_server()
    good = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "good"), mode="pub"))
    bad = await raw_publisher(srv.port, srv.token("bike", "bad"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "v"))) as view:
        await asyncio.get_running_loop().sock_sendall(bad.sock, wire)
        closes = [p for op, p in await read_until_closed(bad) if op == OP_CLOSE]
        assert [int.from_bytes(p[:2], "big") for p in closes] == [code]
        await good.send_str(sample(1))
        await view.wait_for(lambda v: (v.hr("good") or {}).get("seq") == 1)
        assert not good.closed
    bad.close()
    await good.close()


async def test_silent_connections_are_pinged_and_dropped_unless_they_answer(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(heartbeat_s=1.0)
    # aiohttp's client answers pings while it is being read (View pumps it); the raw client never does.
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "answers"))) as answering:
        silent = await RawClient.connect(
            srv.port, f"/live/v1/classes/c1/ws?token={srv.token('viewer', 'mute')}"
        )
        frames = await read_until_closed(silent)
        assert any(op == OP_PING for op, _p in frames), "it was pinged before being dropped"
        assert not answering.ws.closed
        assert {p.device for p in srv.hub.classes["c1"].peers.values()} == {"answers"}
        silent.close()


def test_frame_helper_masks_like_a_client() -> None:
    # The helper above is the test's own encoder: check it against the parser once, with a random mask.
    mask = os.urandom(4)
    assert ClientFrameParser(1 << 20).feed(
        frame(OP_TEXT, json.dumps({"a": 1}).encode() * 5000, mask=mask)
    ) == [(OP_TEXT, json.dumps({"a": 1}).encode() * 5000)]
