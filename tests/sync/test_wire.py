from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sync import wire
from engine.wire_error import WireError
from tests.sync.strategies import document_ids, messages

DOC = "4NMNnkMhL8jXrdJ9jamS58PAVdXu"


def frame(obj: Any) -> bytes:
    return cbor2.dumps(obj)


@given(messages)
def test_round_trip(message: wire.Message) -> None:
    assert wire.decode(wire.encode(message)) == message


def test_join_as_sent_by_the_stock_client() -> None:
    # WebSocketClientAdapter.joinMessage(): exactly these four keys.
    raw = frame(
        {"type": "join", "senderId": "peer-abc", "peerMetadata": {}, "supportedProtocolVersions": ["1"]}
    )
    assert wire.decode(raw) == wire.Join("peer-abc", wire.PeerMetadata(), ("1",))


def test_join_without_versions_is_kept_distinct() -> None:
    msg = wire.decode(frame({"type": "join", "senderId": "p"}))
    assert msg == wire.Join("p", wire.PeerMetadata(), None)
    assert "supportedProtocolVersions" not in cbor2.loads(wire.encode(msg))


def test_peer_wire_shape() -> None:
    raw = wire.encode(wire.Peer("server", "client", wire.PeerMetadata(storage_id="s", is_ephemeral=False)))
    assert cbor2.loads(raw) == {
        "type": "peer",
        "senderId": "server",
        "targetId": "client",
        "peerMetadata": {"storageId": "s", "isEphemeral": False},
        "selectedProtocolVersion": "1",
    }


def test_sync_data_is_a_cbor_byte_string_not_a_tag() -> None:
    raw = wire.encode(wire.Sync("a", "b", DOC, b"\x42\x00"))
    # cbor-x with tagUint8Array:false writes Uint8Array as major type 2 (0x40..0x5b), no tag 64.
    assert b"\xd8\x40" not in raw
    assert cbor2.loads(raw)["data"] == b"\x42\x00"


def test_legacy_leave_and_unknown_types_decode() -> None:
    assert wire.decode(frame({"type": "leave", "senderId": "p"})) == wire.Leave("p")
    unknown = wire.decode(frame({"type": "future-thing", "senderId": "p", "extra": [1, 2]}))
    assert unknown == wire.UnknownMessage("future-thing", "p", None)
    with pytest.raises(WireError):
        wire.encode(unknown)


def test_unknown_fields_are_ignored() -> None:
    raw = frame({"type": "sync", "senderId": "a", "targetId": "b", "documentId": DOC, "data": b"x", "z": 1})
    assert wire.decode(raw) == wire.Sync("a", "b", DOC, b"x")


GOOD_SYNC: dict[str, Any] = {
    "type": "sync",
    "senderId": "a",
    "targetId": "b",
    "documentId": DOC,
    "data": b"x",
}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not_cbor"),
        (b"\xff", "not_cbor"),
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "not_cbor"),
        (frame(GOOD_SYNC) + b"\x00", "not_cbor"),
        (frame([1, 2]), "not_a_map"),
        (frame(None), "not_a_map"),
        (frame({"senderId": "a"}), "missing_field"),
        (frame({"type": 7}), "wrong_type"),
        (frame({**GOOD_SYNC, "data": "text"}), "wrong_type"),
        (frame({**GOOD_SYNC, "data": b""}), "empty_data"),
        (frame({**GOOD_SYNC, "documentId": "badbadbad"}), "invalid_document_id"),
        (frame({**GOOD_SYNC, "documentId": 5}), "wrong_type"),
        (frame({k: v for k, v in GOOD_SYNC.items() if k != "targetId"}), "missing_field"),
        (frame({**GOOD_SYNC, "senderId": ""}), "bad_value"),
        (frame({**GOOD_SYNC, "senderId": "x" * 300}), "bad_value"),
        (frame({**GOOD_SYNC, 1: 2}), "wrong_type"),
        (frame({**GOOD_SYNC, "z": {1, 2}}), "wrong_type"),
        (frame({**GOOD_SYNC, "z": [[[[[[[[[[[]]]]]]]]]]]}), "not_cbor"),
        (frame({"type": "join", "senderId": "a", "peerMetadata": []}), "wrong_type"),
        (frame({"type": "join", "senderId": "a", "supportedProtocolVersions": "1"}), "wrong_type"),
        (frame({"type": "join", "senderId": "a", "peerMetadata": {"isEphemeral": 1}}), "wrong_type"),
        (
            frame(
                {
                    "type": "ephemeral",
                    "senderId": "a",
                    "targetId": "b",
                    "documentId": DOC,
                    "data": b"x",
                    "count": True,
                    "sessionId": "s",
                }
            ),
            "wrong_type",
        ),
        (
            frame(
                {
                    "type": "remote-heads-changed",
                    "senderId": "a",
                    "targetId": "b",
                    "documentId": DOC,
                    "newHeads": {"s": {"heads": ["h"], "timestamp": float("nan")}},
                }
            ),
            "bad_value",
        ),
    ],
)
def test_rejects_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        wire.decode(raw)
    assert info.value.code == reason


