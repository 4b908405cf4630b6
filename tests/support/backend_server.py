"""The real backend application (build_app + setup_backend) on 127.0.0.1 with a kernel-chosen port and real
SQLite files, as a fixture (`make_server`) for every test folder that needs a backend on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.auth.tokens import KeyRing
from engine.backend.config import BackendConfig
from engine.backend.push import RidePush
from engine.backend.routes import make_setup
from engine.backend.service import Backend
from engine.backend.state import BACKEND
from engine.campaign.sync_client import SyncClient
from engine.live.lane import live_lane
from engine.ride.schema import Role
from engine.server.app import build_app
from engine.server.config import ServerConfig
from engine.server.guard import serve_runner
from engine.server.keys import KEYRING
from engine.server.lane import Lane
from engine.store import ReplicaStore

# Every wait on the server is bounded by this, so that a hang fails the test instead of stalling the suite.
HANG_GUARD = 30


class ServedAsServeServes(TestServer):
    """aiohttp's test server with the runner `ridesync serve` uses (its guard, and handlers left running
    when their peer goes: aiohttp's test server cancels them, a path production never takes)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return serve_runner(self.app)


@dataclass
class Server:
    test_server: TestServer
    tmp: Path
    http: aiohttp.ClientSession

    async def close(self) -> None:
        if not self.http.closed:
            await self.http.close()
            await self.test_server.close()

    @property
    def url(self) -> str:
        return str(self.test_server.make_url("")).rstrip("/")

    @property
    def backend(self) -> Backend:
        backend = self.test_server.app[BACKEND].backend
        assert backend is not None
        return backend

    @property
    def ring(self) -> KeyRing:
        return self.test_server.app[KEYRING]

    def token(self, role: str, device: str, *, rides: list[str] | None = None, **kw: Any) -> str:
        return self.ring.issue(role, device, rides=rides, **kw)

    def holds_all_of(self, store: ReplicaStore, ride_id: str) -> bool:
        """True once the backend holds every change `store` has for the ride."""
        backend = self.backend.store
        for ref in store.ride_refs(ride_id):
            if not store.has_doc(ref.doc_id):
                continue
            if not backend.has_doc(ref.doc_id):
                return False
            theirs = {c.hash for c in backend.changes_since(ref.doc_id, [])}
            if any(c.hash not in theirs for c in store.changes_since(ref.doc_id, [])):
                return False
        return True

    def replica(self, role: Role, device: str) -> ReplicaStore:
        return ReplicaStore(self.tmp / f"replica-{device}", device_id=device, role=role)

    def client(self, token: str, store: ReplicaStore, ride_id: str) -> SyncClient:
        return SyncClient(self.url, token, store, ride_id)

    async def get(self, path: str, token: str | None) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.url + path, headers=headers) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body, dict(resp.headers)

    async def send(
        self, method: str, path: str, token: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.request(method, self.url + path, headers=headers, json=body) as resp:
            return resp.status, await resp.json(content_type=None), dict(resp.headers)


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[MakeServer]:
    started: list[Server] = []

    async def make(
        data: Path | None = None,
        extra_setup: tuple[Lane, ...] = (),
        push: RidePush | None = None,
        **config: Any,
    ) -> Server:
        defaults: dict[str, Any] = {"rate_per_s": 10_000.0, "burst": 10_000.0}
        cfg = BackendConfig(**{**defaults, **config})
        data = data if data is not None else tmp_path / f"server{len(started)}"
        # A new backend: its data dir gets signing keys on purpose (`ridesync serve --init`).
        server_config = ServerConfig(data_dir=data, port=0, init_keys=True)
        app = build_app(server_config, [live_lane(), make_setup(cfg, push), *extra_setup])
        ts = ServedAsServeServes(app, host="127.0.0.1", port=0)
        await ts.start_server()
        server = Server(ts, tmp_path, aiohttp.ClientSession())
        started.append(server)
        return server

    yield make
    for server in started:
        await server.close()


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server()
