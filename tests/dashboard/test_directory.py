"""The ride directory on a real SQLite file: its answers, its memory, a restart, the import of the old
`rides.json`, and a damaged file."""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.dashboard import directory, directory_db
from engine.dashboard.directory import (
    DIRECTORY_FILE,
    LEGACY_FILE,
    DirectoryCorrupt,
    RideDirectory,
    RideEntry,
)
from engine.store import StoreCorrupt


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _open(data: Path, clock: Clock | None = None) -> RideDirectory:
    return RideDirectory(data / DIRECTORY_FILE, clock=clock or Clock())


def _snapshot(d: RideDirectory) -> dict[str, object]:
    """Everything the directory answers, class by class."""
    return {
        c: (d.class_rides(c), d.class_history(c), [d.ride(e.ride_id) for e in d.class_history(c)])
        for c in d.classes()
    }


# --- semantics ------------------------------------------------------------------------------------------


def test_a_newer_ride_replaces_the_older_as_the_devices_current() -> None:
    d = RideDirectory(clock=Clock())
    first = d.register("spin", "bike-1", "r1", "Ann")
    second = d.register("spin", "bike-1", "r2")
    d.register("spin", "bike-2", "r3")
    assert second.registered > first.registered
    assert {dev: e.ride_id for dev, e in d.class_rides("spin").items()} == {"bike-1": "r2", "bike-2": "r3"}
    assert [e.ride_id for e in d.class_history("spin")] == ["r1", "r2", "r3"]
    assert d.classes() == ["spin"]
    assert d.class_rides("other") == {} and d.class_history("other") == [] and d.ride("nope") is None


def test_registering_again_keeps_the_name_and_the_time() -> None:
    d = RideDirectory(clock=Clock())
    first = d.register("spin", "bike-1", "r1", "Ann")
    assert d.register("spin", "bike-1", "r1") == first  # the backend knows no name: Ann stays
    renamed = d.register("spin", "bike-1", "r1", "Anna")
    assert renamed == RideEntry("r1", "spin", "bike-1", "Anna", first.registered)
    assert d.ride("r1") == renamed


def test_the_rider_book_names_a_ride_registered_without_one() -> None:
    d = RideDirectory(names=lambda c, dev: "Ben" if (c, dev) == ("spin", "bike-2") else None, clock=Clock())
    assert d.register("spin", "bike-2", "r1").name == "Ben"
    assert d.register("spin", "bike-3", "r2").name is None
    d.rename("spin", "bike-3", "Cid")
    assert d.ride("r2") is not None and d.ride("r2").name == "Cid"  # type: ignore[union-attr]
    d.rename("spin", "bike-3", None)  # a hello without a name changes nothing
    d.rename("spin", "bike-9", "Nobody")  # no ride for that device: nothing to name
    assert d.ride("r2").name == "Cid" and len(d.class_history("spin")) == 2  # type: ignore[union-attr]


def test_rename_names_only_the_devices_newest_ride() -> None:
    d = RideDirectory(clock=Clock())
    d.register("spin", "bike-1", "r1", "Ann")
    d.register("spin", "bike-1", "r2")
    d.rename("spin", "bike-1", "Anna")
    assert [e.name for e in d.class_history("spin")] == ["Ann", "Anna"]


def test_a_ride_moving_class_leaves_the_old_one() -> None:
    d = RideDirectory(clock=Clock())
    before = d.register("spin", "bike-1", "r1", "Ann")
    moved = d.register("hiit", "bike-1", "r1")
    assert moved.registered > before.registered and moved.name == "Ann"
    assert d.class_rides("spin") == {} and d.class_history("spin") == []
    assert d.class_rides("hiit") == {"bike-1": moved}
    assert d.classes() == ["hiit"]
    # A device's older ride in the class it left is its newest there again.
    d.register("spin", "bike-2", "r2")
    d.register("spin", "bike-2", "r3")
    d.register("hiit", "bike-2", "r3")
    assert d.class_rides("spin")["bike-2"].ride_id == "r2"


def test_equal_times_take_the_greatest_ride_id_as_newest() -> None:
    d = RideDirectory(clock=lambda: 5.0)
    for ride in ("rb", "rc", "ra"):
        d.register("spin", "bike-1", ride)
    assert d.class_rides("spin")["bike-1"].ride_id == "rc"
    assert [e.ride_id for e in d.class_history("spin")] == ["ra", "rb", "rc"]


