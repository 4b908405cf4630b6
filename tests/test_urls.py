"""Backend URLs in one place (engine/urls.py): what `--backend` accepts and how it maps to the HTTP base
and the WebSocket URLs the sync client, the live publisher and the end post use."""

from __future__ import annotations

import pytest

from engine.device.connection import sync_url
from engine.live.publisher import class_ws_url
from engine.urls import BackendUrlError, check_backend_url, http_base, ws_url


@pytest.mark.parametrize(
    ("backend", "http", "ws"),
    [
        ("http://127.0.0.1:8750", "http://127.0.0.1:8750", "ws://127.0.0.1:8750/p"),
        ("https://h", "https://h", "wss://h/p"),
        ("ws://h:1/v1/sync", "http://h:1", "ws://h:1/p"),
        ("WSS://h:1", "https://h:1", "wss://h:1/p"),
        ("http://[::1]:8750/", "http://[::1]:8750", "ws://[::1]:8750/p"),
    ],
)
def test_one_mapping_for_every_client(backend: str, http: str, ws: str) -> None:
    assert http_base(backend) == http
    assert ws_url(backend, "/p") == ws


@pytest.mark.parametrize(
    ("backend", "why"),
    [
        ("127.0.0.1:8750", "no scheme"),
        ("localhost", "no scheme"),
        ("ftp://h:1", "scheme 'ftp'"),
        ("http://", "no host"),
        ("http://h:99999", "out of range"),
        ("http://h:x", "bad backend URL"),
        ("http://h:0", "port 0"),
    ],
)
def test_anything_else_is_refused_with_what_a_backend_url_looks_like(backend: str, why: str) -> None:
    with pytest.raises(BackendUrlError, match="http") as refused:
        check_backend_url(backend)
    assert why in str(refused.value)
    with pytest.raises(ValueError, match="http"):
        sync_url(backend)
    with pytest.raises(ValueError, match="http"):
        class_ws_url(backend, "c1")
