"""Backend URLs: the one place a `--backend` URL is checked and mapped to the HTTP base and the WebSocket
URLs the clients open (the sync endpoint, a class's live lane).

A backend URL is `http://`, `https://`, `ws://` or `wss://` with a host (`http://127.0.0.1:8750`); http and
ws name the same server, as do https and wss.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("http", "https", "ws", "wss")
_TO_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_TO_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class BackendUrlError(ValueError):
    """Not a backend URL; the message says what one looks like."""


def check_backend_url(url: str) -> str:
    """`url` unchanged if it is a backend URL (scheme, host, a valid port), else BackendUrlError."""
    hint = "want http(s):// or ws(s)://HOST[:PORT], e.g. http://127.0.0.1:8750"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise BackendUrlError(f"bad backend URL {url!r} ({exc}); {hint}") from None
    if parts.scheme.lower() not in SCHEMES:
        what = f"scheme {parts.scheme!r}" if parts.scheme and parts.netloc else "no scheme"
        raise BackendUrlError(f"bad backend URL {url!r}: {what}; {hint}")
    if not parts.hostname:
        raise BackendUrlError(f"bad backend URL {url!r}: no host; {hint}")
    if port == 0:
        raise BackendUrlError(f"bad backend URL {url!r}: port 0; {hint}")
    return url


def http_base(backend: str) -> str:
    """`ws://h:1/v1/sync` or `http://h:1` → `http://h:1` (the HTTP API's base)."""
    parts = urlsplit(check_backend_url(backend))
    return urlunsplit((_TO_HTTP[parts.scheme.lower()], parts.netloc, "", "", ""))


def ws_url(backend: str, path: str, query: str = "") -> str:
    """`http://h:1` → `ws://h:1{path}?{query}` (https → wss)."""
    parts = urlsplit(check_backend_url(backend))
    return urlunsplit((_TO_WS[parts.scheme.lower()], parts.netloc, path, query, ""))
