"""A ledger file that is not a ledger is an error naming the file, never a bare sqlite3 error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.events.idempotency import Ledger, LedgerUnreadable


@pytest.mark.parametrize(
    "body",
    [b"garbage, not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["garbage", "bad header"],
)
def test_a_ledger_that_is_not_a_database_names_its_file(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "idempotency.sqlite3"
    path.write_bytes(body)
    with pytest.raises(LedgerUnreadable, match=str(path)):
        Ledger(path)
    assert path.read_bytes() == body, "the damaged file is left as found"


def test_a_database_without_the_ledgers_table_shape_names_its_file(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "idempotency.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE idempotency (something TEXT)")
    db.close()
    with pytest.raises(LedgerUnreadable, match=str(path)):
        Ledger(path)


def test_a_ledger_in_a_missing_directory_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "idempotency.sqlite3"
    with pytest.raises(LedgerUnreadable, match=str(path)):
        Ledger(path)
    with Ledger(tmp_path / "ok.sqlite3") as ledger:
        assert ledger.path.exists()
