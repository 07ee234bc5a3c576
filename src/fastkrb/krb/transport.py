"""One request/reply over a connected socket, as RFC 4120 §7.2.2 frames it (a KDC, kpasswd).

TCP: a 4-byte big-endian length, then the message, both ways. UDP: one datagram each way.
Socket errors (timeout, refused, reset) are left to the caller, which names them in its own error;
a short TCP read raises EOFError and a reply that is not a length-prefixed record raises BadRecord."""

from __future__ import annotations

import socket
import struct
from typing import Literal

__all__ = ["MAX_REPLY", "BadRecord", "exchange", "recv_exact"]

MAX_REPLY = 1 << 20


class BadRecord(Exception):
    """The TCP reply does not start with a plausible record length (the high bit set, or too long)."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; EOFError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def exchange(sock: socket.socket, request: bytes, proto: Literal["tcp", "udp"],
             max_reply: int = MAX_REPLY) -> bytes:
    """Send ``request`` on the connected ``sock`` and return the reply (its timeout is the socket's)."""
    if proto == "tcp":
        sock.sendall(struct.pack(">I", len(request)) + request)
        (n,) = struct.unpack(">I", recv_exact(sock, 4))
        if n & 0x80000000 or n > max_reply:
            raise BadRecord
        return recv_exact(sock, n)
    sock.send(request)
    return sock.recv(65535)
