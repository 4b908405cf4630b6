"""The one boundary between ridesync and the Automerge bindings (automerge==0.2.0.dev4,
docs/architecture.md#automerge-hazards).

Nothing else in the code base imports automerge; tests/store/test_crdt_boundary.py checks that.

Hazards this module contains:
- A Rust panic surfaces as `pyo3_runtime.PanicException`, a BaseException, and poisons the document's lock;
  freeing a poisoned document segfaults the process. Every call is wrapped: a panic (or any error that
  leaves the document's lock poisoned) raises `CrdtPanic`, the document is moved to `_GRAVEYARD` so its
  destructor never runs, and the wrapper refuses every further call. The owner must persist nothing from
  it and reload the replica from disk.
- Counters panic when written (and when a JS counter is read), so this module has no way to write one:
  values are only str, bytes, int, float, bool and None, each mapped to an explicit scalar type; and
  `counters_since` lets a sync gate refuse incoming counters before anything reads them.
- Documents use flat root maps only (ridesync's schema has no nested objects), so concurrent creation of
  the same nested object by two replicas, which would hide one of them, cannot happen.
- `SyncState` cannot be persisted: `SyncSession` holds a fresh one per connection.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import automerge._automerge as _am
from automerge.core import ROOT, ObjType, ScalarType

Scalar = str | bytes | int | float | bool | None
T = TypeVar("T")

ACTOR_LEN = 16
_DEVICE_PREFIX_LEN = 8

# Poisoned documents live here for the life of the process: their destructor must never run (it segfaults).
_GRAVEYARD: list[object] = []


class CrdtError(Exception):
    """An Automerge call failed cleanly; the document is unchanged and still usable."""


class CrdtDecodeError(CrdtError):
    """Bytes that are not a valid Automerge document, change list or sync message."""


class CrdtPanic(CrdtError):
    """Automerge panicked. The document is poisoned: persist nothing from it and reload from disk."""


class CrdtPoisoned(CrdtPanic):
    """A call on a document that already panicked."""


def graveyard_size() -> int:
    """How many poisoned documents this process keeps alive (for health reporting and tests)."""
    return len(_GRAVEYARD)


def new_actor_id(device_id: str) -> bytes:
    """A fresh actor id for `device_id`: 8 bytes derived from the device, 8 random bytes.

    Called on every replica open (a restart, an install, a restore), so an actor id is never reused after
    rolling back to an older snapshot, which would break sync forever with "duplicate seq". The device
    prefix lets a human or a log line see whose actor it is; the server still binds actors by trust on
    first use, since the prefix is not a proof.
    """
    prefix = hashlib.sha256(device_id.encode()).digest()[:_DEVICE_PREFIX_LEN]
    return prefix + os.urandom(ACTOR_LEN - _DEVICE_PREFIX_LEN)


def actor_device_prefix(device_id: str) -> bytes:
    return hashlib.sha256(device_id.encode()).digest()[:_DEVICE_PREFIX_LEN]


def _is_fatal(exc: BaseException) -> bool:
    # PanicException derives from BaseException only; after a panic the document's RwLock is poisoned and
    # later calls raise an ordinary Exception mentioning it.
    return not isinstance(exc, Exception) or "poison" in str(exc).lower()


def _passthrough(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


_WRITE_TYPES: tuple[tuple[type, ScalarType], ...] = (
    (bool, ScalarType.Boolean),  # before int: bool is an int subclass
    (int, ScalarType.Int),
    (float, ScalarType.F64),
    (str, ScalarType.Str),
    (bytes, ScalarType.Bytes),
)
_COUNTER_MARKERS = ("Scalar(Counter(", "action: Increment")
_READ_TYPES = (
    ScalarType.Boolean,
    ScalarType.Int,
    ScalarType.Uint,
    ScalarType.F64,
    ScalarType.Str,
    ScalarType.Bytes,
    ScalarType.Null,
)


def _scalar_type(value: Scalar) -> ScalarType:
    if value is None:
        return ScalarType.Null
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ValueError(f"integer {value} does not fit Automerge's 64-bit Int")
    for py_type, scalar_type in _WRITE_TYPES:
        if isinstance(value, py_type):
            return scalar_type
    raise TypeError(f"unsupported CRDT value type {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class ChangeInfo:
    """One change as the sync gate needs it: who made it, its hash and its bytes."""

    hash: bytes
    actor: bytes
    seq: int
    deps: tuple[bytes, ...]
    data: bytes


class CrdtDoc:
    """One Automerge document behind the panic boundary, restricted to a flat root map of scalars."""

    __slots__ = ("_doc", "_poisoned")

    def __init__(self, raw: Any) -> None:
        self._doc: Any = raw
        self._poisoned = False

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def new(cls, actor: bytes) -> CrdtDoc:
        _check_actor(actor)
        try:
            return cls(_am.Document(actor))
        except BaseException as exc:
            if _passthrough(exc):
                raise
            raise CrdtError(f"cannot create document: {exc}") from None

    @classmethod
    def load(cls, data: bytes, actor: bytes) -> CrdtDoc:
        """Load a saved document, optionally followed by concatenated change chunks.

        Raises CrdtDecodeError for any malformed input, including a torn tail. Empty input is an empty
        document (the bindings' behaviour), which callers that expect data must check for themselves.
        """
        _check_actor(actor)
        try:
            raw = _am.Document.load(bytes(data))
        except BaseException as exc:
            if _passthrough(exc):
                raise
            if _is_fatal(exc):
                raise CrdtPanic(f"automerge panicked loading {len(data)} bytes: {exc}") from None
            raise CrdtDecodeError(f"not a valid automerge document ({len(data)} bytes): {exc}") from None
        doc = cls(raw)
        doc._call(lambda: raw.set_actor(actor))
        return doc

    # -- the panic boundary ---------------------------------------------------------------------------

    @property
    def poisoned(self) -> bool:
        return self._poisoned

    def _poison(self) -> None:
        if not self._poisoned:
            self._poisoned = True
            _GRAVEYARD.append(self._doc)
            # Interpreter shutdown clears module globals, which would free the graveyard after all; an
            # extra reference that nothing owns keeps the destructor from ever running.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._doc))

    def _call(self, fn: Callable[[], T], *, mutating: bool = False) -> T:
        if self._poisoned:
            raise CrdtPoisoned("document panicked earlier; reload the replica from disk")
        try:
            return fn()
        except BaseException as exc:
            if _passthrough(exc):
                raise
            if _is_fatal(exc) or (mutating and not self._probe()):
                self._poison()
                raise CrdtPanic(f"automerge panicked: {type(exc).__name__}: {exc}") from None
            raise CrdtError(str(exc)) from None

    def _probe(self) -> bool:
        try:
            self._doc.get_heads()
        except BaseException as exc:
            if _passthrough(exc):
                raise
            return False
        return True

    # -- reading --------------------------------------------------------------------------------------

    @property
    def actor(self) -> bytes:
        return self._call(lambda: bytes(self._doc.get_actor()))

    def set_actor(self, actor: bytes) -> None:
        _check_actor(actor)
        self._call(lambda: self._doc.set_actor(actor), mutating=True)

    def heads(self) -> list[bytes]:
        return sorted(self._call(lambda: list(self._doc.get_heads())))

    def keys(self) -> list[str]:
        return self._call(lambda: list(self._doc.keys(ROOT)))

    def get(self, key: str) -> Scalar:
        """The value at root `key`, or None. Nested objects and foreign scalar types read as None.

        ridesync never writes counters. Reading one a JS peer wrote panics inside the bindings before its
        type can be checked: that surfaces here as CrdtPanic, like any other panic.
        """
        found = self._call(lambda: self._doc.get(ROOT, key))
        if found is None:
            return None
        value, _obj = found
        if isinstance(value, ObjType):
            return None
        scalar_type, scalar = value
        if scalar_type not in _READ_TYPES:
            return None
        if isinstance(scalar, str | bytes | int | float | bool) or scalar is None:
            return scalar
        return None

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self.keys() if key.startswith(prefix)]

    def items(self, prefix: str = "") -> dict[str, Scalar]:
        return {key: self.get(key) for key in self.keys() if key.startswith(prefix)}

    # -- writing --------------------------------------------------------------------------------------

    def put(self, values: Mapping[str, Scalar]) -> None:
        """Write root keys in one transaction (one change). Values are type-checked before any call."""
        typed = [(key, _scalar_type(value), value) for key, value in values.items()]
        for key, _t, _v in typed:
            if not isinstance(key, str) or not key:
                raise TypeError("keys must be non-empty strings")

        def write() -> None:
            with self._doc.transaction() as tx:
                for key, scalar_type, value in typed:
                    tx.put(ROOT, key, scalar_type, value)

        self._call(write, mutating=True)

    # -- persistence and sync -------------------------------------------------------------------------

    def save(self) -> bytes:
        return self._call(lambda: bytes(self._doc.save()))

    def changes_since(self, heads: Iterable[bytes]) -> list[ChangeInfo]:
        """Every change not reachable from `heads` (all changes for []), in causal order."""
        have = list(heads)
        raw = self._call(lambda: self._doc.get_changes(have))
        return [
            ChangeInfo(
                hash=bytes(c.hash),
                actor=bytes(c.actor_id),
                seq=int(c.seq),
                deps=tuple(bytes(d) for d in c.deps),
                data=bytes(c.bytes),
            )
            for c in raw
        ]

    def counters_since(self, heads: Iterable[bytes]) -> bool:
        """True if the changes after `heads` write or increment a Counter anywhere in the document.

        Reading a counter (as a JS peer may write) panics in these bindings, so a sync gate must refuse
        such changes before they reach a document it will read. The bindings expose patches only through
        their Rust Debug text, which names the scalar type; matching on it is tied to the pinned version,
        and tests/store/test_crdt_boundary.py checks it against a real JS-made counter.
        """
        have = list(heads)
        patches = self._call(lambda: self._doc.diff(have, self._doc.get_heads()))
        return any(marker in repr(p) for p in patches for marker in _COUNTER_MARKERS)

    def fork(self, actor: bytes | None = None) -> CrdtDoc:
        """An independent copy (for the sync gate: apply there, inspect, merge only if allowed)."""
        raw = self._call(self._doc.fork)
        child = CrdtDoc(raw)
        if actor is not None:
            child.set_actor(actor)
        return child

    def merge(self, other: CrdtDoc) -> list[bytes]:
        """Merge `other` into this document; returns the resulting heads. Use `changes_since(old_heads)`
        to see which changes were new."""
        if other._poisoned:
            raise CrdtPoisoned("cannot merge from a poisoned document")
        try:
            self._call(lambda: self._doc.merge(other._doc), mutating=True)
        except CrdtPanic:
            # The panic may have happened while `other` was locked: neither may ever be freed.
            other._poison()
            raise
        return self.heads()

    def apply_changes(self, chunks: Iterable[bytes]) -> list[bytes]:
        """Apply raw change chunks (e.g. from `ChangeInfo.data`) whose dependencies this document has.

        The bindings have no apply_changes: the chunks are loaded on top of a save of this document and
        merged. Returns the resulting heads. Raises CrdtDecodeError (this document unchanged) for malformed
        chunks.
        """
        blob = b"".join(chunks)
        if not blob:
            return self.heads()
        other = CrdtDoc.load(self.save() + blob, self.actor)
        return self.merge(other)


class SyncSession:
    """Automerge's sync protocol state for one connection to one peer, for one document.

    Fresh per connection by design (docs/architecture.md#automerge-hazards): the bindings cannot persist a
    SyncState, and a stale one
    would make the peers skip changes. Messages are plain bytes in and out.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _am.SyncState()

    def generate(self, doc: CrdtDoc) -> bytes | None:
        """The next message to send, or None when this side has nothing more to say."""
        msg = doc._call(lambda: doc._doc.generate_sync_message(self._state))
        if msg is None:
            return None
        return doc._call(lambda: bytes(msg.encode()))

    def receive(self, doc: CrdtDoc, data: bytes) -> None:
        """Apply a peer's sync message to `doc`. Malformed bytes raise CrdtDecodeError, doc unchanged."""
        try:
            msg = _am.Message.decode(bytes(data))
        except BaseException as exc:
            if _passthrough(exc):
                raise
            raise CrdtDecodeError(f"not a sync message ({len(data)} bytes): {exc}") from None
        doc._call(
            lambda: doc._doc.receive_sync_message(self._state, msg),
            mutating=True,
        )


# -- reading a sync message without applying it ------------------------------------------------------
#
# Automerge's sync message (rust/automerge/src/sync.rs, `Message::parse`): a type byte (0x42, or 0x43 for
# the v2 format), then `heads` and `need` (a LEB128 count of 32-byte hashes each), `have` (a count of
# entries, each a hash list and a length-prefixed Bloom filter), then the changes: a count of
# length-prefixed byte strings, which the receiver concatenates and loads as storage chunks (v1: change
# chunks; v2 may send one whole-document chunk instead). Capabilities may follow; they carry no data.
# A storage chunk is magic (4 bytes), checksum (4), type (0 document, 1 change, 2 deflated change), a
# LEB128 length and that many bytes. A change's hash is SHA-256 over type 1, the length and the
# uncompressed body. tests/store/test_crdt_boundary.py checks all of this against the pinned bindings.

_SYNC_TYPES = (0x42, 0x43)
_CHUNK_MAGIC = b"\x85\x6f\x4a\x83"
_CHUNK_DOCUMENT, _CHUNK_CHANGE, _CHUNK_DEFLATED = 0, 1, 2
_HASH_LEN = 32
# A deflated change that inflates beyond this is refused rather than inflated (a deflate bomb).
MAX_INFLATED_CHANGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SyncMessageInfo:
    """What an Automerge sync message carries, read from its bytes without applying it.

    `entries` is the number of change entries in the message: more than zero means applying it would
    load data into the document (a sync gate checks write permission before that). `changes` holds the
    (hash, bytes) of each change chunk, uncompressed size (for a chunk type this reader does not know, a
    digest of the whole chunk and its size); `documents` counts whole-document chunks (their changes
    depend on nothing outside them)."""

    heads: tuple[bytes, ...]
    need: tuple[bytes, ...]
    entries: int
    changes: tuple[tuple[bytes, int], ...]
    documents: int

    @property
    def carries_changes(self) -> bool:
        return self.entries > 0


def _uleb(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CrdtDecodeError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise CrdtDecodeError("LEB128 number over 64 bits")


def _take(data: bytes | memoryview, pos: int, n: int) -> int:
    end = pos + n
    if n < 0 or end > len(data):
        raise CrdtDecodeError(f"needs {n} bytes at offset {pos}, has {len(data) - pos}")
    return end


def _hashes(data: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    count, pos = _uleb(data, pos)
    end = _take(data, pos, count * _HASH_LEN)
    return tuple(data[p : p + _HASH_LEN] for p in range(pos, end, _HASH_LEN)), end


def _leb_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _chunks(blob: bytes) -> tuple[list[tuple[bytes, int]], int]:
    """The change chunks (hash, uncompressed bytes) and the count of document chunks in `blob`."""
    changes: list[tuple[bytes, int]] = []
    documents = 0
    pos = 0
    view = memoryview(blob)
    while pos < len(blob):
        if bytes(view[pos : pos + 4]) != _CHUNK_MAGIC:
            raise CrdtDecodeError(f"no storage chunk at offset {pos}")
        pos = _take(view, pos, 9)
        kind = view[pos - 1]
        length, body = _uleb(view, pos)
        end = _take(view, body, length)
        if kind == _CHUNK_DOCUMENT:
            documents += 1
        elif kind == _CHUNK_CHANGE:
            changes.append((hashlib.sha256(view[pos - 1 : end]).digest(), end - pos + 1))
        elif kind == _CHUNK_DEFLATED:
            inflater = zlib.decompressobj(-15)
            try:
                raw = inflater.decompress(view[body:end], MAX_INFLATED_CHANGE_BYTES)
            except zlib.error as exc:
                raise CrdtDecodeError(f"deflated change does not inflate: {exc}") from None
            if inflater.unconsumed_tail:
                raise CrdtDecodeError(f"deflated change inflates beyond {MAX_INFLATED_CHANGE_BYTES} bytes")
            header = bytes([_CHUNK_CHANGE]) + _leb_bytes(len(raw))
            changes.append((hashlib.sha256(header + raw).digest(), len(header) + len(raw)))
        else:
            # A chunk type newer than this reader: not refused (a newer peer may send it), counted as
            # one change that never matches an applied one, so a gate keeps counting its bytes.
            changes.append((hashlib.sha256(view[pos - 9 : end]).digest(), end - pos + 9))
        pos = end
    return changes, documents


def split_changes(blob: bytes) -> list[tuple[bytes, bytes]] | None:
    """(change hash, chunk bytes) for each chunk of a blob made only of uncompressed change chunks (what
    `ChangeInfo.data` holds, concatenated), or None for anything else (a saved document, a deflated or
    unknown chunk, bytes that are not chunks). Storage keys append-only rows by these hashes."""
    out: list[tuple[bytes, bytes]] = []
    view = memoryview(blob)
    pos = 0
    try:
        while pos < len(blob):
            if bytes(view[pos : pos + 4]) != _CHUNK_MAGIC:
                return None
            start = pos
            pos = _take(view, pos, 9)
            if view[pos - 1] != _CHUNK_CHANGE:
                return None
            length, body = _uleb(view, pos)
            end = _take(view, body, length)
            out.append((hashlib.sha256(view[pos - 1 : end]).digest(), bytes(view[start:end])))
            pos = end
    except CrdtDecodeError:
        return None
    return out or None


def inspect_sync_message(data: bytes) -> SyncMessageInfo:
    """Read what a sync message carries without giving it to Automerge. Raises CrdtDecodeError for bytes
    that are not a sync message this reader understands (a gate refuses those: a real peer never sends
    them)."""
    data = bytes(data)
    if not data or data[0] not in _SYNC_TYPES:
        raise CrdtDecodeError(f"not a sync message: type byte {data[:1].hex() or 'missing'}")
    heads, pos = _hashes(data, 1)
    need, pos = _hashes(data, pos)
    haves, pos = _uleb(data, pos)
    for _ in range(haves):
        _last_sync, pos = _hashes(data, pos)
        bloom, pos = _uleb(data, pos)
        pos = _take(data, pos, bloom)
    entries, pos = _uleb(data, pos)
    parts: list[bytes] = []
    for _ in range(entries):
        length, pos = _uleb(data, pos)
        end = _take(data, pos, length)
        parts.append(data[pos:end])
        pos = end
    changes, documents = _chunks(b"".join(parts))
    return SyncMessageInfo(heads, need, entries, tuple(changes), documents)


def _check_actor(actor: bytes) -> None:
    if not isinstance(actor, bytes) or not actor or len(actor) > 32:
        raise ValueError("actor id must be 1-32 bytes")


def baseline_list_of_maps(doc: CrdtDoc, key: str, rows: Iterable[Mapping[str, Scalar]]) -> None:
    """Append each row as a map to the list at root `key`, in one change: the naive sample layout.

    For benchmarks only (engine/bench/store.py compares it with the packed layout); ridesync's own
    documents stay flat.
    """
    typed = [[(k, _scalar_type(v), v) for k, v in row.items()] for row in rows]

    def write() -> None:
        with doc._doc.transaction() as tx:
            found = tx.get(ROOT, key)
            target = found[1] if found is not None else tx.put_object(ROOT, key, ObjType.List)
            index = tx.length(target)
            for row in typed:
                obj = tx.insert_object(target, index, ObjType.Map)
                index += 1
                for name, scalar_type, value in row:
                    tx.put(obj, name, scalar_type, value)

    doc._call(write, mutating=True)
