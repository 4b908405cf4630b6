"""The security campaign's wire-level cases.

- **Close codes on /v1/sync**: a peer that keeps sending while the server closes it must still read the
  code the server meant (1002, 1008, 1009, 4401, 4413), never 1006 (the close frame racing the socket's
  close), every time; and `ridesync_sync_closes_total{code}` must count exactly what went out.
- **Over-long request lines and headers** from a client without a token: a 400, and one INFO line each
  in the server's log ("bad request refused"), never a WARNING or an ERROR with a traceback (anyone can
  send them). The server must run with `--log-level INFO` for the lines to be counted.

Each case repeats its offence (more in the long version), since the races it guards against lose only
some of the time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from engine.auth.tokens import CLOCK_LEEWAY_S
from engine.campaign import security_net as net
from engine.campaign.hostile_sync import (
    close_code_while_sending,
    filler_frame,
    orphan_changes,
    raw_peer,
    sync_frame,
)
from engine.campaign.procs import LOOPBACK, ServeProcess
from engine.metrics_scrape import scrape_async
from engine.ride.schema import shared_ref
from engine.sync.effects import (
    CLOSE_BACKLOG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
)

FILLER = filler_frame(32 * 1024)
# The security campaign's server runs with these (engine/campaign/security.py), so that the cases here
# can pass them with little traffic.
MAX_MESSAGE_BYTES = 1 << 20
MAX_QUEUED_CHANGES = 16
OVERLONG = 20_000  # bytes of request line or header: aiohttp's limit is 8190


class WireHost(Protocol):
    """What these cases need from the campaign that runs them (engine/campaign/security.py)."""

    serve: ServeProcess

    @property
    def url(self) -> str: ...

    def token(self, role: str, device: str, **kw: Any) -> str: ...

    async def attempt(self, name: str, attack: Callable[[], Awaitable[tuple[bool, str]]]) -> None: ...


async def counters(url: str, name: str, label: str) -> dict[str, float]:
    """One labelled counter from the server's /metrics: {label value: count}."""
    return (await scrape_async(url)).by_label(name, label)


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v != before.get(k, 0.0)}


