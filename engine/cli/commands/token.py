"""`ridesync token issue|rotate`: signed device tokens, keys kept in the data dir (DESIGN §9)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("token", help="issue device tokens; rotate signing keys")
    actions = parser.add_subparsers(dest="token_action", metavar="ACTION")
    actions.required = True

    issue = actions.add_parser("issue", help="print a signed token for a device")
    issue.add_argument("--role", required=True, choices=["bike", "app", "viewer", "backend"])
    issue.add_argument("--device", required=True, help="device id (letters, digits, - _ . : @)")
    issue.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="C",
        help="class the token may join; repeatable",
    )
    issue.add_argument(
        "--ride",
        dest="rides",
        action="append",
        default=None,
        metavar="R",
        help="ride the token may touch; repeatable (default: any)",
    )
    issue.add_argument(
        "--rider",
        default=None,
        metavar="NAME",
        help="who rides with this device: an app token and a bike token with the same rider let the app "
        "write the rides that bike starts",
    )
    issue.add_argument(
        "--name", default=None, metavar="TEXT", help="the rider's display name on the class page"
    )
    issue.add_argument(
        "--max-hr",
        type=int,
        default=None,
        metavar="BPM",
        help="the rider's max heart rate (100..250): the class page's zones are computed from it",
    )
    issue.add_argument(
        "--ttl", type=float, default=86400.0, metavar="S", help="lifetime in seconds (default 86400)"
    )
    issue.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="data dir holding the keys ($RIDESYNC_DATA or ./ridesync-data)",
    )
    issue.add_argument(
        "--json", action="store_true", help="print {token, claims} as JSON instead of the bare token"
    )
    issue.set_defaults(handler=_issue)

    rotate = actions.add_parser("rotate", help="add a new signing key; older keys keep verifying")
    rotate.add_argument("--data", default=None, metavar="DIR")
    rotate.set_defaults(handler=_rotate)


def _ring(data: str | None) -> object:
    from engine.auth.tokens import KeyRing, TokenError
    from engine.cli.main import CliError
    from engine.server.config import default_data_dir

    try:
        return KeyRing.load_or_create(data if data is not None else default_data_dir())
    except (TokenError, OSError) as exc:
        raise CliError(str(exc)) from exc


def _issue(args: argparse.Namespace) -> int:
    from engine.auth.tokens import KeyRing, TokenError
    from engine.cli.main import CliError
    from engine.cli.output import emit

    ring = _ring(args.data)
    assert isinstance(ring, KeyRing)
    try:
        token = ring.issue(
            args.role,
            args.device,
            classes=args.classes,
            rides=args.rides,
            ttl_s=args.ttl,
            rider=args.rider,
            name=args.name,
            max_hr=args.max_hr,
        )
    except TokenError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        emit({"token": token, "claims": ring.verify(token).to_payload(), "kid": ring.current})
    else:
        print(token)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from engine.auth.tokens import KeyRing
    from engine.cli.output import emit

    ring = _ring(args.data)
    assert isinstance(ring, KeyRing)
    emit({"current": ring.rotate(), "keys": sorted(ring.keys)})
    return 0
