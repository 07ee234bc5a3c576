"""fastkrb.krb.transport: the RFC 4120 §7.2.2 framing kdcclient and kpasswd share."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any, cast

import pytest

from fastkrb.krb import kpasswd, transport


def _serve_once(reply: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    a, b = socket.socketpair()
    got: list[bytes] = []

    def peer() -> None:
        (n,) = struct.unpack(">I", transport.recv_exact(b, 4))
        got.append(transport.recv_exact(b, n))
        b.sendall(reply)
        b.close()

    t = threading.Thread(target=peer)
    t.start()
    return a, t, got


def test_tcp_request_and_reply_are_length_prefixed() -> None:
    a, t, got = _serve_once(struct.pack(">I", 3) + b"rep")
    with a:
        assert transport.exchange(a, b"request", "tcp") == b"rep"
    t.join()
    assert got == [b"request"]


def test_tcp_reply_with_the_high_bit_is_not_a_record() -> None:
    a, t, _ = _serve_once(b"\x80\x00\x00\x01x")
    with a, pytest.raises(transport.BadRecord):
        transport.exchange(a, b"request", "tcp")
    t.join()


def test_tcp_reply_cut_short_is_eof() -> None:
    a, t, _ = _serve_once(struct.pack(">I", 10) + b"abc")
    with a, pytest.raises(EOFError):
        transport.exchange(a, b"request", "tcp")
    t.join()


def test_kpasswd_unresolvable_host_is_a_kpasswd_error() -> None:
    with pytest.raises(kpasswd.KpasswdError) as ei:
        kpasswd.change_password("no-such-host.invalid", 464, cast(Any, None), 18, b"\0" * 32,
                                cast(Any, None), "EXAMPLE.COM", "pw")
    assert ei.value.details["kind"] == "resolve"
    assert ei.value.details["changed"] is False
