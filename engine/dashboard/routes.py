"""The dashboard's HTTP surface on the application `ridesync serve` runs (a lane: engine/server/lane.py).

Pages (plain HTML + JS + CSS from `static/`, no build step):
    GET /                       class picker; `/?class=C&token=T` goes straight to the class view
    GET /classes/{class}        the class view (tiles + leaderboard), `?token=` a viewer token
    GET /classes/{class}/results  every ride of the class with its totals (after the class, too)
    GET /rides/{ride_id}        a ride's page (heart-rate, power and cadence charts)
    GET /dashboard/static/{f}   the page assets
JSON the pages use besides the hub's (engine/live/README.md) and the ride endpoints (README.md here):
    GET /dashboard/v1/me                       the token's role, device and classes
    GET /dashboard/v1/classes/{class}/rides    device -> current ride of the class (directory.py)
    GET /dashboard/v1/classes/{class}/results  every ride of the class, oldest first, with rider names
    GET /dashboard/v1/rides/{ride_id}          that ride's class and device

Tokens travel in the URL (a browser cannot set headers on a WebSocket), so pages are sent with
`Referrer-Policy: no-referrer` and a strict Content-Security-Policy, and are never cached.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from engine.auth.tokens import Claims, TokenError, TokenScopeError, token_from_request
from engine.dashboard.directory import RIDES, RideDirectory, RideEntry
from engine.ids import valid_id
from engine.live.riders import Identity, RiderBook
from engine.server.keys import DATA_DIR, KEYRING

STATIC_DIR = Path(__file__).parent / "static"
ASSETS: dict[str, str] = {
    "index.html": "text/html",
    "ride.html": "text/html",
    "results.html": "text/html",
    "results.js": "text/javascript",
    "app.js": "text/javascript",
    "ride.js": "text/javascript",
    "common.js": "text/javascript",
    "chart.js": "text/javascript",
    "latency.js": "text/javascript",
    "style.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> web.Response:
    body = (STATIC_DIR / name).read_bytes()
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=SECURITY_HEADERS)


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=SECURITY_HEADERS)


def _claims(request: web.Request) -> Claims | web.Response:
    try:
        return request.app[KEYRING].verify(token_from_request(request.headers, request.query))
    except TokenError as exc:
        return _error(401, exc.code, str(exc))


async def index(request: web.Request) -> web.Response:
    return _asset("index.html")


async def class_page(request: web.Request) -> web.Response:
    if not valid_id(request.match_info["class_id"]):
        return _error(400, "bad_class", "class id must be a short id")
    return _asset("index.html")


async def results_page(request: web.Request) -> web.Response:
    if not valid_id(request.match_info["class_id"]):
        return _error(400, "bad_class", "class id must be a short id")
    return _asset("results.html")


async def ride_page(request: web.Request) -> web.Response:
    if not valid_id(request.match_info["ride_id"]):
        return _error(400, "bad_ride", "ride id must be a short id")
    return _asset("ride.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        return _error(404, "not_found", "no such asset")
    return _asset(name)


async def me(request: web.Request) -> web.Response:
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    return web.json_response(
        {
            "role": claims.role.value,
            "device": claims.device,
            "classes": sorted(claims.classes),
            "exp": claims.exp,
        },
        headers=SECURITY_HEADERS,
    )


async def class_rides(request: web.Request) -> web.Response:
    class_id = request.match_info["class_id"]
    if not valid_id(class_id):
        return _error(400, "bad_class", "class id must be a short id")
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    try:
        claims.require_subscribe(class_id)
    except TokenScopeError as exc:
        return _error(403, exc.code, str(exc))
    rides = request.app[RIDES].class_rides(class_id)
    visible = {}
    for device, entry in rides.items():
        if claims.rides is None or entry.ride_id in claims.rides:
            visible[device] = _entry_json(request.app, entry)
    return web.json_response(
        {"class": class_id, "started": _book(request.app).class_started(class_id), "rides": visible},
        headers=SECURITY_HEADERS,
    )


def _book(app: web.Application) -> RiderBook:
    from engine.live.routes import HUB

    return app[HUB].riders if HUB in app else RiderBook()


def _entry_json(app: web.Application, entry: RideEntry) -> dict[str, object]:
    out = entry.to_json()
    ident = _book(app).identity(entry.class_id, entry.device) or Identity()
    if out["name"] is None:
        out["name"] = ident.name
    out["max_hr"] = ident.max_hr
    out["bike"] = ident.bike
    return out


def _stored_rides(app: web.Application, class_id: str) -> list[RideEntry]:
    """Rides the backend's store puts in the class (their owner gave it): found even when the directory
    never heard of them (a data dir from before the directory was kept on disk)."""
    from engine.backend.state import BACKEND

    state = app.get(BACKEND)
    if state is None or state.backend is None:
        return []
    return [
        RideEntry(owner.ride_id, class_id, owner.device, None, owner.bound)
        for owner in state.backend.store.class_owners(class_id)
    ]


async def class_results(request: web.Request) -> web.Response:
    """Every ride of the class (not only each rider's current one), oldest first: the results page reads
    each ride's totals from GET /v1/rides/{id}."""
    class_id = request.match_info["class_id"]
    if not valid_id(class_id):
        return _error(400, "bad_class", "class id must be a short id")
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    try:
        claims.require_subscribe(class_id)
    except TokenScopeError as exc:
        return _error(403, exc.code, str(exc))
    entries = {e.ride_id: e for e in _stored_rides(request.app, class_id)}
    entries.update({e.ride_id: e for e in request.app[RIDES].class_history(class_id)})
    rows = [
        _entry_json(request.app, e)
        for e in sorted(entries.values(), key=lambda e: (e.registered, e.ride_id))
        if claims.rides is None or e.ride_id in claims.rides
    ]
    return web.json_response(
        {"class": class_id, "started": _book(request.app).class_started(class_id), "rides": rows},
        headers=SECURITY_HEADERS,
    )


async def ride_entry(request: web.Request) -> web.Response:
    ride_id = request.match_info["ride_id"]
    if not valid_id(ride_id):
        return _error(400, "bad_ride", "ride id must be a short id")
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    entry = request.app[RIDES].ride(ride_id)
    # An unknown ride and a ride outside the token's scope look alike: ids are not enumerable.
    if entry is None or entry.class_id not in claims.classes:
        return _error(404, "unknown_ride", f"no ride {ride_id!r} in this token's classes")
    try:
        claims.require_ride(ride_id)
    except TokenScopeError:
        return _error(404, "unknown_ride", f"no ride {ride_id!r} in this token's classes")
    return web.json_response(_entry_json(request.app, entry), headers=SECURITY_HEADERS)


def setup_dashboard(app: web.Application) -> None:
    """Register the dashboard pages and their JSON on the backend application."""
    if RIDES not in app:
        # Kept in the data dir, so that the class's rides can still be found after a restart.
        book = _book(app)

        def name_of(class_id: str, device: str) -> str | None:
            ident = book.identity(class_id, device)
            return None if ident is None else ident.name

        # A damaged file raises DirectoryCorrupt (a StoreCorrupt naming it): serve and demo report it.
        directory = RideDirectory.in_dir(app[DATA_DIR], name_of) if DATA_DIR in app else RideDirectory()
        app[RIDES] = directory
        book.subscribe(lambda class_id, device, ident: directory.rename(class_id, device, ident.name))

        async def close_directory(_: web.Application) -> None:
            directory.close()

        app.on_cleanup.append(close_directory)
    app.router.add_get("/", index)
    app.router.add_get("/classes/{class_id}", class_page)
    app.router.add_get("/classes/{class_id}/results", results_page)
    app.router.add_get("/rides/{ride_id}", ride_page)
    app.router.add_get("/dashboard/static/{name}", static)
    app.router.add_get("/dashboard/v1/me", me)
    app.router.add_get("/dashboard/v1/classes/{class_id}/rides", class_rides)
    app.router.add_get("/dashboard/v1/classes/{class_id}/results", class_results)
    app.router.add_get("/dashboard/v1/rides/{ride_id}", ride_entry)
