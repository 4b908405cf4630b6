"""A rider's kind of bike: the vocabulary, the hello that carries it, the hub's record and rider book that
keep it, and a viewer of a real hub on loopback that sees it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bike_kinds import BIKE_KINDS, HR_ONLY, LABELS, bike_kind_of, ble_kind
from engine.live.publisher import LivePublisher
from engine.live.relay_codec import RelayCodecError, decode_message, encode_messages
from engine.live.riders import RiderBook
from engine.live.slots import ClassSlots
from engine.live.wire import HelloIn, parse_inbound, parse_inbound_batch
from engine.wire_error import WireError
from tests.support.live import HANG_GUARD_S, ServerFactory, sample, viewing

NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]

# --- the vocabulary ---------------------------------------------------------------------------------------


class _Bike:
    def __init__(self, kind: str | None) -> None:
        self.bike_kind = kind


class _Strap:
    """A source that is not a bike: no `bike_kind` at all."""


def test_bike_kind_of_open_sources() -> None:
    assert bike_kind_of([_Strap(), _Bike("peloton")]) == "peloton"
    # The first bike that knows wins; a BLE bike still discovering its service says nothing yet.
    assert bike_kind_of([_Strap(), _Bike(None), _Bike("line")]) == "line"
    assert bike_kind_of([_Strap(), _Bike(None)]) is None
    assert bike_kind_of([_Strap()]) == HR_ONLY
    assert bike_kind_of([]) is None
    # A source claiming a word outside the vocabulary is not believed.
    assert bike_kind_of([_Bike("rowing-machine")]) is None


def test_ble_kind_only_for_the_three_profiles() -> None:
    assert [ble_kind(s) for s in ("ftms", "cps", "csc")] == ["ble-ftms", "ble-cps", "ble-csc"]
    assert ble_kind("hrs") is None and ble_kind("") is None


def test_every_kind_has_a_label_and_the_page_says_the_same_words() -> None:
    assert set(LABELS) == BIKE_KINDS
    js = (ROOT / "engine/dashboard/static/app.js").read_text()
    m = re.search(r"^const BIKE_LABELS = (\{.*\});$", js, re.MULTILINE)
    assert m is not None, "app.js has no one-line BIKE_LABELS object"
    assert json.loads(m.group(1)) == LABELS


# --- the wire ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BIKE_KINDS))
def test_hello_with_a_bike_round_trips(kind: str) -> None:
    msg = json.dumps({"type": "hello", "name": "Ann", "max_hr": 180, "bike": kind})
    assert parse_inbound(msg, "b", NOW) == HelloIn("b", "Ann", 180, kind)
    # And inside a batch, beside samples.
    events = parse_inbound_batch(f"[{msg},{sample(1)}]", "b", time.time())
    assert events[0] == HelloIn("b", "Ann", 180, kind)


def test_an_old_publisher_s_hello_has_no_bike() -> None:
    assert parse_inbound('{"type":"hello","name":"Ann"}', "b", NOW) == HelloIn("b", "Ann", None, None)
    assert parse_inbound('{"type":"hello","bike":null}', "b", NOW) == HelloIn("b", None, None, None)


@pytest.mark.parametrize(
    "bike",
    ["Peloton", "rowing-machine", "", "peloton " * 20, "x" * 100_000, 7, True, 1.5, ["peloton"], {"k": 1}],
)
def test_hostile_bike_is_a_wire_error(bike: object) -> None:
    with pytest.raises(WireError) as err:
        parse_inbound(json.dumps({"type": "hello", "bike": bike}), "b", NOW)
    assert err.value.close_code in (4400, 1009)


@pytest.mark.parametrize("contact", [["detected"], {"a": 1}])
def test_unhashable_contact_is_a_wire_error_not_a_crash(contact: object) -> None:
    # Before: `contact not in frozenset` raised TypeError out of the parser.
    msg = {"type": "sample", "kind": "heart_rate", "v": 60, "t": NOW, "seq": 1, "contact": contact}
    with pytest.raises(WireError):
        parse_inbound(json.dumps(msg), "b", NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)


@given(_json, st.sampled_from([None, "Ann"]))
def test_any_bike_value_is_a_known_kind_or_a_wire_error(bike: object, name: str | None) -> None:
    msg: dict[str, Any] = {"type": "hello", "bike": bike}
    if name is not None:
        msg["name"] = name
    try:
        ev = parse_inbound(json.dumps(msg), "b", NOW)
    except WireError:
        assert bike is not None and bike not in sorted(BIKE_KINDS)
        return
    assert isinstance(ev, HelloIn)
    assert ev.bike == bike and (bike is None or bike in sorted(BIKE_KINDS))


# --- between hubs --------------------------------------------------------------------------------------


def test_relay_codec_carries_the_bike_and_reads_an_older_hub_s_hello() -> None:
    events = [HelloIn("b1", "Ann", 180, "ble-ftms"), HelloIn("b2", "Ben", None, None)]
    [msg] = encode_messages("hub-a", [("c1", events)])
    assert decode_message(msg) == ("hub-a", {"c1": events})
    # A hello without a bike is the 3-field event an older hub writes and reads.
    assert b'["h","b2","Ben",null]' in msg
    old = b'{"o":"hub-b","c":{"c1":[["h","b3","Cy",170]]}}'
    assert decode_message(old) == ("hub-b", {"c1": [HelloIn("b3", "Cy", 170, None)]})


@pytest.mark.parametrize("bike", ['"Peloton"', "7", '["line"]', '{"a":1}', '"x"'])
def test_relay_codec_refuses_a_bad_bike(bike: str) -> None:
    with pytest.raises(RelayCodecError):
        decode_message(f'{{"o":"h","c":{{"c1":[["h","b1",null,null,{bike}]]}}}}')


@pytest.mark.parametrize("event", ['["s","b1",["hr"],1,1,1,"s",null]', '["s","b1","hr",1,1,1,"s",["x"]]'])
def test_relay_codec_refuses_unhashable_fields_with_its_own_error(event: str) -> None:
    with pytest.raises(RelayCodecError):
        decode_message(f'{{"o":"h","c":{{"c1":[{event}]}}}}')


# --- the hub's record and the rider book -------------------------------------------------------------------


@given(st.lists(st.sampled_from([None, *sorted(BIKE_KINDS)]), min_size=1, max_size=5))
def test_record_carries_the_last_bike_said_and_the_fragment_matches_it(bikes: list[str | None]) -> None:
    slots = ClassSlots("c")
    for bike in bikes:
        slots.apply(HelloIn("d", "Ann", None, bike), NOW)
    slot = slots.riders["d"]
    said = [b for b in bikes if b is not None]
    assert slot.record().get("bike") == (said[-1] if said else None)
    assert slot.fragment() == '"d":' + json.dumps(slot.record(), separators=(",", ":"))


def test_rider_book_keeps_the_bike_across_a_restart(tmp_path: Path) -> None:
    book = RiderBook.in_dir(tmp_path)
    book.remember("c1", "b1", "Ann", 180, "ble-cps")
    # A later token hello (no bike) keeps it.
    book.remember("c1", "b1", "Ann", None)
    again = RiderBook.in_dir(tmp_path)
    ident = again.identity("c1", "b1")
    assert ident is not None and (ident.name, ident.max_hr, ident.bike) == ("Ann", 180, "ble-cps")


def test_rider_book_from_before_bikes_or_with_a_bad_bike_loads(tmp_path: Path) -> None:
    (tmp_path / "riders.json").write_text(
        json.dumps({"riders": {"c1": {"b1": {"name": "Ann", "max_hr": 180}, "b2": {"bike": ["x"]}}}})
    )
    book = RiderBook.in_dir(tmp_path)
    b1, b2 = book.identity("c1", "b1"), book.identity("c1", "b2")
    assert b1 is not None and b1.name == "Ann" and b1.bike is None
    assert b2 is not None and b2.bike is None


def test_announce_sends_only_news_and_only_while_connected() -> None:
    pub = LivePublisher("http://127.0.0.1:9", "t", "c1", bike="peloton")
    pub.announce("line")  # offline: remembered for the next connection's hello, nothing queued
    assert pub.bike == "line" and pub._pending == {}
    pub.connected.set()
    pub.announce(None)  # a BLE bike still discovering: says nothing, forgets nothing
    pub.announce("line")  # no change: nothing to send
    assert pub.bike == "line" and pub._pending == {}
    pub.announce("ble-cps")
    assert json.loads(pub._pending["hello"]) == {"type": "hello", "bike": "ble-cps"}


# --- a real hub on loopback --------------------------------------------------------------------------------


async def test_a_viewer_s_snapshot_and_live_frames_carry_the_bike(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    # A BLE bike's publisher starts not knowing the profile (service discovery has not run yet)...
    pub = LivePublisher(srv.base, srv.token("bike", "bike-1"), "c1", name="Ann")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(pub.run())
        try:
            async with asyncio.timeout(HANG_GUARD_S):
                await pub.connected.wait()
            async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
                await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("name") == "Ann")
                assert "bike" not in dash.riders["bike-1"]
                # ...then learns it, and says it mid-connection.
                pub.announce("ble-ftms")
                await dash.wait_for(lambda v: v.riders["bike-1"].get("bike") == "ble-ftms")
            # A viewer joining now gets it in its first frame, the snapshot.
            async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash2"))) as late:
                await late.wait_for(lambda v: bool(v.frames))
                assert late.frames[0]["riders"]["bike-1"]["bike"] == "ble-ftms"
            # The rider book keeps it (for a reconnect after a restart, and the dashboard's ride list).
            ident = srv.hub.riders.identity("c1", "bike-1")
            assert ident is not None and ident.bike == "ble-ftms"
        finally:
            task.cancel()


async def test_an_old_publisher_without_a_bike_still_streams(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    async with (
        viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash,
        session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-9"))) as bike,
    ):
        await bike.send_str(json.dumps({"type": "hello", "name": "Old", "max_hr": 180}))
        await bike.send_str(sample(1, 130.0))
        await dash.wait_for(lambda v: (v.hr("bike-9") or {}).get("v") == 130.0)
        assert dash.riders["bike-9"]["name"] == "Old" and "bike" not in dash.riders["bike-9"]
        # A hostile bike closes only that connection, with the wire's code, and changes nothing.
        await bike.send_str(json.dumps({"type": "hello", "bike": "<script>"}))
        async with asyncio.timeout(HANG_GUARD_S):
            async for _ in bike:  # the hub's frames, until it closes this connection
                pass
        assert bike.close_code == 4400
    ident = srv.hub.riders.identity("c1", "bike-9")
    assert ident is not None and ident.name == "Old" and ident.bike is None


async def test_a_rider_who_reconnects_after_a_restart_keeps_the_bike(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    async with (
        viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as first,
        session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"))) as bike,
    ):
        await bike.send_str(json.dumps({"type": "hello", "bike": "line"}))
        await first.wait_for(lambda v: v.riders.get("bike-1", {}).get("bike") == "line")
    await srv.runner.cleanup()
    srv2 = await make_server()  # the same data dir: the rider book is read back
    async with (
        viewing(session, srv2.ws_url("c1", srv2.token("viewer", "dash"))) as dash,
        session.ws_connect(srv2.ws_url("c1", srv2.token("bike", "bike-1"))) as bike2,
    ):
        # An older publisher's hello after the restart says no bike: the book's is kept.
        await bike2.send_str(json.dumps({"type": "hello"}))
        await bike2.send_str(sample(2))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 2)
        assert dash.riders["bike-1"]["bike"] == "line"
