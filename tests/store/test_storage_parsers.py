"""The parsers the PostgreSQL storage adds, on hostile input: `split_changes` (a record's bytes into
change chunks, the rows' keys) and `parse_store` (the `--store` value). Neither may raise anything but
its typed error, and what they return must be exact."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.crdt import CrdtDoc, new_actor_id, split_changes
from engine.store.location import StoreLocationError, parse_store, redact


def _changes() -> list[bytes]:
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    for i in range(3):
        doc.put({"k": i})
    return [c.data for c in doc.changes_since([])]


CHANGES = _changes()


def test_split_changes_gives_automerge_s_own_hashes() -> None:
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    doc.put({"a": 1})
    doc.put({"b": 2})
    infos = doc.changes_since([])
    split = split_changes(b"".join(c.data for c in infos))
    assert split == [(c.hash, c.data) for c in infos]
    assert split_changes(doc.save()) is None  # a saved document is one opaque row
    assert split_changes(b"") is None


@given(st.binary(max_size=512))
def test_split_changes_on_any_bytes_is_none_or_exact(blob: bytes) -> None:
    out = split_changes(blob)
    if out is not None:
        assert b"".join(chunk for _, chunk in out) == blob
        assert all(len(key) == 32 for key, _ in out)


@given(
    st.lists(st.sampled_from(CHANGES), min_size=1, max_size=6), st.binary(max_size=16), st.integers(0, 200)
)
def test_split_changes_on_damaged_records(chunks: list[bytes], junk: bytes, cut: int) -> None:
    blob = b"".join(chunks)
    assert [data for _, data in split_changes(blob) or []] == chunks
    damaged = blob[: max(0, len(blob) - cut)] + junk
    out = split_changes(damaged)
    if out is not None:  # whatever splits, splits exactly and keys by content
        assert b"".join(chunk for _, chunk in out) == damaged
        for key, chunk in out:
            assert key == hashlib.sha256(chunk[8:]).digest()


@given(st.text(max_size=200))
def test_parse_store_raises_only_its_error(text: str) -> None:
    try:
        location = parse_store(text)
    except StoreLocationError:
        return
    assert location.backend in ("sqlite", "postgresql")


@pytest.mark.parametrize(
    ("text", "backend"),
    [
        ("sqlite:/var/lib/ridesync", "sqlite"),
        ("postgresql://ridesync@db.internal:5432/rides", "postgresql"),
        ("postgres://u:pw@127.0.0.1/rides?sslmode=require", "postgresql"),
    ],
)
def test_parse_store_accepts(text: str, backend: str) -> None:
    assert parse_store(text).backend == backend


@pytest.mark.parametrize(
    "text",
    ["", "rides.db", "sqlite:", "mysql://h/db", "postgresql://", "postgresql://h", "postgresql://u@h:x/db"],
)
def test_parse_store_refuses(text: str) -> None:
    with pytest.raises(StoreLocationError):
        parse_store(text)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=30))
def test_the_password_never_shows(password: str) -> None:
    url = f"postgresql://ridesync:{password}@db.internal:5432/rides"
    assert redact(url) == "postgresql://ridesync:***@db.internal:5432/rides"
    assert parse_store(url).display == "postgresql://ridesync:***@db.internal:5432/rides"
    try:
        parse_store(f"postgresql://ridesync:{password}@/rides")
    except StoreLocationError as exc:
        assert f":{password}@" not in str(exc)
