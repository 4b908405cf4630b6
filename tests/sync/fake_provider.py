"""An in-memory document provider for session unit tests.

A "document" is a set of change names; a "sync message" is the comma-separated changes the sender thinks
the receiver lacks. Changes named `evil*` are refused, like the actor gate refuses a foreign actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.sync.server_session import Applied, Rejected, SyncOutcome


@dataclass
class Store:
    docs: dict[str, set[str]] = field(default_factory=dict)


class FakeProvider:
    def __init__(self, store: Store, *, fail_on: str | None = None) -> None:
        self.store = store
        self.sent: dict[str, set[str]] = {}
        self.fail_on = fail_on

    def is_known(self, doc_id: str) -> bool:
        return doc_id in self.store.docs

    def open(self, doc_id: str) -> None:
        self.sent[doc_id] = set()

    def receive_sync(self, doc_id: str, data: bytes) -> SyncOutcome:
        if self.fail_on == doc_id:
            raise RuntimeError("disk on fire")
        changes = {c for c in data.decode().split(",") if c and c != "hello"}
        if any(c.startswith("evil") for c in changes):
            return Rejected("actor not allowed")
        doc = self.store.docs[doc_id]
        new = changes - doc
        doc |= changes
        self.sent[doc_id] |= changes
        return Applied(changed=bool(new))

    def generate_sync(self, doc_id: str) -> bytes | None:
        missing = self.store.docs[doc_id] - self.sent[doc_id]
        if not missing:
            return None
        self.sent[doc_id] |= missing
        return ",".join(sorted(missing)).encode()
