"""`ridesync app`: an app replica (the tablet). Syncs a ride, edits its shared fields, can end it.

Prints (with --json, as JSON lines) sync state changes and, last, the ride as this replica sees it:
`{"ride_id", "phase", "sync_state", "sync_reason", "end_events_counted", "totals", "shared", ...}`.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli import argtypes
from engine.device.defaults import DEFAULT_HEARTBEAT_S


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "app",
        help="run an app replica: sync a ride, edit title/notes/rating/targets, end the ride",
        description=(
            "Sync ride --ride-id with --backend, apply --set edits to its shared fields, and with --end end "
            "the ride (the same logical event as the bike's end: it counts once). Waits, bounded by "
            "--sync-timeout, until the backend acknowledged everything, then prints the ride."
        ),
    )
    p.add_argument(
        "--backend",
        required=True,
        type=argtypes.backend_url,
        metavar="URL",
        help="backend, e.g. http://127.0.0.1:8750",
    )
    p.add_argument(
        "--token", required=True, metavar="T", help="app token (`ridesync token issue --role app`)"
    )
    p.add_argument("--ride-id", required=True, metavar="ID")
    p.add_argument("--end", action="store_true", help="end the ride")
    p.add_argument(
        "--set",
        dest="edits",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="edit a shared field (title, notes, rating, target.*); VALUE is JSON or text; repeatable",
    )
    p.add_argument(
        "--wait-phase",
        choices=["active", "ended", "finalized"],
        default=None,
        help="also wait until the ride reaches this phase",
    )
    p.add_argument("--data", default=None, metavar="DIR", help="data dir ($RIDESYNC_DATA or ./ridesync-data)")
    p.add_argument("--sync-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--retry-cap", type=float, default=30.0, metavar="S", help="longest reconnect backoff")
    p.add_argument(
        "--heartbeat", type=float, default=DEFAULT_HEARTBEAT_S, metavar="S", help="WebSocket ping interval"
    )
    p.add_argument("--log-level", type=argtypes.log_level, default="WARNING", metavar="LEVEL")
    p.add_argument("--json", action="store_true", help="JSON lines: sync events, then the ride")
    p.set_defaults(handler=_app)


def parse_edit(item: str) -> tuple[str, Any]:
    import json

    from engine.cli.main import CliError

    name, sep, text = item.partition("=")
    if not sep or not name:
        raise CliError(f"--set wants FIELD=VALUE, got {item!r}")
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return name, value


def _app(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    from engine import logs
    from engine.auth.tokens import TokenError
    from engine.cli.datadir import check_data_dir, os_error
    from engine.cli.main import CliError
    from engine.cli.output import emit, human, ride_summary_text, say
    from engine.datadir import default_data_dir
    from engine.device.app import AppOptions, EditRefused, RideUnavailable, run_app
    from engine.device.identity import token_claims
    from engine.ride import schema
    from engine.ride.schema import Phase
    from engine.store import StoreError

    try:
        claims = token_claims(args.token)
    except TokenError as exc:
        raise CliError(f"--token: {exc}") from exc
    if claims.role.value != "app":
        raise CliError(f"--token is a {claims.role.value} token; `ridesync app` needs an app token")
    try:
        schema.check_ride_id(args.ride_id)
    except ValueError as exc:
        raise CliError(f"--ride-id: {exc}") from exc
    if not (args.sync_timeout > 0 and args.retry_cap > 0 and args.heartbeat > 0):
        raise CliError("--sync-timeout, --retry-cap and --heartbeat must be positive")
    edits = dict(parse_edit(item) for item in args.edits)
    for name in edits:
        if name not in schema.SHARED_FIELDS and not name.startswith("target."):
            raise CliError(
                f"--set: {name!r} is not a shared field ({', '.join(sorted(schema.SHARED_FIELDS))})"
            )
    data_root = Path(args.data) if args.data else default_data_dir()
    check_data_dir(data_root)
    logs.configure(args.log_level)

    def show(obj: dict[str, Any]) -> None:
        if args.json:
            emit(obj)
        else:
            say(human(obj), sys.stderr)

    options = AppOptions(
        backend=args.backend,
        token=args.token,
        device=claims.device,
        ride_id=args.ride_id,
        data_root=data_root,
        end=args.end,
        edits=edits,
        retry_cap_s=args.retry_cap,
        heartbeat_s=args.heartbeat,
        sync_timeout_s=args.sync_timeout,
        wait_phase={"active": Phase.ACTIVE, "ended": Phase.ENDED, "finalized": Phase.FINALIZED}.get(
            args.wait_phase or ""
        ),
        on_event=show,
        fail_fast=True,
    )
    try:
        summary = asyncio.run(run_app(options))
    except (StoreError, RideUnavailable, EditRefused) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        if exc.filename is None:
            raise
        raise os_error(exc) from None  # the replica's dir under --data (engine/device/common.py)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    except BaseExceptionGroup as group:
        from engine.cli.failures import sync_refusal

        if (message := sync_refusal(group)) is None:
            raise
        raise CliError(message) from None
    if args.json:
        emit(summary)
    else:
        say(ride_summary_text(summary))
    ok = summary.get("sync_state") == "reconciled" and (summary.get("end_post") or {}).get("ok", True)
    return 0 if ok else 1
