"""The strap link state machine, sans-I/O: no radio, no clock, just events in and states out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.link_state import LinkStateError, Phase, StrapLinkMachine
from engine.backoff import Backoff
from engine.readings import Contact, SourceState


def machine(**kw: object) -> StrapLinkMachine:
    return StrapLinkMachine("s", rng=random.Random(7), **kw)  # type: ignore[arg-type]


def states(events: list) -> list[SourceState]:  # type: ignore[type-arg]
    return [e.state for e in events]


@given(
    base=st.floats(0.001, 10),
    factor=st.floats(1, 1000),
    attempt=st.integers(0, 10_000),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_backoff_stays_between_zero_and_the_capped_ceiling(
    base: float, factor: float, attempt: int, seed: int
) -> None:
    policy = Backoff(base=base, cap=base * factor)
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= policy.ceiling(attempt) <= policy.cap


def test_backoff_ceiling_doubles_until_the_cap() -> None:
    policy = Backoff(base=1, cap=10)
    assert [policy.ceiling(a) for a in range(6)] == [1, 2, 4, 8, 10, 10]


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="cap >= base"):
        Backoff(base=5, cap=1)


def test_happy_path_and_one_connect_at_a_time() -> None:
    m = machine()
    assert states(m.connecting(0.0)) == [SourceState.CONNECTING]
    with pytest.raises(LinkStateError):
        m.connecting(0.1)  # a second connect while one is in flight is a bug, refused
    assert states(m.subscribed(0.2, address="x")) == [SourceState.STREAMING]
    with pytest.raises(LinkStateError):
        m.connecting(0.3)
    assert m.phase is Phase.STREAMING


def test_failures_back_off_further_each_time() -> None:
    m = machine(backoff=Backoff(base=1, cap=100))
    ceilings = []
    for i in range(5):
        m.connecting(float(i))
        events, retry = m.connect_failed(float(i), "timeout")
        assert states(events) == [SourceState.BACKING_OFF]
        assert retry.attempt == i + 1
        ceilings.append(m.backoff.ceiling(i))
        assert 0 <= retry.delay_s <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 16]


def test_a_link_that_drops_at_once_does_not_reset_the_backoff() -> None:
    """bleak #1402: connect, drop, connect, drop ... must slow down, not loop."""
    m = machine(stable_after_s=10)
    for i in range(4):
        t = i * 100.0
        m.connecting(t)
        m.subscribed(t + 1)
        m.measurement(t + 2, Contact.DETECTED)
        events, retry = m.link_lost(t + 3, "dropped")  # held 2 s < 10 s
        assert states(events) == [SourceState.LOST, SourceState.BACKING_OFF]
        assert retry.attempt == i + 1


def test_a_stable_link_resets_the_backoff() -> None:
    m = machine(stable_after_s=10)
    m.connecting(0)
    m.connect_failed(0, "x")
    m.connecting(1)
    m.subscribed(2)
    m.measurement(3, Contact.DETECTED)
    _, retry = m.link_lost(20, "walked away")
    assert retry.attempt == 1


def test_a_silent_link_never_counts_as_stable() -> None:
    m = machine(stable_after_s=1)
    m.connecting(0)
    m.connect_failed(0, "x")
    m.connecting(1)
    m.subscribed(2)
    _, retry = m.link_lost(100, "no data ever")
    assert retry.attempt == 2


def test_stale_once_with_its_start_then_resumed() -> None:
    m = machine(stale_after_s=3)
    m.connecting(0)
    m.subscribed(1)
    m.measurement(2, Contact.DETECTED)
    assert m.tick(4.9) == []
    stale = m.tick(5.0)
    assert states(stale) == [SourceState.STALE]
    assert stale[0].extra["stale_since"] == 2
    assert "stale since 2.000" in stale[0].detail
    assert m.tick(9) == []  # reported once, not every tick
    resumed = m.measurement(10, Contact.DETECTED)
    assert [(e.state, e.detail) for e in resumed] == [(SourceState.STREAMING, "measurements resumed")]


def test_subscribed_but_never_measured_goes_stale_from_the_subscribe_time() -> None:
    m = machine(stale_after_s=3)
    m.connecting(0)
    m.subscribed(1)
    assert states(m.tick(4)) == [SourceState.STALE]


def test_contact_transitions_are_states() -> None:
    m = machine()
    m.connecting(0)
    m.subscribed(0)
    assert m.measurement(1, Contact.DETECTED) == []
    assert states(m.measurement(2, Contact.NOT_DETECTED)) == [SourceState.NO_CONTACT]
    assert m.measurement(3, Contact.NOT_DETECTED) == []
    restored = m.measurement(4, Contact.DETECTED)
    assert [(e.state, e.detail) for e in restored] == [(SourceState.STREAMING, "contact restored")]
    assert m.measurement(5, Contact.UNSUPPORTED) == []


def test_lost_carries_the_last_measurement_time() -> None:
    m = machine()
    m.connecting(0)
    m.subscribed(0)
    m.measurement(7.5, Contact.DETECTED)
    events, _ = m.link_lost(9, "supervision timeout")
    assert events[0].extra["last_measurement_t"] == 7.5
    assert events[0].detail == "supervision timeout"


def test_measurement_outside_a_link_is_refused() -> None:
    m = machine()
    with pytest.raises(LinkStateError):
        m.measurement(0, Contact.DETECTED)


@given(st.lists(st.sampled_from(["connect", "fail", "sub", "meas", "lost", "tick", "stop"]), max_size=60))
def test_any_legal_sequence_keeps_invariants(ops: list[str]) -> None:
    m = machine()
    t = 0.0
    for op in ops:
        t += 1.0
        try:
            if op == "connect":
                m.connecting(t)
            elif op == "fail":
                _, retry = m.connect_failed(t, "x")
                assert 0 <= retry.delay_s <= m.backoff.cap
            elif op == "sub":
                m.subscribed(t)
            elif op == "meas":
                m.measurement(t, Contact.DETECTED)
            elif op == "lost":
                m.link_lost(t, "x")
            elif op == "stop":
                m.stopped(t)
            else:
                m.tick(t)
        except LinkStateError:
            continue
        assert m.attempt >= 0
        assert (m.phase is Phase.STREAMING) == (m.streaming_since is not None)


def test_stopped_source_can_start_again() -> None:
    m = machine()
    m.connecting(0)
    m.subscribed(1)
    assert states(m.stopped(2)) == [SourceState.CLOSED]
    assert m.phase is Phase.IDLE
    assert states(m.connecting(3)) == [SourceState.CONNECTING]
    assert m.stopped(4) and m.stopped(5) == []
