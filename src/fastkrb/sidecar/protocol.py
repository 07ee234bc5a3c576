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
    "ACCEPTED_EX",
    "HEADER",
    "PING",
    "PONG",
    "PROTOCOL_ERROR",
    "REJECTED",
    "VALIDATE",
    "VALIDATE_EX",
    "WANT_GROUP_NAMES",
    "WANT_IDENTITY",
    "Accepted",
    "FrameError",
    "Rejected",
    "RemoteIdentity",
    "ValidateEx",
    "decode_accepted",
    "decode_accepted_ex",
    "decode_rejected",
    "decode_validate_ex",
    "encode_accepted",
    "encode_accepted_ex",
    "encode_ping",
    "encode_pong",
    "encode_protocol_error",
    "encode_rejected",
    "encode_validate",
    "encode_validate_ex",
    "iter_frames",
    "split_frames",
]

# request kinds (client -> server)
VALIDATE = 0x01
PING = 0x02
VALIDATE_EX = 0x03          # version 2: a policy, and the PAC identity in the answer
# reply kinds (server -> client): the request's kind | 0x80, or a rejection / protocol error
ACCEPTED = 0x81
REJECTED = 0x82
PONG = 0x83
ACCEPTED_EX = 0x84          # version 2: the answer to VALIDATE_EX when the token is accepted
PROTOCOL_ERROR = 0x8F
# VALIDATE_EX flags
WANT_IDENTITY = 1
WANT_GROUP_NAMES = 2

HEADER = struct.Struct(">IBI")          # length, kind, request id
_CB_LEN = struct.Struct(">H")
# enctype, session enctype, kvno, ticket flags, gss flags, bits, auth/start/end/ctime, skew,
# then the lengths of client, server, short name, client realm, framing, response token
_ACC = struct.Struct(">HHIIIBddddfHHHHBH")
_BIT_MUTUAL, _BIT_DELEGATED, _BIT_PAC_VERIFIED = 1, 2, 4
MAX_ID = 0xFFFFFFFF
_VEX = struct.Struct(">BHH")            # VALIDATE_EX: flags, channel-bindings length, policy length
_AEX = struct.Struct(">I")              # ACCEPTED_EX: length of the ACCEPTED payload inside
_AEX_TAIL = struct.Struct(">BH")        # ... then extension flags, policy length
_EXT_IDENTITY = 1
_ID = struct.Struct(">BII")             # identity: flags, group_count, number of group SIDs
_ID_DNS, _ID_UPN, _ID_UPN_IMPLICIT, _ID_NAMES = 1, 2, 4, 8
_S16 = struct.Struct(">H")


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


def encode_validate_ex(request_id: int, token: bytes, channel_bindings: bytes | None = None, policy: str = "",
                       flags: int = WANT_IDENTITY) -> bytes:
    """VALIDATE_EX (version 2): ``flags u8 | cb length u16 | policy length u16 | cb | policy | token``.

    ``policy`` is the /auth query text (``policy=NAME`` or ``allowed_groups=...&...``; empty: none), ``flags``
    ask for the PAC identity (WANT_IDENTITY) and the group names of the sidecar's map (WANT_GROUP_NAMES)."""
    cb = channel_bindings or b""
    pol = policy.encode()
    if len(cb) > 0xFFFF:
        raise ValueError("channel bindings longer than 65535 bytes")
    if len(pol) > 0xFFFF:
        raise ValueError("policy longer than 65535 bytes")
    return b"".join((HEADER.pack(5 + _VEX.size + len(cb) + len(pol) + len(token), VALIDATE_EX, request_id),
                     _VEX.pack(flags & 0xFF, len(cb), len(pol)), cb, pol, token))


@dataclass(frozen=True)
class ValidateEx:
    flags: int
    channel_bindings: bytes | None
    policy: bytes
    token: bytes


def decode_validate_ex(payload: bytes | memoryview) -> ValidateEx:
    if len(payload) < _VEX.size:
        raise FrameError("VALIDATE_EX payload too short")
    flags, ncb, npol = _VEX.unpack_from(payload)
    off = _VEX.size
    if off + ncb + npol > len(payload):
        raise FrameError("VALIDATE_EX lengths run past the frame")
    raw = bytes(payload)
    cb = raw[off:off + ncb] or None
    pol = raw[off + ncb:off + ncb + npol]
    return ValidateEx(flags, cb, pol, raw[off + ncb + npol:])


def _accepted_payload(res: Any) -> bytes:
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
    return b"".join((fixed, client, server, short, realm, framing, rep))


def encode_accepted(request_id: int, res: Any) -> bytes:
    """ACCEPTED: the AuthResult's facts (never the session key) in one fixed struct plus strings."""
    body = _accepted_payload(res)
    return HEADER.pack(5 + len(body), ACCEPTED, request_id) + body


def _s16(s: str) -> bytes:
    b = s.encode()[:0xFFFF]
    return _S16.pack(len(b)) + b


