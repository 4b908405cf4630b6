"""`ridesync bench live`: the class hub under load on loopback, next to the naive baseline hub
(engine/bench/naive_hub.py, plugged into the same live lane through the same `LiveHub` port).

The hub runs in its own process (exactly `ridesync serve`'s application). Load-generator processes
multiplex many riders over raw sockets: every rider is one WebSocket in `pubsub` mode (its bike publishes
heart rate at `--rate` Hz with a random phase, and its screen receives the class), plus `--viewers` dashboard
subscribers per class. A fraction of the connections ("probes") parse every frame and record, for each
newly seen (device, seq), receive time minus the sample's sensor timestamp; the rest only drain their
sockets, so the generator's cost stays small next to the hub's. Hub CPU comes from /proc/<pid>/stat, RSS
from /proc/<pid>/status, frames and deliveries from the hub's own counters (/live/v1/stats).

The same invocation runs the same configurations against the naive hub (every sample to every peer at
once, no coalescing) and reports ratios, then searches the knee: the most riders with p99 < 1 s, by
doubling from `--knee-start` then bisecting `--knee-steps` times (bounded by `--knee-max`, which the
process's open-file limit caps).

The relay configuration (`--relay-configs`, `--hubs N`) runs N coalescing hub processes sharing their
classes over a throwaway `redis-server` (engine/live/redis_relay.py); the load generators spread every
class's riders and viewers over the N hubs round-robin, so every sample crosses the relay (the worst case:
no class affinity). By default the N hubs and redis share the single hub's core (`--relay-cpus hub`: the
same CPU budget, so the result is the relay's cost, not more hardware); `--relay-cpus all` lets them use
every core, shared with the load generators. `--relay-knee` searches its knee too.

The modules: options.py (the flags), hub_proc.py (a hub process: the live lane with the chosen hub),
load.py (load generation), procs.py (pinning and /proc readings), point.py (one measured point: start,
measure, stop), report.py (a point's figures and the run's comparisons and targets), knee.py (the knee
search), main.py (the run).
"""

from __future__ import annotations

from engine.bench.live.main import run
from engine.bench.live.options import HELP, NAME, add_arguments

__all__ = ["HELP", "NAME", "add_arguments", "run"]
