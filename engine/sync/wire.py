"""automerge-repo's WebSocket wire protocol as a sans-I/O codec.

Every WebSocket binary frame carries one CBOR map with a `type` string. The facts below come from
automerge-repo v2.5.6 (same wire format at main, 281ebc0, July 2026); see engine/sync/README.md:
- the client sends `join` (its peer id, metadata, supported protocol versions) and the server answers
  `peer` (its peer id, metadata, the selected version, `"1"`) or `error` and closes;
- afterwards both sides exchange repo messages addressed by `senderId`/`targetId`: `request` (the first
  sync message for a document the sender does not have yet), `sync`, `doc-unavailable`, `ephemeral`,
  `remote-subscription-change` and `remote-heads-changed`;
- `data` is a CBOR byte string (cbor-x runs with `tagUint8Array: false`), never empty: the stock adapters
  refuse to send a zero-length message;
- `leave` was dropped from the protocol in July 2024 (#359); old clients may still send it.

`decode` treats its input as hostile: any problem raises `WireError` with a short machine-readable
`reason` and a human-readable message, and nothing else escapes. Unknown message types decode to
`UnknownMessage` so that a newer client's additions can be ignored rather than kill the connection.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2

from engine.sync.docid import InvalidDocumentId, document_id_to_bytes
from engine.wire_error import CLOSE_TOO_BIG, WireError

PROTOCOL_V1: Final = "1"
# The largest frame either end accepts by default (the backend's --max-message-bytes, the device client):
# a 4-hour offline backlog at the default 10 s fold is ~350 KB (engine/ride/README.md); 8 MiB leaves a 20x
# margin for claims, edits and a denser commit interval.
DEFAULT_MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
MAX_PEER_ID_CHARS: Final = 256
MAX_ERROR_MESSAGE_CHARS: Final = 4096
MAX_LIST_ITEMS: Final = 1024
# Numbers travel as JS numbers: integers beyond 2**53 cannot be represented exactly.
_MAX_SAFE_INTEGER: Final = 2**53 - 1
# Real messages are at most four levels deep (remote-heads-changed); bound the work garbage can cause.
_MAX_DEPTH: Final = 8


def _peer_id(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise WireError("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_PEER_ID_CHARS:
        raise WireError("bad_value", f"{name} must be 1..{MAX_PEER_ID_CHARS} characters")
    return value


def _document_id(value: object) -> str:
    if not isinstance(value, str):
        raise WireError("wrong_type", f"documentId must be a string, got {type(value).__name__}")
    try:
        document_id_to_bytes(value)
    except InvalidDocumentId as exc:
        raise WireError("invalid_document_id", str(exc)) from None
    return value


def _data(value: object, name: str = "data") -> bytes:
    if not isinstance(value, bytes):
        raise WireError("wrong_type", f"{name} must be a byte string, got {type(value).__name__}")
    if not value:
        raise WireError("empty_data", f"{name} must not be empty")
    return value


def _text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise WireError("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise WireError("bad_value", f"{name} is longer than {limit} characters")
    return value


def _str_tuple(value: object, name: str, limit: int = MAX_PEER_ID_CHARS) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise WireError("wrong_type", f"{name} must be an array, got {type(value).__name__}")
    if len(value) > MAX_LIST_ITEMS:
        raise WireError("bad_value", f"{name} has more than {MAX_LIST_ITEMS} items")
    return tuple(_text(v, f"{name}[]", limit) for v in value)


@dataclass(frozen=True, slots=True)
class PeerMetadata:
    """What a peer says about itself: its storage id (sync state is persisted per storage id) and whether
    it is ephemeral (then nobody persists sync state for it)."""

    storage_id: str | None = None
    is_ephemeral: bool | None = None

    def __post_init__(self) -> None:
        if self.storage_id is not None:
            _text(self.storage_id, "peerMetadata.storageId", MAX_PEER_ID_CHARS)
        if self.is_ephemeral is not None and not isinstance(self.is_ephemeral, bool):
            raise WireError("wrong_type", "peerMetadata.isEphemeral must be a boolean")


@dataclass(frozen=True, slots=True)
class Join:
    """Client → server, first message. `supported_protocol_versions` None means the field was absent,
    which automerge-repo's server treats as version 1."""

    sender_id: str
    peer_metadata: PeerMetadata = field(default_factory=PeerMetadata)
    supported_protocol_versions: tuple[str, ...] | None = (PROTOCOL_V1,)

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        if self.supported_protocol_versions is not None:
            _str_tuple(self.supported_protocol_versions, "supportedProtocolVersions", 32)


