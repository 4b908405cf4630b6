"""`ridesync ride` / `ridesync app` refuse bad input with a clear error (exit 2) before touching anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.auth.tokens import KeyRing
from engine.cli.commands.app import parse_edit
from engine.cli.main import CliError, main


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--hr, --bike and/or --serial"),
        (["--hr", "sim", "--speed", "0"], "--speed must be positive"),
        (["--hr", "sim", "--duration", "-5"], "--duration must be positive"),
        (["--hr", "sim", "--ride-id", "no spaces/allowed"], "--ride-id"),
    ],
)
def test_ride_rejects_bad_arguments(
    ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    token = ring.issue("bike", "bike-1")
    code, err = run(
        capsys, "ride", "--backend", "http://127.0.0.1:9", "--token", token, "--data", str(tmp_path), *extra
    )
    assert code == 2 and message in err
    assert not (tmp_path / "bike-bike-1").exists()


def test_ride_wants_a_bike_token_and_app_an_app_token(
    ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        capsys, "ride", "--backend", "http://x:1", "--token", ring.issue("app", "t"), "--hr", "sim"
    )
    assert code == 2 and "needs a bike token" in err
    code, err = run(
        capsys, "app", "--backend", "http://x:1", "--token", ring.issue("bike", "b"), "--ride-id", "r"
    )
    assert code == 2 and "needs an app token" in err
    code, err = run(capsys, "app", "--backend", "http://x:1", "--token", "garbage", "--ride-id", "r")
    assert code == 2 and "--token" in err


def test_app_edits(ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_edit("rating=4") == ("rating", 4)
    assert parse_edit("title=Hill climb") == ("title", "Hill climb")
    with pytest.raises(CliError):
        parse_edit("no-equals")
    token = ring.issue("app", "tablet-1")
    code, err = run(
        capsys, "app", "--backend", "http://x:1", "--token", token, "--ride-id", "r", "--set", "power=9"
    )
    assert code == 2 and "not a shared field" in err
