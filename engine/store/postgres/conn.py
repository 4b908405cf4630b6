"""Connections to PostgreSQL and the storage's errors, for the storage, its compactor and the ledger."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import errors

from engine.store.db import StorageFull, StoreError

_CONNECT_TIMEOUT_S = 10


class StorageUnavailable(StoreError):
    """PostgreSQL cannot be reached (or dropped the connection): nothing of this write was committed."""


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection to `url`; StorageUnavailable (with the reason, never the password) if it fails."""
    try:
        return psycopg.connect(url, connect_timeout=_CONNECT_TIMEOUT_S, application_name="ridesync")
    except psycopg.Error as exc:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def translate(exc: psycopg.Error) -> StoreError:
    if isinstance(exc, errors.DiskFull):
        return StorageFull(f"PostgreSQL: {reason(exc)}")
    if isinstance(exc, psycopg.OperationalError):
        return StorageUnavailable(f"PostgreSQL: {reason(exc)}; not committed")
    return StoreError(f"PostgreSQL: {reason(exc)}; not committed")


def record_key(data: bytes) -> bytes:
    """The row key of a record that is not plain change chunks (a saved document, opaque bytes)."""
    return hashlib.sha256(b"ridesync-record\x00" + data).digest()