def encode_identity(identity: Any, names: Any = None) -> bytes:
    """The PAC identity: ``flags u8 | group_count u32 | n u32`` then strings (``u16 length | UTF-8``): user SID,
    primary group SID, logon name, logon domain, [DNS domain], [UPN], n group SIDs, [n group names]."""
    sids = tuple(identity.group_sids)
    dns, upn = identity.dns_domain, identity.upn
    flags = ((_ID_DNS if dns is not None else 0) | (_ID_UPN if upn is not None else 0)
             | (_ID_UPN_IMPLICIT if identity.upn_implicit else 0) | (_ID_NAMES if names is not None else 0))
    parts = [_ID.pack(flags, identity.group_count & 0xFFFFFFFF, len(sids)), _s16(identity.user_sid),
             _s16(identity.primary_group_sid), _s16(identity.logon_name), _s16(identity.logon_domain)]
    if dns is not None:
        parts.append(_s16(dns))
    if upn is not None:
        parts.append(_s16(upn))
    parts.extend(_s16(x) for x in sids)
    if names is not None:
        parts.extend(_s16(names.name(x) or "") for x in sids)
    return b"".join(parts)


def encode_accepted_ex(request_id: int, res: Any, policy: str | None = None, identity: bool = True,
                       names: Any = None) -> bytes:
    """ACCEPTED_EX (version 2): ``acc length u32 | ACCEPTED payload | ext flags u8 | policy length u16 | policy |
    identity``; the identity block is present when asked for and the ticket had one (ext flags bit 1)."""
    acc = _accepted_payload(res)
    pol = (policy or "").encode()[:0xFFFF]
    ident = res.identity if identity else None
    block = encode_identity(ident, names) if ident is not None else b""
    body = b"".join((_AEX.pack(len(acc)), acc, _AEX_TAIL.pack(_EXT_IDENTITY if ident is not None else 0, len(pol)),
                     pol, block))
    return HEADER.pack(5 + len(body), ACCEPTED_EX, request_id) + body


@dataclass(frozen=True)
class RemoteIdentity:
    """The PAC identity as the sidecar reports it (the facts of ``fastkrb._native.Identity``).

    ``group_names``: the sidecar's map names, aligned with ``group_sids`` ("" for a SID the map lacks), when
    the client asked for them and the sidecar has a map; else None.
    """

    user_sid: str
    primary_group_sid: str
    group_sids: tuple[str, ...]
    group_count: int
    logon_name: str
    logon_domain: str
    dns_domain: str | None
    upn: str | None
    upn_implicit: bool
    group_names: tuple[str, ...] | None = None

    def member_of(self, sids: Any) -> bool:
        """True when the user SID, the primary group SID or any group SID is in ``sids`` (a SidSet or a set)."""
        if self.user_sid in sids or self.primary_group_sid in sids:
            return True
        return any(s in sids for s in self.group_sids)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["group_sids"] = list(self.group_sids)
        if self.group_names is not None:
            d["group_names"] = list(self.group_names)
        return d


def decode_identity(raw: bytes) -> RemoteIdentity:
    if len(raw) < _ID.size:
        raise FrameError("identity block too short")
    flags, count, n = _ID.unpack_from(raw)
    off = _ID.size
    end = len(raw)
    want = 4 + (1 if flags & _ID_DNS else 0) + (1 if flags & _ID_UPN else 0) + n * (2 if flags & _ID_NAMES else 1)
    if want > (end - off) // 2:
        raise FrameError("identity block lengths do not add up")
    out: list[str] = []
    for _ in range(want):
        if off + 2 > end:
            raise FrameError("identity block lengths do not add up")
        (ln,) = _S16.unpack_from(raw, off)
        off += 2
        if off + ln > end:
            raise FrameError("identity block lengths do not add up")
        out.append(raw[off:off + ln].decode("utf-8", "replace"))
        off += ln
    if off != end:
        raise FrameError("identity block lengths do not add up")
    it = iter(out)
    user, primary, logon, domain = next(it), next(it), next(it), next(it)
    dns = next(it) if flags & _ID_DNS else None
    upn = next(it) if flags & _ID_UPN else None
    sids = tuple(next(it) for _ in range(n))
    names = tuple(next(it) for _ in range(n)) if flags & _ID_NAMES else None
    return RemoteIdentity(user, primary, sids, count, logon, domain, dns, upn, bool(flags & _ID_UPN_IMPLICIT), names)


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
    identity: RemoteIdentity | None = None   # version 2 (ACCEPTED_EX) only; None: no PAC identity, or version 1
    policy: str | None = None                # the policy that allowed the client (ACCEPTED_EX)

    @property
    def www_authenticate(self) -> str | None:
        """The RFC 4559 header value to send back, or None (as AuthResult.www_authenticate)."""
        if self.response_token is None:
            return None
        return "Negotiate " + base64.b64encode(self.response_token).decode("ascii")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("response_token")
        d["identity"] = None if self.identity is None else self.identity.to_dict()
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


def decode_accepted_ex(payload: bytes | memoryview) -> Accepted:
    raw = bytes(payload)
    if len(raw) < _AEX.size:
        raise FrameError("ACCEPTED_EX payload too short")
    (nacc,) = _AEX.unpack_from(raw)
    off = _AEX.size + nacc
    if off + _AEX_TAIL.size > len(raw):
        raise FrameError("ACCEPTED_EX lengths do not add up")
    acc = decode_accepted(raw[_AEX.size:off])
    ext, npol = _AEX_TAIL.unpack_from(raw, off)
    off += _AEX_TAIL.size
    if off + npol > len(raw):
        raise FrameError("ACCEPTED_EX lengths do not add up")
    policy = raw[off:off + npol].decode("utf-8", "replace") or None
    off += npol
    if ext & _EXT_IDENTITY:
        ident: RemoteIdentity | None = decode_identity(raw[off:])
    elif off != len(raw):
        raise FrameError("ACCEPTED_EX lengths do not add up")
    else:
        ident = None
    return dataclasses.replace(acc, identity=ident, policy=policy)


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
