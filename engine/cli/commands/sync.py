"""`ridesync sync`: push what a bike or app replica holds to the backend, without sensors.

Prints (with --json, sync state changes as JSON lines first) one JSON object:
`{"device", "role", "data", "ok", "rides": [{"ride_id", "sync_state", "sync_reason", "phase", "samples",
"unacked_samples", "settled", ...}]}`. Exit status 0 when every ride is `reconciled`, 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli import argtypes
from engine.device.defaults import DEFAULT_HEARTBEAT_S


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sync",
        help="push what a bike or app replica holds to the backend (no sensors) and report its sync state",
        description=(
            "Sync the rides of the replica that --token's device keeps in --data (written by `ridesync "
            "ride` or `ridesync app`) with --backend, without sensors: nothing is recorded, claimed or "
            "ended. Waits, bounded by --sync-timeout, until the backend holds every change of each ride "
            "(and has finalized a ride this bike ended), then prints each ride's sync state."
        ),
    )
    p.add_argument(
        "--backend",
        required=True,
        type=argtypes.backend_url,
        metavar="URL",
        help="backend, e.g. http://127.0.0.1:8750",
    )
    p.add_argument("--token", required=True, metavar="T", help="the replica's bike or app token")
    p.add_argument("--data", default=None, metavar="DIR", help="data dir ($RIDESYNC_DATA or ./ridesync-data)")
    p.add_argument(
        "--ride-id",
        dest="rides",
        action="append",
        default=[],
        metavar="ID",
        help="only this ride (repeatable)",
    )
    p.add_argument("--sync-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--retry-cap", type=float, default=30.0, metavar="S", help="longest reconnect backoff")
    p.add_argument(
        "--heartbeat", type=float, default=DEFAULT_HEARTBEAT_S, metavar="S", help="WebSocket ping interval"
    )
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--json", action="store_true", help="JSON lines: sync events, then the result")
    p.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    from engine import logs
    from engine.auth.tokens import TokenError
    from engine.cli.main import CliError
    from engine.cli.output import emit
    from engine.datadir import default_data_dir
    from engine.device.identity import token_claims
    from engine.device.push import NoReplica, PushOptions, push_replica
    from engine.ride import schema
    from engine.store import StoreError

    try:
        claims = token_claims(args.token)
    except TokenError as exc:
        raise CliError(f"--token: {exc}") from exc
    if claims.role.value not in ("bike", "app"):
        raise CliError(f"--token is a {claims.role.value} token; `ridesync sync` needs a bike or app token")
    for ride_id in args.rides:
        try:
            schema.check_ride_id(ride_id)
        except ValueError as exc:
            raise CliError(f"--ride-id: {exc}") from exc
    if not (args.sync_timeout > 0 and args.retry_cap > 0 and args.heartbeat > 0):
        raise CliError("--sync-timeout, --retry-cap and --heartbeat must be positive")
    logs.configure(args.log_level)

    def show(obj: dict[str, Any]) -> None:
        if args.json:
            emit(obj)
        elif obj.get("event") == "sync":
            print(f"[{obj['ride_id']}] {obj['state']}: {obj['reason']}", file=sys.stderr, flush=True)

    options = PushOptions(
        backend=args.backend,
        token=args.token,
        device=claims.device,
        role=claims.role,
        data_root=Path(args.data) if args.data else default_data_dir(),
        rides=list(dict.fromkeys(args.rides)),
        retry_cap_s=args.retry_cap,
        heartbeat_s=args.heartbeat,
        sync_timeout_s=args.sync_timeout,
        on_event=show,
    )
    try:
        result = asyncio.run(push_replica(options))
    except (NoReplica, StoreError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    emit(result)
    return 0 if result["ok"] else 1
