"""The binary front door's codec: length-prefixed, pipelined frames (docs/protocol.md is the spec).

Shared by the server and ``fastkrb.client``, so both sides speak exactly one encoding. Pure functions
and one incremental splitter; no I/O. A frame is ``u32 length | u8 kind | u32 request id | payload``
with every integer big-endian; the length counts everything after itself.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCEPTED",
    "HEADER",
    "PING",
    "PONG",
    "PROTOCOL_ERROR",
    "REJECTED",
    "VALIDATE",
    "Accepted",
    "FrameError",
    "Rejected",
    "decode_accepted",
    "decode_rejected",
    "encode_accepted",
    "encode_ping",
    "encode_pong",
    "encode_protocol_error",
    "encode_rejected",
    "encode_validate",
    "iter_frames",
    "split_frames",
]

# request kinds (client -> server)
VALIDATE = 0x01
PING = 0x02
# reply kinds (server -> client): the request's kind | 0x80, or a rejection / protocol error
ACCEPTED = 0x81
REJECTED = 0x82
PONG = 0x83
PROTOCOL_ERROR = 0x8F

HEADER = struct.Struct(">IBI")          # length, kind, request id
_CB_LEN = struct.Struct(">H")
# enctype, session enctype, kvno, ticket flags, gss flags, bits, auth/start/end/ctime, skew,
# then the lengths of client, server, short name, client realm, framing, response token
_ACC = struct.Struct(">HHIIIBddddfHHHHBH")
_BIT_MUTUAL, _BIT_DELEGATED, _BIT_PAC_VERIFIED = 1, 2, 4
MAX_ID = 0xFFFFFFFF


class FrameError(ValueError):
    """The byte stream is not this protocol (bad length or kind): the connection cannot continue."""


def encode_validate(request_id: int, token: bytes, channel_bindings: bytes | None = None) -> bytes:
    """VALIDATE: ``u16 cb length | channel bindings | token`` (the token runs to the end of the frame)."""
    cb = channel_bindings or b""
    if len(cb) > 0xFFFF:
        raise ValueError("channel bindings longer than 65535 bytes")
    return HEADER.pack(7 + len(cb) + len(token), VALIDATE, request_id) + _CB_LEN.pack(len(cb)) + cb + token


def encode_ping(request_id: int) -> bytes:
    return HEADER.pack(5, PING, request_id)


def encode_pong(request_id: int, status: dict[str, Any]) -> bytes:
    body = json.dumps(status, separators=(",", ":")).encode()
    return HEADER.pack(5 + len(body), PONG, request_id) + body


def encode_accepted(request_id: int, res: Any) -> bytes:
    """ACCEPTED: the AuthResult's facts (never the session key) in one fixed struct plus strings."""
    client = res.client.encode()
    server = res.server.encode()
    short = res.short_name.encode()
    realm = res.client_realm.encode()
    framing = res.framing.encode()
    rep = res.response_token or b""
    bits = ((_BIT_MUTUAL if res.mutual else 0) | (_BIT_DELEGATED if res.delegated is not None else 0)
            | (_BIT_PAC_VERIFIED if res.pac_verified else 0))
    fixed = _ACC.pack(res.enctype, res.session_enctype, res.kvno & 0xFFFFFFFF, res.flags & 0xFFFFFFFF,
                      res.gss_flags & 0xFFFFFFFF, bits, res.auth_time, res.start_time, res.end_time, res.ctime,
                      res.skew, len(client), len(server), len(short), len(realm), len(framing), len(rep))
    n = 5 + _ACC.size + len(client) + len(server) + len(short) + len(realm) + len(framing) + len(rep)
    return b"".join((HEADER.pack(n, ACCEPTED, request_id), fixed, client, server, short, realm, framing, rep))


@dataclass(frozen=True)
class Accepted:
    """A decoded ACCEPTED payload: what fastkrb.client returns (as RemoteAuthResult) for an accepted token."""

    enctype: int
    session_enctype: int
    kvno: int
    flags: int
    gss_flags: int
    mutual: bool
    delegated: bool
    pac_verified: bool
    auth_time: float
    start_time: float
    end_time: float
    ctime: float
    skew: float
    client: str
    server: str
    short_name: str
    client_realm: str
    framing: str
    response_token: bytes | None

    @property
    def www_authenticate(self) -> str | None:
        """The RFC 4559 header value to send back, or None (as AuthResult.www_authenticate)."""
        if self.response_token is None:
            return None
        return "Negotiate " + base64.b64encode(self.response_token).decode("ascii")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("response_token")
        return d