def test_oversize_is_rejected_before_decoding() -> None:
    raw = wire.encode(wire.Sync("a", "b", DOC, b"x" * 1000))
    assert wire.decode(raw, max_size=len(raw)) == wire.Sync("a", "b", DOC, b"x" * 1000)
    with pytest.raises(WireError) as info:
        wire.decode(raw, max_size=len(raw) - 1)
    assert info.value.code == "oversize"


def test_constructing_an_invalid_message_fails() -> None:
    with pytest.raises(WireError):
        wire.Sync("a", "b", DOC, b"")
    with pytest.raises(WireError):
        wire.Request("a", "b", "not-an-id", b"x")


def _decode_or_wire_error(raw: bytes) -> None:
    try:
        msg = wire.decode(raw)
    except WireError as exc:
        assert exc.code
        return
    if not isinstance(msg, wire.UnknownMessage):
        assert wire.decode(wire.encode(msg)) == msg


@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _decode_or_wire_error(raw)


@given(messages, st.data())
def test_fuzz_mutated_valid_frames(message: wire.Message, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    _decode_or_wire_error(bytes(raw))


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
FIELDS = [
    "senderId",
    "targetId",
    "documentId",
    "data",
    "peerMetadata",
    "supportedProtocolVersions",
    "selectedProtocolVersion",
    "message",
    "count",
    "sessionId",
    "add",
    "remove",
    "newHeads",
]
TYPES = [
    "join",
    "peer",
    "error",
    "leave",
    "request",
    "sync",
    "doc-unavailable",
    "ephemeral",
    "remote-subscription-change",
    "remote-heads-changed",
    "other",
]


@given(
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(FIELDS), cbor_values | document_ids, max_size=8),
)
def test_fuzz_structured_maps(kind: str, fields: dict[str, Any]) -> None:
    _decode_or_wire_error(frame({"type": kind, **fields}))


# Frames as automerge-repo 2.5.6's own CBOR helper encodes them (tests/interop/golden.mjs).
GOLDEN = json.loads((Path(__file__).parent / "golden_frames.json").read_text())
HEAD = "2RBQyijXyHYwyfYFiS42aN7DW1fsTBrRykEtkm7MCMeC3jPEFy"
DATA = bytes([0x42, 1, 2, 3])
GOLDEN_EXPECTED: dict[str, wire.Message] = {
    # cbor-x writes JS `undefined` (an unset storageId) as CBOR undefined: it must read as absent.
    "join": wire.Join("client-1", wire.PeerMetadata(None, False), ("1",)),
    "join_empty_metadata": wire.Join("client-1", wire.PeerMetadata(), ("1",)),
    "peer": wire.Peer("server-1", "client-1", wire.PeerMetadata("store-1", False), "1"),
    "error": wire.Error("server-1", "client-1", "unsupported protocol version"),
    "request": wire.Request("client-1", "server-1", DOC, DATA),
    "sync": wire.Sync("client-1", "server-1", DOC, DATA),
    "doc_unavailable": wire.DocUnavailable("server-1", "client-1", DOC),
    "ephemeral": wire.Ephemeral("client-1", "server-1", DOC, DATA, 7, "sess-1"),
    "remote_subscription_change": wire.RemoteSubscriptionChange("client-1", "server-1", ("store-1",), None),
    "remote_heads_changed": wire.RemoteHeadsChanged(
        "server-1", "client-1", DOC, (("store-1", wire.HeadsAt((HEAD,), 1795777216511)),)
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_EXPECTED))
def test_decodes_frames_encoded_by_automerge_repo(name: str) -> None:
    assert wire.decode(bytes.fromhex(GOLDEN[name])) == GOLDEN_EXPECTED[name]


def test_golden_set_is_complete() -> None:
    assert set(GOLDEN) == set(GOLDEN_EXPECTED)


def test_large_integers_travel_as_js_numbers() -> None:
    raw = wire.encode(wire.Ephemeral("a", "b", DOC, b"x", 2**40, "s"))
    # float64 (0xfb), as cbor-x writes numbers of 2**32 and above; never a 64-bit CBOR integer (0x1b).
    assert cbor2.loads(raw)["count"] == 2**40 and b"\x1b" not in raw
    assert wire.decode(raw) == wire.Ephemeral("a", "b", DOC, b"x", 2**40, "s")
    with pytest.raises(WireError):
        wire.Ephemeral("a", "b", DOC, b"x", 2**53, "s")
