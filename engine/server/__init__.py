"""The host `ridesync serve` runs: the aiohttp application, its shared keys, the connection guard and the
runner. It knows no lane: the live lane, the durable lane and the dashboard plug in as `Lane`s
(docs/architecture.md#the-host-and-its-lanes)."""
