"""Peloton bus decoding: every frame type to values, request/reply pairing, the calibration table."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.peloton import (
    BadPayload,
    Cadence,
    CalibrationComplete,
    CalibrationEntry,
    CalibrationRejected,
    CalibrationTable,
    Command,
    PelotonParser,
    Power,
    Resistance,
    StartupReply,
    UnknownReply,
    UnpairedCalibration,
    encode_cadence,
    encode_calibration_reply,
    encode_calibration_request,
    encode_power,
    encode_reply_payload,
    encode_request,
    encode_resistance,
)
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, calibration_exchange


def values(events: Sequence[object]) -> list[object]:
    return [e for e in events if not type(e).__name__.endswith("Frame")]


def test_cadence_power_resistance() -> None:
    p = PelotonParser()
    out = values(p.feed(encode_cadence(87) + encode_power(231.4) + encode_resistance(612)))
    assert out == [Cadence(87), Power(231.4, 2314), Resistance(612, None)]


def test_startup_and_bike_id_replies_are_reported_not_counted_as_unknown() -> None:
    p = PelotonParser()
    data = encode_request(0, head=0xFE) + encode_reply_payload(0xFE, b"000")
    data += encode_reply_payload(0xFB, b"0000000")
    assert values(p.feed(data)) == [StartupReply(0xFE, b"000"), StartupReply(0xFB, b"0000000")]
    assert p.decoder.counters.replies_unknown == 0


def test_unknown_command_is_reported_and_counted() -> None:
    p = PelotonParser()
    out = values(p.feed(encode_reply_payload(0x55, b"123") + encode_cadence(60)))
    assert out == [UnknownReply(0x55, b"123"), Cadence(60)]
    assert p.summary()["replies_unknown"] == 1


def test_non_digit_payload_is_a_bad_payload() -> None:
    p = PelotonParser()
    assert values(p.feed(encode_reply_payload(Command.POWER, b"12x45"))) == [BadPayload(0x44, b"12x45")]
    assert p.summary()["replies_bad_payload"] == 1


def test_calibration_reply_without_its_request_is_unpaired() -> None:
    p = PelotonParser()
    assert values(p.feed(encode_calibration_reply(500))) == [UnpairedCalibration(500)]
    # A request of another kind in between breaks the pairing too.
    data = encode_calibration_request(3) + encode_request(Command.CADENCE) + encode_calibration_reply(500)
    assert values(p.feed(data)) == [UnpairedCalibration(500)]
    assert p.summary()["replies_unpaired"] == 2


def test_calibration_table_then_percent() -> None:
    p = PelotonParser()
    events = values(p.feed(b"".join(calibration_exchange())))
    entries = [e for e in events if isinstance(e, CalibrationEntry)]
    assert [(e.index, e.raw) for e in entries] == list(enumerate(DEFAULT_CALIBRATION))
    assert events[-1] == CalibrationComplete(CalibrationTable(DEFAULT_CALIBRATION))
    out = values(p.feed(encode_resistance(164) + encode_resistance(967) + encode_resistance(600)))
    assert out[0] == Resistance(164, 0.0)
    assert out[1] == Resistance(967, 100.0)
    # 600 lies between entry 8 (558) and 9 (609): 100/30 * (8 + 42/51)
    assert out[2] == Resistance(600, round(100 / 30 * (8 + 42 / 51), 2))


def test_resistance_before_calibration_has_no_percent() -> None:
    p = PelotonParser()
    table = list(calibration_exchange())
    assert values(p.feed(b"".join(table[:-2]) + encode_resistance(600)))[-1] == Resistance(600, None)


def test_calibration_entries_paired_by_the_request_before_them_in_any_order() -> None:
    p = PelotonParser()
    order = [*range(30, -1, -1), 4, 4]  # reversed, with a retry at the end
    data = b"".join(
        encode_calibration_request(k) + encode_calibration_reply(DEFAULT_CALIBRATION[k]) for k in order
    )
    events = values(p.feed(data))
    complete = [e for e in events if isinstance(e, CalibrationComplete)]
    assert len(complete) == 1
    assert complete[0].table.raw == DEFAULT_CALIBRATION
    assert events[-1] == CalibrationEntry(4, DEFAULT_CALIBRATION[4])


def test_non_monotonic_table_is_rejected_and_percent_stays_off() -> None:
    bad = list(DEFAULT_CALIBRATION)
    bad[5], bad[6] = bad[6], bad[5]
    p = PelotonParser()
    events = values(p.feed(b"".join(calibration_exchange(tuple(bad)))))
    assert isinstance(events[-1], CalibrationRejected)
    assert values(p.feed(encode_resistance(600))) == [Resistance(600, None)]


@pytest.mark.parametrize(("raw", "pct"), [(0, 0.0), (163, 0.0), (968, 100.0), (9999, 100.0), (169, 3.33)])
def test_percent_is_clamped_outside_the_table(raw: int, pct: float) -> None:
    assert CalibrationTable(DEFAULT_CALIBRATION).percent(raw) == pct


def test_calibration_table_validates_itself() -> None:
    with pytest.raises(ValueError, match="31"):
        CalibrationTable((1, 2, 3))
    with pytest.raises(ValueError, match="increase"):
        CalibrationTable(tuple([5] * 31))


@given(
    st.lists(st.integers(0, 9999), min_size=31, max_size=31, unique=True).map(sorted), st.integers(0, 9999)
)
def test_percent_is_monotonic_and_bounded(table: list[int], raw: int) -> None:
    t = CalibrationTable(tuple(table))
    pct = t.percent(raw)
    assert 0.0 <= pct <= 100.0
    assert t.percent(raw + 1) >= pct


@given(
    st.lists(
        st.one_of(
            st.integers(0, 999).map(lambda v: ("cadence", v)),
            st.integers(0, 99999).map(lambda v: ("power", v)),
            st.integers(0, 9999).map(lambda v: ("resistance", v)),
        ),
        max_size=30,
    )
)
def test_encode_decode_round_trip(items: list[tuple[str, int]]) -> None:
    data = b""
    expected: list[object] = []
    for kind, v in items:
        if kind == "cadence":
            data += encode_request(Command.CADENCE) + encode_cadence(v)
            expected.append(Cadence(v))
        elif kind == "power":
            data += encode_request(Command.POWER) + encode_power(v / 10)
            expected.append(Power(v / 10, v))
        else:
            data += encode_request(Command.RESISTANCE) + encode_resistance(v)
            expected.append(Resistance(v, None))
    p = PelotonParser()
    assert values(p.feed(data) + p.flush()) == expected
    assert p.summary()["frames_ok"] == 2 * len(items)
    assert p.summary()["bytes_skipped"] == 0
