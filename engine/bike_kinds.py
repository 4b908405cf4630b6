"""What kind of bike a rider is on: a short word, part of the rider's identity (never of each sample).

The live lane carries it once per connection in the publisher's hello (engine/live/wire.py), the hub keeps
it with the rider's name (engine/live/riders.py) and puts it in the rider's record, and the dashboard tile
shows it ("Peloton bus", "BLE FTMS", ...). Pure: the vocabulary, and how a set of open sources names it.

A sensor source that is a bike says so with an optional `bike_kind` attribute (a value of `BIKE_KINDS`, or
None while it does not know yet: a BLE bike learns its profile from service discovery on connecting).
Sources without the attribute (a heart-rate strap) are not bikes.
"""

from __future__ import annotations

from collections.abc import Iterable

PELOTON = "peloton"  # a Peloton bike's serial bus
LINE = "line"  # a DIY reed-switch cadence sensor on the line protocol
BLE_FTMS = "ble-ftms"  # Fitness Machine Service: smart trainers, connected bikes
BLE_CPS = "ble-cps"  # Cycling Power: crank or pedal power meters
BLE_CSC = "ble-csc"  # Cycling Speed and Cadence: cadence and speed pods
HR_ONLY = "hr-only"  # a strap and no bike
BIKE_KINDS = frozenset({PELOTON, LINE, BLE_FTMS, BLE_CPS, BLE_CSC, HR_ONLY})
# What a tile says (the dashboard's static/app.js holds the same words; a test keeps the two equal).
LABELS = {
    PELOTON: "Peloton bus",
    LINE: "DIY cadence",
    BLE_FTMS: "BLE FTMS",
    BLE_CPS: "BLE power",
    BLE_CSC: "BLE CSC",
    HR_ONLY: "HR only",
}


def ble_kind(service: str) -> str | None:
    """The kind of a BLE bike serving `service` ("ftms", "cps", "csc"); None for any other name."""
    kind = f"ble-{service}"
    return kind if kind in BIKE_KINDS and kind != HR_ONLY else None


def bike_kind_of(sources: Iterable[object]) -> str | None:
    """The kind a rider's open sources add up to: the first bike's kind, in source order; None while every
    bike among them is still finding out (or when there are no sources at all); `HR_ONLY` when none of
    them is a bike."""
    any_source = any_bike = False
    for source in sources:
        any_source = True
        if not hasattr(source, "bike_kind"):
            continue
        any_bike = True
        kind = source.bike_kind
        if isinstance(kind, str) and kind in BIKE_KINDS:
            return kind
    return HR_ONLY if any_source and not any_bike else None


__all__ = [
    "BIKE_KINDS",
    "BLE_CPS",
    "BLE_CSC",
    "BLE_FTMS",
    "HR_ONLY",
    "LABELS",
    "LINE",
    "PELOTON",
    "bike_kind_of",
    "ble_kind",
]
