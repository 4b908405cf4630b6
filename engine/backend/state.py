"""What the backend's routes share on the aiohttp application (`app[BACKEND]`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.backend.config import BackendConfig
from engine.backend.metrics import BackendMetrics
from engine.backend.ratelimit import RateLimiter
from engine.backend.service import Backend
from engine.dashboard.directory import RIDES
from engine.server.keys import KEYRING


@dataclass
class BackendState:
    config: BackendConfig
    metrics: BackendMetrics
    limiter: RateLimiter
    # Opened by the application's cleanup context (startup), closed at cleanup.
    backend: Backend | None = None
    connections: set[web.WebSocketResponse] = field(default_factory=set)

    def require(self) -> Backend:
        if self.backend is None:
            raise web.HTTPServiceUnavailable(
                text="backend is starting or stopping", headers={"Retry-After": "1"}
            )
        return self.backend

    @staticmethod
    def keyring(request: web.Request) -> KeyRing:
        return request.app[KEYRING]


def ride_classes(app: web.Application, ride_id: str) -> frozenset[str]:
    """The class a ride is in (viewers read by class): the class its owner gave it, kept in the backend's
    store (set once), else the class it is registered in on the dashboard's directory."""
    state = app.get(BACKEND)
    if state is not None and state.backend is not None:
        owner = state.backend.store.ride_owner(ride_id)
        if owner is not None and owner.class_id is not None:
            return frozenset({owner.class_id})
    if RIDES not in app:
        return frozenset()
    entry = app[RIDES].ride(ride_id)
    return frozenset() if entry is None else frozenset({entry.class_id})


BACKEND = web.AppKey("ridesync.backend", BackendState)
