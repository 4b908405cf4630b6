from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.events import idempotency as idem
from engine.events.idempotency import Ledger, StoredResponse, fingerprint
from tests.events.race_worker import Race, contend

OK = StoredResponse(200, b'{"phase":"ended"}', "application/json")


class Counter:
    def __init__(self, response: StoredResponse = OK) -> None:
        self.calls = 0
        self.response = response

    def __call__(self) -> StoredResponse:
        self.calls += 1
        return self.response


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "events.db")


def test_same_key_and_body_replays(ledger: Ledger) -> None:
    handler = Counter()
    first = ledger.run("device:bike", "k1", fingerprint("POST", "/end", b"{}"), handler)
    second = ledger.run("device:bike", "k1", fingerprint("POST", "/end", b"{}"), handler)
    assert first == idem.Result(OK, replayed=False)
    assert second == idem.Result(OK, replayed=True)
    assert handler.calls == 1


def test_same_key_other_body_is_a_conflict(ledger: Ledger) -> None:
    handler = Counter()
    ledger.run("device:bike", "k1", fingerprint(b"a"), handler)
    with pytest.raises(idem.IdempotencyConflict) as info:
        ledger.run("device:bike", "k1", fingerprint(b"b"), handler)
    assert info.value.http_status == 422
    assert handler.calls == 1
    assert ledger.lookup("device:bike", "k1") == OK


def test_scopes_are_independent(ledger: Ledger) -> None:
    handler = Counter()
    ledger.run("device:bike", "k1", fingerprint(b"a"), handler)
    ledger.run("device:app", "k1", fingerprint(b"b"), handler)
    assert handler.calls == 2


def test_ride_end_from_bike_and_app_counts_once(ledger: Ledger) -> None:
    ends: list[str] = []

    def end_ride(device: str, body: bytes) -> idem.Result:
        key = idem.ride_end_idempotency_key("ride-9")

        def handler() -> StoredResponse:
            scope, logical = idem.ride_end_event("ride-9")

            def apply() -> StoredResponse:
                ends.append(device)
                return StoredResponse(200, f"ended by {device}".encode(), "text/plain")

            return ledger.run(scope, logical, fingerprint(body), apply, match_body=False).response

        return ledger.run(idem.device_scope(device), key, fingerprint(body), handler)

    bike = end_ride("bike", b'{"at": 1200}')
    app = end_ride("app", b'{"at": 1080}')
    bike_retry = end_ride("bike", b'{"at": 1200}')
    assert ends == ["bike"]
    assert bike.response == app.response == bike_retry.response
    assert bike_retry.replayed
    # Both devices compute the same header without talking to each other.
    assert idem.ride_end_idempotency_key("ride-9") == idem.ride_end_idempotency_key("ride-9")
    assert idem.ride_end_idempotency_key("ride-9") != idem.ride_end_idempotency_key("ride-10")


def test_failed_handler_releases_the_key(ledger: Ledger) -> None:
    def boom() -> StoredResponse:
        raise RuntimeError("backend hiccup")

    with pytest.raises(RuntimeError):
        ledger.run("s", "k", fingerprint(b"x"), boom)
    assert ledger.lookup("s", "k") is None
    handler = Counter()
    assert not ledger.run("s", "k", fingerprint(b"x"), handler).replayed
    assert handler.calls == 1


def test_in_progress_then_timeout(ledger: Ledger) -> None:
    outcome = ledger.begin("s", "k", fingerprint(b"x"))
    assert isinstance(outcome, idem.Execute)
    assert isinstance(ledger.begin("s", "k", fingerprint(b"x")), idem.InProgress)
    # A different body is a conflict even while the first is still running.
    assert isinstance(ledger.begin("s", "k", fingerprint(b"y")), idem.Conflict)
    with pytest.raises(idem.StillInProgress) as info:
        ledger.run("s", "k", fingerprint(b"x"), Counter(), wait_s=0)
    assert info.value.http_status == 409


def test_expired_claim_is_taken_over_and_late_owner_gets_winner(tmp_path: Path) -> None:
    now = [1000.0]
    ledger = Ledger(tmp_path / "e.db", lease_s=60, clock=lambda: now[0])
    crashed = ledger.begin("s", "k", fingerprint(b"x"))
    assert isinstance(crashed, idem.Execute)
    now[0] += 61
    taker = ledger.begin("s", "k", fingerprint(b"x"))
    assert isinstance(taker, idem.Execute) and taker.claim.taken_over
    winner = StoredResponse(201, b"winner", "text/plain")
    assert ledger.complete(taker.claim, winner) == idem.Result(winner, replayed=False)
    late = ledger.complete(crashed.claim, StoredResponse(200, b"late", "text/plain"))
    assert late == idem.Result(winner, replayed=True)
    assert ledger.lookup("s", "k") == winner


