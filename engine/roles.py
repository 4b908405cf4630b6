"""The roles a device plays: the one `Role`, named in its token (engine/auth/tokens.py) and in the ride's
documents (engine/ride/schema.py), so the two never need bridging."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    BIKE = "bike"
    APP = "app"
    BACKEND = "backend"
    VIEWER = "viewer"
