# Token decoding for fastkrb.tools.inspect_token and the tools: what an AP-REQ says before any key is used. Never
# on the validation path (the validator decodes inside fk_validate).

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport uint8_t, int64_t

from der cimport fk_buf, fk_frame, fk_apreq, fk_derr, fk_unframe, fk_decode_apreq, fk_parse_time

from der cimport FK_FRAME_RAW, FK_FRAME_SPNEGO, FK_UNFRAME_OK, FK_UNFRAME_NTLM, FK_UNFRAME_NO_KRB5
from validate cimport fk_token_bytes


def decode_token(token):
    """What can be read without a key: framing, mech, realm, SPN, kvno, enctypes, AP options.

    Raises ValueError with the native decoder's reason when the token does not parse (tools only).
    """
    cdef bytes data = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    cdef bytearray buf = bytearray(len(data) + 1)
    cdef fk_buf raw
    cdef fk_frame fr
    cdef fk_apreq q
    cdef fk_derr e
    cdef int u
    e.what = NULL
    e.offset = 0
    if fk_token_bytes(<const uint8_t *>PyBytes_AS_STRING(data), len(data), <uint8_t *>(<char *>buf), &raw) != 0:
        raise ValueError("token is neither binary nor base64")
    u = fk_unframe(raw.p, raw.n, &fr, &e)
    out = {"size": raw.n, "bytes": _bytes(raw)}
    if u != FK_UNFRAME_OK:
        out["mechanism"] = "ntlm" if u == FK_UNFRAME_NTLM else ("other" if u == FK_UNFRAME_NO_KRB5 else None)
        raise ValueError((e.what or b"malformed").decode(), e.offset, out)
    out["framing"] = _FRAMES[fr.kind]
    out["mech"] = _OID_NAMES[fr.gss_mech] if fr.kind != FK_FRAME_RAW else None
    out["spnego_mech"] = _OID_NAMES[fr.spnego_mech] if fr.kind >= FK_FRAME_SPNEGO else None
    out["ap_req"] = _bytes(fr.apreq)
    if fk_decode_apreq(fr.apreq, &q, &e) != 0:
        raise ValueError((e.what or b"malformed").decode(), e.offset, out)
    out.update({
        "server": _name(&q.sname, q.realm), "realm": _realm(q.realm), "name_type": q.sname.name_type,
        "ticket_enctype": q.tkt_etype, "ticket_kvno": q.tkt_kvno if q.has_kvno else None,
        "authenticator_enctype": q.auth_etype, "ap_options": q.ap_options,
        "mutual_required": bool((q.ap_options >> 29) & 1), "use_session_key": bool((q.ap_options >> 30) & 1),
    })
    return out


def parse_kerberos_time(bytes text):
    """The seconds since the epoch of a KerberosTime ("YYYYMMDDHHMMSSZ", RFC 4120 §5.2.3) as the decoder reads
    it, or None when the decoder refuses it (tests/test_asn1.py)."""
    cdef int64_t t
    cdef fk_buf v = fk_buf(<const uint8_t *>PyBytes_AS_STRING(text), len(text))
    return t if fk_parse_time(v, &t) == 0 else None
