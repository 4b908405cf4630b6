"""Decoded Peloton values as engine Readings: the one mapping listen mode, poll mode and the CLI share."""

from __future__ import annotations

from adapters.serial.peloton import Cadence, PelotonEvent, Power, Resistance
from engine.readings import Kind


def reading_fields(ev: PelotonEvent) -> tuple[Kind, float, float | None] | None:
    """(kind, value, pct) for a value event, None for anything else."""
    if isinstance(ev, Cadence):
        return Kind.CADENCE, float(ev.rpm), None
    if isinstance(ev, Power):
        return Kind.POWER, ev.watts, None
    if isinstance(ev, Resistance):
        return Kind.RESISTANCE, float(ev.raw), ev.pct
    return None
