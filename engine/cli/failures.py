"""Failures a command ends with, found inside the exception groups a TaskGroup wraps them in and turned
into one line that says what to do."""

from __future__ import annotations

# What to do about each refusal a retry cannot fix (engine/device/connection.py FATAL_REFUSALS).
_REFUSAL_FIX = {
    "token_unknown_key": "the token was signed with keys this backend does not have: issue it with "
    "`ridesync token issue --data DIR` using the backend's data dir",
    "token_bad_signature": "the token was altered or signed with other keys: issue a new one from the "
    "backend's data dir",
    "token_expired": "issue a new token (`ridesync token issue ... --ttl S`)",
    "token_malformed": "pass the token exactly as `ridesync token issue` printed it",
    "token_missing": "pass --token",
    "token_invalid": "issue a new token from the backend's data dir",
    "token_wrong_scope": "the token does not allow this ride: issue one with --ride for it, or without "
    "--ride",
    "not_ride_owner": "the ride belongs to another device: use its bike's token, an app token with the same "
    "--rider, or another --ride-id",
}


def sync_refusal(exc: BaseException) -> str | None:
    """The one-line message of a SyncRefused inside `exc` (or None): the backend's reason and the fix."""
    from engine.device.connection import SyncRefused

    if isinstance(exc, SyncRefused):
        fix = _REFUSAL_FIX.get(exc.code)
        return str(exc) + (f"; {fix}" if fix else "")
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (message := sync_refusal(inner)) is not None:
                return message
    return None
