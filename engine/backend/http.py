"""The ride HTTP API (README.md here): ride views, the idempotent end event, shared metadata, series."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.auth.tokens import Claims
from engine.backend import auth, owners
from engine.backend.series import DEFAULT_MAX_POINTS, ride_series
from engine.backend.service import Backend, repo_id
from engine.backend.state import BACKEND, BackendState, ride_classes
from engine.crdt import CrdtDoc, new_actor_id
from engine.events import idempotency as idem
from engine.ids import valid_id
from engine.ride import documents, policy, schema
from engine.ride.model import SharedDoc
from engine.store import StoreError

log = logging.getLogger(__name__)

JSON = "application/json"
Handler = Callable[[web.Request, BackendState, Backend, Claims], Awaitable[web.StreamResponse]]
TARGETS = {"power_w", "cadence", "resistance", "hr_zone"}


def route(name: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authentication, rate limit, typed errors and metrics around a ride handler."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[BACKEND]
        try:
            backend = state.require()
            claims = auth.authenticate(request, state.limiter, state.metrics, "http", state.keyring(request))
            response = await handler(request, state, backend, claims)
        except auth.RequestError as exc:
            response = exc.response()
        except idem.IdempotencyError as exc:
            code = "idempotency_conflict" if isinstance(exc, idem.IdempotencyConflict) else "idempotency"
            response = auth.RequestError(exc.http_status, code, str(exc)).response()
        except StoreError as exc:
            # The store could not commit (PostgreSQL away, writer stopped): nothing was acknowledged, and
            # devices retry a 503 as they retry an unreachable backend.
            log.warning("store unavailable; request not committed", extra={"route": name, "error": str(exc)})
            response = auth.RequestError(
                503, "store_unavailable", "the store could not commit; retry"
            ).response()
        state.metrics.http.labels(name, str(response.status)).inc()
        return response

    return wrapped


def _ride_id(request: web.Request) -> str:
    ride_id = request.match_info["ride_id"]
    try:
        return schema.check_ride_id(ride_id)
    except ValueError as exc:
        raise auth.RequestError(400, "bad_ride", str(exc)) from None


def _known(backend: Backend, ride_id: str) -> None:
    backend.fresh(ride_id)
    if not backend.has_ride(ride_id):
        raise auth.RequestError(404, "unknown_ride", f"this backend holds no ride {ride_id!r}")


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise auth.RequestError(413, "body_too_large", f"body over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise auth.RequestError(413, "body_too_large", f"body over {limit} bytes")
    return body


def _json_object(body: bytes, *, empty_ok: bool) -> dict[str, Any]:
    if not body.strip():
        if empty_ok:
            return {}
        raise auth.RequestError(400, "bad_body", "a JSON object is required")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise auth.RequestError(400, "bad_body", "body is not JSON") from None
    if not isinstance(obj, dict):
        raise auth.RequestError(400, "bad_body", "body must be a JSON object")
    return obj


def _stored(response: idem.StoredResponse, replayed: bool) -> web.Response:
    return web.Response(
        status=response.status,
        body=response.body,
        content_type=response.content_type,
        headers={"Idempotent-Replayed": "true" if replayed else "false"},
    )


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# -- GET ------------------------------------------------------------------------------------------------


def ride_json(backend: Backend, ride_id: str) -> dict[str, Any]:
    out = backend.store.ride_json(ride_id)
    sync = out["sync"]
    # Both spellings: the dashboard reads the flat ones (engine/dashboard/README.md).
    out["sync_state"] = sync["state"]
    out["sync_reason"] = sync["reason"] or None
    out["connected_devices"] = backend.connected_devices(ride_id)
    return out


async def get_ride(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    ride_id = _ride_id(request)
    auth.require_read(claims, ride_id, ride_classes(request.app, ride_id))
    _known(backend, ride_id)
    out = ride_json(backend, ride_id)
    # The view (e.g. `reconciled`) is shown only once everything it reflects is committed.
    await backend.store.flushed()
    return web.json_response(out)


# A page of `GET /v1/rides`: each line may read a ride back from the storage (milliseconds each), so one
# request does bounded work however many rides are stored. LIST_EXAMINED bounds the rides looked at per
# page too, so a token that reads few rides among many cannot make one request walk them all.
LIST_LIMIT = 200
LIST_LIMIT_MAX = 1000
LIST_EXAMINED = 10


def _list_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return LIST_LIMIT
    # Digits only: int() would also take " 5", "+5" and "5_0".
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= LIST_LIMIT_MAX:
        raise auth.RequestError(400, "bad_limit", f"limit must be an integer from 1 to {LIST_LIMIT_MAX}")
    return int(raw)


def _list_after(request: web.Request) -> str | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    try:
        return schema.check_ride_id(raw)
    except ValueError as exc:
        raise auth.RequestError(400, "bad_after", f"after must be a ride id: {exc}") from None


async def list_rides(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    """Rides the token reads, in ride-id order after `after`: up to `limit` of them, having examined at
    most LIST_EXAMINED * limit rides; `next` continues (null once nothing is left)."""
    limit, after = _list_limit(request), _list_after(request)
    budget = LIST_EXAMINED * limit
    # One id past the budget: whether anything is left after the rides this page may examine.
    ids = backend.store.rides_after(after, budget + 1)
    rides: list[dict[str, Any]] = []
    end, cursor = 0, None
    while end < len(ids) and len(rides) < limit and end < budget:
        ride_id = ids[end]
        end += 1
        # A stored row whose id is no ride id (a damaged row; the store reports it at open) cannot be
        # read, nor be passed back as `after`: skipped, and the cursor stays on the last real id.
        if not valid_id(ride_id):
            continue
        cursor = ride_id
        if not auth.may_read(claims, ride_id, ride_classes(request.app, ride_id)):
            continue
        with backend.working.peek(ride_id):
            status = backend.store.sync_status(ride_id)
            phase = backend.store.phase(ride_id)
        rides.append(
            {
                "ride_id": ride_id,
                "phase": phase.label,
                "sync_state": status.state.value,
                "sync_reason": status.reason or None,
                "updated": status.updated,
            }
        )
        # A line may have read the ride back from the storage: let other requests, sync messages and
        # live frames run between lines rather than after the whole page.
        await asyncio.sleep(0)
    more = end < len(ids)
    return web.json_response({"rides": rides, "next": (cursor or ids[end - 1]) if more else None})


async def get_docs(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    """The ride's automerge-repo document URLs, for stock clients (they cannot derive our ids)."""
    ride_id = _ride_id(request)
    auth.require_read(claims, ride_id, ride_classes(request.app, ride_id))
    _known(backend, ride_id)
    docs = [
        {**ref.to_json(), "url": f"automerge:{repo_id(ref)}", "document_id": repo_id(ref)}
        for ref in backend.store.ride_refs(ride_id)
        if backend.store.has_doc(ref.doc_id)
    ]
    return web.json_response({"ride_id": ride_id, "sync_path": f"/v1/sync?ride={ride_id}", "docs": docs})


