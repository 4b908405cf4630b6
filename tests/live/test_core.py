"""The sans-I/O core: inbound parsing, slots, coalescing fan-out, leaderboard, framing. No sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.live.config import HubConfig
from engine.live.fanout import ClassFanout, Peer
from engine.live.leaderboard import table
from engine.live.slots import ClassSlots, hr_zone
from engine.live.wire import (
    FrameReader,
    HelloIn,
    SampleIn,
    StateIn,
    client_text_frame,
    parse_inbound,
    reading_message,
    server_text_frame,
    state_message,
)
from engine.readings import Contact, Kind, Reading, SourceEvent, SourceState
from engine.wire_error import WireError

NOW = 1_800_000_000.0


def s(
    device: str,
    seq: int,
    v: float | None = 100.0,
    *,
    t: float = NOW,
    metric: str = "hr",
    contact: str | None = None,
) -> SampleIn:
    return SampleIn(device, metric, v, t, seq, "strap", contact)


# --- wire ---------------------------------------------------------------------------------------------


def test_parse_sample_state_hello() -> None:
    msg = (
        f'{{"type":"sample","kind":"heart_rate","v":72,"t":{NOW},"seq":3,"src":"hrm-1","contact":"detected"}}'
    )
    assert parse_inbound(msg, "bike-1", NOW) == SampleIn("bike-1", "hr", 72.0, NOW, 3, "hrm-1", "detected")
    state = parse_inbound('{"type":"state","kind":"cadence","state":"no_contact","t":1}', "b", NOW)
    assert state == StateIn("b", "cad", "no_contact", 1.0)
    assert parse_inbound('{"type":"hello","name":"Ann","max_hr":185}', "b", NOW) == HelloIn("b", "Ann", 185)


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ('{"type":"sample","kind":"heart_rate","v":72,"t":1,"seq":1,"device":"other"}', 4403),
        ('{"type":"sample","kind":"heart_rate","v":72,"t":1,"seq":true}', 4400),
        ('{"type":"sample","kind":"heart_rate","v":NaN,"t":1,"seq":1}', 4400),
        ('{"type":"sample","kind":"battery","v":72,"t":1,"seq":1}', 4400),
        ('{"type":"sample","kind":"heart_rate","v":72,"t":1,"seq":1,"src":"a b"}', 4400),
        ('{"type":"sample","kind":"heart_rate","v":72,"t":1,"seq":1,"contact":"maybe"}', 4400),
        ('{"type":"hello","max_hr":999}', 4400),
        ("\xff", 4400),
    ],
)
def test_parse_rejects(msg: str, code: int) -> None:
    with pytest.raises(WireError) as err:
        parse_inbound(msg, "b", NOW)
    assert err.value.close_code == code


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_parse_fuzz_only_wire_errors(data: bytes | str) -> None:
    with contextlib.suppress(WireError):
        parse_inbound(data, "b", NOW)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c)
            | st.dictionaries(
                st.sampled_from(
                    ["type", "kind", "v", "t", "seq", "src", "contact", "state", "name", "max_hr", "device"]
                ),
                c,
            )
        ),
        max_leaves=12,
    )
)
def test_parse_fuzz_structured(obj: object) -> None:
    try:
        ev = parse_inbound(json.dumps(obj), "b", NOW)
    except (WireError, ValueError):
        return
    assert ev.device == "b"


def test_reading_and_state_messages_round_trip() -> None:
    r = Reading(t=NOW, source="hrm", seq=9, kind=Kind.HEART_RATE, value=0.0, contact=Contact.NOT_DETECTED)
    msg = reading_message(r)
    assert msg is not None
    ev = parse_inbound(msg, "b", NOW)
    assert isinstance(ev, SampleIn) and ev.value is None and ev.contact == "not_detected"
    assert reading_message(Reading(t=NOW, source="hrm", seq=1, kind=Kind.BATTERY, value=90)) is None
    lost = state_message(SourceEvent(t=NOW, source="hrm", state=SourceState.LOST))
    assert lost is not None and parse_inbound(lost, "b", NOW) == StateIn("b", "hr", "no_contact", NOW)
    assert state_message(SourceEvent(t=NOW, source="hrm", state=SourceState.CONNECTING)) is None
    assert state_message(SourceEvent(t=NOW, source="hrm", state=SourceState.LOST), Kind.BATTERY) is None


@given(st.lists(st.binary(max_size=70_000), max_size=4), st.integers(min_value=1, max_value=9))
def test_frame_reader_reassembles_any_split(payloads: list[bytes], chunks: int) -> None:
    wire = b"".join(server_text_frame(p) for p in payloads)
    reader = FrameReader()
    got: list[tuple[int, bytes]] = []
    step = max(1, len(wire) // chunks)
    for i in range(0, len(wire), step):
        got += reader.feed(wire[i : i + step])
    assert got == [(1, p) for p in payloads]


def test_frame_reader_refuses_masked_frames() -> None:
    with pytest.raises(WireError):
        FrameReader().feed(client_text_frame(b"hi"))


# --- slots --------------------------------------------------------------------------------------------


def test_latest_wins_and_replays_are_ignored() -> None:
    slots = ClassSlots("c", stale_after_s=3.0)
    assert slots.apply(s("b", 2, 120.0), NOW)
    assert not slots.apply(s("b", 1, 90.0), NOW)  # older seq
    assert not slots.apply(s("b", 2, 90.0), NOW)  # duplicate
    assert slots.riders["b"].live_value("hr") == 120.0
    assert slots.apply(s("b", 3, 125.0, t=NOW + 1), NOW + 1)
    assert slots.riders["b"].live_value("hr") == 125.0


def test_no_contact_then_stale_then_live() -> None:
    slots = ClassSlots("c", stale_after_s=3.0)
    slots.apply(s("b", 1, 120.0), NOW)
    slots.apply(StateIn("b", "hr", "no_contact", NOW + 0.5), NOW + 0.5)
    rec = slots.riders["b"].record()
    assert rec["hr"] == {"v": None, "t": NOW, "seq": 1, "src": "strap", "state": "no_contact"}
    assert rec["zone"] == 0
    v = slots.version
    assert slots.sweep(NOW + 2.0, 60) == 0
    assert slots.sweep(NOW + 3.5, 60) == 1
    assert slots.version == v + 1
    assert slots.riders["b"].record()["hr"]["state"] == "stale"  # type: ignore[index]
    assert slots.sweep(NOW + 4.0, 60) == 0  # already stale: no new change to send
    slots.apply(s("b", 2, 130.0, t=NOW + 4), NOW + 4)
    assert slots.riders["b"].live_value("hr") == 130.0


def test_sample_arriving_already_old_is_stale() -> None:
    slots = ClassSlots("c", stale_after_s=3.0)
    slots.apply(s("b", 1, 120.0, t=NOW - 10), NOW)
    assert slots.riders["b"].live_value("hr") is None


def test_changed_since_walks_only_changes() -> None:
    slots = ClassSlots("c")
    for i in range(5):
        slots.apply(s(f"r{i}", 1), NOW)
    cursor = slots.version
    slots.apply(s("r1", 2), NOW)
    slots.apply(s("r3", 2), NOW)
    assert [r.device for r in slots.changed_since(cursor)] == ["r1", "r3"]
    assert len(slots.changed_since(0)) == 5
    slots.leave("r2", NOW)
    assert "r2" in [r.device for r in slots.changed_since(cursor)]
    assert "r2" not in [
        r.device for r in slots.changed_since(0)
    ]  # a fresh peer is not told of old departures
    slots.sweep(NOW + 100, forget_left_after_s=10)
    assert "r2" not in slots.riders


_text = st.text(max_size=12)
_sample = st.builds(
    SampleIn,
    device=st.just("d"),
    metric=st.sampled_from(["hr", "cad", "pwr", "res"]),
    value=st.one_of(st.none(), st.floats(0, 100_000), st.integers(0, 100_000)),
    t=st.floats(NOW - 10, NOW + 4),
    seq=st.integers(0, 2**63 - 1),
    src=_text,
    contact=st.sampled_from([None, "detected", "not_detected", "unsupported"]),
)


@given(
    st.lists(st.one_of(_sample, st.builds(HelloIn, st.just("d"), st.one_of(st.none(), _text), st.none()))),
    st.sampled_from(["d", 'quo"te', "\u00e9\u2603"]),
    st.booleans(),
)
def test_hand_built_fragment_is_exactly_the_json_of_the_record(
    events: list[SampleIn | HelloIn], device: str, leave: bool
) -> None:
    slots = ClassSlots("c")
    for ev in events:
        slots.apply(dataclasses.replace(ev, device=device), NOW)
        slots.apply(StateIn(device, "hr", "no_contact", NOW), NOW)
    slots.sweep(NOW + 3.5, 100.0)
    slot = slots.join(device, NOW)
    if leave:
        slots.leave(device, NOW)
    assert slot.fragment() == json.dumps(device) + ":" + json.dumps(slot.record(), separators=(",", ":"))


def test_sweep_skips_nothing_that_turned_stale() -> None:
    slots = ClassSlots("c", stale_after_s=3.0)
    slots.apply(s("a", 1, t=NOW), NOW)
    slots.apply(s("b", 1, t=NOW + 2), NOW + 2)
    assert slots.sweep(NOW + 2.9, 100.0) == 0
    assert slots.sweep(NOW + 3.1, 100.0) == 1  # a's value, not b's
    assert slots.riders["a"].metrics["hr"].state == "stale"
    assert slots.riders["b"].metrics["hr"].state == "live"
    slots.apply(s("a", 2, t=NOW + 3.2), NOW + 3.2)  # a fresh value, due to turn stale after b's
    assert slots.sweep(NOW + 5.1, 100.0) == 1
    assert slots.riders["b"].metrics["hr"].state == "stale"
    assert slots.riders["a"].metrics["hr"].state == "live"
    assert slots.sweep(NOW + 6.3, 100.0) == 1
    slots.leave("b", NOW + 7)
    slots.sweep(NOW + 50, 100.0)
    assert "b" in slots.riders
    slots.sweep(NOW + 108, 100.0)
    assert "b" not in slots.riders


def test_zones() -> None:
    assert [hr_zone(v, 200) for v in (None, 100, 125, 150, 170, 190)] == [0, 1, 2, 3, 4, 5]


# --- fan-out ------------------------------------------------------------------------------------------


def decode(wire: bytes) -> dict[str, Any]:
    frames = FrameReader().feed(wire)
    assert len(frames) == 1
    out: dict[str, Any] = json.loads(frames[0][1])
    return out


def peers(fan: ClassFanout, n: int) -> list[Peer]:
    out = [Peer(i + 1, f"p{i}", "viewer") for i in range(n)]
    for p in out:
        fan.add_peer(p)
    return out


def test_one_shared_frame_for_every_peer_keeping_up() -> None:
    fan = ClassFanout("c", HubConfig())
    ps = peers(fan, 3)
    fan.slots.apply(s("r1", 1), NOW)
    fan.plan_tick(NOW, lambda p: True)  # snapshot tick
    fan.slots.apply(s("r1", 2), NOW)
    fan.slots.apply(s("r2", 1), NOW)
    plan = fan.plan_tick(NOW, lambda p: True)
    assert [p for p, _ in plan.sends] == ps
    wires = {id(w) for _, w in plan.sends}
    assert len(wires) == 1, "encoded once, sent to all"
    frame = decode(plan.sends[0][1])
    assert set(frame["riders"]) == {"r1", "r2"}
    assert plan.deliveries == 6
    assert fan.plan_tick(NOW, lambda p: True).sends == []  # nothing changed


def test_lagging_peer_gets_only_newest_values_once() -> None:
    fan = ClassFanout("c", HubConfig(stall_limit_s=100))
    fast, slow = peers(fan, 2)
    stuck = {slow.peer_id}
    for seq in range(1, 11):
        fan.slots.apply(s("r1", seq, 100.0 + seq), NOW)
        fan.slots.apply(s(f"x{seq}", 1), NOW)
        plan = fan.plan_tick(NOW + seq, lambda p: p.peer_id not in stuck)
        assert [p for p, _ in plan.sends] == [fast]
        assert plan.skipped == 1
    stuck.clear()
    fan.slots.apply(s("r9", 1), NOW)
    plan = fan.plan_tick(NOW + 11, lambda p: True)
    by_peer = {p.peer_id: decode(w) for p, w in plan.sends}
    assert set(by_peer[fast.peer_id]["riders"]) == {"r9"}
    catch_up = by_peer[slow.peer_id]["riders"]
    assert isinstance(catch_up, dict)
    assert catch_up["r1"]["hr"]["seq"] == 10  # one record per rider: the newest
    assert len(catch_up) == 12  # r1, x1..x10, r9
    assert not fan.behind


def test_stalled_peer_is_kicked_after_limit() -> None:
    fan = ClassFanout("c", HubConfig(stall_limit_s=5))
    (p,) = peers(fan, 1)
    for i in range(8):
        fan.slots.apply(s("r", i + 1), NOW)
        plan = fan.plan_tick(NOW + i, lambda _p: False)
        assert plan.kicks == ([p] if i > 5 else [])


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans()), max_size=60))
def test_every_peer_converges_to_the_slots(ops: list[tuple[int, int, bool]]) -> None:
    """Whatever the interleaving of samples and peers being unable to write, once every peer can write
    again, each peer's merged view equals the class's latest values."""
    fan = ClassFanout("c", HubConfig(stall_limit_s=1e9))
    ps = peers(fan, 4)
    views: dict[int, dict[str, Any]] = {p.peer_id: {} for p in ps}
    for seq, (rider, blocked_peer, tick) in enumerate(ops, start=1):
        fan.slots.apply(s(f"r{rider}", seq, float(seq)), NOW)
        if tick:
            for peer, wire in fan.plan_tick(NOW, lambda p, b=blocked_peer: p.peer_id != b + 1).sends:  # type: ignore[misc]
                views[peer.peer_id].update(decode(wire)["riders"])
    for peer, wire in fan.plan_tick(NOW, lambda p: True).sends:
        views[peer.peer_id].update(decode(wire)["riders"])
    truth = {r.device: r.record() for r in fan.slots.changed_since(0)}
    for view in views.values():
        assert view == truth


# --- leaderboard --------------------------------------------------------------------------------------


def test_leaderboard_ranks_and_deltas() -> None:
    fan = ClassFanout("c", HubConfig())
    for i, (pwr, cad, hr) in enumerate([(200, 90, 150), (300, 80, 120), (100, 100, 180)]):
        fan.slots.apply(s(f"r{i}", 1, float(pwr), metric="pwr"), NOW)
        fan.slots.apply(s(f"r{i}", 1, float(cad), metric="cad"), NOW)
        fan.slots.apply(s(f"r{i}", 1, float(hr), metric="hr"), NOW)
    rows = table(fan.slots.riders.values())
    assert [rows[f"r{i}"]["rank_pwr"] for i in range(3)] == [2, 1, 3]
    assert [rows[f"r{i}"]["rank_cad"] for i in range(3)] == [2, 3, 1]
    assert [rows[f"r{i}"]["rank_zone"] for i in range(3)] == [2, 3, 1]
    (p,) = peers(fan, 1)

    def board(at: float) -> list[dict[str, Any]]:
        fan.leaderboard_due = True
        plan = fan.plan_tick(at, lambda _p: True)
        frames = []
        for _peer, wire in plan.sends:
            frames += [json.loads(payload) for _op, payload in FrameReader().feed(wire)]
        return [f for f in frames if f["type"] == "leaderboard"]

    (first,) = board(NOW)
    assert first["full"] is True and len(first["rows"]) == 3
    assert board(NOW + 3) == []  # nothing changed
    fan.slots.apply(s("r2", 2, 400.0, metric="pwr"), NOW)
    (delta,) = board(NOW + 6)  # in the same write as the live delta carrying r2's new power
    assert delta["full"] is False
    assert set(delta["rows"]) == {"r0", "r1", "r2"}  # every rank moved
    fan.slots.leave("r1", NOW)
    (delta,) = board(NOW + 9)
    assert delta["removed"] == ["r1"]
    assert p.lb_seq == fan.leaderboard.seq
