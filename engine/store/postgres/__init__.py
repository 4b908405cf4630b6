"""The storage port on PostgreSQL: `ridesync serve --store postgresql://...`, any number of backend nodes
over one database (engine/store/README.md, "PostgreSQL"). Needs the `postgres` extra (psycopg 3)."""

from engine.store.postgres.conn import StorageUnavailable, connect
from engine.store.postgres.schema import LATEST, SchemaTooNew, migrate
from engine.store.postgres.storage import PostgresStorage, PostgresTx

__all__ = [
    "LATEST",
    "PostgresStorage",
    "PostgresTx",
    "SchemaTooNew",
    "StorageUnavailable",
    "connect",
    "migrate",
]
