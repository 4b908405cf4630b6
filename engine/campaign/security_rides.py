"""The security campaign's attacks on rides: actor spoofing, writes after finalize, a replayed end with
another body, oversize and deeply nested CBOR, and the ownership cases (a stranger's bike token syncing,
editing or ending someone else's ride, writes to unknown rides, a look-alike id with a trailing newline,
a class hijack), and live segments (a 5th live one, one outside the bike's window, another bike's or an
app writing the bike's segment, an app listing one in the shared index). Victims are rides this module
syncs itself from replicas in the work dir."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from engine.campaign.probes import http, upgrade_status
from engine.campaign.procs import ServeProcess, get_json, proc_stats
from engine.campaign.sync_client import SERVER_PEER, SyncClient
from engine.crdt import CrdtDoc, new_actor_id
from engine.ride import documents, schema
from engine.ride.samples import Sample
from engine.ride.schema import DocRef, Role, segment_ref, shared_ref
from engine.store import ReplicaStore
from engine.store.segments import MAX_LIVE_SEGMENTS
from engine.sync import wire
from engine.sync.docid import document_id_from_bytes

_SYNC_MESSAGE = 0x42


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def orphan_change_message(rnd: random.Random, size: int = 900_000) -> bytes:
    """An Automerge sync message (v1: heads, need, have, changes) carrying one large change whose
    dependency (the change before it) is never sent: a receiver can only queue it."""
    doc = CrdtDoc.new(rnd.randbytes(16))
    doc.put({"a": "first"})
    heads = doc.heads()
    doc.put({"b": rnd.randbytes(size // 2).hex()})
    orphan = doc.changes_since(heads)[0].data
    return bytes([_SYNC_MESSAGE]) + _uleb(0) + _uleb(0) + _uleb(0) + _uleb(1) + _uleb(len(orphan)) + orphan


class AttackHost(Protocol):
    """What the ride attacks need from the campaign that runs them (engine/campaign/security.py)."""

    serve: ServeProcess

    @property
    def url(self) -> str: ...

    def token(self, role: str, device: str, **kw: Any) -> str: ...

    async def attempt(self, name: str, attack: Callable[[], Awaitable[tuple[bool, str]]]) -> None: ...


VICTIM = "victim-1"
FINAL = "final-1"
REFUSED = range(400, 500)


def sample(seq: int, t0: float) -> Sample:
    return Sample(seq=seq, t=t0 + seq, hr=120 + seq % 40, contact="detected", cadence=80 + seq % 15)


class RideAttacks:
    def __init__(self, sec: AttackHost, work: Path, seed: int) -> None:
        self.sec = sec
        self.work = work
        self.rnd = random.Random(f"{seed}:rides")
        self.t0 = 1_795_000_000.0 + self.rnd.randrange(10_000)
        self.stores: list[ReplicaStore] = []

    def store(self, role: Role, device: str) -> ReplicaStore:
        s = ReplicaStore(self.work / f"replica-{device}", device_id=device, role=role)
        self.stores.append(s)
        return s

    async def view(self, ride: str, token: str) -> dict[str, Any]:
        status, body = await get_json(f"{self.sec.url}/v1/rides/{ride}", token)
        return body if status == 200 and isinstance(body, dict) else {}

    async def wait_view(self, ride: str, token: str, ok: Any, limit_s: float = 20) -> dict[str, Any]:
        """Poll the ride's view (another process: nothing to wait on but its answers) until `ok`."""
        async with asyncio.timeout(limit_s):
            for _ in itertools.count():
                if ok(view := await self.view(ride, token)):
                    return view
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")

    async def ride(self, ride: str, device: str, token: str, n: int, *, end: bool = False) -> ReplicaStore:
        """A bike that records `n` samples of `ride` and syncs them (ended and finalized with `end`)."""
        bike = self.store(Role.BIKE, device)
        bike.start_ride(ride, t=self.t0)
        bike.append_samples(ride, [sample(i, self.t0) for i in range(n)])
        bike.fold(ride)
        if end:
            bike.end_ride(ride, t=self.t0 + n)
        async with SyncClient(self.sec.url, token, bike, ride) as client:
            await client.open_ride()
            want = "finalized" if end else None
            await self.wait_view(
                ride,
                token,
                lambda v: v.get("samples", {}).get(device) == n and (want is None or v.get("phase") == want),
            )
        return bike

    async def closed(self, client: SyncClient, limit_s: float = 10) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await client.closed.wait()
        return client.closed.is_set()

    async def run_all(self) -> None:
        sec = self.sec
        victim_token = sec.token("bike", "bike-victim", classes=["spin"])
        victim = await self.ride(VICTIM, "bike-victim", victim_token, 20)
        final_token = sec.token("bike", "bike-final")
        final = await self.ride(FINAL, "bike-final", final_token, 10, end=True)
        try:
            await self._spoofing(victim, victim_token)
            await self._after_finalize(final, final_token)
            await self._replay(final_token)
            await self._frames(victim, victim_token)
            await self._staging_flood()
            await self._ownership(victim_token)
            await self._segments(victim, victim_token)  # last: it leaves live segments on the victim ride
        finally:
            for s in self.stores:
                s.close()

    async def _spoofing(self, victim: ReplicaStore, victim_token: str) -> None:
        async def attack() -> tuple[bool, str]:
            shared = shared_ref(VICTIM)
            forged = CrdtDoc.load(victim.doc(shared.doc_id).save(), victim.actor)
            edit = {"field": "title", "value": "hijacked", "t": self.t0 + 1, "device": "bike-victim",
                    "role": "bike", "seen": None}  # fmt: skip
            forged.put({f"edit.{victim.actor.hex()}.99": schema.dumps(edit)})
            thief = self.store(Role.BIKE, "bike-thief")
            try:
                async with SyncClient(self.sec.url, self.sec.token("bike", "bike-thief"), thief, VICTIM) as c:
                    await c.open_raw(shared, forged)
                    closed = await self.closed(c)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status in REFUSED, f"upgrade refused {exc.status}"
            title = (await self.view(VICTIM, victim_token)).get("shared", {}).get("title")
            return (
                closed and title != "hijacked",
                f"closed={closed} code={c.close_code} errors={c.errors[:1]}",
            )

        await self.sec.attempt("actor spoofing (another device's actor)", attack)

    async def _after_finalize(self, final: ReplicaStore, token: str) -> None:
        async def by_sync() -> tuple[bool, str]:
            final.append_samples(FINAL, [sample(i, self.t0) for i in range(10, 15)])
            final.fold(FINAL)
            async with SyncClient(self.sec.url, token, final, FINAL) as c:
                await c.open_ride()
                closed = await self.closed(c)
            n = (await self.view(FINAL, token)).get("samples", {}).get("bike-final")
            return (
                closed and n == 10,
                f"closed={closed} code={c.close_code} samples={n} errors={c.errors[:1]}",
            )

        async def by_http() -> tuple[bool, str]:
            # Title, notes and rating stay editable on a finished ride (the policy's may_edit); the
            # targets sent to the bike do not, and nothing of a refused edit is written.
            meta = {"title": "late", "targets": {"power_w": 250}}
            status, body = await self.sec_http("PUT", f"/v1/rides/{FINAL}/meta", token, meta)
            title = (await self.view(FINAL, token)).get("shared", {}).get("title")
            return status == 409 and title != "late", f"PUT targets after finalize: {status} {body}"[:200]

        await self.sec.attempt("write after finalize (sync)", by_sync)
        await self.sec.attempt("write after finalize (PUT meta)", by_http)

    async def sec_http(
        self, method: str, path: str, token: str | None, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:

        return await http(self.sec.url, method, path, token, body, key=key)

    async def _replay(self, token: str) -> None:
        async def attack() -> tuple[bool, str]:
            key = f"campaign-end-{self.rnd.randrange(1 << 30)}"
            first, _ = await self.sec_http("POST", f"/v1/rides/{FINAL}/end", token, {}, key)
            again, _ = await self.sec_http("POST", f"/v1/rides/{FINAL}/end", token, {}, key)
            other, body = await self.sec_http("POST", f"/v1/rides/{FINAL}/end", token, {"t": 5}, key)
            counted = (await self.view(FINAL, token)).get("end_events_counted")
            held = first == 200 and again == 200 and other == 422 and counted == 1
            return held, f"first {first}, same body {again}, other body {other} {body}, counted {counted}"[
                :250
            ]

        await self.sec.attempt("replayed end with another body", attack)

    async def _frames(self, owner: ReplicaStore, token: str) -> None:
        """Hostile frames from the ride's own bike: a connection the server accepts, so the frame
        handling itself is what is attacked (a stranger would be refused at the upgrade)."""
        for label, frame in (
            (
                "oversize CBOR frame on /v1/sync",
                b"\xa1\x64data\x5a" + (3 << 20).to_bytes(4, "big") + bytes(3 << 20),
            ),
            ("deeply nested CBOR on /v1/sync", b"\x81" * 200_000 + b"\x80"),
            ("garbage CBOR on /v1/sync", self.rnd.randbytes(4096)),
        ):

            async def attack(frame: bytes = frame) -> tuple[bool, str]:
                async with SyncClient(self.sec.url, token, owner, VICTIM) as c:
                    await c.send_raw(frame)
                    closed = await self.closed(c)
                healthy = (await get_json(f"{self.sec.url}/healthz", None))[0] == 200
                return closed and healthy, f"closed={closed} code={c.close_code} errors={c.errors[:1]}"

            await self.sec.attempt(label, attack)

    async def _staging_flood(self) -> None:
        """A viewer sends sync messages whose changes all lack a dependency: nothing may be queued for a
        peer that may not write (it must be refused first), and memory must not stay pinned."""
        pid = self.sec.serve.pid

        async def attack() -> tuple[bool, str]:
            before = proc_stats(pid)["rss_kb"]
            doc_id = document_id_from_bytes(shared_ref(VICTIM).raw_id)
            viewer = self.store(Role.APP, "dash-stager")
            token = self.sec.token("viewer", "dash-stager", rides=[VICTIM])
            sent, closed = 0, False
            async with SyncClient(self.sec.url, token, viewer, VICTIM) as c:
                for _ in range(16):
                    if c.closed.is_set():
                        break
                    await c.send(wire.Sync(c.peer_id, SERVER_PEER, doc_id, orphan_change_message(self.rnd)))
                    sent += 1
                    await asyncio.sleep(0.05)
                closed = await self.closed(c, 2)
                peak = proc_stats(pid)["rss_kb"]
            growth = max(peak - before, 0)
            held = closed or growth < 16 * 1024
            return held, (
                f"{sent} messages of ~900 KB ({c.dropped} after the close); closed={closed} "
                f"code={c.close_code}; RSS +{growth} KiB"
            )

        await self.sec.attempt("viewer queues changes that lack a dependency (memory pinning)", attack)

    async def _ownership(self, victim_token: str) -> None:
        sec = self.sec
        evil_viewer = sec.token("viewer", "dash-evil", classes=["evil"])
        spin_viewer = sec.token("viewer", "dash-spin", classes=["spin"])

        async def class_hijack() -> tuple[bool, str]:
            hijacker = self.store(Role.BIKE, "bike-hijack")
            tok = sec.token("bike", "bike-hijack", classes=["evil"])
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                async with SyncClient(sec.url, tok, hijacker, VICTIM):
                    await asyncio.sleep(0.5)
            evil, _ = await get_json(f"{sec.url}/v1/rides/{VICTIM}", evil_viewer)
            spin, _ = await get_json(f"{sec.url}/v1/rides/{VICTIM}", spin_viewer)
            return (
                evil == 403 and spin == 200,
                f"class 'evil' viewer reads it: {evil}; class 'spin' viewer: {spin}",
            )

        async def stranger_sync() -> tuple[bool, str]:
            stranger = self.store(Role.BIKE, "a-stranger")
            stranger.start_ride(VICTIM, t=self.t0)
            stranger.append_samples(VICTIM, [sample(i, self.t0) for i in range(5)])
            stranger.fold(VICTIM)
            try:
                async with SyncClient(sec.url, sec.token("bike", "a-stranger"), stranger, VICTIM) as c:
                    await c.open_ride()
                    await self.closed(c, 3)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status in REFUSED, f"upgrade refused {exc.status}"
            samples = (await self.view(VICTIM, victim_token)).get("samples", {})
            held = "a-stranger" not in samples
            return held, f"victim's ride now holds samples of {sorted(samples)}"

        stranger = sec.token("bike", "bike-stranger")
        newline = f"/v1/rides/{VICTIM}%0A/meta"
        cases: list[tuple[str, str, str, str | None, Any]] = [
            ("stranger bike token: PUT meta on another's ride", "PUT", f"/v1/rides/{VICTIM}/meta",
             stranger, {"title": "mine"}),
            ("stranger bike token: POST end on another's ride", "POST", f"/v1/rides/{VICTIM}/end",
             stranger, {}),
            ("PUT meta on an unknown ride", "PUT", "/v1/rides/ghost-ride/meta", stranger, {"title": "boo"}),
            ("POST end on an unknown ride", "POST", "/v1/rides/ghost-ride/end", stranger, {}),
            ("ride id with a trailing newline (PUT meta)", "PUT", newline, victim_token, {"title": "twin"}),
        ]  # fmt: skip
        await sec.attempt("class hijack (bike token of another class syncs the ride)", class_hijack)
        await sec.attempt("stranger bike token: sync and create a document in another's ride", stranger_sync)
        for name, method, path, tok, body in cases:

            async def attack(
                method: str = method, path: str = path, tok: str | None = tok, body: Any = body
            ) -> tuple[bool, str]:
                key = f"campaign-{self.rnd.randrange(1 << 30)}" if method == "POST" else None
                status, answer = await self.sec_http(method, path, tok, body, key)
                return status in REFUSED, f"{method} {path}: {status} {answer}"[:200]

            await sec.attempt(name, attack)

        async def newline_sync() -> tuple[bool, str]:

            status = await upgrade_status(sec.url, {"ride": VICTIM + "\n"}, victim_token)
            return status in REFUSED, f"/v1/sync?ride=victim-1%0A upgrade: {status}"

        await sec.attempt("ride id with a trailing newline (sync upgrade)", newline_sync)

    # -- live segments ------------------------------------------------------------------------------------

    def _segment_doc(self, ref: DocRef, seqs: range, base: CrdtDoc | None = None) -> CrdtDoc:
        """Segment `ref` with `seqs` of the victim's samples, as its bike writes one (or more of them on a
        copy of `base`, as a forger would)."""
        doc = CrdtDoc.new(new_actor_id(ref.device)) if base is None else base
        samples = [sample(i, self.t0) for i in seqs]
        documents.add_samples(doc, samples, extra=documents.header_values(doc, ref))
        return doc

    async def _victim_samples(self, token: str) -> int | None:
        count = (await self.view(VICTIM, token)).get("samples", {}).get("bike-victim")
        return count if isinstance(count, int) else None

    async def _segments(self, victim: ReplicaStore, victim_token: str) -> None:
        """Live segments from the ride's own bike past its limits, and from peers that may not write them.
        The victim ride holds 20 samples; segments that repeat them count once, and nothing refused may
        add any."""
        sec = self.sec
        refs = [segment_ref(VICTIM, "bike-victim", n) for n in range(MAX_LIVE_SEGMENTS + 1)]

        async def past_the_limit() -> tuple[bool, str]:
            async with SyncClient(sec.url, victim_token, self.store(Role.BIKE, "bike-victim"), VICTIM) as c:
                for n, ref in enumerate(refs[:-1]):  # overlapping the bike document's samples on purpose
                    await c.open_raw(ref, self._segment_doc(ref, range(5 * n, 5 * n + 5)))
                await c.open_raw(refs[-1], self._segment_doc(refs[-1], range(20, 30)))
                closed = await self.closed(c)
            limited = any("segment_limit" in e for e in c.errors)
            count = await self._victim_samples(victim_token)
            return closed and limited and count == 20, (
                f"closed={closed} samples={count} code={c.close_code} errors={c.errors[:1]}"
            )[:250]

        async def outside_the_window() -> tuple[bool, str]:
            far = segment_ref(VICTIM, "bike-victim", 4 * MAX_LIVE_SEGMENTS)
            async with SyncClient(sec.url, victim_token, self.store(Role.BIKE, "bike-victim"), VICTIM) as c:
                await c.open_raw(far, self._segment_doc(far, range(40, 50)))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await c.wait_for(lambda: far.doc_id in c.unavailable or c.closed.is_set())
            count = await self._victim_samples(victim_token)
            refused = far.doc_id in c.unavailable or c.closed.is_set()
            return refused and count == 20, f"unavailable={far.doc_id in c.unavailable} samples={count}"

        async def written_by(role: str, device: str, **claims: Any) -> tuple[bool, str]:
            # Segment 0 exists (past_the_limit made it); a forger adds samples 100.. on a copy of it.
            forged = self._segment_doc(refs[0], range(100, 110))
            token = sec.token(role, device, **claims)
            try:
                async with SyncClient(sec.url, token, self.store(Role(role), device), VICTIM) as c:
                    await c.open_raw(refs[0], forged)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(10):
                            await c.wait_for(lambda: refs[0].doc_id in c.unavailable or c.closed.is_set())
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status in REFUSED, f"upgrade refused {exc.status}"
            count = await self._victim_samples(victim_token)
            refused = refs[0].doc_id in c.unavailable or c.closed.is_set()
            return refused and count == 20, (
                f"unavailable={refs[0].doc_id in c.unavailable} closed={c.closed.is_set()} "
                f"code={c.close_code} errors={c.errors[:1]} samples={count}"
            )[:250]

        async def app_lists_a_segment() -> tuple[bool, str]:
            listed = segment_ref(VICTIM, "bike-victim", MAX_LIVE_SEGMENTS + 2)
            shared = shared_ref(VICTIM)
            app = self.store(Role.APP, "tablet-lister")
            forged = CrdtDoc.load(victim.doc(shared.doc_id).save(), new_actor_id("tablet-lister"))
            forged.put(documents.index_values(forged, listed))
            token = sec.token("app", "tablet-lister", rides=[VICTIM])
            async with SyncClient(sec.url, token, app, VICTIM) as c:
                await c.open_raw(shared, forged)
                closed = await self.closed(c)
            status, docs = await get_json(f"{sec.url}/v1/rides/{VICTIM}/docs", victim_token)
            names = {d.get("doc_id") for d in docs.get("docs", [])} if isinstance(docs, dict) else set()
            return closed and status == 200 and listed.doc_id not in names, (
                f"closed={closed} code={c.close_code} errors={c.errors[:1]} listed={listed.doc_id in names}"
            )[:250]

        await sec.attempt("live segments past the limit a bike may hold (its own ride)", past_the_limit)
        await sec.attempt("a live segment outside the bike's window of numbers", outside_the_window)
        await sec.attempt(
            "another bike writes the victim bike's live segment",
            lambda: written_by("bike", "bike-segthief"),
        )
        await sec.attempt(
            "an app of the ride writes the bike's live segment",
            lambda: written_by("app", "tablet-segforger", rides=[VICTIM]),
        )
        await sec.attempt("an app lists a live segment in the shared index", app_lists_a_segment)
