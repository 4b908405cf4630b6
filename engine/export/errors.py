"""The one error an exporter raises: a ride that the format cannot hold (e.g. times before FIT's epoch)."""

from __future__ import annotations


class ExportError(ValueError):
    """The ride cannot be written in this format; the message says why."""