async def get_series(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    ride_id = _ride_id(request)
    auth.require_read(claims, ride_id, ride_classes(request.app, ride_id))
    _known(backend, ride_id)
    try:
        max_points = int(request.query.get("max_points", DEFAULT_MAX_POINTS))
    except ValueError:
        raise auth.RequestError(400, "bad_max_points", "max_points must be an integer") from None
    if not 10 <= max_points <= 100_000:
        raise auth.RequestError(400, "bad_max_points", "max_points must be 10..100000")
    return web.json_response(ride_series(backend.store.ride_docs(ride_id), max_points))


# -- POST end -------------------------------------------------------------------------------------------


async def end_ride(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    """The ride ended (bike or app). Two idempotency layers (engine/events/idempotency.py): the device's
    own `Idempotency-Key` (same body replays, another body is 422), inside it the ride's one logical end
    event, so the bike's and the app's ends are one event: `end_events_counted` stays 1. Only a ride's
    writers may end it (its owning bike, an app it admits, the backend: 403 `not_ride_owner`), and only a
    ride that exists (404 `unknown_ride`)."""
    ride_id = _ride_id(request)
    auth.require_writer(claims, ride_id)
    _known(backend, ride_id)
    owners.require_owner(backend, claims, ride_id)
    try:
        key = idem.parse_idempotency_header(request.headers.get(idem.IDEMPOTENCY_HEADER))
    except idem.InvalidKey as exc:
        raise auth.RequestError(400, "idempotency_key_required", str(exc)) from None
    body = await _body(request, backend.config.max_body_bytes)
    payload = _json_object(body, empty_ok=True)
    t = payload.get("t")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)):
        raise auth.RequestError(400, "bad_body", "t must be a number (unix seconds)")
    role = claims.role

    async def logical() -> idem.StoredResponse:
        backend.has_ride(ride_id)  # read back if released from memory while this request waited
        end_key = schema.end_key(ride_id)
        first = backend.store.record_end_event(ride_id, end_key, claims.device, role.value, t=t)
        backend.backend_doc_changed(ride_id)
        backend.ride_changed(ride_id, claims.device)
        log.info("ride end recorded", extra={"ride_id": ride_id, "device": claims.device, "first": first})
        answer = {"ride_id": ride_id, "ended": True, "end_key": end_key, "reported_by": claims.device}
        # Committed before the ledger stores (and anyone receives) the answer.
        await backend.store.flushed()
        return idem.StoredResponse(200, _dump(answer), JSON)

    async def per_device() -> idem.StoredResponse:
        scope, event = idem.ride_end_event(ride_id)
        result = await backend.ledger.run_async(scope, event, b"", logical, match_body=False)
        backend.metrics.end_events.labels("counted" if not result.replayed else "same_event").inc()
        return result.response

    fp = idem.fingerprint("POST", request.path, body)
    try:
        result = await backend.ledger.run_async(idem.device_scope(claims.device), key, fp, per_device)
    except idem.IdempotencyConflict:
        backend.metrics.end_events.labels("conflict").inc()
        raise
    if result.replayed:
        backend.metrics.end_events.labels("replayed").inc()
    return _stored(result.response, result.replayed)


