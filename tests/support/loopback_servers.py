"""Real servers on loopback for the fault proxy to sit in front of (fixtures: tests/chaos/conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class TcpServer:
    """Echoes what it gets (mode "echo"), or sends `payload` on connect and then closes (mode "send")."""

    payload: bytes = b""
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    port: int = 0
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.payload:
                writer.write(self.payload)
                await writer.drain()
            else:
                while data := await reader.read(65536):
                    self.received += data
                    writer.write(data)
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@dataclass
class WsServer:
    port: int = 0
    messages: list[bytes] = field(default_factory=list)
    big: bytes = bytes(range(256)) * 400  # 100 KiB: a large sync message
