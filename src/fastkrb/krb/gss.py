"""GSS-API framing around Kerberos tokens: RFC 2743 §3.1 InitialContextToken, RFC 4178 SPNEGO, and the
RFC 4121 §4.1.1 authenticator checksum (0x8003) with its channel bindings.

The slow, independent reference for the native framing code (native/der.c): mints test tokens and decodes
them for ``inspect`` and differential tests. Not on the hot path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pyasn1.type import univ

from fastkrb.errors import MalformedToken
from fastkrb.krb.asn1 import (
    GSS_FLAGS,
    KRB5_MECHS,
    OID_KRB5,
    OID_SPNEGO,
    TOK_ID_AP_REQ,
    NegotiationTokenAsn1,
    der_decode,
    der_encode,
    optional,
)

__all__ = ["GssToken", "gss_wrap", "gss_unwrap", "der_length", "read_der_length",
           "NegTokenInit", "NegTokenResp", "spnego_init", "spnego_resp", "decode_spnego",
           "ChannelBindings", "channel_bindings_hash", "GssChecksum", "unwrap_ap_req", "truncation"]


# --- RFC 2743 §3.1 InitialContextToken framing -------------------------------------------------------------------


def der_length(n: int) -> bytes:
    """A DER length: short form below 128, else the minimal long form."""
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def read_der_length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, offset after it); rejects indefinite, over-long and non-minimal forms."""
    if pos >= len(buf):
        raise MalformedToken("DER length runs past the end of the token.", details={"offset": pos})
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > 4:
        raise MalformedToken("DER length is indefinite or too long.", details={"offset": pos})
    if pos + 1 + n > len(buf):
        raise MalformedToken("DER length runs past the end of the token.", details={"offset": pos})
    v = int.from_bytes(buf[pos + 1:pos + 1 + n], "big")
    if v < 0x80 or buf[pos + 1] == 0:
        raise MalformedToken("DER length is not minimal.", details={"offset": pos})
    return v, pos + 1 + n


def truncation(raw: bytes) -> tuple[int, int] | None:
    """(bytes that arrived, bytes announced) when ``raw`` is cut short, else None.

    A token cut in transit (a proxy's header size limit drops the tail) is a valid prefix of a real one: its
    first byte is a token's tag (GSS 0x60, AP-REQ 0x6e, SPNEGO 0xa0/0xa1) and its outermost DER length
    announces more bytes than arrived. The native validator applies the same rule (validate.c).
    """
    if len(raw) < 2 or raw[0] not in (0x60, 0x6E, 0xA0, 0xA1):
        return None
    first = raw[1]
    pos, length = 2, first
    if first >= 0x80:
        k = first & 0x7F
        if k == 0 or k > 4 or len(raw) - pos < k:
            return None
        length = int.from_bytes(raw[pos:pos + k], "big")
        pos += k
    return (len(raw), pos + length) if length > len(raw) - pos else None


def _oid_der(oid: str) -> bytes:
    return der_encode(univ.ObjectIdentifier(oid))


@dataclass(frozen=True)
class GssToken:
    mech: str
    tok_id: bytes | None   # krb5 mechanisms only (RFC 4121 §4.1)
    inner: bytes


def gss_wrap(mech: str, inner: bytes, tok_id: bytes | None = None) -> bytes:
    """``[APPLICATION 0] IMPLICIT SEQUENCE { thisMech OID, innerContextToken ANY }`` (0x60 ...)."""
    body = _oid_der(mech) + (tok_id or b"") + inner
    return b"\x60" + der_length(len(body)) + body


