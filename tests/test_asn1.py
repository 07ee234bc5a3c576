"""The pyasn1 reference: hand-computed DER, round trips, strictness, real Windows tokens, GSS/SPNEGO framing."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastkrb.errors import MalformedToken
from fastkrb.krb import asn1, gss
from fastkrb.krb.asn1 import (
    OID_KRB5,
    OID_MS_KRB5,
    OID_NTLMSSP,
    OID_SPNEGO,
    ADEntry,
    ApRep,
    ApReq,
    Authenticator,
    Checksum,
    EncApRepPart,
    EncKrbCredPart,
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    HostAddress,
    KrbCred,
    KrbCredInfo,
    KrbError,
    PrincipalName,
    Ticket,
    TransitedEncoding,
)
from fastkrb.krb.gss import ChannelBindings, GssChecksum, NegTokenInit, NegTokenResp

AD_TOKENS = Path(__file__).parent / "vectors" / "ad_tokens.json"

# --- hand-computed DER ------------------------------------------------------------------------------------------

KRB5_OID_DER = bytes.fromhex("06092a864886f712010202")   # 1.2.840.113554.1.2.2


def test_principal_name_der_by_hand() -> None:
    # 30 10 { a0 03 { 02 01 01 } a1 09 { 30 07 { 1b 05 "alice" } } }
    want = bytes.fromhex("3010a003020101a10930071b05") + b"alice"
    node = asn1.PrincipalNameAsn1()
    PrincipalName(1, ("alice",))._fill(node)
    assert asn1.der_encode(node) == want


def test_ticket_der_by_hand() -> None:
    t = Ticket("R", PrincipalName(2, ("a", "b")), EncryptedData(18, b"\x01\x02", kvno=3))
    sname = bytes.fromhex("300fa003020102a10830061b01611b0162")
    enc = bytes.fromhex("3010a003020112a103020103a2040402") + b"\x01\x02"
    body = bytes.fromhex("a003020105") + bytes.fromhex("a1031b0152") + b"\xa2\x11" + sname + b"\xa3\x12" + enc
    seq = b"\x30" + bytes([len(body)]) + body
    assert t.to_der() == b"\x61" + bytes([len(seq)]) + seq
    assert Ticket.from_der(t.to_der()) == t


def test_flags_are_32_bits_msb_first() -> None:
    v = asn1.flags_to_int(("forwardable", "renewable", "pre-authent"))
    assert v == 0x40A00000  # MIT: TKT_FLG_FORWARDABLE | TKT_FLG_RENEWABLE | TKT_FLG_PRE_AUTH
    assert asn1.flags_to_names(v) == ["forwardable", "renewable", "pre-authent"]
    assert asn1.flags_to_int(("mutual-required",), asn1.AP_OPTIONS) == 0x20000000
    apreq = ApReq(Ticket("R", PrincipalName(1, ("s",)), EncryptedData(17, b"")), EncryptedData(17, b""), 0x20000000)
    assert bytes.fromhex("a20703050020000000") in apreq.to_der()   # [2] BIT STRING, 0 unused bits, 4 octets
    etp = _etp(flags=v)
    assert bytes.fromhex("a00703050040a00000") in etp.to_der()


def test_short_bit_strings_decode_msb_first() -> None:
    der = _etp(flags=0x40A00000).to_der()
    _, p1 = gss.read_der_length(der, 1)
    _, p2 = gss.read_der_length(der, p1 + 1)
    body = der[p2:].replace(bytes.fromhex("a00703050040a00000"), bytes.fromhex("a004030206") + b"\x40", 1)
    seq = b"\x30" + gss.der_length(len(body)) + body
    patched = b"\x63" + gss.der_length(len(seq)) + seq        # 2 bits (6 unused): only 'forwardable'
    assert EncTicketPart.from_der(bytes(patched)).flags == 0x40000000


def test_times() -> None:
    assert asn1.encode_time(0) == "19700101000000Z"
    assert asn1.encode_time(1231522239) == "20090109173039Z"
    assert asn1.decode_time("20090109173039Z") == 1231522239
    for bad in ("20090109173039.5Z", "20090109173039", "2009010917303Z", "20090109173039+0100"):
        with pytest.raises(MalformedToken):
            asn1.decode_time(bad)


def test_native_time_decoder_and_its_day_cache() -> None:
    """native/der.c's fk_parse_time keeps the last day it converted per thread: a cached day never lets a bad
    time through, and every time reads as calendar.timegm reads it, in any order."""
    import calendar

    from fastkrb._native import parse_kerberos_time as parse

    def want(s: str) -> int:
        return calendar.timegm(time.strptime(s, "%Y%m%d%H%M%SZ"))

    good = ["20261206101010Z", "20261206235960Z", "20261206000000Z", "19700101000000Z", "20000229120000Z",
            "20261206101011Z", "99991231235959Z", "00010101000000Z"]
    bad = [b"\x00" * 8 + b"101010Z", b"20261206" + b"2a1010Z", b"20261206241010Z", b"20261206106010Z",
           b"20261206101061Z", b"20261306101010Z", b"20261200101010Z", b"2026120610101Z", b"20261206101010X",
           b"2026-206101010Z"]
    for s in good:
        assert parse(s.encode()) == want(s.replace("235960", "235959")) + (1 if s.endswith("235960Z") else 0), s
        for b in bad:   # after a good day is cached, every refusal still refuses, and the good one still reads
            assert parse(b) is None, b
            assert parse(s.encode()) is not None


# --- round trips of every message -------------------------------------------------------------------------------


def _etp(**kw: object) -> EncTicketPart:
    base: dict[str, object] = dict(
        flags=0x40A00000, key=EncryptionKey(18, bytes(32)), crealm="EXAMPLE.TEST",
        cname=PrincipalName(1, ("alice",)), authtime=1_700_000_000, endtime=1_700_036_000,
    )
    base.update(kw)
    return EncTicketPart(**base)  # type: ignore[arg-type]


_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cs",)), max_size=12)
_time = st.integers(0, 2**32 - 1)
_pn = st.builds(PrincipalName, st.integers(-(2**31), 2**31 - 1), st.lists(_text, max_size=3).map(tuple))
_key = st.builds(EncryptionKey, st.integers(-(2**31), 2**31 - 1), st.binary(max_size=32))
_ad = st.lists(st.builds(ADEntry, st.integers(-(2**31), 2**31 - 1), st.binary(max_size=20)), max_size=3).map(tuple)
_addrs = st.lists(st.builds(HostAddress, st.integers(0, 255), st.binary(max_size=16)), max_size=2).map(tuple)
_ed = st.builds(EncryptedData, st.integers(-(2**31), 2**31 - 1), st.binary(max_size=40),
                st.none() | st.integers(0, 2**32 - 1))
_flags = st.integers(0, 2**32 - 1)


@given(st.builds(EncTicketPart, _flags, _key, _text, _pn, _time, _time,
                 st.builds(TransitedEncoding, st.integers(0, 3), st.binary(max_size=10)),
                 st.none() | _time, st.none() | _time, st.none() | _addrs, st.none() | _ad))
def test_enc_ticket_part_round_trip(m: EncTicketPart) -> None:
    assert EncTicketPart.from_der(m.to_der()) == m


@given(st.builds(Authenticator, _text, _pn, st.integers(0, 999999), _time,
                 st.none() | st.builds(Checksum, st.integers(-(2**31), 2**31 - 1), st.binary(max_size=40)),
                 st.none() | _key, st.none() | st.integers(0, 2**32 - 1), st.none() | _ad))
def test_authenticator_round_trip(m: Authenticator) -> None:
    assert Authenticator.from_der(m.to_der()) == m


@given(st.builds(ApReq, st.builds(Ticket, _text, _pn, _ed), _ed, _flags))
def test_ap_req_round_trip(m: ApReq) -> None:
    der = m.to_der()
    assert der[0] == 0x6E
    assert ApReq.from_der(der) == m


@given(_ed, st.builds(EncApRepPart, _time, st.integers(0, 999999), st.none() | _key,
                      st.none() | st.integers(0, 2**32 - 1)))
def test_ap_rep_round_trip(ed: EncryptedData, part: EncApRepPart) -> None:
    assert ApRep.from_der(ApRep(ed).to_der()) == ApRep(ed)
    assert ApRep(ed).to_der()[0] == 0x6F
    assert EncApRepPart.from_der(part.to_der()) == part
    assert part.to_der()[0] == 0x7B   # [APPLICATION 27]


@given(st.lists(st.builds(Ticket, _text, _pn, _ed), max_size=2).map(tuple), _ed,
       st.builds(EncKrbCredPart,
                 st.lists(st.builds(KrbCredInfo, _key, st.none() | _text, st.none() | _pn, st.none() | _flags,
                                    st.none() | _time, st.none() | _time, st.none() | _time, st.none() | _time,
                                    st.none() | _text, st.none() | _pn, st.none() | _addrs), max_size=2).map(tuple),
                 st.none() | st.integers(0, 2**32 - 1), st.none() | _time, st.none() | st.integers(0, 999999),
                 st.none() | st.builds(HostAddress, st.integers(0, 255), st.binary(max_size=16)),
                 st.none() | _addrs))
def test_krb_cred_round_trip(tickets: tuple[Ticket, ...], ed: EncryptedData, part: EncKrbCredPart) -> None:
    cred = KrbCred(tickets, ed)
    assert cred.to_der()[0] == 0x76      # [APPLICATION 22]
    assert KrbCred.from_der(cred.to_der()) == cred
    assert part.to_der()[0] == 0x7D      # [APPLICATION 29]
    assert EncKrbCredPart.from_der(part.to_der()) == part


@given(st.builds(KrbError, st.integers(-(2**31), 2**31 - 1), _time, st.integers(0, 999999), _text, _pn,
                 st.none() | _time, st.none() | st.integers(0, 999999), st.none() | _text, st.none() | _pn,
                 st.none() | _text, st.none() | st.binary(max_size=20)))
def test_krb_error_round_trip(m: KrbError) -> None:
    assert m.to_der()[0] == 0x7E          # [APPLICATION 30]
    assert KrbError.from_der(m.to_der()) == m


def test_authorization_data_helpers() -> None:
    inner = (ADEntry(128, b"PAC"), ADEntry(143, struct.pack("<I", asn1.KERB_AP_OPTIONS_CBT)))
    der = asn1.encode_authorization_data(inner)
    assert der == (bytes.fromhex("301f300da004020200 80a1050403".replace(" ", "")) + b"PAC"
                   + bytes.fromhex("300ea004020200 8fa1060404 00400000".replace(" ", "")))
    assert asn1.decode_authorization_data(der) == inner


# --- strictness --------------------------------------------------------------------------------------------------


def _sample_ap_req() -> bytes:
    return ApReq(Ticket("R", PrincipalName(1, ("s",)), EncryptedData(17, b"c" * 8)),
                 EncryptedData(17, b"a" * 8)).to_der()


def test_decoders_reject_garbage() -> None:
    der = _sample_ap_req()
    bad_cases = [
        der + b"\x00",                                # trailing bytes
        der[:-1],                                     # truncated
        b"\x6e\x80" + der[2:] + b"\x00\x00",          # indefinite length (BER, not DER)
        b"\x6f" + der[1:],                            # AP-REP tag
        b"",
    ]
    for bad in bad_cases:
        with pytest.raises(MalformedToken):
            ApReq.from_der(bad)
    # right shape, wrong msg-type
    i = der.index(bytes.fromhex("a10302010e"))
    with pytest.raises(MalformedToken, match="msg-type"):
        ApReq.from_der(der[:i] + bytes.fromhex("a10302010f") + der[i + 5:])
    # cusec out of range for Microseconds
    a = Authenticator("R", PrincipalName(1, ("c",)), 999999, 0).to_der()
    j = a.index(bytes.fromhex("a40502030f423f"))
    with pytest.raises(MalformedToken):
        Authenticator.from_der(a[:j] + bytes.fromhex("a40502030f4240") + a[j + 7:])


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    for cls in (ApReq, Ticket, EncTicketPart, Authenticator, ApRep, EncApRepPart, KrbCred, KrbError):
        try:
            cls.from_der(data)  # type: ignore[attr-defined]
        except MalformedToken:
            pass
    try:
        gss.unwrap_ap_req(data)
    except MalformedToken:
        pass


# --- GSS framing ------------------------------------------------------------------------------------------------


def test_der_lengths() -> None:
    assert gss.der_length(0) == b"\x00" and gss.der_length(127) == b"\x7f"
    assert gss.der_length(128) == b"\x81\x80" and gss.der_length(256) == b"\x82\x01\x00"
    assert gss.read_der_length(b"\x82\x01\x00", 0) == (256, 3)
    for bad in (b"\x80", b"\x81\x05", b"\x82\x00\x90", b"\x85\x01\x01\x01\x01\x01", b"\x82\x01", b""):
        with pytest.raises(MalformedToken):
            gss.read_der_length(bad, 0)


def test_gss_wrap_krb5() -> None:
    inner = _sample_ap_req()
    tok = gss.gss_wrap(OID_KRB5, inner, asn1.TOK_ID_AP_REQ)
    assert tok[:2] == bytes([0x60, len(tok) - 2])
    assert tok[2:13] == KRB5_OID_DER and tok[13:15] == b"\x01\x00" and tok[15:] == inner
    g = gss.gss_unwrap(tok)
    assert (g.mech, g.tok_id, g.inner) == (OID_KRB5, b"\x01\x00", inner)
    big = gss.gss_wrap(OID_MS_KRB5, b"x" * 300, asn1.TOK_ID_AP_REQ)
    assert big[:4] == b"\x60\x82\x01\x39"  # 11 (OID) + 2 + 300 = 313
    assert gss.gss_unwrap(big).mech == OID_MS_KRB5
    assert gss.unwrap_ap_req(tok) == inner and gss.unwrap_ap_req(inner) == inner
    for bad in (tok[:-1], tok + b"\x00", b"\x30" + tok[1:], gss.gss_wrap(OID_KRB5, b"\x01")):
        with pytest.raises(MalformedToken):
            gss.gss_unwrap(bad)
    with pytest.raises(MalformedToken, match="TOK_ID"):
        gss.unwrap_ap_req(gss.gss_wrap(OID_KRB5, inner, asn1.TOK_ID_AP_REP))


def test_spnego_init_and_resp() -> None:
    mech = gss.gss_wrap(OID_KRB5, _sample_ap_req(), asn1.TOK_ID_AP_REQ)
    tok = gss.spnego_init(mech, (OID_MS_KRB5, OID_KRB5, OID_NTLMSSP))
    g = gss.gss_unwrap(tok)
    assert g.mech == OID_SPNEGO and g.tok_id is None and g.inner[:1] == b"\xa0"
    assert gss.decode_spnego(tok) == NegTokenInit((OID_MS_KRB5, OID_KRB5, OID_NTLMSSP), None, mech, None)
    assert gss.unwrap_ap_req(tok) == _sample_ap_req()
    flagged = gss.spnego_init(mech, req_flags=0b0100010, mech_list_mic=b"mic")
    assert gss.decode_spnego(flagged) == NegTokenInit((OID_KRB5,), 0b0100010, mech, b"mic")
    # a1 19 30 17 { a0 03 0a 01 00 ; a1 0b <krb5 oid> ; a2 03 04 01 'x' }
    resp = gss.spnego_resp(0, OID_KRB5, b"x")
    assert resp == bytes.fromhex("a1193017a0030a0100a10b06092a864886f712010202a2030401") + b"x"
    assert gss.decode_spnego(resp) == NegTokenResp(0, OID_KRB5, b"x", None)
    assert gss.decode_spnego(gss.spnego_resp(2, None)) == NegTokenResp(2, None, None, None)
    ntlm_only = gss.spnego_init(b"NTLMSSP\x00\x01", (OID_NTLMSSP,))
    with pytest.raises(MalformedToken):
        gss.unwrap_ap_req(ntlm_only)


# --- RFC 4121 checksum ------------------------------------------------------------------------------------------


def test_channel_bindings_hash_layout() -> None:
    app = b"tls-server-end-point:" + bytes(range(32))
    # RFC 4121 §4.1.1.2: five LE 32-bit fields/lengths, addresses empty
    layout = bytes(16) + struct.pack("<I", len(app)) + app
    assert gss.channel_bindings_hash(app) == hashlib.md5(layout).digest()
    cb = ChannelBindings(app, 255, b"", 255, b"")
    assert gss.channel_bindings_hash(cb) == hashlib.md5(
        struct.pack("<II", 255, 0) + struct.pack("<II", 255, 0) + struct.pack("<I", len(app)) + app).digest()
    assert gss.channel_bindings_hash(cb) != gss.channel_bindings_hash(app)


def test_gss_checksum() -> None:
    c = GssChecksum(b"B" * 16, 0x22)
    assert c.to_bytes() == b"\x10\x00\x00\x00" + b"B" * 16 + b"\x22\x00\x00\x00"
    assert GssChecksum.from_bytes(c.to_bytes()) == c
    d = GssChecksum(bytes(16), 0x23, delegation=b"KRBCRED")
    assert d.to_bytes()[24:] == b"\x01\x00\x07\x00KRBCRED"
    assert GssChecksum.from_bytes(d.to_bytes()) == d
    for bad in (c.to_bytes()[:23], b"\x11" + c.to_bytes()[1:], d.to_bytes()[:27], d.to_bytes()[:-1]):
        with pytest.raises(MalformedToken):
            GssChecksum.from_bytes(bad)


# --- real Windows tokens (Kerberos.NET test data; copied into tests/vectors by the PAC work) -------------------


def test_windows_tokens_decode_and_reencode_byte_exact() -> None:
    data = json.loads(AD_TOKENS.read_text())
    for t in data["tokens"]:
        tok = bytes.fromhex(t["token_hex"])
        fr = t["framing"]
        ap_der = gss.unwrap_ap_req(tok)
        assert ap_der == tok[fr["ap_req_offset"]:fr["ap_req_offset"] + fr["ap_req_length"]]
        ap = ApReq.from_der(ap_der)
        assert ap.to_der() == ap_der
        assert ap.ticket.sname.with_realm(ap.ticket.realm) == t["service_principal"]
        assert ap.ticket.enc_part.etype == t["service_key_enctype"]
        assert ap.ticket.enc_part.kvno == t["service_key_kvno"]
        if fr["type"] == "spnego":
            assert gss.decode_spnego(tok).mech_types == tuple(fr["mech_types"])  # type: ignore[union-attr]
        else:
            assert gss.gss_unwrap(tok).mech == fr["outer_oid"]
    for d in data["decoded"].values():
        etp_der = bytes.fromhex(d["enc_ticket_part"]["plaintext_hex"])
        etp = EncTicketPart.from_der(etp_der)
        assert etp.to_der() == etp_der
        assert asn1.flags_to_names(etp.flags) == d["enc_ticket_part"]["flags_names"]
        assert etp.key.keyvalue.hex() == d["enc_ticket_part"]["session_key"]["keyvalue_hex"]
        auth_der = bytes.fromhex(d["authenticator"]["plaintext_hex"])
        auth = Authenticator.from_der(auth_der)
        assert auth.to_der() == auth_der
        assert auth.cksum is not None and auth.cksum.cksumtype == asn1.CKSUMTYPE_GSSAPI
        GssChecksum.from_bytes(auth.cksum.checksum)
