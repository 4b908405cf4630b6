"""Cadence from cumulative crank records: lost lines, rollover, stops, reboots."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.cadence import CadenceUpdate, CrankCadence
from adapters.serial.line_protocol import CrankRecord


def pedal(rpm: float, seconds: int, *, start_rev: int = 0, start_tick: int = 0) -> list[CrankRecord]:
    """What a sensor sends: one record a second, revolutions at `rpm` (0 = not pedalling)."""
    out = []
    for s in range(seconds + 1):
        now = start_tick + s * 1024
        if rpm:
            period = 60 * 1024 / rpm
            revs = int(s * 1024 / period)
            event = start_tick + round(revs * period)
        else:
            revs, event = 0, start_tick
        out.append(CrankRecord(s % 256, (start_rev + revs) % 65536, event % 65536, now % 65536))
    return out


def run(cad: CrankCadence, recs: list[CrankRecord]) -> list[CadenceUpdate | None]:
    return [cad.on_record(r) for r in recs]


def test_steady_cadence() -> None:
    out = run(CrankCadence(), pedal(90, 10))
    assert out[0] is None  # the first record is only a baseline
    rpms = [u.rpm for u in out[1:] if u is not None]
    assert all(abs(r - 90) < 1 for r in rpms)
    assert len(rpms) == 10


def test_lost_lines_are_counted_and_do_not_corrupt_cadence() -> None:
    recs = pedal(80, 20)
    kept = recs[:5] + recs[12:]  # seven lines lost
    cad = CrankCadence()
    out = [u for u in run(cad, kept) if u is not None]
    assert all(abs(u.rpm - 80) < 1 for u in out)
    assert cad.counters.lines_lost == 7


def test_rollover_of_revs_times_and_seq() -> None:
    recs = pedal(100, 30, start_rev=65530, start_tick=65536 - 5000)
    assert any(r.revs < 10 for r in recs)  # the counters do roll over within the run
    cad = CrankCadence()
    out = [u for u in run(cad, recs) if u is not None]
    assert all(abs(u.rpm - 100) < 1 for u in out)
    assert cad.counters.resyncs == 0


def test_seq_rollover_is_not_a_loss() -> None:
    cad = CrankCadence()
    cad.on_record(CrankRecord(255, 0, 0, 100))
    cad.on_record(CrankRecord(0, 1, 700, 800))
    assert cad.counters.lines_lost == 0


def test_duplicate_line_is_ignored() -> None:
    cad = CrankCadence()
    recs = pedal(60, 3)
    run(cad, [recs[0], recs[1], recs[1], recs[2]])
    assert cad.counters.duplicates == 1
    assert cad.counters.records == 3


def test_stopping_is_reported_after_the_timeout_then_pedalling_resumes() -> None:
    cad = CrankCadence(stop_after_s=3)
    moving = pedal(60, 5)
    out = run(cad, moving)
    last = moving[-1]
    # The rider stops: the sensor keeps sending with unchanged revs and event time.
    idle = [
        CrankRecord((last.seq + i) % 256, last.revs, last.event_time, last.sensor_time + i * 1024)
        for i in range(1, 7)
    ]
    out = run(cad, idle)
    assert [u.held for u in out if u is not None][:2] == [True, True]
    stopped = [u for u in out if u is not None and u.stopped]
    assert stopped and all(u.rpm == 0.0 for u in stopped)
    # Sensor time since the last crank event reaches 3 s on the 3rd idle record at the latest.
    assert out[3] is not None and out[3].stopped
    # Resume: first revolution restarts the measurement, the next gives a cadence.
    t0 = idle[-1].sensor_time
    resumed = [
        CrankRecord((idle[-1].seq + 1) % 256, last.revs + 1, t0 + 500, t0 + 600),
        CrankRecord((idle[-1].seq + 2) % 256, last.revs + 2, t0 + 500 + 768, t0 + 1400),
    ]
    out = run(cad, resumed)
    assert out[0] is None
    assert out[1] == CadenceUpdate(80.0, 1)


def test_stopped_state_survives_more_than_one_time_rollover() -> None:
    cad = CrankCadence(stop_after_s=3)
    run(cad, pedal(60, 3))
    t = 4 * 1024
    out = []
    for i in range(200):  # 200 s idle: sensor_time - event_time wraps three times
        out.append(cad.on_record(CrankRecord((10 + i) % 256, 3, 3 * 1024, (t + i * 1024) % 65536)))
    assert all(u is not None and u.stopped for u in out[5:])


def test_sensor_reboot_resyncs_instead_of_reporting_nonsense() -> None:
    cad = CrankCadence()
    run(cad, pedal(70, 5, start_rev=5000, start_tick=20000))
    out = run(cad, pedal(70, 5))  # counters back to zero
    assert all(u is None or u.rpm < 100 for u in out)
    assert cad.counters.resyncs >= 1


def test_event_time_moving_without_revolutions_is_rejected() -> None:
    cad = CrankCadence()
    cad.on_record(CrankRecord(0, 10, 1000, 1100))
    assert cad.on_record(CrankRecord(1, 10, 2000, 2100)) is None
    assert cad.counters.resyncs == 1


@given(
    st.floats(20, 200), st.integers(0, 65535), st.integers(0, 65535), st.sets(st.integers(1, 29), max_size=20)
)
def test_cadence_is_right_whatever_the_start_and_the_losses(
    rpm: float, rev0: int, tick0: int, lost: set[int]
) -> None:
    recs = [r for i, r in enumerate(pedal(rpm, 30, start_rev=rev0, start_tick=tick0)) if i not in lost]
    cad = CrankCadence(stop_after_s=3)
    for u in run(cad, recs):
        if u is None or u.held or u.stopped:
            continue
        # event times are rounded to whole ticks: the error is bounded by one tick per window
        assert abs(u.rpm - rpm) <= rpm * 0.02 + 0.1
    assert cad.counters.resyncs == 0
