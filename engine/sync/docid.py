"""automerge-repo document ids: base58check-encoded UUID bytes, the store's hex names of the same bytes,
and `automerge:<id>` URLs.

automerge-repo (packages/automerge-repo/src/AutomergeUrl.ts) encodes a document's 16 random bytes with
bs58check: Bitcoin-alphabet base58 of `payload + sha256(sha256(payload))[:4]`. It is ~40 lines, so it
lives here instead of in a dependency. We accept only 16-byte payloads (what `Repo.create()` makes); the
JS side would also accept other lengths, but nothing stock produces them and a fixed size bounds the work
a hostile id can cause.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
URL_PREFIX = "automerge:"
DOCUMENT_ID_BYTES = 16
# base58 of 16 + 4 bytes is at most 28 characters; anything much longer is not worth decoding.
MAX_DOCUMENT_ID_CHARS = 40
# Heads are 32-byte change hashes; base58check of 36 bytes is at most 50 characters.
MAX_HEAD_CHARS = 64


class InvalidDocumentId(ValueError):
    """A string that is not a valid automerge-repo document id or URL; the message says why."""


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        digit = _INDEX.get(ch)
        if digit is None:
            raise InvalidDocumentId(f"character {ch!r} is not in the base58 alphabet")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def bs58check_encode(payload: bytes) -> str:
    return b58encode(payload + _checksum(payload))


def bs58check_decode(text: str) -> bytes:
    raw = b58decode(text)
    if len(raw) < 4:
        raise InvalidDocumentId("too short for a base58check checksum")
    payload, check = raw[:-4], raw[-4:]
    if _checksum(payload) != check:
        raise InvalidDocumentId("base58check checksum mismatch")
    return payload


# Every sync message names its document, and base58check is pure Python (two SHA-256 and a bignum
# conversion per id): the few ids a server sees again and again are cached, a bounded number of them.
_CACHE = 65536


@functools.lru_cache(maxsize=_CACHE)
def document_id_from_bytes(binary: bytes) -> str:
    if len(binary) != DOCUMENT_ID_BYTES:
        raise InvalidDocumentId(f"a document id is {DOCUMENT_ID_BYTES} bytes, got {len(binary)}")
    return bs58check_encode(binary)


def document_id_to_bytes(document_id: str) -> bytes:
    if not isinstance(document_id, str):
        raise InvalidDocumentId(f"a document id is a string, got {type(document_id).__name__}")
    if not document_id:
        raise InvalidDocumentId("empty document id")
    if len(document_id) > MAX_DOCUMENT_ID_CHARS:
        raise InvalidDocumentId(f"document id longer than {MAX_DOCUMENT_ID_CHARS} characters")
    return _decode(document_id)


@functools.lru_cache(maxsize=_CACHE)
def _decode(document_id: str) -> bytes:
    payload = bs58check_decode(document_id)
    if len(payload) != DOCUMENT_ID_BYTES:
        raise InvalidDocumentId(f"a document id encodes {DOCUMENT_ID_BYTES} bytes, this one {len(payload)}")
    return payload


# The store names a document by the same 16 bytes as 32 hex characters; these are the one translation.


def document_id_from_hex(doc_hex: str) -> str:
    """The automerge-repo id of the document the store names `doc_hex`."""
    try:
        binary = bytes.fromhex(doc_hex)
    except ValueError as exc:
        raise InvalidDocumentId(f"not a hex document id: {doc_hex!r}") from exc
    return document_id_from_bytes(binary)


def document_id_to_hex(document_id: str) -> str:
    """The store's hex name of an automerge-repo document id; raises InvalidDocumentId."""
    return document_id_to_bytes(document_id).hex()


def is_valid_document_id(value: object) -> bool:
    try:
        document_id_to_bytes(value)  # type: ignore[arg-type]
    except InvalidDocumentId:
        return False
    return True


def new_document_id() -> str:
    return document_id_from_bytes(uuid.uuid4().bytes)


def to_url(document_id: str) -> str:
    document_id_to_bytes(document_id)
    return URL_PREFIX + document_id


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    document_id: str
    # None when the URL names no heads; otherwise base58check-encoded change hashes, as in the URL.
    heads: tuple[str, ...] | None = None
    # The raw `/seg/seg` suffix of a sub-document URL, without the leading slash.
    path: str | None = None


def parse_url(url: str) -> ParsedUrl:
    """Parse `automerge:<id>[/<path>][#<head>|<head>…]` as automerge-repo's parseAutomergeUrl does."""
    if not isinstance(url, str) or not url.startswith(URL_PREFIX):
        raise InvalidDocumentId(f"an automerge URL starts with {URL_PREFIX!r}")
    base, sep, heads_text = url[len(URL_PREFIX) :].partition("#")
    if "#" in heads_text:
        raise InvalidDocumentId("URL has more than one heads section")
    document_id, slash, path = base.partition("/")
    document_id_to_bytes(document_id)
    heads: tuple[str, ...] | None = None
    if sep:
        heads = tuple(heads_text.split("|")) if heads_text else ()
        for head in heads:
            if len(head) > MAX_HEAD_CHARS:
                raise InvalidDocumentId("head in URL is too long")
            bs58check_decode(head)
    return ParsedUrl(document_id, heads, path if slash and path else None)
