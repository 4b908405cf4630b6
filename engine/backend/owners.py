"""Ride owners at the edges: the sync upgrade and the HTTP writes (README.md, "Ride owners").

The rule itself is `Backend.write_refusal` (service.py); the binding is kept in the backend's store
(`ReplicaStore.bind_ride_owner`). Here: the 403 `not_ride_owner` refusals, binding an unowned ride to the
bike whose sync connection opens it, and registering that ride in its class on the dashboard's directory.
"""

from __future__ import annotations

import logging

from aiohttp import web

from engine.auth.tokens import Claims
from engine.auth.tokens import Role as TokenRole
from engine.backend.auth import RequestError
from engine.backend.service import Backend
from engine.dashboard.directory import RIDES
from engine.store import StoreError

log = logging.getLogger(__name__)

NOT_RIDE_OWNER = "not_ride_owner"


def refuse(backend: Backend, claims: Claims, ride_id: str, reason: str, where: str) -> RequestError:
    """The 403 for a token that may not write the ride; counted and logged (a stranger's attempt is worth
    knowing about)."""
    backend.metrics.auth_failures.labels(NOT_RIDE_OWNER).inc()
    log.warning(
        "write refused: not the ride's owner",
        extra={
            "ride_id": ride_id,
            "device": claims.device,
            "role": claims.role.value,
            "where": where,
            "reason": reason,
        },
    )
    return RequestError(403, NOT_RIDE_OWNER, reason)


def require_owner(backend: Backend, claims: Claims, ride_id: str) -> None:
    """An HTTP write (end, meta) to a ride the token may not write: 403 `not_ride_owner`."""
    reason = backend.write_refusal(claims, ride_id)
    if reason is not None:
        raise refuse(backend, claims, ride_id, reason, "http")


def admit_sync(request: web.Request, backend: Backend, claims: Claims, rides: frozenset[str]) -> None:
    """Before a sync connection opens, for the rides it names (`?ride=`).

    Raises RequestError 403 `not_ride_owner` when a bike or an app may not write one of them; nothing is
    bound then. An app may connect to a ride nobody has started yet: it can create nothing there, and
    writes once the ride's bike has started it and admits it. Viewers only read (the gate refuses their
    writes). A bike starts every unowned ride it names (`Backend.start_ride`) and, for a one-ride
    connection, gives the ride its class (`?class=C` among the token's classes, else the token's only
    class) if it has none yet; the ride is then registered in its class, the one set first, on the
    dashboard's directory. Runs without yielding, so two bikes opening one new ride cannot both own it.
    """
    for ride in sorted(rides):
        try:
            backend.fresh(ride)  # another node may have started it, or changed it since this node looked
        except StoreError as exc:
            # The shared database is away: nothing can be served or acknowledged; the device retries.
            log.warning("store unavailable at a sync upgrade", extra={"ride_id": ride, "error": str(exc)})
            raise RequestError(503, "store_unavailable", "the store cannot be read; retry") from None
    if claims.role is TokenRole.VIEWER:
        return
    for ride in sorted(rides):
        reason = backend.write_refusal(claims, ride, starting=True)
        if reason is None:
            continue
        if claims.role is TokenRole.APP and backend.owner(ride) is None:
            continue
        raise refuse(backend, claims, ride, reason, "sync")
    if claims.role is not TokenRole.BIKE:
        return
    class_id = _wanted_class(request, claims) if len(rides) == 1 else None
    for ride in sorted(rides):
        owner = backend.start_ride(claims, ride, class_id)
        if owner.device != claims.device:  # another node bound it in between: as if it had been first
            raise refuse(backend, claims, ride, f"ride {ride} belongs to bike {owner.device}", "sync")
        if len(rides) == 1 and owner.class_id is not None and RIDES in request.app:
            request.app[RIDES].register(owner.class_id, claims.device, ride)


def _wanted_class(request: web.Request, claims: Claims) -> str | None:
    wanted = request.query.get("class")
    if wanted is not None:
        return wanted if wanted in claims.classes else None
    return next(iter(claims.classes)) if len(claims.classes) == 1 else None
