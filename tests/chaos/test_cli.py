from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from tests.support.loopback_servers import TcpServer

HANG_GUARD = 60
# Not `-m engine.cli.main`: that would make a second copy of the module and its CliError class.
RIDESYNC = [sys.executable, "-c", "import sys; from engine.cli.main import main; sys.exit(main())"]


async def test_cli_proxy_relays_logs_faults_and_stops_on_sigint(echo_server: TcpServer) -> None:
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            *RIDESYNC, "chaos", "proxy",
            "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{echo_server.port}",
            "--seed", "5", "--cut", "1", "--kill-min", "4", "--kill-window", "4", "--cut-mid-message",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            first = json.loads(await proc.stdout.readline())
            assert first["seed"] == 5
            host, port = first["listening"].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"abcdef")
            # 4 bytes in total may pass (both directions): "abcd" reaches the echo server, then the cut.
            echoed = await reader.read()
            writer.close()
            events = [json.loads(await proc.stdout.readline()) for _ in range(2)]
            assert [e["fault"] for e in events] == ["planned", "cut"]
            assert events[1]["after_bytes"] == 4
            assert len(echoed) <= 4
        finally:
            proc.send_signal(signal.SIGINT)
            rest = (await proc.stdout.read()).decode().splitlines()
            assert await proc.wait() == 0
    assert json.loads(rest[-1])["stopped"] is True


async def test_cli_rejects_bad_schedule(tmp_path: Path) -> None:
    schedule = tmp_path / "s.json"
    schedule.write_text('[{"at": 1, "faults": {"drop": 7}}]')
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            *RIDESYNC, "chaos", "proxy",
            "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--schedule", str(schedule),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "drop must be a probability" in json.loads(err)["error"]


async def test_cli_proxy_ctrl_c_with_a_connection_open_prints_no_traceback(echo_server: TcpServer) -> None:
    """Ctrl-C while a connection is relayed (here: held in a stall) ends the proxy like an idle one: its
    summary line, exit 0, and nothing on stderr (it was asyncio's CancelledError traceback)."""
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            *RIDESYNC, "chaos", "proxy",
            "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{echo_server.port}",
            "--seed", "1", "--stall", "1", "--stall-max", "30",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(await proc.stdout.readline())
        host, port = first["listening"].rsplit(":", 1)
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"hello")
        await writer.drain()
        stall = json.loads(await proc.stdout.readline())  # the connection is now inside a stall
        assert stall["fault"] == "stall"
        proc.send_signal(signal.SIGINT)
        out, err = await proc.communicate()
        writer.close()
    assert proc.returncode == 0
    assert err.decode() == ""
    assert json.loads(out.decode().splitlines()[-1])["stopped"] is True
