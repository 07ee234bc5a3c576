"""The KRB-ERROR a refused AP-REQ gets back, framed as MIT's acceptor frames it, so that the client's GSS
library reports the real reason ("Clock skew too great", "Request is a replay") instead of a generic failure.

A client that asked for mutual authentication waits for the acceptor's answer; when the acceptor refuses
for a reason RFC 4120 §7.5.9 has a code for, MIT's ``krb5_gss_accept_sec_context`` answers with a
KRB-ERROR (RFC 4120 §5.9.1) in an RFC 4121 §4.1 token (TOK_ID 03 00), wrapped for SPNEGO in a
NegTokenResp with negState reject (RFC 4178 §4.2.2), and MIT's initiator turns the error code into its
minor status (``ERROR_TABLE_BASE_krb5 + code``). This module builds that token on the rejection path only:
it reads what it needs (the framing, the ticket's server name, the AP options) from the request's clear
text again, never on the hot path.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass

from fastkrb._native import decode_token
from fastkrb.errors import KerberosError
from fastkrb.krb.asn1 import TOK_ID_KRB_ERROR, KrbError, PrincipalName
from fastkrb.krb.gss import der_length

__all__ = ["ANSWERED_CODES", "RequestFacts", "request_facts", "krb_error", "krb_error_der", "frame_error",
           "error_token", "error_header"]

#: The fastkrb error codes answered with a KRB-ERROR: those whose ``krb_error`` is an RFC 4120 §7.5.9
#: KRB_AP_ERR_* the client's library can name. Left out, and why: ``malformed`` (the token is broken; MIT
#: answers nothing when the AP-REQ does not decode), ``enctype_not_permitted`` and ``realm_not_allowed``
#: (their numbers, 14 and 12, are KDC errors: "KDC has no support for encryption type" would send the user
#: to the wrong place), ``channel_bindings`` (38, "Incorrect net address", would mislead; MIT's acceptor
#: maps a code outside the krb5 table, as its bindings failure is, to KRB_ERR_GENERIC), and the refusals
#: that are no Kerberos failure (``replay_cache_unavailable``, ``internal``, ``forbidden``,
#: ``unsupported_mechanism``).
ANSWERED_CODES = frozenset({
    "integrity",               # 31 KRB_AP_ERR_BAD_INTEGRITY (MIT's code for a ticket that does not decrypt)
    "ticket_expired",          # 32 KRB_AP_ERR_TKT_EXPIRED
    "ticket_not_yet_valid",    # 33 KRB_AP_ERR_TKT_NYV
    "ticket_invalid",          # 33 KRB_AP_ERR_TKT_NYV (MIT's answer to the INVALID flag)
    "replay",                  # 34 KRB_AP_ERR_REPEAT
    "wrong_principal",         # 35 KRB_AP_ERR_NOT_US
    "name_mismatch",           # 36 KRB_AP_ERR_BADMATCH
    "clock_skew",              # 37 KRB_AP_ERR_SKEW
    "key_version_mismatch",    # 44 KRB_AP_ERR_BADKEYVER
    "enctype_not_in_keytab",   # 45 KRB_AP_ERR_NOKEY
    "key_unusable",            # 45 KRB_AP_ERR_NOKEY
})

_REJECT = 2   # RFC 4178 §4.2.2 negState


@dataclass(frozen=True)
class RequestFacts:
    """What the answer needs from the refused request, all from its clear-text parts."""

    spnego: bool              # the krb5 token came inside a SPNEGO NegTokenInit
    mech: str                 # the krb5 mechanism OID the client framed its token with (echoed, as MIT does)
    realm: str                # the ticket's realm and server name (RFC 4120 §5.3: unauthenticated, echoed only)
    sname: PrincipalName
    mutual_required: bool     # AP option MUTUAL-REQUIRED (RFC 4120 §5.5.1)


def request_facts(token: str | bytes) -> RequestFacts | None:
    """The facts of a request token (``Negotiate <b64>``, bare base64 or raw bytes), or None when it has no
    GSS-framed krb5 AP-REQ to answer: a bare AP-REQ (no GSS initiator waits for a token), NTLM, or a token
    that does not decode.

    Read by the native decoder (``fastkrb._native.decode_token``, the one ``fastkrb inspect`` uses: tens of
    microseconds, against milliseconds for pyasn1), so that a flood of refused tokens stays cheap.
    """
    try:
        d = decode_token(token)
    except (ValueError, TypeError):
        return None
    if d.get("framing") not in ("krb5", "spnego") or not d.get("mech"):
        return None
    parsed = _parse_principal(str(d["server"]))
    realm = str(d["realm"])
    if parsed is None or parsed[1] != realm:
        return None
    try:  # names that are not UTF-8 (decoded with surrogates) cannot be echoed in a KerberosString
        for text in (*parsed[0], realm):
            text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return RequestFacts(d["framing"] == "spnego", str(d["mech"]), realm,
                        PrincipalName(int(d["name_type"]), parsed[0]), bool(d["mutual_required"]))


def _parse_principal(text: str) -> tuple[tuple[str, ...], str] | None:
    """The components and realm of MIT's unparsed form (``/`` between components, ``@`` before the realm,
    ``\\`` escaping either, as the native decoder writes it)."""
    parts: list[str] = []
    cur: list[str] = []
    realm: str | None = None
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            cur.append(next(chars, ""))
        elif ch == "/" and realm is None:
            parts.append("".join(cur))
            cur = []
        elif ch == "@" and realm is None:
            parts.append("".join(cur))
            cur, realm = [], ""
        else:
            cur.append(ch)
    if realm is None:
        return None
    return tuple(parts), "".join(cur)


def _server_time(exc: KerberosError, now: float | None) -> float:
    if now is None:
        seen = exc.details.get("now")
        now = float(seen) if isinstance(seen, (int, float)) and not isinstance(seen, bool) else time.time()
    return now


def krb_error(exc: KerberosError, facts: RequestFacts, *, now: float | None = None) -> KrbError | None:
    """The KRB-ERROR for ``exc`` as MIT's acceptor fills it, or None when ``exc`` gets none (ANSWERED_CODES).

    MIT (``krb5_gss_accept_sec_context``) sets only the error code, stime/susec (the acceptor's clock, which
    for KRB_AP_ERR_SKEW is what the client compares its own with, RFC 4120 §5.9.1) and the server name and
    realm of the request's ticket; no ctime/cusec, client name or e-text (Heimdal's acceptor neither), so
    nothing about the keytab or the client leaves the server. ``now`` defaults to the clock the validation
    used (``details["now"]``), else the current time.
    """
    code = type(exc).krb_error
    if exc.code not in ANSWERED_CODES or code is None:
        return None
    t = _server_time(exc, now)
    whole = math.floor(t)
    return KrbError(error_code=code, stime=whole, susec=min(int((t - whole) * 1_000_000), 999_999),
                    realm=facts.realm, sname=facts.sname)


def error_token(exc: KerberosError, token: str | bytes, *, now: float | None = None) -> bytes | None:
    """The token to send back for a refused ``token`` (the request's, as given to ``validate``), or None.

    When: the refusal has an RFC 4120 code (ANSWERED_CODES) and the client asked for mutual authentication
    (AP option MUTUAL-REQUIRED, which MIT's, Heimdal's, Windows' and Java's initiators set with the GSS
    mutual flag): MIT answers only a client that waits for a reply (its test is the GSS mutual flag or
    MUTUAL-REQUIRED); without mutual the client expects no token and its library would not read one.
    What: the KRB-ERROR (``krb_error``) in an RFC 4121 §4.1 token of the client's krb5 mechanism OID with
    TOK_ID 03 00; for a SPNEGO request, inside a NegTokenResp {negState reject, responseToken} with no
    supportedMech, byte for byte MIT's SPNEGO acceptor's form (RFC 4178 §4.2.2). MIT's SPNEGO acceptor also
    sends a bare reject to a client without mutual: it carries no reason, so None here as well.
    """
    if exc.code not in ANSWERED_CODES:   # before any decoding: most refusals cost nothing more
        return None
    facts = request_facts(token)
    if facts is None or not facts.mutual_required:
        return None
    err = krb_error(exc, facts, now=now)
    return None if err is None else frame_error(err, facts)


def frame_error(err: KrbError, facts: RequestFacts) -> bytes:
    """``err`` framed for the client that sent the request ``facts`` describe: RFC 4121 §4.1 (0x60, the
    client's krb5 OID, TOK_ID 03 00), then for SPNEGO a NegTokenResp {reject, responseToken}.

    Encoded by hand (a few tens of microseconds) rather than through pyasn1 (about 0.7 ms): this runs once
    per refused mutual request, and a flood of refused tokens must not cost the server a hundred times what
    refusing them did. tests/test_krb_error.py holds it byte for byte to pyasn1's encoding and MIT's tokens.
    """
    body = _oid(facts.mech) + TOK_ID_KRB_ERROR + krb_error_der(err)
    inner = b"\x60" + der_length(len(body)) + body
    if not facts.spnego:
        return inner
    # NegotiationToken CHOICE [1] NegTokenResp ::= SEQUENCE { negState [0] ENUMERATED, responseToken [2] }
    return _tlv(0xA1, _tlv(0x30, _tlv(0xA0, _tlv(0x0A, _int_body(_REJECT))) + _tlv(0xA2, _tlv(0x04, inner))))


# --- DER, by hand (X.690 §8, §10), for the few types of a KRB-ERROR -----------------------------------------

def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + der_length(len(body)) + body


def _int_body(v: int) -> bytes:
    """The minimal two's-complement octets of an INTEGER (X.690 §8.3.2)."""
    return v.to_bytes(((v if v >= 0 else ~v).bit_length() + 8) // 8, "big", signed=True)


def _ctx(n: int, inner: bytes) -> bytes:
    return _tlv(0xA0 | n, inner)


def _string(text: str) -> bytes:
    return _tlv(0x1B, text.encode("utf-8"))    # KerberosString: GeneralString, UTF-8 in practice (RFC 4120 §5.2.1)


def _time(t: int) -> bytes:
    return _tlv(0x18, time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t)).encode("ascii"))  # RFC 4120 §5.2.3


def _principal(p: PrincipalName) -> bytes:
    names = b"".join(_string(c) for c in p.components)
    return _tlv(0x30, _ctx(0, _tlv(0x02, _int_body(p.name_type))) + _ctx(1, _tlv(0x30, names)))


_OIDS: dict[str, bytes] = {}


def _oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER's TLV (X.690 §8.19); a client names one of a handful, so they are kept."""
    der = _OIDS.get(dotted)
    if der is None:
        arcs = [int(a) for a in dotted.split(".")]
        out = bytearray()
        for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
            chunk = [arc & 0x7F]
            arc >>= 7
            while arc:
                chunk.append(0x80 | (arc & 0x7F))
                arc >>= 7
            out += bytes(reversed(chunk))
        der = _OIDS.setdefault(dotted, _tlv(0x06, bytes(out)))
    return der


def krb_error_der(err: KrbError) -> bytes:
    """The DER of ``err``: ``[APPLICATION 30] SEQUENCE`` of RFC 4120 §5.9.1, optional fields when set."""
    def num(n: int, v: int) -> bytes:
        return _ctx(n, _tlv(0x02, _int_body(v)))

    parts = [num(0, 5), num(1, 30)]
    if err.ctime is not None:
        parts.append(_ctx(2, _time(err.ctime)))
    if err.cusec is not None:
        parts.append(num(3, err.cusec))
    parts += [_ctx(4, _time(err.stime)), num(5, err.susec), num(6, err.error_code)]
    if err.crealm is not None:
        parts.append(_ctx(7, _string(err.crealm)))
    if err.cname is not None:
        parts.append(_ctx(8, _principal(err.cname)))
    parts += [_ctx(9, _string(err.realm)), _ctx(10, _principal(err.sname))]
    if err.e_text is not None:
        parts.append(_ctx(11, _string(err.e_text)))
    if err.e_data is not None:
        parts.append(_ctx(12, _tlv(0x04, err.e_data)))
    return _tlv(0x7E, _tlv(0x30, b"".join(parts)))


def error_header(exc: KerberosError, token: str | bytes, *, now: float | None = None) -> str | None:
    """``Negotiate <b64>`` of ``error_token`` for the 401's WWW-Authenticate (RFC 4559 §5), or None (then
    the 401 carries a bare ``Negotiate`` as before)."""
    out = error_token(exc, token, now=now)
    return None if out is None else "Negotiate " + base64.b64encode(out).decode("ascii")

