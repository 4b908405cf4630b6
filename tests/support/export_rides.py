"""Rides as plain export data, any shape a ride may have (hypothesis strategies)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from engine.export import ExportRide, Row, build

T_MIN = 946_684_800.0  # 2000-01-01
T_MAX = 4_102_444_800.0  # 2100-01-01


@st.composite
def rows(draw: st.DrawFn, max_rows: int = 60) -> list[Row]:
    """Rows as any ride may hold them: gaps, repeated seconds, missing and out-of-range values."""
    t = draw(st.floats(T_MIN, T_MAX - 100_000, allow_nan=False))
    out = []
    for seq in range(draw(st.integers(0, max_rows))):
        t += draw(st.sampled_from([0.0, 0.01, 0.5, 1.0, 1.0, 1.0, 2.37, 30.0]))
        hr = draw(st.one_of(st.none(), st.integers(1, 300)))
        out.append(
            Row(
                t=round(t, 2),
                device="bike-1",
                seq=seq,
                hr=hr,
                hr_device=None if hr is None else draw(st.sampled_from(["bike-1", "app-1"])),
                rr=tuple(draw(st.lists(st.integers(1, 80_000), max_size=4))) if hr is not None else (),
                cadence=draw(st.one_of(st.none(), st.integers(0, 300))),
                power_w=draw(st.one_of(st.none(), st.integers(0, 70_000).map(lambda dw: dw / 10))),
                resistance=draw(st.one_of(st.none(), st.integers(0, 1000))),
            )
        )
    return out


def _num(draw: st.DrawFn, low: float, high: float) -> float | None:
    value: float | None = draw(st.one_of(st.none(), st.floats(low, high, allow_nan=False)))
    return value


@st.composite
def rides(draw: st.DrawFn) -> ExportRide:
    got = draw(rows())
    totals: dict[str, Any] = {
        "duration_s": draw(st.floats(0, 20_000, allow_nan=False)),
        "output_kj": _num(draw, 0, 5000),
        "energy_kcal": _num(draw, 0, 80_000),
        "avg_hr": _num(draw, 0, 300),
        "max_hr": draw(st.one_of(st.none(), st.integers(0, 300))),
        "avg_power_w": _num(draw, 0, 7000),
        "max_power_w": _num(draw, 0, 7000),
        "avg_cadence": _num(draw, 0, 300),
    }
    shared = {"title": draw(st.one_of(st.none(), st.text(max_size=20)))}
    return build("ride-prop", got, totals=totals, shared=shared, fallback_t=T_MIN)
