"""The ride page's series: the same heart-rate gap fill as the policy, holes as nulls, downsampling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backend.series import filled_hr, ride_series
from engine.ride import policy
from engine.ride.model import DeviceDoc, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef

RIDE = "ride-series"


def _samples(draw: st.DrawFn, n_max: int) -> list[Sample]:
    times = sorted(set(draw(st.lists(st.integers(0, 600), max_size=n_max))))
    out = []
    for seq, t in enumerate(times):
        hr = draw(st.one_of(st.none(), st.integers(40, 200)))
        contact = draw(st.sampled_from(["detected", "not_detected", None]))
        out.append(
            Sample(seq=seq, t=1000.0 + t / 2, hr=hr, contact=contact, power_dw=draw(st.integers(0, 5000)))
        )
    return out


@st.composite
def _ride(draw: st.DrawFn) -> tuple[list[Sample], list[tuple[str, list[Sample]]]]:
    bike = _samples(draw, 40)
    apps = [(f"app-{i}", _samples(draw, 40)) for i in range(draw(st.integers(0, 2)))]
    return bike, apps


@settings(max_examples=200)
@given(_ride())
def test_gap_fill_matches_the_policy(ride: tuple[list[Sample], list[tuple[str, list[Sample]]]]) -> None:
    """The series draws the samples the totals count: per device, and each one usable and in a gap."""
    bike, apps = ride
    _, fill = policy.compute_totals(bike, [s for _, s in apps], [d for d, _ in apps])
    drawn = filled_hr(bike, apps)
    assert len(drawn) == sum(fill.values())
    owners = {id(s): dev for dev, samples in apps for s in samples}
    per_device: dict[str, int] = {}
    for sample in drawn:
        per_device[owners[id(sample)]] = per_device.get(owners[id(sample)], 0) + 1
    assert per_device == fill
    bike_hr = [s.t for s in bike if s.hr_usable()]
    for sample in drawn:
        assert sample.hr_usable() and sample.hr is not None
        assert all(abs(t - sample.t) > policy.GAP_MATCH_S for t in bike_hr)


def _docs(bike: list[Sample], app: list[Sample]) -> RideDocs:
    return RideDocs(
        ride_id=RIDE,
        devices=(
            DeviceDoc(DocRef(RIDE, DocKind.BIKE, "bike-1"), samples=tuple(bike)),
            DeviceDoc(DocRef(RIDE, DocKind.APP, "app-1"), samples=tuple(app)),
        ),
    )


def test_app_fills_the_bikes_lost_strap_and_holes_stay_null() -> None:
    bike = [Sample(seq=i, t=100.0 + i, hr=None if 10 <= i < 20 else 150, power_dw=2000) for i in range(30)]
    app = [Sample(seq=i, t=100.0 + i, hr=90) for i in range(12, 16)]
    body = ride_series(_docs(bike, app))
    hr = dict((t, v) for t, v in body["series"]["hr"])
    assert body["t0"] == 100.0
    assert [hr[float(i)] for i in range(12, 16)] == [90.0] * 4  # filled from the app
    assert hr.get(11.0) is None and hr[17.0] is None and hr[10.0] is None  # unfilled: a hole, never 0
    assert hr[0.0] == 150.0
    assert body["series"]["pwr"][0] == [0.0, 200.0]
    assert body["series"]["cad"] == [[float(i), None] for i in range(30)]


def test_downsampling_averages_buckets() -> None:
    bike = [Sample(seq=i, t=float(i), hr=100 + (i % 2) * 10) for i in range(1000)]
    body = ride_series(_docs(bike, []), max_points=100)
    hr = body["series"]["hr"]
    assert len(hr) == 100
    assert all(v == 105.0 for _, v in hr)
