"""`GET /v1/rides/{id}/export?format=fit|tcx|csv`: the ride as a file (engine/export), for whoever may
read the ride (the same check as `GET /v1/rides/{id}`).

The ride's documents are read on the event loop (the store is not thread-safe); writing the file, a pure
function of that plain data, runs on a worker thread, one export at a time, so the loop keeps serving sync
and the live lane meanwhile (an hour-long ride takes 0.2-0.5 s of CPU as FIT on this machine).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from engine.auth.tokens import Claims
from engine.backend import auth
from engine.backend.http import _known, _ride_id, route
from engine.backend.service import Backend
from engine.backend.state import BackendState, ride_classes
from engine.export import FORMATS, ExportError, export, from_docs

_ONE_AT_A_TIME = web.AppKey("ridesync.export_lock", asyncio.Semaphore)


async def get_export(
    request: web.Request, state: BackendState, backend: Backend, claims: Claims
) -> web.Response:
    ride_id = _ride_id(request)
    auth.require_read(claims, ride_id, ride_classes(request.app, ride_id))
    fmt = request.query.get("format", "")
    spec = FORMATS.get(fmt)
    if spec is None:
        raise auth.RequestError(400, "bad_format", f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    _known(backend, ride_id)
    ride = from_docs(backend.store.ride_docs(ride_id))
    try:
        async with request.app[_ONE_AT_A_TIME]:
            body = await asyncio.to_thread(export, ride, fmt)
    except ExportError as exc:
        raise auth.RequestError(422, "not_exportable", str(exc)) from None
    # As for the view: nothing is handed out before what it reflects is committed.
    await backend.store.flushed()
    response = web.Response(body=body, headers={"Content-Disposition": _disposition(spec.filename(ride_id))})
    response.headers["Content-Type"] = spec.content_type
    response.headers["Cache-Control"] = "no-store"
    return response


def _disposition(filename: str) -> str:
    # Ride ids are restricted to a safe character set (engine/ride/schema.py: check_ride_id).
    return f'attachment; filename="{filename}"'


def add_export_routes(app: web.Application) -> None:
    app[_ONE_AT_A_TIME] = asyncio.Semaphore(1)
    app.router.add_get("/v1/rides/{ride_id}/export", route("export", get_export))
