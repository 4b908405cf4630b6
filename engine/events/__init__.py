"""HTTP events: the idempotency ledger that makes retried and duplicated events count once."""
