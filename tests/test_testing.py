"""fastkrb.testing: minted tokens decode, decrypt, carry what was asked, and MIT's own acceptor takes them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import pytest

from fastkrb import testing
from fastkrb.errors import IntegrityError, KerberosError, MalformedToken
from fastkrb.keytab import Keytab
from fastkrb.krb import asn1, crypto, gss
from fastkrb.krb.asn1 import ADEntry, ApRep, ApReq, Authenticator, EncApRepPart, EncryptedData, EncTicketPart
from fastkrb.krb.gss import ChannelBindings, GssChecksum
from fastkrb.testing import mint

SERVER = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def kt() -> Keytab:
    return testing.make_keytab(rng=random.Random(7))


def _open(m: testing.Minted) -> tuple[ApReq, EncTicketPart, Authenticator]:
    """Decode and decrypt a minted token with the reference decoder and fastkrb.krb.crypto."""
    ap = ApReq.from_der(gss.unwrap_ap_req(m.token_bytes))
    etp_der = crypto.decrypt(ap.ticket.enc_part.etype, m.server_key, 2, ap.ticket.enc_part.cipher)
    auth_der = crypto.decrypt(ap.authenticator.etype, m.session_key, 11, ap.authenticator.cipher)
    assert etp_der == m.enc_ticket_part and auth_der == m.authenticator
    etp = EncTicketPart.from_der(etp_der)
    assert etp.key.keyvalue == m.session_key and etp.key.keytype == m.session_enctype
    return ap, etp, Authenticator.from_der(auth_der)


# --- structure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_defaults(kt: Keytab, enctype: int) -> None:
    m = mint(kt, ticket_enctype=enctype, now=NOW + 0.25)
    ap, etp, auth = _open(m)
    entry = kt.find(SERVER, enctype=enctype)[0]
    assert m.server == SERVER and m.client == "alice@EXAMPLE.TEST"
    assert m.server_key == entry.key and m.kvno == 1
    assert ap.ticket.realm == "EXAMPLE.TEST" and ap.ticket.sname.components == ("HTTP", "api.example.test")
    assert ap.ticket.enc_part == EncryptedData(enctype, ap.ticket.enc_part.cipher, 1)
    assert ap.authenticator.kvno is None and ap.authenticator.etype == enctype
    assert ap.ap_options == 0x20000000  # mutual-required, because "mutual" is in the GSS flags
    assert etp.flags == 0x40A00000     # MIT: TKT_FLG_FORWARDABLE | TKT_FLG_RENEWABLE | TKT_FLG_PRE_AUTH
    assert (etp.authtime, etp.starttime, etp.endtime, etp.renew_till) == (NOW, None, NOW + 36000, None)
    assert etp.crealm == "EXAMPLE.TEST" and etp.cname.components == ("alice",)
    assert etp.transited == asn1.TransitedEncoding(1, b"") and etp.authorization_data is None
    assert (auth.ctime, auth.cusec) == (NOW, 250000) == (m.ctime, m.cusec)
    assert auth.crealm == "EXAMPLE.TEST" and auth.cname == etp.cname
    assert auth.subkey is None and auth.seq_number is None and auth.authorization_data is None
    assert auth.cksum is not None and auth.cksum.cksumtype == 0x8003
    # RFC 4121 §4.1.1: Lgth=16 LE, Bnd zero (no bindings), Flags LE = mutual|conf|integ
    assert auth.cksum.checksum == b"\x10\x00\x00\x00" + bytes(16) + struct.pack("<I", 2 | 16 | 32)
    # spnego framing by default, mechToken = krb5 GSS token
    spn = gss.decode_spnego(m.token_bytes)
    assert isinstance(spn, gss.NegTokenInit) and spn.mech_types == (asn1.OID_KRB5,)
    assert spn.mech_token == gss.gss_wrap(asn1.OID_KRB5, m.ap_req, b"\x01\x00")


def test_ticket_flag_bits_are_mits(kt: Keytab) -> None:
    # MIT krb5.h TKT_FLG_* values: KerberosFlags bit n is 1 << (31 - n) (RFC 4120 §5.3)
    mit = {"forwardable": 0x40000000, "forwarded": 0x20000000, "proxiable": 0x10000000, "proxy": 0x08000000,
           "may-postdate": 0x04000000, "postdated": 0x02000000, "invalid": 0x01000000, "renewable": 0x00800000,
           "initial": 0x00400000, "pre-authent": 0x00200000, "hw-authent": 0x00100000,
           "transited-policy-checked": 0x00080000, "ok-as-delegate": 0x00040000}
    for name, value in mit.items():
        _, etp, _ = _open(mint(kt, flags=(name,)))
        assert etp.flags == value, name
    _, etp, _ = _open(mint(kt, flags=0x12345678))
    assert etp.flags == 0x12345678


def test_newest_kvno_and_enctype_preference() -> None:
    kt = Keytab()
    kt.add(SERVER, b"\x01" * 16, enctype=17, kvno=5)
    kt.add(SERVER, b"\x02" * 32, enctype=20, kvno=5)
    kt.add(SERVER, b"\x03" * 32, enctype=18, kvno=3)
    kt.add(SERVER, b"\x04" * 32, enctype=18, kvno=4)
    kt.add("host/other@EXAMPLE.TEST", b"\x05" * 32, enctype=18, kvno=9)
    m = mint(kt)
    assert (m.ticket_enctype, m.kvno, m.server_key) == (18, 4, b"\x04" * 32)
    assert mint(kt, kvno=3).server_key == b"\x03" * 32
    assert mint(kt, ticket_enctype=20).kvno == 5
    m = mint(kt, server="host/other@EXAMPLE.TEST")
    assert m.kvno == 9 and _open(m)[0].ticket.sname.components == ("host", "other")
    with pytest.raises(ValueError):
        mint(kt, ticket_enctype=19)
    with pytest.raises(ValueError):
        mint(kt, server="HTTP/nope@EXAMPLE.TEST")
    # key= bypasses the keytab entirely, and a wrong kvno can be claimed for rotation tests
    m = mint(None, server=SERVER, key=b"\x09" * 32, ticket_enctype=18, kvno=77)
    assert _open(m)[0].ticket.enc_part.kvno == 77
    assert mint(kt, kvno=4, ticket_enctype=18).kvno == 4


def test_every_option_lands_where_it_belongs(kt: Keytab) -> None:
    app = b"tls-server-end-point:" + bytes(range(32))
    pac = b"PAC-BYTES"
    ad = ADEntry(71, b"custom")
    m = mint(kt, client="bob/admin", crealm="OTHER.TEST", session_enctype=17, session_key=b"s" * 16,
             authtime=NOW - 50, starttime=NOW - 40, endtime=NOW + 99, renew_till=NOW + 999,
             flags=("forwardable", "initial"), ctime=NOW + 3, cusec=42, now=NOW, subkey=True, seq_number=99,
             gss_flags=("mutual", "replay", "sequence", "conf", "integ"), channel_bindings=app,
             ap_options=("mutual-required", "use-session-key"), transited=b"MIDDLE.TEST,",
             addresses=[(2, b"\x7f\x00\x00\x01")], pac=pac, authorization_data=[ad],
             authenticator_authorization_data=(testing.ap_options_cbt(),), framing="krb5")
    ap, etp, auth = _open(m)
    assert m.client == "bob/admin@OTHER.TEST" and etp.cname.components == ("bob", "admin")
    assert etp.crealm == "OTHER.TEST" == auth.crealm
    assert etp.key == asn1.EncryptionKey(17, b"s" * 16) and ap.authenticator.etype == 17
    assert (etp.authtime, etp.starttime, etp.endtime, etp.renew_till) == (NOW - 50, NOW - 40, NOW + 99, NOW + 999)
    assert etp.flags == 0x40400000
    assert etp.transited == asn1.TransitedEncoding(1, b"MIDDLE.TEST,")
    assert etp.caddr == (asn1.HostAddress(2, b"\x7f\x00\x00\x01"),)
    assert etp.authorization_data is not None and etp.authorization_data[1] == ad
    first = etp.authorization_data[0]
    assert first.ad_type == 1 and asn1.decode_authorization_data(first.ad_data) == (ADEntry(128, pac),)
    assert (auth.ctime, auth.cusec, auth.seq_number) == (NOW + 3, 42, 99)
    assert auth.subkey is not None and auth.subkey.keytype == 17 and len(auth.subkey.keyvalue) == 16
    assert ap.ap_options == 0x60000000
    g = GssChecksum.from_bytes(auth.cksum.checksum)  # type: ignore[union-attr]
    assert g.flags == 2 | 4 | 8 | 16 | 32 and g.delegation is None
    assert g.bnd == hashlib.md5(bytes(16) + struct.pack("<I", len(app)) + app).digest() == m.bindings_hash
    # KERB_AP_OPTIONS_CBT as Windows sends it: AD-IF-RELEVANT { 143: 0x00004000 little-endian }
    assert auth.authorization_data == (ADEntry(1, asn1.encode_authorization_data([ADEntry(143, b"\x00\x40\x00\x00")])),)
    assert gss.gss_unwrap(m.token_bytes).mech == asn1.OID_KRB5


def test_channel_binding_styles(kt: Keytab) -> None:
    app = b"tls-unique:abc"

    def bnd(**kw: Any) -> bytes:
        _, _, auth = _open(mint(kt, **kw))
        return GssChecksum.from_bytes(auth.cksum.checksum).bnd  # type: ignore[union-attr]

    assert bnd() == bytes(16)
    assert bnd(channel_bindings=app) == hashlib.md5(struct.pack("<5I", 0, 0, 0, 0, len(app)) + app).digest()
    java = hashlib.md5(struct.pack("<5I", 255, 0, 255, 0, len(app)) + app).digest()
    assert bnd(channel_bindings=app, java_style_bindings=True) == java
    full = ChannelBindings(app, 2, b"\x0a\x00\x00\x01", 2, b"\x0a\x00\x00\x02")
    assert bnd(channel_bindings=full) == hashlib.md5(
        struct.pack("<II", 2, 4) + b"\x0a\x00\x00\x01" + struct.pack("<II", 2, 4) + b"\x0a\x00\x00\x02"
        + struct.pack("<I", len(app)) + app).digest()


def test_delegation_and_checksum_overrides(kt: Keytab) -> None:
    cred = asn1.KrbCred((), EncryptedData(18, b"enc")).to_der()
    _, _, auth = _open(mint(kt, delegated=cred, gss_flags=("mutual",)))
    g = GssChecksum.from_bytes(auth.cksum.checksum)  # type: ignore[union-attr]
    assert g.flags == 1 | 2 and g.delegation == cred and g.deleg_option == 1
    assert auth.cksum.checksum[24:28] == b"\x01\x00" + struct.pack("<H", len(cred))  # type: ignore[union-attr]
    _, _, auth = _open(mint(kt, no_checksum=True))
    assert auth.cksum is None
    _, _, auth = _open(mint(kt, cksum=b"raw"))
    assert auth.cksum == asn1.Checksum(0x8003, b"raw")
    _, _, auth = _open(mint(kt, cksum=(16, b"\x00" * 12)))
    assert auth.cksum == asn1.Checksum(16, b"\x00" * 12)
    ap, _, auth = _open(mint(kt, gss_flags=0x30))  # conf|integ, no mutual: no mutual-required
    assert ap.ap_options == 0 and GssChecksum.from_bytes(auth.cksum.checksum).flags == 0x30  # type: ignore[union-attr]
    assert _open(mint(kt, ap_options=()))[0].ap_options == 0
    assert _open(mint(kt, subkey=(17, b"k" * 16)))[2].subkey == asn1.EncryptionKey(17, b"k" * 16)


@pytest.mark.parametrize("framing", ["spnego", "krb5", "krb5-ms", "spnego-ms", "raw", "header"])
def test_framings(kt: Keytab, framing: str) -> None:
    m = mint(kt, framing=framing)  # type: ignore[arg-type]
    tok = m.token
    if framing == "raw":
        assert tok == m.ap_req
    elif framing == "header":
        assert isinstance(tok, str) and tok.startswith("Negotiate ")
        assert base64.b64decode(tok[10:])[:1] == b"\x60" and m.header == tok
    else:
        assert isinstance(tok, bytes) and tok[:1] == b"\x60"
        assert m.header == "Negotiate " + base64.b64encode(tok).decode()
        g = gss.gss_unwrap(tok)
        want = {"spnego": asn1.OID_SPNEGO, "spnego-ms": asn1.OID_SPNEGO, "krb5": asn1.OID_KRB5,
                "krb5-ms": asn1.OID_MS_KRB5}[framing]
        assert g.mech == want
    if framing == "spnego-ms":
        spn = gss.decode_spnego(m.token_bytes)
        assert spn.mech_types == (asn1.OID_MS_KRB5, asn1.OID_KRB5, asn1.OID_NTLMSSP)  # type: ignore[union-attr]
        assert gss.gss_unwrap(spn.mech_token).mech == asn1.OID_KRB5  # type: ignore[union-attr, arg-type]
    assert gss.unwrap_ap_req(m.token_bytes) == m.ap_req
    with pytest.raises(ValueError):
        mint(kt, framing="bogus")  # type: ignore[arg-type]


def test_rng_makes_tokens_deterministic(kt: Keytab) -> None:
    a = mint(kt, now=NOW, rng=random.Random(1))
    b = mint(kt, now=NOW, rng=random.Random(1))
    c = mint(kt, now=NOW, rng=random.Random(2))
    assert a.token == b.token and a.session_key == b.session_key
    assert a.token != c.token and a.session_key != c.session_key
    assert mint(kt, now=NOW).token != mint(kt, now=NOW).token  # random confounders and keys without rng


def test_make_keytab() -> None:
    kt = testing.make_keytab(("a@R", "b/c@R"), enctypes=(17, 18, 19, 20), kvno=3, rng=random.Random(5))
    assert [(e.principal, e.enctype, e.kvno, len(e.key)) for e in kt] == [
        (p, et, 3, {17: 16, 18: 32, 19: 16, 20: 32}[et]) for p in ("a@R", "b/c@R") for et in (17, 18, 19, 20)]
    assert len({e.key for e in kt}) == 8
    assert testing.make_keytab(rng=random.Random(5)) == testing.make_keytab(rng=random.Random(5))
    assert testing.make_keytab() != testing.make_keytab()
    assert testing.make_keytab().principals() == [SERVER]


def test_minted_repr_hides_keys(kt: Keytab) -> None:
    m = mint(kt)
    assert m.session_key.hex() not in repr(m) and m.server_key.hex() not in repr(m)


# --- verify_ap_rep ----------------------------------------------------------------------------------------------


def _ap_rep(m: testing.Minted, ctime: int | None = None, key: bytes | None = None) -> bytes:
    part = EncApRepPart(m.ctime if ctime is None else ctime, m.cusec, None, 7).to_der()
    cipher = crypto.encrypt(m.session_enctype, key or m.session_key, 12, part)
    return ApRep(EncryptedData(m.session_enctype, cipher)).to_der()


def test_verify_ap_rep_all_framings(kt: Keytab) -> None:
    m = mint(kt)
    rep = _ap_rep(m)
    framed = gss.gss_wrap(asn1.OID_KRB5, rep, asn1.TOK_ID_AP_REP)
    spn = gss.spnego_resp(0, asn1.OID_KRB5, framed)
    for form in (rep, framed, spn, base64.b64encode(spn).decode(), "Negotiate " + base64.b64encode(framed).decode()):
        part = m.verify_ap_rep(form)
        assert (part.ctime, part.cusec, part.seq_number) == (m.ctime, m.cusec, 7)


def test_verify_ap_rep_rejects(kt: Keytab) -> None:
    m = mint(kt)
    with pytest.raises(IntegrityError):
        m.verify_ap_rep(_ap_rep(m, ctime=m.ctime + 1))
    with pytest.raises(IntegrityError):
        m.verify_ap_rep(_ap_rep(m, key=bytes(len(m.session_key))))
    err = asn1.KrbError(37, NOW, 0, "EXAMPLE.TEST", asn1.PrincipalName(2, ("HTTP", "x")), e_text="skew")
    with pytest.raises(KerberosError) as ei:
        m.verify_ap_rep(gss.gss_wrap(asn1.OID_KRB5, err.to_der(), asn1.TOK_ID_KRB_ERROR))
    assert ei.value.details["error_code"] == 37
    with pytest.raises(KerberosError):
        m.verify_ap_rep(gss.spnego_resp(2, None))
    with pytest.raises(MalformedToken):
        m.verify_ap_rep(gss.spnego_resp(0, asn1.OID_KRB5))
    with pytest.raises(MalformedToken):
        m.verify_ap_rep("Negotiate !!!")


def test_default_pac_uses_fastkrb_pac(kt: Keytab) -> None:
    m = mint(kt, pac=True, ticket_enctype=18)
    _, etp, _ = _open(m)
    assert m.pac is not None and etp.authorization_data is not None
    inner = asn1.decode_authorization_data(etp.authorization_data[0].ad_data)
    assert inner == (ADEntry(128, m.pac),)
    assert "alice" in m.pac.decode("utf-16-le", "ignore")


# --- MIT's acceptor -------------------------------------------------------------------------------------------

_ACCEPT = textwrap.dedent("""
    import json, sys
    import gssapi
    from gssapi.raw import ChannelBindings
    out = []
    for r in json.loads(sys.stdin.read()):
        cb = None
        if r["cb"] is not None:
            c = r["cb"]
            cb = ChannelBindings(initiator_address_type=c[0], initiator_address=b"", acceptor_address_type=c[1],
                                 acceptor_address=b"", application_data=bytes.fromhex(c[2]))
        try:
            ctx = gssapi.SecurityContext(usage="accept", channel_bindings=cb)
            tok = ctx.step(bytes.fromhex(r["token"]))
            out.append({"ok": True, "complete": ctx.complete, "client": str(ctx.initiator_name),
                        "mech": ctx.mech.dotted_form, "flags": int(ctx.actual_flags),
                        "out": tok.hex() if tok else None})
        except gssapi.exceptions.GSSError as exc:
            out.append({"ok": False, "error": str(exc)})
    print(json.dumps(out))
