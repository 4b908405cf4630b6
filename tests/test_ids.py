"""One id grammar: what gets a token is exactly what the ride schema, the store and every route accept."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.auth.tokens import KeyRing, TokenError, TokenMalformed
from engine.cli.main import main
from engine.ride import schema

RING = KeyRing.generate()

# Ids and near-ids: the grammar's own characters, the separators it refuses, whitespace and controls.
_NEAR = st.text(alphabet="aZ09._:-@/ \n\r\t\x00é#%?", min_size=0, max_size=12)
_LONG = st.integers(min_value=120, max_value=140).map(lambda n: "b" * n)
IDS = st.one_of(_NEAR, _LONG, st.text(max_size=20), _NEAR.map(lambda s: "ride-a" + s))

# Each of these once got a token, or passed the schema's `re.match(...$)`.
BAD = ["ride-a\n", "bike-1\n", "bike-1\r\n", "a@b", "_x", "-x", ".x", ":x", " bike", "bike ", "bi ke", "b\tk"]
BAD += ["", "b" * 129, "bike/1", "bïke"]


def _accepts(check: object, value: str) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except ValueError:
        return False
    return True


def _issues(value: str, *, where: str) -> bool:
    kwargs: dict[str, object] = {"device": value if where == "device" else "bike-1"}
    if where == "ride":
        kwargs["rides"] = [value]
    if where == "class":
        kwargs["classes"] = [value]
    try:
        token = RING.issue("bike", **kwargs)  # type: ignore[arg-type]
    except TokenError:
        return False
    RING.verify(token)  # what was issued also verifies
    return True


@given(IDS)
@example("ride-a\n")
@example("a@b")
@example("_x")
def test_token_issuance_accepts_exactly_the_ids_the_schema_accepts(value: str) -> None:
    ok = _accepts(schema.check_device_id, value)
    assert _accepts(schema.check_ride_id, value) == ok
    assert _issues(value, where="device") == ok
    assert _issues(value, where="ride") == ok
    assert _issues(value, where="class") == ok


def _forge(ring: KeyRing, payload: dict[str, object]) -> str:
    """A correctly signed token whose claims `issue` would never write (e.g. a device id with `@`)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signed = f"rs1.{ring.current}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(ring.keys[ring.current], signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(sig)}"


@given(IDS)
@example("a@b")
@example("_x")
@example("bike\n")
def test_verify_refuses_signed_claims_with_an_id_the_schema_refuses(value: str) -> None:
    t = time.time()
    for claims in (
        {"r": "bike", "d": value, "c": [], "iat": int(t), "exp": int(t) + 60},
        {"r": "bike", "d": "bike-1", "c": [value], "iat": int(t), "exp": int(t) + 60},
        {"r": "bike", "d": "bike-1", "c": [], "rd": [value], "iat": int(t), "exp": int(t) + 60},
    ):
        token = _forge(RING, claims)
        if _accepts(schema.check_device_id, value):
            RING.verify(token)
        else:
            with pytest.raises(TokenMalformed):
                RING.verify(token)


@pytest.mark.parametrize("bad", BAD)
def test_schema_refuses_look_alike_ids(bad: str) -> None:
    for check in (schema.check_ride_id, schema.check_device_id):
        with pytest.raises(ValueError, match="invalid"):
            check(bad)


@pytest.mark.parametrize("flag", ["--device", "--ride", "--class"])
@pytest.mark.parametrize("bad", ["ride-a\n", "a@b", "_x", "x ", " x", "x\t"])
def test_token_issue_refuses_bad_ids_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, bad: str
) -> None:
    KeyRing.load_or_create(tmp_path)
    argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(tmp_path)]
    argv = argv[:4] + [flag, bad] + (argv[6:] if flag == "--device" else argv[4:])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "invalid" in json.loads(err)["error"]


def test_token_issue_process_refuses_a_trailing_newline(tmp_path: Path) -> None:
    KeyRing.load_or_create(tmp_path)
    argv = ["token", "issue", "--role", "bike", "--device", "bike-1\n", "--data", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "invalid device id" in json.loads(proc.stderr)["error"]


def test_keys_and_addresses_with_a_trailing_newline_match_nothing() -> None:
    """The other `$`-anchored patterns: sample batch keys and strap addresses use `fullmatch` too."""
    from adapters.ble.scan import is_address
    from engine.ride import documents
    from engine.ride.samples import Sample, encode_blob

    assert is_address("AA:BB:CC:DD:EE:FF") and not is_address("AA:BB:CC:DD:EE:FF\n")
    ref = schema.DocRef("ride-a", schema.DocKind.BIKE, "bike-1")
    blob = encode_blob([Sample(seq=1, t=1.0, hr=100)])
    key = schema.sample_key(1, 1)
    assert documents.decode_device(ref, {key: blob}).batches == 1
    assert documents.decode_device(ref, {key + "\n": blob}).batches == 0


@pytest.mark.parametrize("bad", ["_backend", "back@end", "backend\n"])
def test_the_backends_own_device_id_follows_the_grammar(bad: str) -> None:
    from engine.backend.config import BackendConfig, ConfigError

    with pytest.raises(ConfigError, match="RIDESYNC_BACKEND_ID"):
        BackendConfig.from_env({"RIDESYNC_BACKEND_ID": bad})
    assert BackendConfig.from_env({"RIDESYNC_BACKEND_ID": "backend-2"}).device_id == "backend-2"


@pytest.mark.parametrize("flag", ["--ride-id", "--class"])
@pytest.mark.parametrize("bad", ["ride-a\n", "a@b", "_x"])
def test_ride_refuses_bad_ids_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, bad: str
) -> None:
    token = RING.issue("bike", "bike-1")
    argv = ["ride", "--backend", "http://127.0.0.1:9", "--token", token, "--hr", "sim", flag, bad]
    argv += ["--duration", "1", "--sync-timeout", "1"]  # were the id accepted, the ride would end soon
    assert main([*argv, "--data", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "invalid" in json.loads(err)["error"]
    assert list(tmp_path.iterdir()) == [], "nothing was created"
