"""AP-REQs on the wire: just enough DER to find a token's fields and ciphertexts, for assertions and tampering.

Reads a raw krb5 GSS token, a SPNEGO NegTokenInit or a bare AP-REQ, independently of fastkrb.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

KRB5_OID = bytes.fromhex("2a864886f712010202")  # 1.2.840.113554.1.2.2 (RFC 4121)
SPNEGO_OID = bytes.fromhex("2b0601050502")  # 1.3.6.1.5.5.2 (RFC 4178)


def _tlv(buf: bytes, off: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``off``."""
    tag = buf[off]
    ln = buf[off + 1]
    p = off + 2
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(buf[p:p + n], "big")
        p += n
    if p + ln > len(buf):
        raise ValueError("DER element overruns the buffer")
    return tag, p, p + ln


def _children(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element in [start, end)."""
    off = start
    while off < end:
        tag, cs, ce = _tlv(buf, off)
        yield tag, off, cs, ce
        off = ce


def _field(buf: bytes, start: int, end: int, ctx: int) -> tuple[int, int]:
    """Content span of the [ctx] field inside a SEQUENCE's content."""
    for tag, _o, cs, ce in _children(buf, start, end):
        if tag == 0xA0 + ctx:
            return cs, ce
    raise ValueError(f"field [{ctx}] absent")


def ap_req_offset(token: bytes) -> int:
    """Offset of the AP-REQ ([APPLICATION 14]) inside a raw krb5 GSS token, a SPNEGO NegTokenInit or itself."""
    if token[0] == 0x6E:
        return 0
    if token[0] != 0x60:
        raise ValueError("not a GSS token")
    _t, cs, _ce = _tlv(token, 0)
    otag, os_, oe = _tlv(token, cs)
    if otag != 0x06:
        raise ValueError("no mech OID")
    oid = token[os_:oe]
    if oid == KRB5_OID:
        return oe + 2  # TOK_ID 01 00
    if oid == SPNEGO_OID:
        _t, ics, _ice = _tlv(token, oe)  # [0] NegTokenInit
        _t, scs, sce = _tlv(token, ics)  # SEQUENCE
        mcs, _mce = _field(token, scs, sce, 2)  # mechToken
        _t, octs, _octe = _tlv(token, mcs)  # OCTET STRING
        return octs + ap_req_offset(token[octs:])
    raise ValueError(f"unknown mech OID {oid.hex()}")


@dataclass(frozen=True)
class ApReqView:
    """What an AP-REQ says in clear text, read independently of fastkrb."""

    sname: str
    realm: str
    ticket_enctype: int
    ticket_kvno: int | None
    ticket_cipher: tuple[int, int]  # absolute span in the token
    authenticator_enctype: int
    authenticator_cipher: tuple[int, int]
    ap_options: bytes


def _int(buf: bytes, cs: int, ce: int) -> int:
    _t, s, e = _tlv(buf, cs)
    return int.from_bytes(buf[s:e], "big", signed=True)


def _encdata(buf: bytes, cs: int, ce: int) -> tuple[int, int | None, tuple[int, int]]:
    _t, s, e = _tlv(buf, cs)  # SEQUENCE
    etype = _int(buf, *_field(buf, s, e, 0))
    try:
        kvno: int | None = _int(buf, *_field(buf, s, e, 1))
    except ValueError:
        kvno = None
    ccs, _cce = _field(buf, s, e, 2)
    _t, os_, oe = _tlv(buf, ccs)
    return etype, kvno, (os_, oe)


def parse_ap_req(token: bytes) -> ApReqView:
    base = ap_req_offset(token)
    tag, cs, _ce = _tlv(token, base)
    if tag != 0x6E:
        raise ValueError("not an AP-REQ")
    _t, s, e = _tlv(token, cs)  # SEQUENCE
    ocs, _oce = _field(token, s, e, 2)
    _t, bs, be = _tlv(token, ocs)
    ap_options = token[bs + 1:be]
    tcs, _tce = _field(token, s, e, 3)
    _t, tks, _tke = _tlv(token, tcs)  # [APPLICATION 1]
    _t, ts, te = _tlv(token, tks)  # SEQUENCE
    rcs, _rce = _field(token, ts, te, 1)
    _t, rs, re_ = _tlv(token, rcs)
    realm = token[rs:re_].decode()
    ncs, _nce = _field(token, ts, te, 2)
    _t, ns, ne = _tlv(token, ncs)
    scs, _sce = _field(token, ns, ne, 1)
    _t, ss, se = _tlv(token, scs)
    parts = [token[ps:pe].decode() for _tg, _o, ps, pe in _children(token, ss, se)]
    t_et, t_kvno, t_span = _encdata(token, *_field(token, ts, te, 3))
    a_et, _a_kvno, a_span = _encdata(token, *_field(token, s, e, 4))
    return ApReqView("/".join(parts), realm, t_et, t_kvno, t_span, a_et, a_span, ap_options)


def tamper(token: bytes, part: str) -> bytes:
    """Flip one byte in the middle of the ticket's or the authenticator's ciphertext (DER stays valid)."""
    view = parse_ap_req(token)
    start, end = view.ticket_cipher if part == "ticket" else view.authenticator_cipher
    if part not in ("ticket", "authenticator"):
        raise ValueError(part)
    pos = (start + end) // 2
    out = bytearray(token)
    out[pos] ^= 0x5A
    return bytes(out)

