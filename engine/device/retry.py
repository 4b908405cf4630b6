"""Which failed HTTP calls the device client retries: aiohttp's exceptions mapped onto the pure retry policy
(engine/backoff.py), and a failed connection said in words for the log and the status line."""

from __future__ import annotations

import os
from datetime import datetime

import aiohttp

from engine.backoff import Decision, classify_status


def connection_error_text(exc: BaseException) -> str:
    """A connection failure in words (`cannot connect to 127.0.0.1:8750: connection refused`), not the
    repr of aiohttp's exception (`ClientConnectorError ... ssl:default [Connect call failed ...]`)."""

    def os_text(err: OSError) -> str:
        text = os.strerror(err.errno) if err.errno else (err.strerror or str(err) or type(err).__name__)
        return text[:1].lower() + text[1:]

    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {os_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        return os_text(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify_exception(exc: BaseException, now: datetime) -> Decision:
    """A failed call → retry decision. Connection-level failures (refused, reset, timed out, server went
    away mid-response) are retryable; an HTTP error status is classified by `classify_status`."""
    if isinstance(exc, aiohttp.ClientResponseError):
        headers = exc.headers
        retry_after = headers.get("Retry-After") if headers is not None else None
        return classify_status(exc.status, retry_after, now)
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return Decision(True, None, f"connection: {connection_error_text(exc)}")
    if isinstance(exc, (ConnectionError, TimeoutError, EOFError, OSError)):
        return Decision(True, None, f"connection: {connection_error_text(exc)}")
    return Decision(False, None, f"not retryable: {type(exc).__name__}")
