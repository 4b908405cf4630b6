"""`GET /v1/rides` pages (engine/backend/README.md, the route table): rides in ride-id order, `limit` of
them the token reads, at most LIST_EXAMINED * limit looked at per request, `next` chaining to null; a bad
`limit` or `after` is a 400 that loads nothing.

Real SQLite: the rides are written to the backend's data dir, and the real application, started over it,
holds none in memory (each line of a page reads its ride back from the storage)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from engine.backend.http import LIST_EXAMINED
from engine.server.keys import REGISTRY
from engine.store.db import DB_NAME
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.stored_rides import seed_rides


def _metric(server: Server, name: str, **labels: str) -> float:
    value = server.test_server.app[REGISTRY].get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _pages(server: Server, token: str, limit: int) -> list[dict[str, Any]]:
    """Every page, following `next` until it is null."""
    pages: list[dict[str, Any]] = []
    query = f"?limit={limit}"
    while True:
        status, body, _ = await server.get(f"/v1/rides{query}", token)
        assert status == 200, body
        pages.append(body)
        if body["next"] is None:
            return pages
        assert len(pages) < 100, "next never reached null"
        query = f"?limit={limit}&after={body['next']}"


async def test_pages_cover_every_ride_once_in_order(make_server: MakeServer, tmp_path: Path) -> None:
    ids = seed_rides(tmp_path / "data", 23)
    server = await make_server(data=tmp_path / "data")
    token = server.token("app", "tablet-1")
    async with asyncio.timeout(HANG_GUARD):
        pages = await _pages(server, token, limit=5)
        status, whole, _ = await server.get("/v1/rides", token)
    assert [len(p["rides"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [r["ride_id"] for p in pages for r in p["rides"]] == ids
    assert [p["next"] for p in pages] == ["ride-0004", "ride-0009", "ride-0014", "ride-0019", None]
    line = pages[0]["rides"][0]
    assert set(line) == {"ride_id", "phase", "sync_state", "sync_reason", "updated"}
    assert line["phase"] == "pending"  # started by the backend itself: no bike document yet
    # The default page (200) holds all 23; nothing left after it.
    assert status == 200 and [r["ride_id"] for r in whole["rides"]] == ids and whole["next"] is None
    # Each line read its ride back and released it: the listing never holds the rides in memory.
    assert _metric(server, "ridesync_ride_loads_total") == 2 * len(ids)


async def test_a_scoped_token_gets_full_pages_of_its_rides_only(
    make_server: MakeServer, tmp_path: Path
) -> None:
    ids = seed_rides(tmp_path / "data", 30)
    mine = ["ride-0003", "ride-0004", "ride-0011", "ride-0012", "ride-0029"]
    server = await make_server(data=tmp_path / "data")
    async with asyncio.timeout(HANG_GUARD):
        pages = await _pages(server, server.token("app", "a", rides=mine), limit=2)
    assert [r["ride_id"] for p in pages for r in p["rides"]] == mine
    assert [len(p["rides"]) for p in pages] == [2, 2, 1]  # the limit counts rides the token reads
    assert [p["next"] for p in pages] == ["ride-0004", "ride-0012", None]
    assert len(ids) == 30
    # Only the token's rides were read back from the storage.
    assert _metric(server, "ridesync_ride_loads_total") == len(mine)


async def test_the_examined_bound_returns_next_early(make_server: MakeServer, tmp_path: Path) -> None:
    """A token that reads one ride among 100 does not make a request walk all 100: with limit 3 a page
    looks at 30 rides at most, and `next` says where to go on."""
    seed_rides(tmp_path / "data", 100)
    server = await make_server(data=tmp_path / "data")
    token = server.token("viewer", "v", rides=["ride-0095"])
    async with asyncio.timeout(HANG_GUARD):
        status, first, _ = await server.get("/v1/rides?limit=3", token)
        pages = await _pages(server, token, limit=3)
    assert LIST_EXAMINED * 3 == 30
    assert status == 200 and first == {"rides": [], "next": "ride-0029"}
    assert [p["next"] for p in pages] == ["ride-0029", "ride-0059", "ride-0089", None]
    assert [[r["ride_id"] for r in p["rides"]] for p in pages] == [[], [], [], ["ride-0095"]]
    assert _metric(server, "ridesync_ride_loads_total") == 1  # unreadable rides are never loaded


async def test_bad_limit_or_after_is_a_400_that_changes_nothing(
    make_server: MakeServer, tmp_path: Path
) -> None:
    seed_rides(tmp_path / "data", 3)
    server = await make_server(data=tmp_path / "data")
    token = server.token("app", "tablet-1")
    bad = {
        "limit=0": "bad_limit",
        "limit=1001": "bad_limit",
        "limit=-1": "bad_limit",
        "limit=%2B5": "bad_limit",  # "+5"
        "limit=%205": "bad_limit",  # " 5"
        "limit=5_0": "bad_limit",
        "limit=": "bad_limit",
        "limit=abc": "bad_limit",
        "limit=99999999999999999999999": "bad_limit",
        "after=": "bad_after",
        "after=ride%20one": "bad_after",
        "after=..%2Fetc": "bad_after",
        "after=" + "r" * 300: "bad_after",
        "limit=2&after=%00": "bad_after",
    }
    async with asyncio.timeout(HANG_GUARD):
        answers = {query: await server.get(f"/v1/rides?{query}", token) for query in bad}
        ok = await server.get("/v1/rides?limit=1000&after=ride-0000", token)
    for query, code in bad.items():
        status, body, _ = answers[query]
        assert (status, body["error"]) == (400, code), query
        assert body["detail"], query
        assert _metric(server, "ridesync_backend_http_requests_total", route="list", status="400") == len(bad)
    assert _metric(server, "ridesync_ride_loads_total") == 2  # only the good request loaded (two rides)
    assert server.backend.store.loaded_rides() == []
    assert ok[0] == 200 and [r["ride_id"] for r in ok[1]["rides"]] == ["ride-0001", "ride-0002"]


async def test_a_stored_row_that_is_no_ride_id_is_skipped_and_never_the_cursor(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """A damaged `rides` row (its id is no ride id) cannot be read nor passed back as `after`: the list
    leaves it out, and a page that stops on it gives the last real id as `next`."""
    ids = seed_rides(tmp_path / "data", 12)
    with sqlite3.connect(tmp_path / "data" / "backend" / DB_NAME) as conn:
        conn.execute("INSERT INTO rides VALUES ('ride-0008 x', 1.0, 'syncing', '', 1.0)")
    server = await make_server(data=tmp_path / "data")
    scoped = server.token("app", "a", rides=["ride-0011"])
    async with asyncio.timeout(HANG_GUARD):
        everything = await _pages(server, server.token("app", "tablet-1"), limit=1000)
        # limit 1: 10 ids examined, the tenth being the damaged one.
        pages = await _pages(server, scoped, limit=1)
    assert [r["ride_id"] for p in everything for r in p["rides"]] == ids
    assert [p["next"] for p in pages] == ["ride-0008", None]
    assert [[r["ride_id"] for r in p["rides"]] for p in pages] == [[], ["ride-0011"]]
