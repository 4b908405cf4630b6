"""Token expiry on open sync connections, and the backend's limits as `ridesync serve` flags."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from engine.auth.tokens import CLOCK_LEEWAY_S
from engine.backend.config import BackendConfig, ConfigError
from engine.backend.ws import CLOSE_TOKEN_EXPIRED
from engine.campaign.sync_client import SyncClient
from engine.cli.commands.serve import backend_config
from engine.cli.main import CliError, build_parser
from engine.ride.schema import Role, own_ref
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.samples import T0, sample

RIDE = "ride-exp"
TTL = 3600.0


async def test_an_open_sync_connection_ends_when_its_token_expires(server: Server) -> None:
    # A token whose exp + leeway (the last instant verify() accepts it) is about two seconds away.
    issued = time.time() - TTL - CLOCK_LEEWAY_S + 2.0
    token = server.ring.issue("bike", "bike-1", ttl_s=TTL, now=issued)
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(20)])
    bike.fold(RIDE)
    async with asyncio.timeout(HANG_GUARD):
        async with SyncClient(server.url, token, bike, RIDE) as client:
            await client.open_ride()
            # Synced while the token was valid: kept.
            await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
            await client.closed.wait()
    assert client.close_code == CLOSE_TOKEN_EXPIRED
    assert any("token expired" in e for e in client.errors), client.errors
    assert server.backend.store.view(RIDE).samples == {"bike-1": 20}
    metrics = await (await server.http.get(f"{server.url}/metrics")).text()
    assert "ridesync_sync_token_expired_total 1.0" in metrics
    assert 'ridesync_sync_closes_total{code="4401"} 1.0' in metrics
    ref = own_ref(RIDE, "bike-1", Role.BIKE)
    assert ref is not None and server.backend.store.has_doc(ref.doc_id)


async def test_a_long_lived_token_keeps_its_connection(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-2")
    bike.start_ride(RIDE, t=T0)
    async with asyncio.timeout(HANG_GUARD):
        async with SyncClient(server.url, server.token("bike", "bike-2"), bike, RIDE) as client:
            await client.open_ride()
            await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
            assert not client.closed.is_set()


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


LIMIT_VARS = (
    "RIDESYNC_MAX_MESSAGE_BYTES",
    "RIDESYNC_HEARTBEAT_S",
    "RIDESYNC_RATE_PER_S",
    "RIDESYNC_RATE_BURST",
    "RIDESYNC_MAX_QUEUED_CHANGES",
    "RIDESYNC_MAX_QUEUED_BYTES",
    "RIDESYNC_UNLOAD_IDLE_S",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in LIMIT_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_serve_defaults_without_flags_or_variables(clean_env: pytest.MonkeyPatch) -> None:
    assert backend_config(_serve_args()) == BackendConfig()


def test_serve_flags_set_the_limits(clean_env: pytest.MonkeyPatch) -> None:
    cfg = backend_config(
        _serve_args(
            "--max-message-bytes",
            "1048576",
            "--heartbeat-s",
            "2.5",
            "--rate-per-s",
            "50",
            "--rate-burst",
            "200",
            "--unload-idle-s",
            "5",
        )
    )
    assert (cfg.max_message_bytes, cfg.heartbeat_s, cfg.rate_per_s, cfg.burst) == (1048576, 2.5, 50.0, 200.0)
    assert cfg.unload_idle_s == 5.0


def test_variables_are_defaults_and_flags_win(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RIDESYNC_RATE_PER_S", "5")
    clean_env.setenv("RIDESYNC_HEARTBEAT_S", "7")
    cfg = backend_config(_serve_args("--rate-per-s", "20"))
    assert (cfg.rate_per_s, cfg.heartbeat_s) == (20.0, 7.0)
    # A variable that a flag overrides is not read, so a bad value there does not block the flag.
    clean_env.setenv("RIDESYNC_RATE_BURST", "lots")
    assert backend_config(_serve_args("--rate-burst", "9")).burst == 9.0
    with pytest.raises(CliError, match="RIDESYNC_RATE_BURST must be a number"):
        backend_config(_serve_args())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-message-bytes", "100"], "--max-message-bytes must be a whole number of bytes from 4096"),
        (["--max-message-bytes", str(2**31)], "--max-message-bytes must be a whole number"),
        (["--heartbeat-s", "0"], "--heartbeat-s must be more than 0"),
        (["--heartbeat-s", "nan"], "--heartbeat-s must be a finite number"),
        (["--heartbeat-s", "7200"], "at most 3600"),
        (["--rate-per-s", "-1"], "--rate-per-s must be positive"),
        (["--rate-burst", "0.5"], "--rate-burst must be at least 1"),
        (["--max-queued-changes", "0"], "--max-queued-changes must be a whole number of changes from 1"),
        (["--max-queued-bytes", "100"], "--max-queued-bytes must be a whole number of bytes from 4096"),
        (["--unload-idle-s", "0.5"], "--unload-idle-s must be from 1 to 604800 seconds"),
        (["--unload-idle-s", "inf"], "--unload-idle-s must be a finite number"),
    ],
)
def test_bad_flags_are_refused_with_a_clear_error(
    clean_env: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    with pytest.raises(CliError, match=message):
        backend_config(_serve_args(*argv))


def test_non_numbers_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _serve_args("--max-message-bytes", "8MiB")
    assert "--max-message-bytes: invalid int value" in capsys.readouterr().err


def test_bad_variables_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="RIDESYNC_MAX_MESSAGE_BYTES must be a whole number"):
        BackendConfig.from_env({"RIDESYNC_MAX_MESSAGE_BYTES": "12.5"})
    with pytest.raises(ConfigError, match="RIDESYNC_HEARTBEAT_S must be more than 0"):
        BackendConfig.from_env({"RIDESYNC_HEARTBEAT_S": "-1"})


def test_the_queued_change_limits_are_flags_and_variables(clean_env: pytest.MonkeyPatch) -> None:
    default = backend_config(_serve_args())
    assert (default.max_queued_changes, default.max_queued_bytes) == (10_000, 16 * 1024 * 1024)
    clean_env.setenv("RIDESYNC_MAX_QUEUED_BYTES", "65536")
    cfg = backend_config(_serve_args("--max-queued-changes", "50"))
    assert (cfg.max_queued_changes, cfg.max_queued_bytes) == (50, 65536)
    with pytest.raises(ConfigError, match="RIDESYNC_MAX_QUEUED_CHANGES must be a whole number"):
        BackendConfig.from_env({"RIDESYNC_MAX_QUEUED_CHANGES": "1.5"})