""")

needs_mit_gssapi = pytest.mark.skipif(shutil.which("klist") is None, reason="MIT krb5 not installed")


def mit_accept(kt: Keytab, tmp_path: Path, reqs: list[tuple[bytes, Any]]) -> list[dict[str, Any]]:
    """Run MIT's gss_accept_sec_context (python-gssapi) on each token, in a subprocess with our env."""
    kt.save(tmp_path / "svc.keytab")
    (tmp_path / "krb5.conf").write_text("[libdefaults]\n  default_realm = EXAMPLE.TEST\n")
    env = {**os.environ, "KRB5_KTNAME": f"FILE:{tmp_path / 'svc.keytab'}", "KRB5_CONFIG": str(tmp_path / "krb5.conf"),
           "KRB5RCACHETYPE": "none"}
    env.pop("KRB5CCNAME", None)
    payload = json.dumps([{"token": t.hex(), "cb": cb} for t, cb in reqs])
    proc = subprocess.run([sys.executable, "-c", _ACCEPT], input=payload, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    res: list[dict[str, Any]] = json.loads(proc.stdout)
    return res


@needs_mit_gssapi
def test_mit_accepts_minted_tokens(tmp_path: Path) -> None:
    kt = testing.make_keytab()
    ms = [mint(kt, ticket_enctype=et, framing=fr) for fr in ("krb5", "spnego", "spnego-ms") for et in (17, 18, 19, 20)]
    ms.append(mint(kt, subkey=True, seq_number=2**31 + 5, starttime=int(time.time()),
                   renew_till=int(time.time()) + 7 * 86400, flags=("forwardable", "renewable", "initial")))
    ms.append(mint(kt, client="bob@PARTNER.TEST", framing="krb5"))
    ms.append(ms[0].again())  # a second authenticator for a cached ticket
    res = mit_accept(kt, tmp_path, [(m.token_bytes, None) for m in ms])
    for m, r in zip(ms, res, strict=True):
        assert r["ok"], (m.framing, m.ticket_enctype, r)
        assert r["complete"] and r["client"] == m.client and r["mech"] == asn1.OID_KRB5
        assert r["flags"] & 0x32 == 0x32  # mutual, conf, integ as asked
        part = m.verify_ap_rep(bytes.fromhex(r["out"]))  # MIT's AP-REP answers exactly this authenticator
        assert part.subkey is not None and part.subkey.keytype == m.session_enctype
        if m.framing.startswith("spnego"):
            resp = gss.decode_spnego(bytes.fromhex(r["out"]))
            assert isinstance(resp, gss.NegTokenResp) and resp.neg_state == 0
            assert resp.supported_mech == (asn1.OID_MS_KRB5 if m.framing == "spnego-ms" else asn1.OID_KRB5)


@needs_mit_gssapi
def test_mit_rejects_what_it_should(tmp_path: Path) -> None:
    """The MIT harness can fail: each of these must be refused, for the reason we minted in."""
    kt = testing.make_keytab()
    now = int(time.time())
    cases = [
        (mint(kt, ctime=now - 3600), "skew"),
        (mint(kt, authtime=now - 20 * 3600, endtime=now - 3600), "expired"),
        (mint(kt, flags=("forwardable", "invalid")), "invalid flag"),
        (mint(kt, key=os.urandom(32), ticket_enctype=18, kvno=1), "cannot decrypt"),
        (mint(kt, client="bob@PARTNER.TEST", transited=b"MIDDLE.TEST"), "cross-realm"),
    ]
    res = mit_accept(kt, tmp_path, [(m.token_bytes, None) for m, _ in cases])
    for (_, why), r in zip(cases, res, strict=True):
        assert not r["ok"] and why in r["error"].lower(), (why, r)


@needs_mit_gssapi
def test_mit_channel_bindings(tmp_path: Path) -> None:
    kt = testing.make_keytab()
    app = b"tls-server-end-point:" + bytes(range(32))
    plain, java = [0, 0, app.hex()], [255, 255, app.hex()]
    cbt = (testing.ap_options_cbt(),)
    cases = [
        (mint(kt, channel_bindings=app), plain, True),
        (mint(kt, channel_bindings=b"tls-server-end-point:other"), plain, False),
        (mint(kt, channel_bindings=app, java_style_bindings=True), java, True),
        (mint(kt, channel_bindings=app, java_style_bindings=True), plain, False),
        (mint(kt, channel_bindings=ChannelBindings(app, 255, b"", 255, b"")), java, True),
        (mint(kt), plain, True),                                       # zero Bnd: the client sent none
        (mint(kt, authenticator_authorization_data=cbt), plain, False),  # ... unless it promised CBT
        (mint(kt, channel_bindings=app, authenticator_authorization_data=cbt), plain, True),
    ]
    res = mit_accept(kt, tmp_path, [(m.token_bytes, cb) for m, cb, _ in cases])
    for i, ((_, _, ok), r) in enumerate(zip(cases, res, strict=True)):
        assert r["ok"] is ok, (i, r)
        if not ok:
            assert "channel bindings" in r["error"].lower(), (i, r)


_PAC_ATTR = textwrap.dedent("""
    import json, sys
    import gssapi
    out = []
    for h in json.loads(sys.stdin.read()):
        ctx = gssapi.SecurityContext(usage="accept")
        ctx.step(bytes.fromhex(h))
        try:
            r = gssapi.raw.get_name_attribute(ctx.initiator_name, b"urn:mspac:client-info")
            out.append({"authenticated": bool(r.authenticated), "len": len(r.values[0])})
        except gssapi.exceptions.GSSError as exc:
            out.append({"error": str(exc)})
    print(json.dumps(out))
""")


@needs_mit_gssapi
def test_mit_verifies_the_minted_pac(tmp_path: Path) -> None:
    """MIT finds the PAC where a KDC puts it (AD-IF-RELEVANT / AD-WIN2K-PAC) and checks its server signature."""
    kt = testing.make_keytab()
    good = mint(kt, pac=True)
    assert good.pac is not None
    tampered = bytearray(good.pac)
    tampered[len(tampered) // 2] ^= 1
    toks = [good, mint(kt, pac=bytes(tampered)), mint(kt, pac={"minimal": True}, ticket_enctype=20)]
    kt.save(tmp_path / "svc.keytab")
    (tmp_path / "krb5.conf").write_text("[libdefaults]\n  default_realm = EXAMPLE.TEST\n")
    env = {**os.environ, "KRB5_KTNAME": f"FILE:{tmp_path / 'svc.keytab'}", "KRB5_CONFIG": str(tmp_path / "krb5.conf"),
           "KRB5RCACHETYPE": "none"}
    proc = subprocess.run([sys.executable, "-c", _PAC_ATTR], input=json.dumps([m.token_bytes.hex() for m in toks]),
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    good_r, bad_r, minimal_r = json.loads(proc.stdout)
    assert good_r["authenticated"] and minimal_r["authenticated"]
    assert "error" in bad_r  # MIT drops a PAC whose server signature does not verify


def test_again_keeps_the_ticket_and_renews_the_authenticator(kt: Keytab) -> None:
    m = mint(kt, now=NOW, subkey=True, seq_number=5, channel_bindings=b"cb", framing="krb5")
    n = m.again(now=NOW + 1.5)
    assert n.ticket == m.ticket and n.session_key == m.session_key and n.framing == "krb5"
    assert n.token != m.token and (n.ctime, n.cusec) == (NOW + 1, 500000)
    ap, _, auth = _open(n)
    old = Authenticator.from_der(m.authenticator)
    assert auth == dataclasses_replace(old, ctime=NOW + 1, cusec=500000)
    assert ap.ticket.to_der() == m.ticket and ap.ap_options == m.ap_options
    r = m.again(rng=random.Random(3), now=NOW)
    assert r.token == m.again(rng=random.Random(3), now=NOW).token
