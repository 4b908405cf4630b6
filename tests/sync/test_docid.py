from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sync import docid

# The vector from automerge-repo's own test suite (packages/automerge-repo/test/AutomergeUrl.test.ts).
GOOD_BINARY = bytes([241, 194, 156, 132, 116, 200, 74, 222, 184, 0, 190, 71, 98, 125, 51, 191])
GOOD_ID = "4NMNnkMhL8jXrdJ9jamS58PAVdXu"


def test_matches_automerge_repo_vector() -> None:
    assert docid.document_id_from_bytes(GOOD_BINARY) == GOOD_ID
    assert docid.document_id_to_bytes(GOOD_ID) == GOOD_BINARY
    assert docid.to_url(GOOD_ID) == "automerge:" + GOOD_ID
    assert docid.parse_url("automerge:" + GOOD_ID) == docid.ParsedUrl(GOOD_ID)


def test_base58_leading_zeros() -> None:
    assert docid.b58encode(b"\0\0\x01") == "112"
    assert docid.b58decode("112") == b"\0\0\x01"
    assert docid.b58encode(b"") == ""


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("badbadbad", "checksum"),
        ("", "empty"),
        ("0OIl", "alphabet"),
        ("1" * 41, "longer"),
        (docid.bs58check_encode(bytes([1, 2, 3, 4, 42, 255, 69, 9])), "16 bytes"),
        (GOOD_ID[:-1] + ("v" if GOOD_ID[-1] != "v" else "w"), "checksum"),
    ],
)
def test_rejects_bad_ids(text: str, why: str) -> None:
    with pytest.raises(docid.InvalidDocumentId, match=why):
        docid.document_id_to_bytes(text)
    assert not docid.is_valid_document_id(text)


def test_rejects_non_strings() -> None:
    assert not docid.is_valid_document_id(GOOD_BINARY)
    assert not docid.is_valid_document_id(None)


def test_url_with_heads_and_path() -> None:
    head = docid.bs58check_encode(bytes(32))
    parsed = docid.parse_url(f"automerge:{GOOD_ID}/a/b#{head}|{head}")
    assert parsed == docid.ParsedUrl(GOOD_ID, (head, head), "a/b")
    assert docid.parse_url(f"automerge:{GOOD_ID}#").heads == ()


@pytest.mark.parametrize(
    "url",
    [
        "yjs:" + GOOD_ID,
        "automerge:badbadbad",
        "automerge:",
        f"automerge:{GOOD_ID}#x#y",
        f"automerge:{GOOD_ID}#notbase58check0",
    ],
)
def test_rejects_bad_urls(url: str) -> None:
    with pytest.raises(docid.InvalidDocumentId):
        docid.parse_url(url)


@given(st.binary(min_size=16, max_size=16))
def test_document_id_round_trip(raw: bytes) -> None:
    text = docid.document_id_from_bytes(raw)
    assert docid.document_id_to_bytes(text) == raw
    assert docid.parse_url(docid.to_url(text)).document_id == text


@given(st.binary(max_size=64))
def test_base58_round_trip(raw: bytes) -> None:
    assert docid.b58decode(docid.b58encode(raw)) == raw
    assert docid.bs58check_decode(docid.bs58check_encode(raw)) == raw


@given(st.text(max_size=60))
def test_arbitrary_text_is_valid_or_typed_error(text: str) -> None:
    try:
        raw = docid.document_id_to_bytes(text)
    except docid.InvalidDocumentId:
        return
    assert docid.document_id_from_bytes(raw) == text


def test_new_ids_are_unique_and_valid() -> None:
    ids = {docid.new_document_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(docid.is_valid_document_id(i) for i in ids)
