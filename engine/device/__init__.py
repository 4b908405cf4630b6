"""The device side of sync: the bike and app replicas, their sync client and sync state
(docs/architecture.md#the-durable-lane)."""