# -- PUT meta -------------------------------------------------------------------------------------------


def _meta_fields(payload: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in payload.items():
        if name == "targets":
            if not isinstance(value, dict):
                raise auth.RequestError(422, "bad_meta", "targets must be an object")
            for target, v in value.items():
                if target not in TARGETS:
                    raise auth.RequestError(422, "bad_meta", f"unknown target {target!r}")
                fields[f"target.{target}"] = v
        elif name in schema.SHARED_FIELDS:
            fields[name] = value
        else:
            raise auth.RequestError(
                422, "bad_meta", f"unknown field {name!r} (title, notes, rating, targets)"
            )
    if not fields:
        raise auth.RequestError(422, "bad_meta", "nothing to set")
    return fields


async def put_meta(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    """Title, notes, rating and targets into the shared document, as edits by the requesting device (the
    policy ranks them by its role). A value equal to the current one is not written again, so a repeated
    PUT changes nothing. An `Idempotency-Key` is optional here. As for the end: the ride must exist (404)
    and be the token's to write (403 `not_ride_owner`). Once the ride is finalized, only title, notes and
    rating may change (`policy.may_edit`; 409 `ride_finalized` for targets, and nothing is written)."""
    ride_id = _ride_id(request)
    auth.require_writer(claims, ride_id)
    _known(backend, ride_id)
    owners.require_owner(backend, claims, ride_id)
    body = await _body(request, backend.config.max_body_bytes)
    fields = _meta_fields(_json_object(body, empty_ok=False))
    role = claims.role
    # Validate every value first, on a scratch document, so a bad field writes nothing.
    scratch = CrdtDoc.new(new_actor_id("validate"))
    for name, value in fields.items():
        try:
            documents.edit_shared(
                scratch, name, value, t=0.0, device=claims.device, role=role.value, seen=None
            )
        except (ValueError, TypeError) as exc:
            raise auth.RequestError(422, "bad_meta", str(exc)) from None

    async def write() -> idem.StoredResponse:
        backend.has_ride(ride_id)  # read back if released from memory while this request waited
        store = backend.store
        phase = store.phase(ride_id)
        frozen = sorted(name for name in fields if not policy.may_edit(name, role, phase))
        if frozen:
            open_fields = ", ".join(sorted(policy.EDITABLE_AFTER_FINALIZED))
            raise auth.RequestError(
                409,
                "ride_finalized",
                f"ride {ride_id} is finalized: {', '.join(frozen)} can no longer change "
                f"(only {open_fields} can)",
            )
        ref = schema.shared_ref(ride_id)
        shared = store.ensure_doc(ref)
        documents.init_doc(shared, ref)
        decoded = store.ride_docs(ride_id).shared
        edits = decoded.edits if isinstance(decoded, SharedDoc) else ()
        current, _ = policy.resolve_shared(edits)
        written = []
        for name, value in fields.items():
            if name in current and current[name] == value and type(current[name]) is type(value):
                continue
            documents.edit_shared(
                shared,
                name,
                value,
                t=time.time(),
                device=claims.device,
                role=role.value,
                seen=policy.current_edit_key(edits, name),
            )
            written.append(name)
        store.persist(ref.doc_id)
        if written:
            backend.ride_changed(ride_id, claims.device)
            backend.broadcast(repo_id(ref))
        shared_now = store.view(ride_id).shared
        await store.flushed()
        return idem.StoredResponse(
            200, _dump({"ride_id": ride_id, "written": written, "shared": shared_now}), JSON
        )

    header = request.headers.get(idem.IDEMPOTENCY_HEADER)
    if header is None:
        return _stored(await write(), False)
    try:
        key = idem.parse_idempotency_header(header)
    except idem.InvalidKey as exc:
        raise auth.RequestError(400, "bad_idempotency_key", str(exc)) from None
    fp = idem.fingerprint("PUT", request.path, body)
    result = await backend.ledger.run_async(idem.device_scope(claims.device), key, fp, write)
    return _stored(result.response, result.replayed)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rides", route("list", list_rides))
    app.router.add_get("/v1/rides/{ride_id}", route("ride", get_ride))
    app.router.add_get("/v1/rides/{ride_id}/docs", route("docs", get_docs))
    app.router.add_get("/v1/rides/{ride_id}/series", route("series", get_series))
    app.router.add_post("/v1/rides/{ride_id}/end", route("end", end_ride))
    app.router.add_put("/v1/rides/{ride_id}/meta", route("meta", put_meta))