class WireAttacks:
    def __init__(self, host: WireHost, ride: str, owner: str, repeat: int) -> None:
        """`ride` is an existing ride and `owner` its bike's device (the backlog case needs a writer)."""
        self.host = host
        self.ride = ride
        self.owner = owner
        self.repeat = repeat
        self.log = host.serve.logs / "serve.log"

    async def run_all(self) -> None:
        await self.close_codes()
        await self.overlong_requests()

    # -- close codes -----------------------------------------------------------------------------------

    async def _closes(
        self, name: str, want: int, once: Callable[[aiohttp.ClientSession, int], Awaitable[int | None]]
    ) -> None:
        async def attack() -> tuple[bool, str]:
            before = await counters(self.host.url, "ridesync_sync_closes_total", "code")
            async with aiohttp.ClientSession() as http:
                codes = await self._each(http, once)
            # The server counts after its close frame went out and the socket closed; poll briefly.
            counted: dict[str, int] = {}
            for _ in range(50):
                counted = _delta(before, await counters(self.host.url, "ridesync_sync_closes_total", "code"))
                if counted.get(str(want), 0) >= self.repeat:
                    break
                await asyncio.sleep(0.1)
            seen = {str(c): codes.count(c) for c in sorted(set(codes), key=str)}
            held = codes == [want] * self.repeat and counted == {str(want): self.repeat}
            return held, f"want {want} x{self.repeat}; the client read {seen}; the server counted {counted}"

        await self.host.attempt(name, attack)

    async def _each(
        self, http: aiohttp.ClientSession, once: Callable[[aiohttp.ClientSession, int], Awaitable[int | None]]
    ) -> list[int | None]:
        codes = []
        for i in range(self.repeat):
            codes.append(await once(http, i))
        return codes

    async def close_codes(self) -> None:
        host, ride = self.host, self.ride
        ref = shared_ref(ride)

        def viewer(tag: str, i: int, **kw: Any) -> str:
            # A device per connection: HTTP requests and upgrades share a per-device rate bucket.
            return host.token("viewer", f"dash-close-{tag}-{i}", rides=[ride], **kw)

        async def offend(
            http: aiohttp.ClientSession, token: str, frames: list[bytes], text: bool = False
        ) -> int | None:
            async with raw_peer(http, host.url, token, ride) as ws:
                if text:
                    await ws.send_str("not a binary frame")
                for frame in frames:
                    await ws.send_bytes(frame)
                return await close_code_while_sending(ws, FILLER)

        async def text_frame(http: aiohttp.ClientSession, i: int) -> int | None:
            return await offend(http, viewer("text", i), [], text=True)

        async def viewer_writes(http: aiohttp.ClientSession, i: int) -> int | None:
            (message,) = orphan_changes(1, 64, device=f"dash-close-write-{i}")
            return await offend(http, viewer("write", i), [sync_frame("hostile", ref, message)])

        async def too_big(http: aiohttp.ClientSession, i: int) -> int | None:
            return await offend(http, viewer("big", i), [b"\x00" * (2 * MAX_MESSAGE_BYTES)])

        async def backlog(http: aiohttp.ClientSession, i: int) -> int | None:
            # The ride's own bike (a writer), so the changes are queued; one connection after another
            # on one device: paced under its rate limit.
            await asyncio.sleep(0.15)
            messages = orphan_changes(MAX_QUEUED_CHANGES + 4, 64, device=f"{self.owner}-flood-{i}")
            frames = [sync_frame("hostile", ref, m) for m in messages]
            return await offend(http, host.token("bike", self.owner), frames)

        await self._closes(
            "close code: text frame on /v1/sync reads 1002, counted", CLOSE_PROTOCOL_ERROR, text_frame
        )
        await self._closes(
            "close code: viewer writes on /v1/sync reads 1008, counted", CLOSE_POLICY_VIOLATION, viewer_writes
        )
        await self._closes("close code: message over the limit reads 1009, counted", CLOSE_TOO_BIG, too_big)
        await self._closes(
            "close code: queued changes over the limit read 4413, counted", CLOSE_BACKLOG, backlog
        )
        await self._expired()

    async def _expired(self) -> None:
        """Tokens that expire (past the clock leeway) two seconds into their connections: all at once."""
        ttl = 3600.0

        async def attack() -> tuple[bool, str]:
            issued = time.time() - ttl - CLOCK_LEEWAY_S + 2.0
            tokens = [
                self.host.token("viewer", f"dash-close-exp-{i}", rides=[self.ride], ttl_s=ttl, now=issued)
                for i in range(self.repeat)
            ]
            before = await counters(self.host.url, "ridesync_sync_closes_total", "code")
            async with aiohttp.ClientSession() as http:

                async def once(token: str) -> int | None:
                    async with raw_peer(http, self.host.url, token, self.ride) as ws:
                        return await close_code_while_sending(ws, FILLER)

                codes = list(await asyncio.gather(*(once(t) for t in tokens)))
            counted: dict[str, int] = {}
            for _ in range(50):
                counted = _delta(before, await counters(self.host.url, "ridesync_sync_closes_total", "code"))
                if counted.get(str(CLOSE_TOKEN_EXPIRED), 0) >= self.repeat:
                    break
                await asyncio.sleep(0.1)
            seen = {str(c): codes.count(c) for c in sorted(set(codes), key=str)}
            want = CLOSE_TOKEN_EXPIRED
            held = codes == [want] * self.repeat and counted == {str(want): self.repeat}
            return held, f"want {want} x{self.repeat}; the client read {seen}; the server counted {counted}"

        await self.host.attempt("close code: token expiring mid-connection reads 4401, counted", attack)

    # -- over-long requests ----------------------------------------------------------------------------

    async def overlong_requests(self) -> None:
        long_url = b"GET /v1/rides/" + b"a" * OVERLONG + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        long_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"b" * OVERLONG + b"\r\n\r\n"
        many = max(self.repeat // 2, 3)

        async def attack() -> tuple[bool, str]:
            offset = self.log.stat().st_size if self.log.exists() else 0
            before = await counters(self.host.url, "ridesync_http_guard_closed_total", "reason")
            statuses = []
            for request in [long_url, long_header] * many:
                statuses.append(await _raw_status(self.host.serve.port, request))
            await asyncio.sleep(0.5)  # the server's log lines reach the file
            after = await counters(self.host.url, "ridesync_http_guard_closed_total", "reason")
            counted = _delta(before, after)
            lines, loud, traceback = _log_since(self.log, offset)
            refused = [x for x in lines if x.get("msg") == "bad request refused"]
            n = 2 * many
            held = (
                statuses == [400] * n
                and len(refused) == n
                and all(x.get("level") == "info" for x in refused)
                and not loud
                and not traceback
                and counted.get("bad_request") == n
            )
            return held, (
                f"{n} requests: statuses {sorted(set(statuses), key=str)}; {len(refused)} 'bad request "
                f"refused' lines at {sorted({str(x.get('level')) for x in refused})}; {len(loud)} at WARNING "
                f"or above {[x.get('msg') for x in loud[:2]]}; traceback in log: {traceback}; "
                f"counted {counted}"
            )

        await self.host.attempt("over-long URL and header without a token: one INFO line each", attack)


async def _raw_status(port: int, request: bytes) -> int | None:
    """Send `request` on a fresh connection; the status of the answer (None: closed without one)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
    except (ConnectionError, TimeoutError):
        return None
    finally:
        net.close_quietly(writer)
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _log_since(path: Path, offset: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """The server's JSON log records after `offset`, those at WARNING or above, and whether a traceback
    was written (in a record or as raw stderr text)."""
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and "level" in obj:
                records.append(obj)
    loud = [x for x in records if x.get("level") in ("warning", "error", "critical")]
    return records, loud, "Traceback" in text
