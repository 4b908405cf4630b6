"""How far a peer has read what we sent it, as the kernel knows it (Linux `TCP_INFO`).

The write-buffer rule alone cannot see a peer that never reads while the traffic to it is light: the
bytes sit in the kernel's send queue and the peer's receive buffer (tens of KB) and the transport's own
buffer never grows. The kernel does know: bytes still queued to the peer, and a count of bytes the peer
has acknowledged that stops moving when its receive window is shut. Sans-I/O apart from the one
`getsockopt`, so the parsing is testable on bytes.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Protocol

# Offsets in Linux's `struct tcp_info` (include/uapi/linux/tcp.h): eight u8 fields, then u32 fields from
# tcpi_rto; `tcpi_unacked` (segments sent, not acknowledged) is the fifth of them; `tcpi_bytes_acked`
# (u64, Linux 4.1) and `tcpi_notsent_bytes` (u32, Linux 4.6) come later.
_UNACKED = struct.Struct("=I"), 24
_BYTES_ACKED = struct.Struct("=Q"), 120
_NOTSENT = struct.Struct("=I"), 144
_NEED = 148
# Room for the kernel to answer with its whole (longer, newer) struct; only the prefix above is read.
_ASK = 256


class SendProgress(NamedTuple):
    acked: int  # bytes the peer's TCP has acknowledged since the connection opened
    queued: bool  # bytes still in our send queue: sent and not acknowledged, or not sent (window shut)


class _Sock(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


def parse_tcp_info(raw: bytes) -> SendProgress | None:
    """The send progress in a `TCP_INFO` answer; None when it is too short to hold it (an old kernel)."""
    if len(raw) < _NEED:
        return None
    unacked = _UNACKED[0].unpack_from(raw, _UNACKED[1])[0]
    acked = _BYTES_ACKED[0].unpack_from(raw, _BYTES_ACKED[1])[0]
    notsent = _NOTSENT[0].unpack_from(raw, _NOTSENT[1])[0]
    return SendProgress(acked=acked, queued=unacked > 0 or notsent > 0)


def send_progress(sock: _Sock | None) -> SendProgress | None:
    """The socket's send progress, or None where the kernel does not tell (not Linux, not TCP, closed)."""
    opt = getattr(socket, "TCP_INFO", None)
    if sock is None or opt is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, opt, _ASK)
    except OSError:
        return None
    return parse_tcp_info(raw)
