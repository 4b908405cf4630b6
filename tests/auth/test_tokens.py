"""Device tokens: issue, verify, tamper, expire, rotate, scope."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.auth.tokens import (
    KeyFileError,
    KeyRing,
    KeysMissing,
    Role,
    TokenBadSignature,
    TokenError,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    TokenScopeError,
    TokenUnknownKey,
    token_from_request,
)

RING = KeyRing.generate()
NOW = 1_800_000_000.0


def test_round_trip_carries_every_claim() -> None:
    token = RING.issue("bike", "bike-7", classes=["spin-6am", "c2"], rides=["r1"], ttl_s=60, now=NOW)
    claims = RING.verify(token, now=NOW + 10)
    assert claims.role is Role.BIKE
    assert claims.device == "bike-7"
    assert claims.classes == frozenset({"spin-6am", "c2"})
    assert claims.rides == frozenset({"r1"})
    assert (claims.iat, claims.exp) == (NOW, NOW + 60)
    assert claims.kid == RING.current


def test_missing_expired_and_future_tokens() -> None:
    with pytest.raises(TokenMissing):
        RING.verify(None)
    with pytest.raises(TokenMissing):
        RING.verify("")
    token = RING.issue("viewer", "v", ttl_s=60, now=NOW)
    with pytest.raises(TokenExpired):
        RING.verify(token, now=NOW + 60 + 31)
    RING.verify(token, now=NOW + 60 + 29)  # within the clock leeway
    with pytest.raises(TokenNotYetValid):
        RING.verify(token, now=NOW - 120)


def test_another_rings_token_is_refused() -> None:
    other = KeyRing.generate()
    token = other.issue("bike", "b", now=NOW)
    with pytest.raises((TokenUnknownKey, TokenBadSignature)):
        RING.verify(token, now=NOW)
    # Same kid, different key: the signature does not match.
    forged_ring = KeyRing(keys={RING.current: b"x" * 32}, current=RING.current)
    with pytest.raises(TokenBadSignature):
        RING.verify(forged_ring.issue("backend", "evil", now=NOW), now=NOW)


@given(st.integers(min_value=0), st.characters(codec="ascii", exclude_characters="\x00"))
def test_any_single_character_change_is_rejected(pos: int, ch: str) -> None:
    token = RING.issue("bike", "bike-1", classes=["c1"], ttl_s=3600, now=NOW)
    i = pos % len(token)
    tampered = token[:i] + ch + token[i + 1 :]
    if tampered == token:
        return
    with pytest.raises(TokenError):
        claims = RING.verify(tampered, now=NOW)
        # base64 has slack bits in its last character: a change there may decode to the same bytes.
        # Then the claims must be exactly the original ones, never something an attacker chose.
        if claims == RING.verify(token, now=NOW):
            raise TokenBadSignature("same bytes")


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_token_errors(text: str) -> None:
    with pytest.raises(TokenError):
        RING.verify(text, now=NOW)


def test_payload_swap_between_tokens_is_rejected() -> None:
    viewer = RING.issue("viewer", "v", classes=["c1"], now=NOW)
    backend = RING.issue("backend", "be", classes=["c1"], now=NOW)
    v_parts, b_parts = viewer.split("."), backend.split(".")
    swapped = ".".join([v_parts[0], v_parts[1], b_parts[2], v_parts[3]])
    with pytest.raises(TokenBadSignature):
        RING.verify(swapped, now=NOW)


def test_rotation_keeps_old_tokens_until_retired(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    old = ring.issue("bike", "b", now=NOW)
    old_kid = ring.current
    new_kid = ring.rotate()
    assert new_kid != old_kid
    new = ring.issue("bike", "b", now=NOW)
    reloaded = KeyRing.load_or_create(tmp_path)
    assert reloaded.verify(old, now=NOW).kid == old_kid
    assert reloaded.verify(new, now=NOW).kid == new_kid
    with pytest.raises(TokenError):
        reloaded.retire(new_kid)
    reloaded.retire(old_kid)
    with pytest.raises(TokenUnknownKey):
        KeyRing.load_or_create(tmp_path).verify(old, now=NOW)


def test_key_file_is_private(tmp_path: Path) -> None:
    KeyRing.load_or_create(tmp_path / "data")
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "token-keys.json").st_mode)
    assert mode == 0o600


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "token-keys.json").write_text("{nope")
    # load_or_create never replaces keys it cannot read: that would orphan every token they signed.
    with pytest.raises(TokenError, match=r"token-keys\.json is damaged"):
        KeyRing.load_or_create(tmp_path)
    assert (tmp_path / "token-keys.json").read_text() == "{nope"


def test_keys_are_created_only_on_request(tmp_path: Path) -> None:
    with pytest.raises(KeysMissing, match=r"token-keys\.json does not exist"):
        KeyRing.load(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    ring = KeyRing.create(tmp_path / "fresh")
    assert KeyRing.load(tmp_path / "fresh").keys == ring.keys
    with pytest.raises(KeyFileError, match="already exists"):
        KeyRing.create(tmp_path / "fresh")
    assert ring.exposed() is None
    os.chmod(tmp_path / "fresh" / "token-keys.json", 0o644)
    assert ring.exposed() == 0o644


def test_scope_checks() -> None:
    bike = RING.verify(RING.issue("bike", "bike-1", classes=["c1"], rides=["r1"], now=NOW), now=NOW)
    bike.require_publish("c1")
    bike.require_publish("c1", "bike-1")
    bike.require_ride("r1")
    with pytest.raises(TokenScopeError):
        bike.require_publish("c2")
    with pytest.raises(TokenScopeError):
        bike.require_publish("c1", "bike-2")
    with pytest.raises(TokenScopeError):
        bike.require_ride("r2")
    viewer = RING.verify(RING.issue("viewer", "v", classes=["c1"], now=NOW), now=NOW)
    viewer.require_subscribe("c1")
    viewer.require_ride("anything")  # no ride list: any ride
    with pytest.raises(TokenScopeError):
        viewer.require_publish("c1")
    with pytest.raises(TokenScopeError):
        viewer.require_subscribe("c2")


def test_issue_refuses_bad_ids_and_ttl() -> None:
    with pytest.raises(TokenMalformed):
        RING.issue("bike", "has space")
    with pytest.raises(TokenMalformed):
        RING.issue("bike", "b", classes=["a/b"])
    with pytest.raises(TokenMalformed):
        RING.issue("bike", "b", ttl_s=0)
    with pytest.raises(ValueError):
        RING.issue("root", "b")


def test_token_from_request_prefers_bearer_header() -> None:
    assert token_from_request({"Authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert token_from_request({"Authorization": "bearer  abc "}, {}) == "abc"
    assert token_from_request({}, {"token": "q"}) == "q"
    assert token_from_request({"Authorization": "Basic zzz"}, {}) is None
    assert token_from_request({}, {"token": ""}) is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_KEY_FILES = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"current": _JSON, "keys": _JSON}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "current": st.sampled_from(["k1", "k2"]),
            "keys": st.dictionaries(st.sampled_from(["k1", "_k", "k2"]), _JSON),
        }
    ).map(lambda v: json.dumps(v).encode()),
)


@given(_KEY_FILES)
def test_any_key_file_loads_or_is_a_key_file_error(body: bytes) -> None:
    """Whatever bytes the key file holds: keys, or KeyFileError naming the file; never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "token-keys.json"
        path.write_bytes(body)
        try:
            ring = KeyRing.load(tmp)
        except KeyFileError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            assert ring.current in ring.keys