@dataclass(frozen=True, slots=True)
class Peer:
    """Server → client answer to `join`."""

    sender_id: str
    target_id: str
    peer_metadata: PeerMetadata = field(default_factory=PeerMetadata)
    selected_protocol_version: str = PROTOCOL_V1

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _text(self.selected_protocol_version, "selectedProtocolVersion", 32)


@dataclass(frozen=True, slots=True)
class Error:
    """The sender will close the connection after this message."""

    sender_id: str
    target_id: str
    message: str

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _text(self.message, "message", MAX_ERROR_MESSAGE_CHARS)


@dataclass(frozen=True, slots=True)
class Leave:
    """Legacy (before automerge-repo 1.2): the sender is disconnecting."""

    sender_id: str

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")


@dataclass(frozen=True, slots=True)
class Request:
    """The first sync message for a document the sender does not have yet."""

    sender_id: str
    target_id: str
    document_id: str
    data: bytes

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _document_id(self.document_id)
        _data(self.data)


@dataclass(frozen=True, slots=True)
class Sync:
    """An Automerge sync message for one document."""

    sender_id: str
    target_id: str
    document_id: str
    data: bytes

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _document_id(self.document_id)
        _data(self.data)


@dataclass(frozen=True, slots=True)
class DocUnavailable:
    """The sender does not have the document, and none of its other peers do either."""

    sender_id: str
    target_id: str
    document_id: str

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _document_id(self.document_id)


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """Application data gossiped per document, deduplicated by (session_id, count); `data` is CBOR."""

    sender_id: str
    target_id: str
    document_id: str
    data: bytes
    count: int
    session_id: str

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _document_id(self.document_id)
        _data(self.data)
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise WireError("wrong_type", "count must be a non-negative integer")
        if self.count > _MAX_SAFE_INTEGER:
            raise WireError("bad_value", "count is beyond JavaScript's safe integers")
        _peer_id(self.session_id, "sessionId")


@dataclass(frozen=True, slots=True)
class RemoteSubscriptionChange:
    """Add or remove storage ids from the sender's subscription to remote heads."""

    sender_id: str
    target_id: str
    add: tuple[str, ...] | None = None
    remove: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        if self.add is not None:
            _str_tuple(self.add, "add")
        if self.remove is not None:
            _str_tuple(self.remove, "remove")


@dataclass(frozen=True, slots=True)
class HeadsAt:
    heads: tuple[str, ...]
    # milliseconds since the epoch (JS Date.now()), an integer or a float on the wire
    timestamp: int | float

    def __post_init__(self) -> None:
        _str_tuple(self.heads, "heads", 128)
        if not isinstance(self.timestamp, (int, float)) or isinstance(self.timestamp, bool):
            raise WireError("wrong_type", "timestamp must be a number")
        if isinstance(self.timestamp, float) and not math.isfinite(self.timestamp):
            raise WireError("bad_value", "timestamp must be finite")
        if abs(self.timestamp) > _MAX_SAFE_INTEGER:
            raise WireError("bad_value", "timestamp is beyond JavaScript's safe integers")


