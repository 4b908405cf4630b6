"""The source's measurement handling below the radio: hostile bytes in, readings or nothing out."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.budget import ConnectionBudget
from adapters.ble.hrm import HrmError, parse_hrm_lenient
from adapters.ble.scan import BluetoothUnavailable
from adapters.ble.source import BleHeartRateSource
from engine.readings import Contact, Kind, Reading, SourceItem, SourceState


def streaming_source() -> BleHeartRateSource:
    source = BleHeartRateSource("AA:BB:CC:DD:EE:FF", budget=ConnectionBudget("t", 1), clock=lambda: 1000.0)
    source.machine.connecting(999.0)
    source.machine.subscribed(999.5)
    return source


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_any_bytes_give_valid_readings_or_nothing(payloads: list[bytes]) -> None:
    source = streaming_source()
    out: list[SourceItem] = []
    valid = 0
    damaged = 0
    for payload in payloads:
        source._on_measurement(payload, out.append)
        try:
            _, defects = parse_hrm_lenient(payload)
            valid += 1
            damaged += bool(defects)
        except HrmError:
            pass
    readings = [i for i in out if isinstance(i, Reading)]
    assert len(readings) == valid == source.stats.notifications
    assert source.stats.malformed == len(payloads) - valid
    assert source.stats.payload_defects == damaged == sum(1 for r in readings if "defects" in r.extra)
    assert [r.seq for r in readings] == list(range(1, valid + 1))
    for r in readings:
        assert r.kind is Kind.HEART_RATE and r.t == 1000.0
        assert r.value is None or r.value > 0, "never a 0 bpm"
        if r.contact is Contact.NOT_DETECTED:
            assert r.value is None, "no contact is a state, not a number"
        assert all(x >= 0 for x in r.rr_s)


class _BrokenStackScanner(BaseBleakScanner):
    """A host whose Bluetooth stack refuses to scan, as BlueZ does with no adapter or no D-Bus."""

    def __init__(self, detection_callback: Any, service_uuids: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        raise BleakError("org.bluez.Error.NotReady")

    async def stop(self) -> None:
        pass


async def test_an_unusable_bluetooth_stack_fails_fast_with_a_clear_error() -> None:
    budget = ConnectionBudget("t", 1)
    source = BleHeartRateSource("AA:BB:CC:DD:EE:FF", budget=budget, scanner_backend=_BrokenStackScanner)
    seen: list[SourceItem] = []
    with pytest.raises(BluetoothUnavailable, match="ridesync doctor"):
        async with asyncio.timeout(30), aclosing(source.stream()) as stream:
            async for item in stream:
                seen.append(item)
    assert [getattr(i, "state", None) for i in seen] == [SourceState.CONNECTING, SourceState.FAILED]
    assert "NotReady" in seen[-1].detail  # type: ignore[union-attr]
    assert not budget.holders
