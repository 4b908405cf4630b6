"""The servers the sync benchmarks run against, as subprocesses on loopback: `ridesync serve`, and the
naive baseline that stores whole uploaded documents; plus reading a process's RSS and CPU time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess that prints its URL (JSON `{"event": "listening", "url"}`) when ready."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            self.url = json.loads(line)["url"]
        except (ValueError, KeyError):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}") from None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(data: Path) -> Server:
    from engine.auth.tokens import KeyRing

    KeyRing.load_or_create(data)
    argv = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data)]
    return Server([*argv, "--log-level", "INFO"], data.parent / f"{data.name}.log")


def naive_server(data: Path) -> Server:
    data.mkdir(parents=True, exist_ok=True)
    return Server([sys.executable, "-c", _NAIVE_SERVER, str(data)], data.parent / f"{data.name}.log")


# The baseline: a device uploads its whole saved document; the server loads it (as a sync server must, to
# use it) and stores it durably, then answers.
_NAIVE_SERVER = """
import json, sqlite3, sys
from aiohttp import web
from engine.crdt import CrdtDoc, CrdtDecodeError, new_actor_id
db = sqlite3.connect(sys.argv[1] + "/naive.sqlite3", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS docs(id TEXT PRIMARY KEY, data BLOB)")
actor = new_actor_id("naive")
async def upload(request):
    body = await request.read()
    try:
        CrdtDoc.load(body, actor)
    except CrdtDecodeError as exc:
        return web.Response(status=400, text=str(exc))
    db.execute("INSERT OR REPLACE INTO docs VALUES(?, ?)", (request.match_info["doc"], body))
    return web.json_response({"stored": len(body)})
app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/naive/{doc}", upload)
async def healthz(request):
    return web.json_response({"ok": True})
app.router.add_get("/healthz", healthz)
async def main():
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
    import asyncio; await asyncio.Event().wait()
import asyncio; asyncio.run(main())
"""
