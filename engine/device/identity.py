"""Who this device is, read from its token (docs/architecture.md#interfaces-others-rely-on: `ridesync ride
--token T` names no device).

The device cannot verify its own token (the backend holds the keys); it only reads the claims to name its
replica. The backend verifies every use, so a forged claim here gains nothing.
"""

from __future__ import annotations

import base64
import binascii
import json

from engine.auth.tokens import Claims, TokenError, TokenMalformed


def token_claims(token: str) -> Claims:
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != "rs1":
        raise TokenMalformed("not a ridesync token (rs1.<kid>.<payload>.<signature>)")
    payload = parts[2]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed(f"token payload unreadable: {exc}") from None
    return Claims.from_payload(obj, parts[1])


__all__ = ["TokenError", "token_claims"]
