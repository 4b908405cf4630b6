"""`ridesync rides list|show|export`: find rides and take them elsewhere, from a backend
(`--backend URL --token T`: `GET /v1/rides`, `GET /v1/rides/{id}`, `GET /v1/rides/{id}/export`) or from a
replica's own data dir (`--data DIR`, no backend needed: engine/cli/rides_source.py).

Human-readable tables by default, `--json` for scripts. Errors are one line (`{"error": ...}` on stderr,
exit status 2): an unknown ride, an unreachable backend, a refused token with the backend's reason.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli import argtypes

FORMAT_NAMES = ("fit", "tcx", "csv")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rides",
        help="list rides, show one, export one to FIT, TCX or CSV (from a backend or a data dir)",
        description=(
            "Read rides from a backend (--backend URL --token T) or from a replica's data dir (--data DIR: "
            "the dir a `ridesync ride`, `app` or `serve` was given, or one replica's own subdir). A data "
            "dir is read from a copy, so a running bike is not disturbed."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--backend", type=argtypes.backend_url, metavar="URL", help="backend, e.g. http://127.0.0.1:8750"
        )
        q.add_argument("--token", metavar="T", help="a token that may read the rides (any role)")
        q.add_argument("--data", metavar="DIR", help="read a replica's data dir instead of a backend")

    q = actions.add_parser("list", help="the rides, one line each")
    common(q)
    q.add_argument("--json", action="store_true", help='{"rides": [...]} as one JSON object')
    q.set_defaults(handler=_list)

    q = actions.add_parser("show", help="one ride's resolved view: phase, sync state, totals")
    common(q)
    q.add_argument("ride_id", metavar="RIDE")
    q.add_argument("--json", action="store_true", help="the view as GET /v1/rides/{id} returns it")
    q.set_defaults(handler=_show)

    q = actions.add_parser("export", help="write one ride as a FIT, TCX or CSV file")
    common(q)
    q.add_argument("ride_id", metavar="RIDE")
    q.add_argument("--format", choices=FORMAT_NAMES, default="fit", help="default: fit")
    q.add_argument("-o", "--output", metavar="FILE", help="default: RIDE.FORMAT here; - for stdout")
    q.add_argument("--json", action="store_true", help='print {"ride_id", "format", "path", "bytes"}')
    q.set_defaults(handler=_export)


def _source(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from engine.cli.main import CliError
    from engine.cli.rides_source import BackendSource, DataSource

    if args.data and (args.backend or args.token):
        raise CliError("give either --data DIR or --backend URL --token T, not both")
    if args.data:
        return DataSource(Path(args.data))
    if not args.backend or not args.token:
        raise CliError("give --backend URL and --token T (or --data DIR for a replica's own store)")
    return BackendSource(args.backend, args.token)


def _ride_arg(ride_id: str) -> str:
    from engine.cli.main import CliError
    from engine.ride import schema

    try:
        return schema.check_ride_id(ride_id)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _run(fn: Any) -> Any:
    from engine.cli.main import CliError
    from engine.cli.rides_source import RidesError

    try:
        return fn()
    except RidesError as exc:
        raise CliError(str(exc)) from None


def _list(args: argparse.Namespace) -> int:
    from engine.cli.output import emit

    source = _source(args)
    rides = _run(source.list)
    if args.json:
        emit({"rides": rides})
        return 0
    print(format_list(rides))
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine.cli.output import emit

    ride_id = _ride_arg(args.ride_id)
    source = _source(args)
    view = _run(lambda: source.show(ride_id))
    if args.json:
        emit(view)
        return 0
    print(format_show(view))
    return 0


def _export(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from engine.cli.main import CliError
    from engine.cli.output import emit
    from engine.export import FORMATS

    ride_id = _ride_arg(args.ride_id)
    source = _source(args)
    data: bytes = _run(lambda: source.export(ride_id, args.format))
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    path = Path(args.output) if args.output else Path(FORMATS[args.format].filename(ride_id))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    if args.json:
        emit({"ride_id": ride_id, "format": args.format, "path": str(path), "bytes": len(data)})
    else:
        print(f"{path} ({len(data):,} bytes, {args.format})")
    return 0


# -- text output ------------------------------------------------------------------------------------------


def _when(t: Any) -> str:
    from datetime import UTC, datetime

    if not isinstance(t, int | float) or isinstance(t, bool):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _clock(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, *lines])


def format_list(rides: list[dict[str, Any]]) -> str:
    if not rides:
        return "no rides"
    with_replica = any("replica" in r for r in rides)
    header = ["RIDE", "PHASE", "SYNC", "UPDATED (UTC)"] + (["REPLICA"] if with_replica else [])
    rows = []
    for ride in rides:
        sync = str(ride.get("sync_state") or "-")
        if ride.get("sync_reason"):
            sync += f" ({ride['sync_reason']})"
        row = [str(ride.get("ride_id")), str(ride.get("phase") or "-"), sync, _when(ride.get("updated"))]
        if with_replica:
            row.append(str(ride.get("replica") or "-"))
        rows.append(row)
    return _table(header, rows)


def _metric(value: Any, unit: str, digits: int = 0) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:,.{digits}f} {unit}".rstrip()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def format_show(view: dict[str, Any]) -> str:
    totals = _dict(view.get("totals"))
    shared = _dict(view.get("shared"))
    samples = _dict(view.get("samples"))
    sync = str(view.get("sync_state") or "-")
    if view.get("sync_reason"):
        sync += f" ({view['sync_reason']})"
    fields = [
        ("ride", str(view.get("ride_id"))),
        ("title", str(shared.get("title")) if shared.get("title") is not None else "-"),
        ("phase", str(view.get("phase") or "-")),
        ("authority", str(view.get("authority") or "-")),
        ("sync", sync),
        ("samples", ", ".join(f"{dev} {n:,}" for dev, n in sorted(samples.items())) or "-"),
        ("duration", _clock(view.get("duration_s"))),
        ("output", _metric(totals.get("output_kj"), "kJ", 1)),
        ("energy", _metric(totals.get("energy_kcal"), "kcal")),
        (
            "heart rate",
            f"avg {_metric(totals.get('avg_hr'), 'bpm')}, max {_metric(totals.get('max_hr'), 'bpm')}",
        ),
        (
            "power",
            f"avg {_metric(totals.get('avg_power_w'), 'W')}, max {_metric(totals.get('max_power_w'), 'W')}",
        ),
        ("cadence", f"avg {_metric(totals.get('avg_cadence'), 'rpm')}"),
        ("end events", str(view.get("end_events_counted", "-"))),
    ]
    if view.get("replica"):
        fields.append(("replica", str(view["replica"])))
    divergences = view.get("divergences")
    if isinstance(divergences, list) and divergences:
        texts = [str(d.get("text")) for d in divergences if isinstance(d, dict)]
        fields.append(("divergences", "; ".join(texts)))
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)