def test_survives_reopen(tmp_path: Path) -> None:
    with Ledger(tmp_path / "e.db") as ledger:
        ledger.run("s", "k", fingerprint(b"x"), Counter())
    handler = Counter()
    with Ledger(tmp_path / "e.db") as ledger:
        assert ledger.run("s", "k", fingerprint(b"x"), handler).replayed
    assert handler.calls == 0
    db = sqlite3.connect(tmp_path / "e.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_purge_forgets_old_entries(tmp_path: Path) -> None:
    now = [0.0]
    ledger = Ledger(tmp_path / "e.db", clock=lambda: now[0])
    ledger.run("s", "old", fingerprint(b"x"), Counter())
    now[0] = 100.0
    ledger.run("s", "new", fingerprint(b"x"), Counter())
    assert ledger.purge(older_than_s=50) == 1
    assert ledger.lookup("s", "old") is None
    assert ledger.lookup("s", "new") == OK


@pytest.mark.parametrize(("scope", "key"), [("", "k"), ("s", ""), ("s", "k" * 256), ("s", "a\nb")])
def test_invalid_keys(ledger: Ledger, scope: str, key: str) -> None:
    with pytest.raises(idem.InvalidKey):
        ledger.begin(scope, key, fingerprint(b"x"))


def test_fingerprint_is_length_prefixed() -> None:
    assert fingerprint(b"ab", b"c") != fingerprint(b"a", b"bc")
    assert fingerprint("POST", b"x") == fingerprint(b"POST", b"x")


def test_threads_racing_execute_once(ledger: Ledger) -> None:
    calls = 0
    entered = threading.Event()
    release = threading.Event()

    def handler() -> StoredResponse:
        nonlocal calls
        calls += 1
        entered.set()
        assert release.wait(30)
        return OK

    waits = threading.Semaphore(0)
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(ledger.run, "s", "k", fingerprint(b"x"), handler, on_wait=waits.release)
            for _ in range(8)
        ]
        assert entered.wait(30)
        for _ in range(7):
            assert waits.acquire(timeout=30)
        release.set()
        results = [f.result(timeout=30) for f in futures]
    assert calls == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    assert {r.response for r in results} == {OK}


@pytest.mark.parametrize("match_body", [True, False])
def test_two_processes_racing_execute_once(tmp_path: Path, match_body: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    race = Race(str(tmp_path / "e.db"), str(tmp_path / "executions.log"), b"same body", match_body)
    Ledger(race.db).close()
    barrier, waiter_seen = ctx.Barrier(2), ctx.Event()
    queue: Queue[tuple[int, bytes, bool]] = ctx.Queue()
    procs = [ctx.Process(target=contend, args=(race, barrier, waiter_seen, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    executions = Path(race.log).read_text().split()
    assert len(executions) == 1
    assert sorted(replayed for _, _, replayed in results) == [False, True]
    assert {(status, body) for status, body, _ in results} == {(200, f"ended by {executions[0]}".encode())}


async def test_async_run_serialises_concurrent_requests(ledger: Ledger) -> None:
    calls = 0
    entered, waited, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler() -> StoredResponse:
        nonlocal calls
        calls += 1
        entered.set()
        await gate.wait()
        return OK

    async with asyncio.timeout(30):
        first = asyncio.create_task(ledger.run_async("s", "k", fingerprint(b"x"), handler))
        await entered.wait()
        second = asyncio.create_task(
            ledger.run_async("s", "k", fingerprint(b"x"), handler, on_wait=waited.set)
        )
        await waited.wait()
        gate.set()
        results = await asyncio.gather(first, second)
    assert calls == 1
    assert sorted(r.replayed for r in results) == [False, True]


ops = st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3"]), st.sampled_from([b"a", b"b"])), max_size=20)


@given(ops)
def test_model(tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, bytes]]) -> None:
    ledger = Ledger(tmp_path_factory.mktemp("model") / "e.db")
    model: dict[str, bytes] = {}
    for key, body in operations:
        response = StoredResponse(200, key.encode() + body, "text/plain")
        try:
            result = ledger.run("s", key, fingerprint(body), lambda r=response: r)  # type: ignore[misc]
        except idem.IdempotencyConflict:
            assert model[key] != body
            continue
        if key in model:
            assert model[key] == body and result.replayed
        else:
            model[key] = body
            assert not result.replayed
        assert result.response.body == key.encode() + model[key]
    ledger.close()


@pytest.mark.parametrize(
    ("header", "key"),
    [("abc-123", "abc-123"), ('"abc-123"', "abc-123"), (" 8e03978e-40d5 ", "8e03978e-40d5")],
)
def test_parse_idempotency_header(header: str, key: str) -> None:
    assert idem.parse_idempotency_header(header) == key


@pytest.mark.parametrize("header", [None, "", '""', '"a"b"', "a\\b", "x" * 300, "a\x00b"])
def test_parse_idempotency_header_rejects(header: str | None) -> None:
    with pytest.raises(idem.InvalidKey) as info:
        idem.parse_idempotency_header(header)
    assert info.value.http_status == 400
