"""`POST /v1/rides/{id}/end`, retried until the backend answers for good
(docs/architecture.md#idempotent-events, docs/architecture.md#retries).

The `Idempotency-Key` is derived from the ride (`ride_end_idempotency_key`), the same on every device
and after any restart, and the body is built from the ride's stored end claim, so every retry is the
same request. Connection failures, timeouts, 429 and 503 are retried with full-jitter backoff, at least
`Retry-After`. So is 409 with the backend's `idempotency` code: an earlier attempt with this key (say, one
whose answer a dead link swallowed) is still executing on the backend, and its stored answer is what the
next try replays. Any other status is final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from engine.backoff import (
    Attempts,
    Backoff,
    Decision,
    classify_status,
    parse_retry_after,
)
from engine.device.retry import classify_exception
from engine.events.idempotency import ride_end_idempotency_key
from engine.urls import http_base

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EndResult:
    ok: bool
    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "response": self.body,
        }


# The backend's error code for "a request with this Idempotency-Key is still being processed"
# (engine/events/idempotency.py StillInProgress); other 409s (a finalized ride) are final answers.
IN_PROGRESS_CODE = "idempotency"


def _classify(status: int, body: dict[str, Any], retry_after: str | None, now: datetime) -> Decision:
    if status == 409 and body.get("error") == IN_PROGRESS_CODE:
        return Decision(
            True, parse_retry_after(retry_after, now), "http 409: the same request is still in progress"
        )
    return classify_status(status, retry_after, now)


async def post_ride_end(
    http: aiohttp.ClientSession,
    backend: str,
    token: str,
    ride_id: str,
    body: dict[str, Any],
    *,
    backoff: Backoff | None = None,
    deadline_s: float = 60.0,
    request_timeout_s: float = 10.0,
    rng: random.Random | None = None,
) -> EndResult:
    url = f"{http_base(backend)}/v1/rides/{ride_id}/end"
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": ride_end_idempotency_key(ride_id),
        "Content-Type": "application/json",
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    attempts = Attempts(backoff if backoff is not None else Backoff(), rng)
    give_up = time.monotonic() + deadline_s
    result = EndResult(ok=False)
    while True:
        result.attempts += 1
        now = datetime.now(UTC)
        try:
            async with asyncio.timeout(request_timeout_s):
                async with http.post(url, data=data, headers=headers) as resp:
                    text = await resp.text()
                    result.status = resp.status
                    try:
                        parsed = json.loads(text) if text else {}
                    except ValueError:
                        parsed = {"text": text[:500]}
                    result.body = parsed if isinstance(parsed, dict) else {"value": parsed}
                    if resp.status < 400:
                        result.ok, result.error = True, ""
                        return result
                    decision = _classify(resp.status, result.body, resp.headers.get("Retry-After"), now)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            decision = classify_exception(exc, now)
        result.error = decision.reason
        if not decision.retry:
            log.warning("ride end refused", extra={"ride_id": ride_id, "reason": decision.reason})
            return result
        delay = attempts.next_delay(decision.retry_after)
        if time.monotonic() + delay > give_up:
            result.error = f"gave up after {result.attempts} attempts: {decision.reason}"
            return result
        log.info(
            "ride end retrying",
            extra={
                "ride_id": ride_id,
                "attempt": result.attempts,
                "delay_s": round(delay, 3),
                "reason": decision.reason,
            },
        )
        await asyncio.sleep(delay)
