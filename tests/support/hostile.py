"""Hostile sync peers for the backend tests. They live in engine/campaign/hostile_sync.py (the security
campaign uses them too: one home); this module keeps the tests' imports short."""

from __future__ import annotations

from engine.campaign.hostile_sync import (
    SERVER_PEER,
    close_code_while_sending,
    filler_frame,
    orphan_changes,
    raw_peer,
    sync_frame,
    sync_message,
)

__all__ = [
    "SERVER_PEER",
    "close_code_while_sending",
    "filler_frame",
    "orphan_changes",
    "raw_peer",
    "sync_frame",
    "sync_message",
]