@dataclass(frozen=True, slots=True)
class RemoteHeadsChanged:
    """The document's heads changed on the storage peers the sender subscribes to."""

    sender_id: str
    target_id: str
    document_id: str
    # storage id → heads; a tuple of pairs keeps the dataclass hashable and ordered
    new_heads: tuple[tuple[str, HeadsAt], ...]

    def __post_init__(self) -> None:
        _peer_id(self.sender_id, "senderId")
        _peer_id(self.target_id, "targetId")
        _document_id(self.document_id)
        if len(self.new_heads) > MAX_LIST_ITEMS:
            raise WireError("bad_value", f"newHeads has more than {MAX_LIST_ITEMS} entries")
        for key, heads in self.new_heads:
            _text(key, "newHeads key", MAX_PEER_ID_CHARS)
            if not isinstance(heads, HeadsAt):
                raise WireError("wrong_type", "newHeads values must be HeadsAt")


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A well-formed message of a type this codec does not know (for forward compatibility)."""

    type: str
    sender_id: str | None
    target_id: str | None


Message = (
    Join
    | Peer
    | Error
    | Leave
    | Request
    | Sync
    | DocUnavailable
    | Ephemeral
    | RemoteSubscriptionChange
    | RemoteHeadsChanged
    | UnknownMessage
)


# ---- decoding -------------------------------------------------------------------------------------------


def _plain(value: object, depth: int = 0) -> object:
    """Only the JSON-like CBOR subset (plus byte strings) is legal; tags such as sets, dates or shared
    references are not something a stock client ever sends. JavaScript `undefined`, which cbor-x writes
    for unset properties (a stock client's `peerMetadata.storageId`), means "absent": it is dropped from
    maps and becomes None in arrays."""
    if depth > _MAX_DEPTH:
        raise WireError("too_deep", f"nesting deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    if value is cbor2.undefined:
        return None
    if isinstance(value, list):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireError("wrong_type", f"map keys must be strings, got {type(key).__name__}")
            if item is not cbor2.undefined:
                out[key] = _plain(item, depth + 1)
        return out
    raise WireError("wrong_type", f"unsupported CBOR value {type(value).__name__}")


def _loads(frame: bytes, max_size: int) -> dict[str, Any]:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise WireError("wrong_type", f"a frame is bytes, got {type(frame).__name__}")
    if len(frame) > max_size:
        raise WireError(
            "oversize",
            f"frame of {len(frame)} bytes exceeds the limit of {max_size}",
            close_code=CLOSE_TOO_BIG,
        )
    if not frame:
        raise WireError("not_cbor", "empty frame")
    stream = io.BytesIO(frame)
    try:
        decoded = cbor2.CBORDecoder(stream, max_depth=_MAX_DEPTH + 1).decode()
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, OverflowError)
        raise WireError("not_cbor", f"undecodable CBOR ({exc})") from None
    if stream.tell() != len(frame):
        raise WireError("not_cbor", f"{len(frame) - stream.tell()} trailing bytes after the message")
    if not isinstance(decoded, dict):
        raise WireError("not_a_map", f"a message is a CBOR map, got {type(decoded).__name__}")
    plain = _plain(decoded)
    assert isinstance(plain, dict)
    return plain


def _integral(value: object) -> Any:
    # A JS number ≥ 2**32 arrives as a float64 (see _js_numbers); an integral one is still an integer.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _req(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj:
        raise WireError("missing_field", f"{obj.get('type')!r} message lacks {key!r}")
    return obj[key]


def _metadata(value: object) -> PeerMetadata:
    if value is None:
        return PeerMetadata()
    if not isinstance(value, dict):
        raise WireError("wrong_type", f"peerMetadata must be a map, got {type(value).__name__}")
    return PeerMetadata(value.get("storageId"), value.get("isEphemeral"))


def _opt_strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    return None if value is None else _str_tuple(value, key)


def _new_heads(value: object) -> tuple[tuple[str, HeadsAt], ...]:
    if not isinstance(value, dict):
        raise WireError("wrong_type", f"newHeads must be a map, got {type(value).__name__}")
    out = []
    for key, entry in value.items():
        if not isinstance(entry, dict):
            raise WireError("wrong_type", "newHeads values must be maps")
        out.append((key, HeadsAt(_str_tuple(_req(entry, "heads"), "heads", 128), _req(entry, "timestamp"))))
    return tuple(out)


def decode(frame: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Decode one frame. Raises `WireError` (and only that) on anything that is not a valid message."""
    obj = _loads(bytes(frame), max_size)
    kind = _req(obj, "type")
    if not isinstance(kind, str):
        raise WireError("wrong_type", f"type must be a string, got {type(kind).__name__}")
    if kind == "join":
        versions = obj.get("supportedProtocolVersions")
        return Join(
            _req(obj, "senderId"),
            _metadata(obj.get("peerMetadata")),
            None if versions is None else _str_tuple(versions, "supportedProtocolVersions", 32),
        )
    if kind == "peer":
        return Peer(
            _req(obj, "senderId"),
            _req(obj, "targetId"),
            _metadata(obj.get("peerMetadata")),
            _req(obj, "selectedProtocolVersion"),
        )
    if kind == "error":
        return Error(_req(obj, "senderId"), _req(obj, "targetId"), _req(obj, "message"))
    if kind == "leave":
        return Leave(_req(obj, "senderId"))
    if kind in ("request", "sync"):
        cls = Request if kind == "request" else Sync
        return cls(_req(obj, "senderId"), _req(obj, "targetId"), _req(obj, "documentId"), _req(obj, "data"))
    if kind == "doc-unavailable":
        return DocUnavailable(_req(obj, "senderId"), _req(obj, "targetId"), _req(obj, "documentId"))
    if kind == "ephemeral":
        return Ephemeral(
            _req(obj, "senderId"),
            _req(obj, "targetId"),
            _req(obj, "documentId"),
            _req(obj, "data"),
            _integral(_req(obj, "count")),
            _req(obj, "sessionId"),
        )
    if kind == "remote-subscription-change":
        return RemoteSubscriptionChange(
            _req(obj, "senderId"), _req(obj, "targetId"), _opt_strs(obj, "add"), _opt_strs(obj, "remove")
        )
    if kind == "remote-heads-changed":
        return RemoteHeadsChanged(
            _req(obj, "senderId"),
            _req(obj, "targetId"),
            _req(obj, "documentId"),
            _new_heads(_req(obj, "newHeads")),
        )
    sender, target = obj.get("senderId"), obj.get("targetId")
    return UnknownMessage(
        _text(kind, "type", 64),
        None if sender is None else _peer_id(sender, "senderId"),
        None if target is None else _peer_id(target, "targetId"),
    )


# ---- encoding -------------------------------------------------------------------------------------------


def _metadata_map(meta: PeerMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if meta.storage_id is not None:
        out["storageId"] = meta.storage_id
    if meta.is_ephemeral is not None:
        out["isEphemeral"] = meta.is_ephemeral
    return out


def to_map(message: Message) -> dict[str, Any]:
    """The message as the plain map automerge-repo puts on the wire (camelCase keys)."""
    match message:
        case Join():
            out: dict[str, Any] = {
                "type": "join",
                "senderId": message.sender_id,
                "peerMetadata": _metadata_map(message.peer_metadata),
            }
            if message.supported_protocol_versions is not None:
                out["supportedProtocolVersions"] = list(message.supported_protocol_versions)
            return out
        case Peer():
            return {
                "type": "peer",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "peerMetadata": _metadata_map(message.peer_metadata),
                "selectedProtocolVersion": message.selected_protocol_version,
            }
        case Error():
            return {
                "type": "error",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "message": message.message,
            }
        case Leave():
            return {"type": "leave", "senderId": message.sender_id}
        case Request() | Sync():
            return {
                "type": "request" if isinstance(message, Request) else "sync",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
                "data": message.data,
            }
        case DocUnavailable():
            return {
                "type": "doc-unavailable",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
            }
        case Ephemeral():
            return {
                "type": "ephemeral",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
                "data": message.data,
                "count": message.count,
                "sessionId": message.session_id,
            }
        case RemoteSubscriptionChange():
            out = {
                "type": "remote-subscription-change",
                "senderId": message.sender_id,
                "targetId": message.target_id,
            }
            if message.add is not None:
                out["add"] = list(message.add)
            if message.remove is not None:
                out["remove"] = list(message.remove)
            return out
        case RemoteHeadsChanged():
            return {
                "type": "remote-heads-changed",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
                "newHeads": {
                    key: {"heads": list(h.heads), "timestamp": h.timestamp} for key, h in message.new_heads
                },
            }
        case UnknownMessage():
            raise WireError("unknown_type", f"cannot encode unknown message type {message.type!r}")
    raise WireError("wrong_type", f"not a message: {type(message).__name__}")


def _js_numbers(value: Any) -> Any:
    """cbor-x writes integers outside 32 bits as float64 and reads any 64-bit CBOR integer back as a
    BigInt, which automerge-repo does not expect; write them the way cbor-x does."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**32) <= value < 2**32:
        return float(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def encode(message: Message) -> bytes:
    return cbor2.dumps(_js_numbers(to_map(message)))
