"""One hub process of the benchmark: exactly `ridesync serve`'s host with the live lane, running the hub
under test (the coalescing hub, or the naive baseline through the same `LiveHub` port), answering the
parent's stats requests from a thread."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.bench.live.procs import pin, raise_nofile
from engine.bench.naive_hub import NaiveHub
from engine.live.config import HubConfig
from engine.live.lane import live_lane
from engine.live.routes import HUB
from engine.server.config import ServerConfig
from engine.server.lane import Lane
from engine.server.run import serve

# The hubs the benchmark compares, each as the live lane it runs in: the production lane (with a Redis
# relay when `relay_url` is set), and the same lane around the naive baseline.
HUB_LANES: dict[str, Callable[[HubConfig], Lane]] = {
    "coalescing": live_lane,
    "naive": lambda config: live_lane(hub=NaiveHub(config)),
}


@dataclass
class HubSpec:
    data_dir: str
    impl: str
    cpu_budget: float | None
    max_tick: float | None
    cpus: set[int] | None
    relay_url: str | None = None
    loop: str = "asyncio"
    share: float = 1.0  # of the hub core this hub may use (N hubs on one core: 1/N each)


def hub_main(ctl: Connection, spec: HubSpec) -> None:
    # Started by `point.start_child`: Ctrl-C is ignored here, the parent ends us with SIGTERM (serve()'s
    # clean shutdown, once it runs).
    pin(spec.cpus)
    data_dir, cpu_budget, max_tick = spec.data_dir, spec.cpu_budget, spec.max_tick
    logging.basicConfig(level=logging.ERROR)
    raise_nofile()
    hub_config = HubConfig(relay_url=spec.relay_url)
    if cpu_budget is not None:
        hub_config = dataclasses.replace(hub_config, cpu_budget=cpu_budget)
    if spec.share < 1.0:
        hub_config = dataclasses.replace(hub_config, cpu_limit=hub_config.cpu_limit * spec.share)
    if max_tick is not None:
        hub_config = dataclasses.replace(hub_config, max_tick_s=max_tick)
    config = ServerConfig(data_dir=Path(data_dir), host="127.0.0.1", port=0)
    apps: list[web.Application] = []
    lanes = [HUB_LANES[spec.impl](hub_config), apps.append]

    def answer_stats() -> None:
        # A thread, not the event loop: an overloaded hub (the naive one) would answer an HTTP stats request
        # seconds late, and its counters would then cover the wrong window.
        while True:
            try:
                ctl.recv()
            except EOFError:
                return
            hub = apps[0][HUB]
            cpu = os.times()
            snap: dict[str, Any] = {"ts": time.time(), "cpu_user_s": cpu.user, "cpu_system_s": cpu.system}
            snap.update(hub.stats.to_json())
            delay = hub.flush_delay()
            snap["tick_interval_s"] = round(delay, 4) if delay is not None else None
            snap["relay"] = hub.relay_stats()
            ctl.send(snap)

    threading.Thread(target=answer_stats, daemon=True).start()
    if spec.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(config, lanes, on_listening=ctl.send))


def hub_stats(ctl: Connection) -> dict[str, Any]:
    ctl.send("stats")
    if not ctl.poll(30):
        raise RuntimeError("hub did not answer a stats request")
    out: dict[str, Any] = ctl.recv()
    return out
