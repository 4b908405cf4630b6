"""The one grammar of ids: device ids, ride ids, class ids (and token key ids).

Every place that accepts an id from outside (token claims, `ridesync token issue`, the ride schema, URL
paths and query parameters, live frames, relay messages) checks it here, so an id that gets a token is
an id every route and the store accept, and the other way round.

An id is 1-128 characters: an ASCII letter or digit, then ASCII letters, digits and `. _ : -`. So no
whitespace or control character (a trailing newline would make a look-alike of another id), no `/`,
`?`, `#`, `%` or `@` that could confuse a URL or a log line, and no leading punctuation.

The check is `re.fullmatch`, never `re.match` with `$`: `$` also matches before a final newline.
"""

from __future__ import annotations

import re

MAX_ID_LEN = 128
ID_CHARS = "letters, digits and . _ : -, starting with a letter or digit"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*", re.ASCII)


class InvalidId(ValueError):
    """A value is not an id; the message names what was expected."""


def valid_id(value: object, max_len: int = MAX_ID_LEN) -> bool:
    """True if `value` is an id of at most `max_len` (≤ 128) characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= min(max_len, MAX_ID_LEN)
        and _ID.fullmatch(value) is not None
    )


def check_id(value: object, what: str = "id", max_len: int = MAX_ID_LEN) -> str:
    """`value` if it is an id, else InvalidId naming `what` (e.g. "ride id") and the grammar."""
    if not valid_id(value, max_len):
        limit = min(max_len, MAX_ID_LEN)
        raise InvalidId(f"invalid {what} {value!r}: 1-{limit} characters: {ID_CHARS}")
    assert isinstance(value, str)
    return value


def check_device_id(value: object) -> str:
    return check_id(value, "device id")


def check_ride_id(value: object) -> str:
    return check_id(value, "ride id")


def check_class_id(value: object) -> str:
    return check_id(value, "class id")