def test_a_name_sqlite_cannot_store_is_kept_readable() -> None:
    """A lone surrogate is valid JSON (a publisher's hello) but not UTF-8: stored as U+FFFD, no crash."""
    d = RideDirectory(clock=Clock())
    entry = d.register("spin", "bike-1", "r1", "Ann\ud800")
    assert entry.name == "Ann\ufffd" and d.ride("r1") == entry
    d.rename("spin", "bike-1", "Ann\ud800")  # the same name again: no change
    assert d.ride("r1") == entry


def test_a_failing_write_is_one_warning_and_no_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _open(tmp_path)
    d.register("spin", "bike-1", "r1")
    # The database's page limit at its current size: the next pages cannot be written (SQLITE_FULL).
    pages = d._conn.execute("PRAGMA page_count").fetchone()[0]
    d._conn.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.WARNING, logger=directory.__name__):
        for i in range(200):
            d.register("spin", f"bike-{i}", f"ride-{i:04d}", "x" * 500)
    failures = [r for r in caplog.records if r.message == "cannot save the ride directory"]
    assert failures, "the page limit was never reached"
    assert all(getattr(r, "path", None) == str(tmp_path / DIRECTORY_FILE) for r in failures)
    d.close()
    again = _open(tmp_path)
    assert again.ride("r1") is not None and len(again.class_history("spin")) == 201 - len(failures)
    again.close()


# --- memory and restart ---------------------------------------------------------------------------------


def _held_by_directory(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by lines of the directory's modules."""
    keep = [
        tracemalloc.Filter(True, directory.__file__),
        tracemalloc.Filter(True, directory_db.__file__),
    ]
    return sum(stat.size for stat in snapshot.filter_traces(keep).statistics("filename"))


def test_memory_does_not_grow_with_the_rides_registered(tmp_path: Path) -> None:
    """10,000 rides in 50 classes: what the directory's code still holds in Python memory afterwards is the
    same after 1,000 as after 10,000 (the JSON directory held a RideEntry per ride ever registered)."""
    d = _open(tmp_path)
    tracemalloc.start()
    try:
        held: list[int] = []
        for i in range(10_000):
            d.register(f"class-{i % 50}", f"bike-{i % 100}", f"ride-{i:05d}", f"Rider {i % 100}")
            if i + 1 in (1_000, 10_000):
                held.append(_held_by_directory(tracemalloc.take_snapshot()))
    finally:
        tracemalloc.stop()
    assert held[1] - held[0] < 4_096, held
    assert held[1] < 16_384, held
    assert len(d.class_history("class-7")) == 200 and len(d.class_rides("class-7")) == 2
    d.close()


def test_a_restart_keeps_everything(tmp_path: Path) -> None:
    clock = Clock()
    d = _open(tmp_path, clock)
    for i in range(60):
        d.register(f"c{i % 3}", f"b{i % 7}", f"r{i:02d}", None if i % 2 else f"N{i}")
    d.register("c9", "b1", "r05")  # moves class
    d.rename("c1", "b1", "Renamed")
    before = _snapshot(d)
    d.close()
    again = _open(tmp_path, clock)
    assert _snapshot(again) == before
    assert again.classes() == ["c0", "c1", "c2", "c9"]
    again.close()


# --- the old rides.json ---------------------------------------------------------------------------------


def _legacy(data: Path, rows: list[dict[str, object]]) -> Path:
    path = data / LEGACY_FILE
    path.write_text(json.dumps({"rides": rows}), "utf-8")
    return path


def test_an_old_rides_json_is_imported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = _legacy(
        tmp_path,
        [
            {"ride_id": "r1", "class": "spin", "device": "bike-1", "name": "Ann", "registered": 10.0},
            {"ride_id": "r2", "class": "spin", "device": "bike-1", "name": None, "registered": 20.0},
            {"ride_id": "r3", "class": "hiit", "device": "bike-2", "name": 7, "registered": 15.0},
            {"ride_id": "r4", "class": "spin", "device": "bike-3"},
        ],
    )
    with caplog.at_level(logging.INFO):
        d = RideDirectory.in_dir(tmp_path)
    assert not legacy.exists() and (tmp_path / "rides.json.imported").exists()
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [e.ride_id for e in d.class_history("spin")] == ["r4", "r1", "r2"]
    assert d.class_rides("spin")["bike-1"] == RideEntry("r2", "spin", "bike-1", None, 20.0)
    assert d.ride("r1") == RideEntry("r1", "spin", "bike-1", "Ann", 10.0)
    assert d.ride("r3") == RideEntry("r3", "hiit", "bike-2", None, 15.0)  # a name that is no string: none
    d.register("spin", "bike-1", "r5")
    d.close()
    # Imported once: a rides.json written again by an older version is imported (and set aside) again, the
    # set-aside one never.
    again = RideDirectory.in_dir(tmp_path)
    assert len(again.class_history("spin")) == 4 and again.classes() == ["hiit", "spin"]
    again.close()


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xffnot JSON",
        b"[1, 2, 3]",
        b'{"rides": 5}',
        b'{"rides": [{"class": "spin", "device": "b"}]}',
        b'{"rides": [{"ride_id": "r", "class": "spin", "device": "b", "registered": "NaN"}]}',
        b'{"rides": [{"ride_id": "\\ud800", "class": "spin", "device": "b"}]}',
        b'{"rides": [{"ride_id": "r", "class": "spin", "device": "b", "registered": 1' + b"0" * 400 + b"}]}",
        b'{"rides": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_an_unreadable_rides_json_is_one_warning_and_a_fresh_start(
    tmp_path: Path, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / LEGACY_FILE).write_bytes(body)
    with caplog.at_level(logging.WARNING):
        d = RideDirectory.in_dir(tmp_path)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.message for r in warned] == ["ride directory unreadable, starting afresh"]
    assert getattr(warned[0], "path", None) == str(tmp_path / LEGACY_FILE)
    assert d.classes() == []
    # Set aside, not deleted, and not warned about again.
    assert (tmp_path / "rides.json.unreadable").read_bytes() == body
    d.register("spin", "bike-1", "r1")
    d.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = RideDirectory.in_dir(tmp_path)
    assert caplog.records == [] and again.ride("r1") is not None
    again.close()


