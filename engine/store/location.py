"""Where the backend's durable store lives, as `ridesync serve --store` names it:

- `sqlite:PATH`: the embedded store, the SQLite file (and the idempotency ledger) in directory PATH; the
  default is the data dir's `backend/` (no `--store` at all);
- `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?...]` (or `postgres://`): PostgreSQL, shared by any
  number of backend nodes (engine/store/postgres/).

Checked while the command line is parsed; nothing here connects. Messages never repeat a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreLocationError(ValueError):
    """Not a store location this ridesync understands; the message says what is wanted."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    backend: str  # "sqlite" or "postgresql"
    path: Path | None = None
    url: str | None = None

    @property
    def display(self) -> str:
        """The location for logs and errors: the URL without its password."""
        if self.url is None:
            return f"sqlite:{self.path}"
        return redact(self.url)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_store(text: str) -> StoreLocation:
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise StoreLocationError(f"want sqlite:PATH or postgresql://..., got {text!r}")
    if scheme == "sqlite":
        if not rest:
            raise StoreLocationError("sqlite:PATH needs a directory path")
        return StoreLocation("sqlite", path=Path(rest))
    if scheme in POSTGRES_SCHEMES:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError as exc:
            raise StoreLocationError(f"not a PostgreSQL URL ({exc})") from None
        if not rest.startswith("//") or not (parts.hostname or "host=" in parts.query):
            raise StoreLocationError(
                f"a PostgreSQL URL needs a host: postgresql://USER@HOST[:PORT]/DATABASE, got {redact(text)!r}"
            )
        if parts.path in ("", "/"):
            raise StoreLocationError(f"the PostgreSQL URL names no database: {redact(text)!r}")
        return StoreLocation("postgresql", url=text)
    raise StoreLocationError(f"unknown store {scheme!r}: want sqlite:PATH or postgresql://...")
