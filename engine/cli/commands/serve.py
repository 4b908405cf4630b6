"""`ridesync serve`: the backend (sync endpoint and ride API, class hub, dashboard)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli import argtypes
from engine.live.config import HubConfig
from engine.server.config import DEFAULT_HEAP_TRIM_S, HttpLimits

if TYPE_CHECKING:
    from engine.backend.config import BackendConfig

HTTP_DEFAULTS = HttpLimits()
# The flags' defaults are the hub's own (engine/live/config.py), named there once.
_HUB_DEFAULTS = HubConfig()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the backend: class hub, /healthz, /metrics")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=argtypes.port, default=8750, help="port (default 8750; 0 picks a free one)")
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="data dir: keys, databases ($RIDESYNC_DATA or ./ridesync-data)",
    )
    p.add_argument(
        "--store",
        type=argtypes.store,
        default=None,
        metavar="URL",
        help="the durable store and idempotency ledger: postgresql://USER@HOST[:PORT]/DATABASE (shared by "
        "any number of backend nodes) or sqlite:DIR (default: SQLite in DATA/backend/)",
    )
    p.add_argument(
        "--init",
        action="store_true",
        help="create the signing keys if the data dir has none (first run); without it, missing keys are an "
        "error, since new keys would invalidate every issued token",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=_HUB_DEFAULTS.stale_after_s,
        metavar="S",
        help="live values older than this show as stale",
    )
    p.add_argument(
        "--leaderboard-interval",
        type=float,
        default=_HUB_DEFAULTS.leaderboard_s,
        metavar="S",
        help="leaderboard delta tick",
    )
    p.add_argument(
        "--class-leaderboard-interval",
        action="append",
        default=[],
        metavar="CLASS=S",
        help="per-class leaderboard tick; repeatable",
    )
    p.add_argument(
        "--stall-limit",
        type=float,
        default=_HUB_DEFAULTS.stall_limit_s,
        metavar="S",
        help="disconnect a peer stalled this long",
    )
    p.add_argument(
        "--push",
        default=None,
        metavar="URL",
        help="several backend nodes over one database: tell the others which rides changed, via "
        "redis://HOST:PORT",
    )
    p.add_argument(
        "--relay", default=None, metavar="URL", help="share classes with other hubs via redis://HOST:PORT"
    )
    limits = p.add_argument_group(
        "sync limits", "each defaults to its environment variable, else the built-in default (flags win)"
    )
    limits.add_argument(
        "--max-message-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest WebSocket sync message ($RIDESYNC_MAX_MESSAGE_BYTES; default 8 MiB)",
    )
    limits.add_argument(
        "--heartbeat-s",
        type=float,
        default=None,
        metavar="S",
        help="sync ping interval; a dead peer is closed within 1.5x ($RIDESYNC_HEARTBEAT_S; default 5)",
    )
    limits.add_argument(
        "--rate-per-s",
        type=float,
        default=None,
        metavar="R",
        help="per-device requests/s, HTTP and sync upgrades ($RIDESYNC_RATE_PER_S; default 10)",
    )
    limits.add_argument(
        "--rate-burst",
        type=float,
        default=None,
        metavar="N",
        help="per-device burst above the rate ($RIDESYNC_RATE_BURST; default 40)",
    )
    limits.add_argument(
        "--max-queued-changes",
        type=int,
        default=None,
        metavar="N",
        help="changes one sync connection may leave queued for a missing dependency before it is closed "
        "($RIDESYNC_MAX_QUEUED_CHANGES; default 10000)",
    )
    limits.add_argument(
        "--max-queued-bytes",
        type=int,
        default=None,
        metavar="N",
        help="bytes of such changes per connection ($RIDESYNC_MAX_QUEUED_BYTES; default 16 MiB)",
    )
    limits.add_argument(
        "--unload-idle-s",
        type=float,
        default=None,
        metavar="S",
        help="release a ride from memory (not from storage) once idle this long: no connection, no "
        "request, everything committed; it is read back at its next use ($RIDESYNC_UNLOAD_IDLE_S; "
        "default 60)",
    )
    guard = p.add_argument_group(
        "connection limits",
        "what a client may hold before it presents a valid token, on every path (engine/server/guard.py)",
    )
    guard.add_argument(
        "--header-timeout",
        type=float,
        default=HTTP_DEFAULTS.header_timeout_s,
        metavar="S",
        help="a request's line and headers must arrive within this; else 408 and close (default %(default)g)",
    )
    guard.add_argument(
        "--body-timeout",
        type=float,
        default=HTTP_DEFAULTS.body_timeout_s,
        metavar="S",
        help="longest pause while reading a request body; else close (default %(default)g)",
    )
    guard.add_argument(
        "--keepalive-timeout",
        type=float,
        default=HTTP_DEFAULTS.keepalive_timeout_s,
        metavar="S",
        help="close an idle keep-alive HTTP connection after this (default %(default)g)",
    )
    guard.add_argument(
        "--max-pending-per-ip",
        type=int,
        default=HTTP_DEFAULTS.max_pending_per_ip,
        metavar="N",
        help="connections per address without a valid token yet; one more is refused with 429 unless its "
        "first request carries a valid token (default %(default)d)",
    )
    p.add_argument(
        "--heap-trim-interval",
        type=float,
        default=DEFAULT_HEAP_TRIM_S,
        metavar="S",
        help="every S seconds, give heap memory the server freed back to the system (glibc's malloc_trim, "
        "in a worker thread; engine/server/README.md); 0 never (default %(default)g)",
    )
    p.add_argument("--log-level", type=argtypes.log_level, default="INFO", metavar="LEVEL")
    p.set_defaults(handler=_serve)


def backend_config(args: argparse.Namespace) -> BackendConfig:
    """The backend's limits: flags over environment variables over defaults. Raises CliError."""
    import os

    from engine.backend.config import LIMITS, BackendConfig, ConfigError
    from engine.cli.main import CliError

    flags = {
        "max_message_bytes": args.max_message_bytes,
        "heartbeat_s": args.heartbeat_s,
        "rate_per_s": args.rate_per_s,
        "burst": args.rate_burst,
        "max_queued_changes": args.max_queued_changes,
        "max_queued_bytes": args.max_queued_bytes,
        "unload_idle_s": args.unload_idle_s,
    }
    # A variable a flag overrides is not read at all, so a stale bad value cannot block the flag.
    shadowed = {var for name, _, var in LIMITS if flags[name] is not None}
    env = {k: v for k, v in os.environ.items() if k not in shadowed}
    try:
        return BackendConfig.from_env(env).override(**flags)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def listening_event(url: str, data_dir: Path) -> dict[str, str]:
    """The line `serve` prints once it listens: its URL, the dashboard's, and the command that issues a
    viewer token for it (the dashboard wants one: `DASHBOARD?class=CLASS&token=TOKEN`)."""
    import shlex

    return {
        "event": "listening",
        "url": url,
        "data_dir": str(data_dir),
        "dashboard_url": f"{url}/",
        "viewer_token_command": "ridesync token issue --role viewer --device dash-1 --class CLASS "
        f"--data {shlex.quote(str(data_dir))}",
        "open": f"{url}/?class=CLASS&token=TOKEN",
    }


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import math

    from engine import logs
    from engine.auth.tokens import TokenError
    from engine.backend.routes import make_setup
    from engine.cli.datadir import open_keyring, os_error, serving_lock
    from engine.cli.main import CliError
    from engine.cli.output import emit
    from engine.dashboard.routes import setup_dashboard
    from engine.datadir import default_data_dir
    from engine.events.idempotency import LedgerUnreadable
    from engine.live.config import HubConfig
    from engine.live.lane import live_lane
    from engine.server.config import ServerConfig
    from engine.server.run import serve
    from engine.store import StoreError

    per_class: dict[str, float] = {}
    for item in args.class_leaderboard_interval:
        name, _, value = item.partition("=")
        try:
            per_class[name] = float(value)
        except ValueError as exc:
            raise CliError(f"--class-leaderboard-interval wants CLASS=SECONDS, got {item!r}") from exc
    for name, v in (
        ("--stale-after", args.stale_after),
        ("--leaderboard-interval", args.leaderboard_interval),
        ("--stall-limit", args.stall_limit),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
        ("--keepalive-timeout", args.keepalive_timeout),
        ("--max-pending-per-ip", args.max_pending_per_ip),
    ):
        if not (math.isfinite(v) and v > 0):
            raise CliError(f"{name} must be a positive number")
    if not (math.isfinite(args.heap_trim_interval) and args.heap_trim_interval >= 0):
        raise CliError("--heap-trim-interval must be a number of seconds, 0 or more")
    if args.relay is not None and not args.relay.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--relay wants a redis://HOST:PORT URL, got {args.relay!r}")
    if args.push is not None and not args.push.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--push wants a redis://HOST:PORT URL, got {args.push!r}")
    backend = dataclasses.replace(backend_config(args), store=args.store, push_url=args.push)
    logs.configure(args.log_level)
    hub = HubConfig(
        stale_after_s=args.stale_after,
        leaderboard_s=args.leaderboard_interval,
        leaderboard_s_by_class=per_class,
        stall_limit_s=args.stall_limit,
        relay_url=args.relay,
    )
    http = HttpLimits(
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keepalive_timeout_s=args.keepalive_timeout,
        max_pending_per_ip=args.max_pending_per_ip,
    )
    config = ServerConfig(
        data_dir=Path(args.data) if args.data else default_data_dir(),
        host=args.host,
        port=args.port,
        http=http,
        heap_trim_s=args.heap_trim_interval,
    )
    # The data dir and its keys first: a damaged or missing one is one line naming the file, not a
    # traceback from inside the server's startup.
    open_keyring(config.data_dir, init=args.init)
    try:
        with serving_lock(config.data_dir):
            asyncio.run(
                serve(
                    config,
                    lanes=[live_lane(hub), make_setup(backend), setup_dashboard],
                    on_listening=lambda url: emit(listening_event(url, config.data_dir)),
                )
            )
    except (StoreError, LedgerUnreadable, TokenError) as exc:
        # The backend's store and ledger open at startup (engine/backend/routes.py); each names its file.
        raise CliError(str(exc)) from None
    except OSError as exc:
        if exc.filename is not None:
            raise os_error(exc) from None
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc}") from exc
    return 0
