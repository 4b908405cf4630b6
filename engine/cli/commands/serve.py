"""`ridesync serve`: the backend (class hub now; sync endpoint and dashboard as they land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the backend: class hub, /healthz, /metrics")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 picks a free one)")
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="data dir: keys, databases ($RIDESYNC_DATA or ./ridesync-data)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=3.0,
        metavar="S",
        help="live values older than this show as stale",
    )
    p.add_argument(
        "--leaderboard-interval", type=float, default=3.0, metavar="S", help="leaderboard delta tick"
    )
    p.add_argument(
        "--class-leaderboard-interval",
        action="append",
        default=[],
        metavar="CLASS=S",
        help="per-class leaderboard tick; repeatable",
    )
    p.add_argument(
        "--stall-limit", type=float, default=10.0, metavar="S", help="disconnect a peer stalled this long"
    )
    p.add_argument("--hub", choices=["coalescing", "naive"], default="coalescing", help=argparse.SUPPRESS)
    p.add_argument(
        "--relay", default=None, metavar="URL", help="share classes with other hubs via redis://HOST:PORT"
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from engine import logs
    from engine.backend.routes import setup_backend
    from engine.cli.main import CliError
    from engine.cli.output import emit
    from engine.dashboard.routes import setup_dashboard
    from engine.live.config import HubConfig
    from engine.server.config import ServerConfig, default_data_dir
    from engine.server.run import serve

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
    ):
        if not v > 0:
            raise CliError(f"{name} must be positive")
    if args.relay is not None and not args.relay.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--relay wants a redis://HOST:PORT URL, got {args.relay!r}")
    logs.configure(args.log_level)
    hub = HubConfig(
        stale_after_s=args.stale_after,
        leaderboard_s=args.leaderboard_interval,
        leaderboard_s_by_class=per_class,
        stall_limit_s=args.stall_limit,
        impl=args.hub,
        relay_url=args.relay,
    )
    config = ServerConfig(
        data_dir=Path(args.data) if args.data else default_data_dir(), host=args.host, port=args.port, hub=hub
    )
    try:
        asyncio.run(
            serve(
                config,
                extra_setup=[setup_backend, setup_dashboard],
                on_listening=lambda url: emit(
                    {"event": "listening", "url": url, "data_dir": str(config.data_dir)}
                ),
            )
        )
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc}") from exc
    return 0
