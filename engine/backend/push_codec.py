"""The cross-node ride push's wire format (sans I/O): which rides a backend node committed changes to.

One message is `RSP1 <origin>\n<ride id>\n<ride id>…`: the sending node's origin, then the ride ids, one a
line. It carries no document state: a node that hears it loads what is new from the shared storage, so a
lost, duplicated or forged message costs at most a redundant read, never a wrong acknowledgement.

Every peer is hostile: `decode_message` accepts only a message within `MAX_MESSAGE_BYTES`, with the
prefix, an origin and ride ids in the id grammar (engine/ids.py), at most `MAX_RIDES` of them, and raises
`PushCodecError` for anything else. `encode_messages` splits a long list so every message decodes.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.ids import valid_id

PREFIX = b"RSP1 "
CHANNEL = "ridesync:rides"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RIDES = 2048


class PushCodecError(ValueError):
    """A push message that is not one of ours, or not well formed."""


def own_prefix(origin: str) -> bytes:
    """The bytes every message from `origin` starts with (its own messages are skipped undecoded)."""
    return PREFIX + origin.encode() + b"\n"


def encode_messages(origin: str, rides: Iterable[str]) -> list[bytes]:
    """The messages announcing `rides` (deduplicated, sorted), each within the decoder's limits."""
    if not valid_id(origin):
        raise PushCodecError(f"origin {origin!r} is not an id")
    head = own_prefix(origin)
    out: list[bytes] = []
    lines: list[bytes] = []
    size = len(head)
    for ride in sorted(set(rides)):
        if not valid_id(ride):
            raise PushCodecError(f"ride {ride!r} is not an id")
        line = ride.encode()
        if lines and (len(lines) >= MAX_RIDES or size + len(line) + 1 > MAX_MESSAGE_BYTES):
            out.append(head + b"\n".join(lines))
            lines, size = [], len(head)
        lines.append(line)
        size += len(line) + 1
    if lines:
        out.append(head + b"\n".join(lines))
    return out


def decode_message(data: bytes | str) -> tuple[str, list[str]]:
    """(origin, ride ids) of one message; raises PushCodecError for anything else."""
    raw = data.encode() if isinstance(data, str) else data
    if not isinstance(raw, bytes):
        raise PushCodecError("a push message is bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise PushCodecError(f"message of {len(raw)} bytes is over {MAX_MESSAGE_BYTES}")
    if not raw.startswith(PREFIX):
        raise PushCodecError("not a ride push message")
    try:
        text = raw[len(PREFIX) :].decode("ascii")
    except UnicodeDecodeError:
        raise PushCodecError("not ASCII") from None
    origin, *rides = text.split("\n")
    if not valid_id(origin):
        raise PushCodecError("bad origin")
    if not rides or len(rides) > MAX_RIDES:
        raise PushCodecError(f"a message names 1 to {MAX_RIDES} rides, this one {len(rides)}")
    for ride in rides:
        if not valid_id(ride):
            raise PushCodecError("bad ride id")
    return origin, rides