def decode_accepted(payload: bytes | memoryview) -> Accepted:
    if len(payload) < _ACC.size:
        raise FrameError("ACCEPTED payload too short")
    (enctype, senctype, kvno, flags, gss_flags, bits, auth_time, start_time, end_time, ctime, skew,
     lc, ls, lsn, lr, lf, lrep) = _ACC.unpack_from(payload)
    off = _ACC.size
    if off + lc + ls + lsn + lr + lf + lrep != len(payload):
        raise FrameError("ACCEPTED payload lengths do not add up")
    raw = bytes(payload)
    parts = []
    for n in (lc, ls, lsn, lr, lf):
        parts.append(raw[off:off + n].decode())
        off += n
    rep = raw[off:off + lrep] if lrep else None
    return Accepted(enctype, senctype, kvno, flags, gss_flags, bool(bits & _BIT_MUTUAL),
                    bool(bits & _BIT_DELEGATED), bool(bits & _BIT_PAC_VERIFIED), auth_time, start_time, end_time,
                    ctime, skew, parts[0], parts[1], parts[2], parts[3], parts[4], rep)


_REJ = struct.Struct(">BHHI")  # code, cause, fix, details-JSON lengths


def encode_rejected(request_id: int, code: str, cause: str, fix: str, details: dict[str, Any] | None) -> bytes:
    """REJECTED: the error's stable code, its cause and fix, and its details as JSON."""
    c = code.encode()[:255]
    ca = cause.encode()[:0xFFFF]
    fx = fix.encode()[:0xFFFF]
    dj = json.dumps(details or {}, separators=(",", ":"), default=str).encode() if details else b""
    n = 5 + _REJ.size + len(c) + len(ca) + len(fx) + len(dj)
    return b"".join((HEADER.pack(n, REJECTED, request_id), _REJ.pack(len(c), len(ca), len(fx), len(dj)), c, ca, fx, dj))


@dataclass(frozen=True)
class Rejected:
    code: str
    cause: str
    fix: str
    details: dict[str, Any]


def decode_rejected(payload: bytes | memoryview) -> Rejected:
    if len(payload) < _REJ.size:
        raise FrameError("REJECTED payload too short")
    lc, lca, lfx, ldj = _REJ.unpack_from(payload)
    off = _REJ.size
    if off + lc + lca + lfx + ldj != len(payload):
        raise FrameError("REJECTED payload lengths do not add up")
    raw = bytes(payload)
    code = raw[off:off + lc].decode()
    off += lc
    cause = raw[off:off + lca].decode(errors="replace")
    off += lca
    fix = raw[off:off + lfx].decode(errors="replace")
    off += lfx
    details = json.loads(raw[off:off + ldj]) if ldj else {}
    return Rejected(code, cause, fix, details)


def encode_protocol_error(request_id: int, message: str) -> bytes:
    """The last frame on a connection whose bytes are not this protocol; the server closes after it."""
    body = message.encode()[:1024]
    return HEADER.pack(5 + len(body), PROTOCOL_ERROR, request_id) + body


def split_frames(buf: bytes | bytearray, max_frame: int,
                 limit: int = 1 << 30) -> tuple[list[tuple[int, int, int, int]], int, str | None]:
    """Complete frames in ``buf``: ([(kind, request id, payload start, payload end)], bytes consumed, error).

    At most ``limit`` frames (the caller's fairness budget). ``error`` is set when a length is below the
    header or above ``max_frame``: the peer is not speaking this protocol (or is hostile), and the caller
    answers what came before, then PROTOCOL_ERROR, and closes.
    """
    out: list[tuple[int, int, int, int]] = []
    off = 0
    end = len(buf)
    unpack = HEADER.unpack_from
    while end - off >= 9 and len(out) < limit:
        n, kind, rid = unpack(buf, off)
        if n < 5 or n > max_frame:
            return out, off, f"frame length {n} outside 5..{max_frame}"
        if end - off - 4 < n:
            break
        out.append((kind, rid, off + 9, off + 4 + n))
        off += 4 + n
    if end - off >= 4 and len(out) < limit:  # a partial header can already show an impossible length
        n = int.from_bytes(buf[off:off + 4], "big")
        if n < 5 or n > max_frame:
            return out, off, f"frame length {n} outside 5..{max_frame}"
    return out, off, None


def iter_frames(buf: bytes, max_frame: int) -> Iterator[tuple[int, int, bytes]]:
    """Convenience for tests and tools: (kind, id, payload) of every complete frame in ``buf``."""
    frames, _, err = split_frames(buf, max_frame)
    if err:
        raise FrameError(err)
    for kind, rid, a, b in frames:
        yield kind, rid, buf[a:b]