def gss_unwrap(token: bytes) -> GssToken:
    """Split an InitialContextToken; the TOK_ID is taken for krb5 mechanisms."""
    token = bytes(token)
    if not token or token[0] != 0x60:
        raise MalformedToken("Not a GSS InitialContextToken (first octet is not 0x60).")
    length, pos = read_der_length(token, 1)
    if pos + length != len(token):
        raise MalformedToken("GSS token length does not match its size.", details={"declared": length})
    if pos >= len(token) or token[pos] != 0x06:
        raise MalformedToken("GSS token does not start with a mechanism OID.")
    olen, opos = read_der_length(token, pos + 1)
    if opos + olen > len(token):
        raise MalformedToken("GSS mechanism OID runs past the end of the token.")
    oid_node = der_decode(token[pos:opos + olen], univ.ObjectIdentifier(), "mechanism OID")
    mech = str(oid_node)
    rest = token[opos + olen:]
    if mech in KRB5_MECHS:
        if len(rest) < 2:
            raise MalformedToken("krb5 GSS token has no TOK_ID.")
        return GssToken(mech, rest[:2], rest[2:])
    return GssToken(mech, None, rest)


# --- RFC 4178 SPNEGO ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegTokenInit:
    mech_types: tuple[str, ...]
    req_flags: int | None = None     # ContextFlags bits as in the BIT STRING, bit 0 = delegFlag
    mech_token: bytes | None = None
    mech_list_mic: bytes | None = None


@dataclass(frozen=True)
class NegTokenResp:
    neg_state: int | None = None     # 0 accept-completed, 1 accept-incomplete, 2 reject, 3 request-mic
    supported_mech: str | None = None
    response_token: bytes | None = None
    mech_list_mic: bytes | None = None


def spnego_init(mech_token: bytes | None, mech_types: Sequence[str] = (OID_KRB5,),
                req_flags: int | None = None, mech_list_mic: bytes | None = None) -> bytes:
    """The client's first SPNEGO token, framed with the SPNEGO OID (RFC 4178 §4.2.1)."""
    choice = NegotiationTokenAsn1()
    init = choice["negTokenInit"]
    init["mechTypes"].clear()
    init["mechTypes"].extend([univ.ObjectIdentifier(m) for m in mech_types])
    if req_flags is not None:
        bits = "".join("1" if req_flags >> i & 1 else "0" for i in range(7))  # bit 0 = delegFlag
        init["reqFlags"] = init["reqFlags"].clone(binValue=bits)
    if mech_token is not None:
        init["mechToken"] = mech_token
    if mech_list_mic is not None:
        init["mechListMIC"] = mech_list_mic
    return gss_wrap(OID_SPNEGO, der_encode(choice))


def spnego_resp(neg_state: int | None = 0, supported_mech: str | None = OID_KRB5,
                response_token: bytes | None = None, mech_list_mic: bytes | None = None) -> bytes:
    """A NegTokenResp (``a1 ...``); subsequent tokens carry no InitialContextToken framing."""
    choice = NegotiationTokenAsn1()
    resp = choice["negTokenResp"]
    if neg_state is not None:
        resp["negState"] = neg_state
    if supported_mech is not None:
        resp["supportedMech"] = supported_mech
    if response_token is not None:
        resp["responseToken"] = response_token
    if mech_list_mic is not None:
        resp["mechListMIC"] = mech_list_mic
    return der_encode(choice)


def decode_spnego(token: bytes) -> NegTokenInit | NegTokenResp:
    """A framed NegTokenInit (0x60 + SPNEGO OID) or a bare NegotiationToken (0xa0 / 0xa1)."""
    token = bytes(token)
    if token[:1] == b"\x60":
        g = gss_unwrap(token)
        if g.mech != OID_SPNEGO:
            raise MalformedToken(f"GSS token is for mechanism {g.mech}, not SPNEGO.", details={"mech": g.mech})
        token = g.inner
    node = der_decode(token, NegotiationTokenAsn1(), "SPNEGO NegotiationToken")
    name = node.getName()
    if name == "negTokenInit":
        n = node["negTokenInit"]
        rf, mt, mic = optional(n, "reqFlags"), optional(n, "mechToken"), optional(n, "mechListMIC")
        req = None
        if rf is not None:
            bits = tuple(rf)
            req = sum(1 << i for i, b in enumerate(bits) if b)
        return NegTokenInit(tuple(str(o) for o in n["mechTypes"]), req,
                            None if mt is None else bytes(mt), None if mic is None else bytes(mic))
    n = node["negTokenResp"]
    ns, sm, rt, mic = (optional(n, k) for k in ("negState", "supportedMech", "responseToken", "mechListMIC"))
    return NegTokenResp(None if ns is None else int(ns), None if sm is None else str(sm),
                        None if rt is None else bytes(rt), None if mic is None else bytes(mic))


