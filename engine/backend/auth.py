"""Who is asking, and may they: token verification, per-device rate limits and ride scope for the
backend's HTTP routes and the sync upgrade. Errors are JSON `{"error": code, "detail": text}`."""

from __future__ import annotations

from aiohttp import web

from engine.auth.tokens import Claims, KeyRing, TokenError, token_from_request
from engine.backend.metrics import BackendMetrics
from engine.backend.ratelimit import RateLimiter
from engine.roles import Role

WRITERS = frozenset({Role.BIKE, Role.APP, Role.BACKEND})


class RequestError(Exception):
    """Answer the request with `status` and a JSON error body."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        # The reason in headers as well: a client whose WebSocket upgrade is refused sees headers only.
        detail = self.detail.encode("ascii", "backslashreplace").decode()
        detail = " ".join(detail.split())[:300]
        headers = {"X-Ridesync-Error": self.code, "X-Ridesync-Error-Detail": detail, **self.headers}
        return web.json_response(
            {"error": self.code, "detail": self.detail}, status=self.status, headers=headers
        )


def authenticate(
    request: web.Request, limiter: RateLimiter, metrics: BackendMetrics, kind: str, ring: KeyRing
) -> Claims:
    """The verified claims of the request's token (Bearer header or `token` query parameter), after the
    device's rate limit. Raises RequestError (401, 429)."""
    try:
        claims = ring.verify(token_from_request(request.headers, request.query))
    except TokenError as exc:
        metrics.auth_failures.labels(exc.code).inc()
        raise RequestError(401, exc.code, str(exc)) from None
    retry = limiter.check(claims.device)
    if retry:
        metrics.rate_limited.labels(kind).inc()
        raise RequestError(
            429,
            "rate_limited",
            f"device {claims.device} is over its rate of {limiter.rate:g}/s (burst {limiter.burst:g})",
            {"Retry-After": str(retry)},
        )
    return claims


def may_read(claims: Claims, ride_id: str, ride_classes: frozenset[str]) -> bool:
    """A token with `rides` reads only those. Without: writers (bike, app, backend) read any ride; a viewer
    reads the rides registered in its classes (`ride_classes`: the classes the ride is registered in)."""
    if claims.rides is not None:
        return ride_id in claims.rides
    if claims.role in WRITERS:
        return True
    return bool(claims.classes & ride_classes)


def require_read(claims: Claims, ride_id: str, ride_classes: frozenset[str]) -> None:
    if not may_read(claims, ride_id, ride_classes):
        raise RequestError(403, "token_wrong_scope", f"token does not allow ride {ride_id!r}")


def require_writer(claims: Claims, ride_id: str, roles: frozenset[Role] = WRITERS) -> None:
    if claims.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise RequestError(403, "role_not_allowed", f"role {claims.role.value!r} may not do this ({allowed})")
    if claims.rides is not None and ride_id not in claims.rides:
        raise RequestError(403, "token_wrong_scope", f"token does not allow ride {ride_id!r}")
