from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from engine import backoff as b
from engine.device.retry import classify_exception

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@given(
    st.floats(0.01, 10),
    st.floats(1, 4),
    st.floats(10, 600),
    st.integers(0, 10_000),
    st.integers(0, 2**32),
)
def test_delay_is_within_the_full_jitter_window(
    base: float, factor: float, cap: float, attempt: int, seed: int
) -> None:
    policy = b.Backoff(base, factor, cap)
    ceiling = policy.ceiling(attempt)
    # Oracle: the uncapped window in log space, so large attempts cannot overflow the test either.
    capped = attempt * math.log(factor) >= math.log(cap / base)
    assert ceiling == pytest.approx(cap if capped else base * factor**attempt, rel=1e-6)
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= ceiling <= cap


@given(st.integers(0, 60), st.floats(0, 5000), st.integers(0, 2**32))
def test_retry_after_is_a_floor(attempt: int, retry_after: float, seed: int) -> None:
    policy = b.Backoff(0.5, 2, 30)
    assert policy.delay(attempt, random.Random(seed), retry_after) >= retry_after


def test_ceiling_grows_then_caps() -> None:
    policy = b.Backoff(base=1, factor=2, cap=10)
    assert [policy.ceiling(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert policy.ceiling(10**9) == 10


def test_jitter_uses_the_whole_window() -> None:
    rng = random.Random(7)
    policy = b.Backoff(base=1, factor=2, cap=8)
    delays = [policy.delay(10, rng) for _ in range(2000)]
    # Full jitter, not "equal jitter": short waits occur as often as long ones.
    assert min(delays) < 1 and max(delays) > 7


def test_attempts_reset_after_success() -> None:
    attempts = b.Attempts(b.Backoff(base=1, factor=2, cap=100), random.Random(1))
    for _ in range(5):
        attempts.next_delay()
    assert attempts.failures == 5
    attempts.succeeded()
    assert attempts.next_delay() <= 1


@pytest.mark.parametrize("bad", [dict(base=0), dict(factor=0.5), dict(cap=0.1), dict(cap=float("inf"))])
def test_rejects_nonsense_parameters(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        b.Backoff(**bad)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("99999999", b.DEFAULT_RETRY_AFTER_CAP),
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Friday, 27-Nov-26 12:01:00 GMT", 60.0),
        ("Fri Nov 27 12:00:05 2026", 5.0),
        ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("١٢", None),
        ("9" * 100, None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert b.parse_retry_after(header, NOW) == expected


@given(st.text(max_size=80))
def test_parse_retry_after_never_raises(header: str) -> None:
    result = b.parse_retry_after(header, NOW)
    assert result is None or 0 <= result <= b.DEFAULT_RETRY_AFTER_CAP


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_http_date_round_trip(when: datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    expected = min(max(0.0, (when - NOW).total_seconds()), b.DEFAULT_RETRY_AFTER_CAP)
    assert b.parse_retry_after(header, NOW) == expected


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, True),
        (503, True),
        (500, False),
        (502, False),
        (504, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (422, False),
        (200, False),
    ],
)
def test_classify_status(status: int, retry: bool) -> None:
    decision = b.classify_status(status, "7", NOW)
    assert decision.retry is retry
    assert decision.retry_after == (7.0 if retry else None)


def _response_error(status: int, headers: dict[str, str]) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(URL("http://127.0.0.1/x"), "GET", CIMultiDictProxy(CIMultiDict()))
    return aiohttp.ClientResponseError(
        info, (), status=status, headers=CIMultiDictProxy(CIMultiDict(headers))
    )


def test_classify_exceptions() -> None:
    later = (NOW + timedelta(seconds=42)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert classify_exception(_response_error(503, {"Retry-After": later}), NOW) == b.Decision(
        True, 42.0, "http 503: retryable"
    )
    assert not classify_exception(_response_error(403, {}), NOW).retry
    for exc in (
        ConnectionResetError(),
        ConnectionRefusedError(),
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
    ):
        assert classify_exception(exc, NOW).retry, exc
    assert not classify_exception(ValueError("bug"), NOW).retry


@given(st.integers(min_value=0, max_value=100), st.floats(0.01, 5), st.floats(0.1, 60), st.integers(0, 2**32))
def test_capped_is_full_jitter_up_to_the_cap_even_from_a_base_above_it(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    """The live publisher's and the relay's reconnect waits (a base above the cap waits up to the cap)."""
    policy = b.Backoff.capped(base, cap)
    assert policy.ceiling(attempt) == pytest.approx(min(cap, base * 2**attempt))
    assert 0.0 <= policy.delay(attempt, random.Random(seed)) <= policy.ceiling(attempt)
    assert 0.0 <= policy.delay(attempt) <= cap