def unwrap_ap_req(token: bytes) -> bytes:
    """The AP-REQ inside any framing: SPNEGO NegTokenInit, krb5 GSS token, or bare (0x6e)."""
    token = bytes(token)
    if token[:1] == b"\x6e":
        return token
    if token[:1] in (b"\x60", b"\xa0"):
        if token[:1] == b"\x60":
            g = gss_unwrap(token)
            if g.mech in KRB5_MECHS:
                if g.tok_id != TOK_ID_AP_REQ:
                    raise MalformedToken("krb5 GSS token is not an AP-REQ (TOK_ID).")
                return g.inner
        spnego = decode_spnego(token)
        if isinstance(spnego, NegTokenInit) and spnego.mech_token is not None:
            return unwrap_ap_req(spnego.mech_token)
        raise MalformedToken("SPNEGO token carries no mechToken.")
    raise MalformedToken("Token is neither SPNEGO, a krb5 GSS token, nor an AP-REQ.")


# --- RFC 4121 §4.1.1 the GSS authenticator checksum (type 0x8003) -----------------------------------------------


@dataclass(frozen=True)
class ChannelBindings:
    """gss_channel_bindings_struct (RFC 2744 §3.11); for TLS only application_data is set."""

    application_data: bytes = b""
    initiator_addrtype: int = 0
    initiator_address: bytes = b""
    acceptor_addrtype: int = 0
    acceptor_address: bytes = b""


def channel_bindings_hash(cb: ChannelBindings | bytes) -> bytes:
    """MD5 over the little-endian serialisation of RFC 4121 §4.1.1.2."""
    if isinstance(cb, (bytes, bytearray)):
        cb = ChannelBindings(bytes(cb))
    data = b"".join((
        struct.pack("<II", cb.initiator_addrtype, len(cb.initiator_address)), cb.initiator_address,
        struct.pack("<II", cb.acceptor_addrtype, len(cb.acceptor_address)), cb.acceptor_address,
        struct.pack("<I", len(cb.application_data)), cb.application_data,
    ))
    return hashlib.md5(data, usedforsecurity=False).digest()


@dataclass(frozen=True)
class GssChecksum:
    """The 0x8003 checksum value: Lgth(16) | Bnd | Flags [| DlgOpt | Dlgth | Deleg] [| Exts]."""

    bnd: bytes = bytes(16)
    flags: int = 0
    delegation: bytes | None = None   # KRB-CRED; present when flags has deleg
    deleg_option: int = 1
    exts: bytes = b""
    lgth: int = 16

    def to_bytes(self) -> bytes:
        out = struct.pack("<I", self.lgth) + self.bnd + struct.pack("<I", self.flags)
        if self.delegation is not None:
            out += struct.pack("<HH", self.deleg_option, len(self.delegation)) + self.delegation
        return out + self.exts

    @classmethod
    def from_bytes(cls, data: bytes) -> GssChecksum:
        if len(data) < 24:
            raise MalformedToken("GSS checksum shorter than 24 bytes (RFC 4121 §4.1.1).")
        (lgth,) = struct.unpack_from("<I", data, 0)
        if lgth != 16:
            raise MalformedToken(f"GSS checksum Lgth is {lgth}, not 16.")
        bnd = data[4:20]
        (flags,) = struct.unpack_from("<I", data, 20)
        rest = data[24:]
        deleg = None
        opt = 1
        if flags & GSS_FLAGS["deleg"]:
            if len(rest) < 4:
                raise MalformedToken("GSS checksum has the deleg flag but no DlgOpt/Dlgth.")
            opt, dlen = struct.unpack_from("<HH", rest, 0)
            if len(rest) < 4 + dlen:
                raise MalformedToken("GSS checksum delegation runs past its end.")
            deleg = rest[4:4 + dlen]
            rest = rest[4 + dlen:]
        return cls(bnd, flags, deleg, opt, rest, lgth)
