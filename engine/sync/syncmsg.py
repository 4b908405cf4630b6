"""The heads an Automerge sync message announces, read from its header (sans-I/O).

The Python bindings expose neither a SyncState's `their_heads` nor a decoded message's fields, yet
"reconciled" must rest on what the backend says it holds, not on a guess. The header is stable and small
(automerge `sync.rs`, `Message::encode`): one type byte (0x42, or 0x43 for the v2 message with
capabilities), then the sender's current heads as a uLEB128 count followed by that many 32-byte change
hashes. Nothing else of the message is read here.
"""

from __future__ import annotations

from typing import Final

MESSAGE_TYPES: Final = frozenset({0x42, 0x43})
HASH_BYTES: Final = 32
# A document has few heads; thousands means garbage (and would cost memory to collect).
MAX_HEADS: Final = 1024


class SyncMessageError(ValueError):
    """Bytes that do not start like an Automerge sync message."""


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise SyncMessageError("truncated length")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise SyncMessageError("overlong length")


def announced_heads(data: bytes) -> tuple[bytes, ...]:
    """The sender's heads at the time it generated `data`."""
    if not data:
        raise SyncMessageError("empty message")
    if data[0] not in MESSAGE_TYPES:
        raise SyncMessageError(f"unknown message type 0x{data[0]:02x}")
    count, pos = _uleb(data, 1)
    if count > MAX_HEADS:
        raise SyncMessageError(f"{count} heads")
    end = pos + count * HASH_BYTES
    if end > len(data):
        raise SyncMessageError("truncated heads")
    return tuple(data[pos + i * HASH_BYTES : pos + (i + 1) * HASH_BYTES] for i in range(count))
