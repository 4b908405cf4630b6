"""The relay tests' redis-server: the one throwaway harness `ridesync bench live` uses too
(engine/bench/redis_server.py), as a fixture that skips, naming the Debian package, where it is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench.redis_server import RedisNotFound, RedisServer

HANG_GUARD_S = 30.0

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# The name the tests use for the harness's process.
RedisProcess = RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, per test."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    try:
        server = RedisServer(workdir, start_timeout_s=HANG_GUARD_S)
    except RedisNotFound:
        pytest.skip("redis-server not found: install the Debian package `redis-server`")
    server.start()
    try:
        yield server
    finally:
        server.stop()
