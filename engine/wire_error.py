"""The one error for a peer's message that is not valid on its wire: the sync lane's CBOR frames
(engine/sync/wire.py) and the live lane's JSON messages (engine/live/wire.py) both raise `WireError`.

Its shape follows the rule every ridesync error keeps: `code` is a stable, machine-readable *string*
(as `TokenError.code` and the backend's JSON `"error"`), so logs, metrics and clients can match on it;
a number a protocol needs is named for what it is: `close_code`, the WebSocket close code the receiving
end answers with (RFC 6455 §7.4, or a lane's own 4xxx code). The RFC codes both lanes default to live here.
"""

from __future__ import annotations

from typing import Final

# WebSocket close codes (RFC 6455 §7.4.1) that a malformed message is answered with.
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_TOO_BIG: Final = 1009


class WireError(ValueError):
    """A message that is not valid. `code` names the fault (`not_cbor`, `wrong_type`, `malformed`, ...),
    `detail` explains it, `close_code` is the WebSocket close code to answer with."""

    def __init__(self, code: str, detail: str, *, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.close_code = close_code
