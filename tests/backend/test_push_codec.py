"""The ride push's wire format (engine/backend/push_codec.py): round trips, limits, and hostile bytes that
only ever raise PushCodecError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.backend.push_codec import (
    MAX_MESSAGE_BYTES,
    MAX_RIDES,
    PushCodecError,
    decode_message,
    encode_messages,
    own_prefix,
)

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)


@given(st.lists(ids, min_size=1, max_size=300))
def test_every_ride_comes_back_once(rides: list[str]) -> None:
    messages = encode_messages("node-1", rides)
    back: list[str] = []
    for message in messages:
        assert message.startswith(own_prefix("node-1")) and len(message) <= MAX_MESSAGE_BYTES
        origin, decoded = decode_message(message)
        assert origin == "node-1"
        back += decoded
    assert sorted(back) == sorted(set(rides))


def test_a_long_list_is_split_within_the_limits() -> None:
    rides = [f"r{i}-" + "x" * 120 for i in range(MAX_RIDES + 10)]
    messages = encode_messages("node-1", rides)
    assert len(messages) > 1
    assert all(len(decode_message(m)[1]) <= MAX_RIDES for m in messages)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"RSP1 ",
        b"RSP1 node\n",
        b"RSP2 node\nride",
        b"RSP1 no de\nride",
        b"RSP1 node\nride\n",
        b"RSP1 node\nride\r",
        b"RSP1 node\n-ride",
        b"RSP1 node\nr\xc3\xa9",
        b"RSP1 node\n" + b"r" * 129,
        b"RSP1 node\n" + b"\n".join([b"r"] * (MAX_RIDES + 1)),
        b"RSP1 node\n" + b"r" * MAX_MESSAGE_BYTES,
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(PushCodecError):
        decode_message(raw)


def test_encoding_refuses_what_is_not_an_id() -> None:
    with pytest.raises(PushCodecError):
        encode_messages("node 1", ["ride"])
    with pytest.raises(PushCodecError):
        encode_messages("node-1", ["ride\nride-2"])


@given(st.binary(max_size=512) | st.binary(max_size=64).map(lambda b: b"RSP1 n\n" + b))
def test_hostile_bytes_only_raise_the_typed_error(raw: bytes) -> None:
    try:
        origin, rides = decode_message(raw)
    except PushCodecError:
        return
    assert encode_messages(origin, rides) == [raw] or sorted(set(rides)) != rides
