"""`ClientDocuments` over a ReplicaStore: the documents a device syncs, with this connection's sync states.

The store names documents by 32 hex characters, automerge-repo by bs58check of the same 16 bytes
(engine/sync/docid.py translates).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.crdt import SyncSession
from engine.store import ReplicaStore
from engine.sync.docid import document_id_to_hex as to_hex


class StoreDocuments:
    """One connection's view of the store. Create one per connection: sync states never outlive it."""

    def __init__(self, store: ReplicaStore) -> None:
        self.store = store
        self._sessions: dict[str, SyncSession] = {}

    def has(self, doc_id: str) -> bool:
        return self.store.has_doc(to_hex(doc_id))

    def open(self, doc_id: str) -> None:
        self._sessions[doc_id] = SyncSession()

    def forget(self, doc_id: str) -> None:
        self._sessions.pop(doc_id, None)

    def is_empty(self, doc_id: str) -> bool:
        return not self.store.heads(to_hex(doc_id))

    def generate(self, doc_id: str) -> bytes | None:
        return self.store.generate_sync(to_hex(doc_id), self._sessions[doc_id])

    def receive(self, doc_id: str, data: bytes) -> bool:
        doc_hex = to_hex(doc_id)
        before = self.store.heads(doc_hex)
        after = self.store.receive_sync(doc_hex, self._sessions[doc_id], data)
        return sorted(after) != sorted(before)

    def covers(self, doc_id: str, their_heads: Sequence[bytes]) -> bool:
        doc_hex = to_hex(doc_id)
        if not self.store.heads(doc_hex):
            return True
        # Unknown heads make Automerge list every change, so a peer ahead of us is not taken for one that
        # holds our changes until we have merged what it has.
        return not self.store.changes_since(doc_hex, their_heads)

    def heads(self, doc_id: str) -> list[bytes]:
        return self.store.heads(to_hex(doc_id))
