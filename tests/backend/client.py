"""The backend tests' sync client lives in engine/campaign/sync_client.py (the security campaign uses it
too); this name stays for the tests that import it from here."""

from engine.campaign.sync_client import SERVER_PEER, SyncClient

__all__ = ["SERVER_PEER", "SyncClient"]
