"""The backend's Prometheus metrics, on the application's own registry (`app[REGISTRY]`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets, 0.5 ms to 2.5 s: a sync reply, a commit wait and a store group all live in this range.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BackendMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sync_seconds = Histogram(
            "ridesync_sync_message_seconds",
            "Time to gate, merge, persist and answer one incoming sync message",
            buckets=_SECONDS,
            registry=registry,
        )
        self.sync_bytes = Counter(
            "ridesync_sync_bytes", "WebSocket sync bytes", ["direction"], registry=registry
        )
        self.gate_rejects = Counter(
            "ridesync_sync_gate_rejects", "Sync messages refused by the gate", ["reason"], registry=registry
        )
        self.connections = Gauge("ridesync_sync_connections", "Open sync connections", registry=registry)
        self.open_rides = Gauge(
            "ridesync_sync_open_rides", "Rides with at least one device connected", registry=registry
        )
        self.closes = Counter(
            "ridesync_sync_closes", "Sync connections closed by the server", ["code"], registry=registry
        )
        self.finalized = Counter("ridesync_rides_finalized", "Rides finalized", registry=registry)
        self.segments_retired = Counter(
            "ridesync_live_segments_retired",
            "Live segments dropped once their bike document covered them",
            registry=registry,
        )
        self.end_events = Counter(
            "ridesync_ride_end_requests", "POST /v1/rides/{id}/end outcomes", ["outcome"], registry=registry
        )
        self.http = Counter(
            "ridesync_backend_http_requests", "Ride API requests", ["route", "status"], registry=registry
        )
        self.rate_limited = Counter(
            "ridesync_rate_limited", "Requests answered 429", ["kind"], registry=registry
        )
        self.commit_wait_seconds = Histogram(
            "ridesync_sync_commit_wait_seconds",
            "Time a sync reply waited for the store's group commit before it could be sent",
            buckets=_SECONDS,
            registry=registry,
        )
        self.store_group_seconds = Histogram(
            "ridesync_store_group_seconds",
            "Write-behind: time to run and commit one group of store writes (writer thread)",
            buckets=_SECONDS,
            registry=registry,
        )
        self.store_commit_seconds = Histogram(
            "ridesync_store_commit_seconds",
            "Write-behind: time of the COMMIT (fsync) of one group",
            buckets=_SECONDS,
            registry=registry,
        )
        self.store_group_jobs = Histogram(
            "ridesync_store_group_jobs",
            "Write-behind: store writes committed together in one transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=registry,
        )
        self.token_expired_closes = Counter(
            "ridesync_sync_token_expired",
            "Sync connections closed because their token expired",
            registry=registry,
        )
        self.push_rides = Counter(
            "ridesync_push_rides",
            "Rides announced to / heard from other backend nodes over the ride push",
            ["direction"],
            registry=registry,
        )
        self.rides_in_memory = Gauge(
            "ridesync_rides_in_memory",
            "Rides the backend holds in memory (idle ones are released and read back at their next use)",
            registry=registry,
        )
        self.ride_releases = Counter(
            "ridesync_ride_releases", "Idle rides released from memory (not from storage)", registry=registry
        )
        self.ride_loads = Counter(
            "ridesync_ride_loads",
            "Rides read back from storage into memory (released earlier, or written by another node)",
            registry=registry,
        )
        self.auth_failures = Counter(
            "ridesync_auth_failures", "Requests refused for their token", ["code"], registry=registry
        )