def test_a_rides_json_too_large_to_be_one_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sparse file past the limit: refused from its size alone (reading it would take the memory)."""
    legacy = tmp_path / LEGACY_FILE
    with legacy.open("wb") as fh:
        fh.truncate(directory_db.LEGACY_MAX_BYTES + 1)
    with caplog.at_level(logging.WARNING):
        d = RideDirectory.in_dir(tmp_path)
    assert [r.message for r in caplog.records] == ["ride directory unreadable, starting afresh"]
    assert "bytes is more than a ride directory" in getattr(caplog.records[0], "error", "")
    assert d.classes() == [] and (tmp_path / "rides.json.unreadable").exists()
    d.close()


# --- a damaged file -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "empty", "header"])
def test_a_damaged_directory_file_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / DIRECTORY_FILE
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot a database" * 64)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        d = RideDirectory.in_dir(tmp_path)
        d.register("spin", "bike-1", "r1")
        d.close()
        with path.open("r+b") as fh:
            fh.write(b"garbage garbage garbage!")
    with pytest.raises(DirectoryCorrupt) as caught:
        RideDirectory.in_dir(tmp_path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, StoreCorrupt)  # what serve and demo report as a damaged data dir


def test_a_directory_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DIRECTORY_FILE
    RideDirectory(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    conn.close()
    with pytest.raises(DirectoryCorrupt, match="format 99"):
        RideDirectory(path)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=9), inner, max_size=5),
    max_leaves=20,
)
_ROW = st.fixed_dictionaries(
    {},
    optional={
        "ride_id": _JSON,
        "class": _JSON,
        "device": _JSON,
        "name": _JSON,
        "registered": _JSON,
    },
)


@given(
    body=st.binary(max_size=200)
    | st.builds(lambda rows: json.dumps({"rides": rows}).encode(), st.lists(_ROW, max_size=5))
)
def test_any_rides_json_is_imported_or_set_aside(body: bytes) -> None:
    """Whatever the old file holds: its rides are imported, or it is one warning; never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / LEGACY_FILE).write_bytes(body)
        d = RideDirectory.in_dir(root)
        try:
            imported = (root / "rides.json.imported").exists()
            assert imported != (root / "rides.json.unreadable").exists()
            assert not (root / LEGACY_FILE).exists()
            rides = [e for c in d.classes() for e in d.class_history(c)]
            if imported:
                assert {e.ride_id for e in rides} == {str(r["ride_id"]) for r in json.loads(body)["rides"]}
            else:
                assert rides == []
        finally:
            d.close()
