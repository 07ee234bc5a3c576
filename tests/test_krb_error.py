"""KRB-ERROR answers (fastkrb.krb.krberror): MIT's initiator, fed fastkrb's error token for a refused mutual
AP-REQ, reports the real reason in its minor status; the token is the one MIT's own acceptor sends.

Every token comes from MIT's initiator (python-gssapi) against the MIT lab; fastkrb refuses it for a real
reason (replay, moved clock, wrong or stale keytab), builds the answer, and the initiator's ``step`` must
fail with ``ERROR_TABLE_BASE_krb5 + code`` and the krb5 error table's message. MIT keeps its last error
message per thread (gss_display_status prefers it), so the initiator and MIT's acceptor each run in a fresh
thread: the message asserted is the one the initiator itself produced.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gssapi
import pytest
from gssapi.raw.misc import GSSError

from fastkrb import KerberosError, Validator
from fastkrb import errors as E
from fastkrb.keytab import Keytab
from fastkrb.krb.asn1 import OID_KRB5, OID_MS_KRB5, TOK_ID_KRB_ERROR, KrbError, PrincipalName
from fastkrb.krb.gss import NegTokenResp, decode_spnego, gss_unwrap
from fastkrb.krb.krberror import ANSWERED_CODES, error_header, error_token, frame_error, krb_error_der, request_facts
from fastkrb.testing import mint
from support import mitgss
from support.interop import make_validator
from support.mitgss import fresh_thread, initiator_verdict

KRB5_ERROR_BASE = 0x96C73A00   # ERROR_TABLE_BASE_krb5 (-1765328384) as the unsigned minor status

#: fastkrb code -> (RFC 4120 §7.5.9 number sent, the message of MIT's krb5 error table for it)
EXPECTED = {
    "integrity": (31, "Decrypt integrity check failed"),
    "ticket_expired": (32, "Ticket expired"),
    "ticket_not_yet_valid": (33, "Ticket not yet valid"),
    "replay": (34, "Request is a replay"),
    "wrong_principal": (35, "The ticket isn't for us"),
    "clock_skew": (37, "Clock skew too great"),
    "key_version_mismatch": (44, "Key version is not available"),
    "enctype_not_in_keytab": (45, "Service key not available"),
}


@dataclass
class Refusal:
    token: bytes
    init: mitgss.InitContext
    exc: KerberosError
    keytab: str          # the lab keytab fastkrb refused with (MIT's acceptor gets the same)
    service: str         # the principal the client asked a ticket for


def refuse(lab: Any, case: str, mech: str, *, mutual: bool = True) -> Refusal:
    """A token from MIT's initiator and fastkrb's real refusal of it for ``case``'s reason."""
    svc, ccache, keytab, now = "svc18", None, "svc18", None
    if case == "integrity":
        keytab = "svc18_wrong"                      # same kvno and enctype, key from another password
    elif case == "wrong_principal":
        svc, keytab = "multi", "other"
    elif case == "key_version_mismatch":
        svc, ccache, keytab = "rotated", "rotated_k1", "rotated_k23"
    elif case == "enctype_not_in_keytab":
        svc, keytab = "multi", "multi_missing"
    elif case == "clock_skew":
        now = time.time() + 1000                    # inside the ticket's lifetime, outside the 300 s skew
    elif case == "ticket_expired":
        now = time.time() + 10**7
    elif case == "ticket_not_yet_valid":
        now = time.time() - 10**6
    kw = {"ccache": lab.ccaches[ccache]} if ccache else {}
    token, init = lab.get_token(svc, mech=mech, mutual=mutual, **kw)
    v = make_validator(lab.keytabs[keytab])
    if case == "replay":
        v.validate(token)
    with pytest.raises(KerberosError) as info:
        v.validate(token, now=now)
    assert info.value.code == case, info.value
    return Refusal(token, init, info.value, keytab, lab.services[svc])


SPNEGO_REJECT = bytes.fromhex("a1073005a0030a0102")   # NegTokenResp {negState reject}


def inner_error(answer: bytes, spnego: bool) -> KrbError:
    if spnego:
        resp = decode_spnego(answer)
        assert isinstance(resp, NegTokenResp)
        assert (resp.neg_state, resp.supported_mech, resp.mech_list_mic) == (2, None, None)
        assert resp.response_token is not None
        answer = resp.response_token
    g = gss_unwrap(answer)
    assert (g.mech, g.tok_id) == (OID_KRB5, TOK_ID_KRB_ERROR)
    return KrbError.from_der(g.inner)


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_mit_initiator_reports_the_reason(mit_lab: Any, case: str, mech: str) -> None:
    r = refuse(mit_lab, case, mech)
    number, message = EXPECTED[case]
    answer = error_token(r.exc, r.token)
    assert answer is not None
    err = inner_error(answer, mech == "spnego")
    assert err.error_code == number == type(r.exc).krb_error
    # the server's clock is the one the validation used (for a skew, the time the client must compare with)
    assert err.stime == int(r.exc.details["now"])
    assert (err.ctime, err.cusec, err.crealm, err.cname, err.e_text, err.e_data) == (None,) * 6
    facts = request_facts(r.token)
    assert facts is not None and (err.realm, err.sname) == (facts.realm, facts.sname)
    assert err.sname.with_realm(err.realm) == r.service    # the ticket's server, whatever keytab refused it
    minor, text, out = initiator_verdict(r.init, answer)
    if mech == "krb5":
        assert minor == KRB5_ERROR_BASE + number, (hex(minor), text)
        assert out is None
    else:
        # SPNEGO maps the krb5 minor status to a per-process code (100000 + n): the message names the error.
        # MIT's SPNEGO initiator also makes its own reject token (an HTTP client sends it nowhere).
        assert out == SPNEGO_REJECT
    assert text.endswith(f"): {message}"), text
    print(f"KRB-ERROR-TABLE|{case}|{number}|{mech}|{minor:#x}|{text}")


#: the krb5 error table's message for each KRB_AP_ERR number fastkrb sends (MIT's krb5_err.et)
MIT_MESSAGES = {number: message for number, message in EXPECTED.values()} | {
    36: "Ticket/authenticator don't match",   # name_mismatch: no real MIT token is refused so (below)
}


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("code", sorted(ANSWERED_CODES))
def test_mit_initiator_names_every_answered_code(mit_lab: Any, code: str, mech: str) -> None:
    """Every answered code's token, MIT's initiator names its number. EXPECTED's refusals come from real
    validations; three answered codes have none that a real MIT client's token can be made to meet here
    (``name_mismatch``: the authenticator's client differs from the ticket's, which needs the session key;
    ``ticket_invalid``: a ticket with the INVALID flag; ``key_unusable``: a keytab key OpenSSL refuses). Their
    answer depends only on the refusal's code and the request's clear-text parts, so a real MIT token and the
    refusal built from its code prove what the initiator makes of it."""
    token, init = mit_lab.get_token("svc18", mech=mech, mutual=True)
    exc = E.error_for_code(code, "a refusal", details={"now": time.time()})
    number = type(exc).krb_error
    answer = error_token(exc, token)
    assert answer is not None
    assert inner_error(answer, mech == "spnego").error_code == number
    minor, text, out = initiator_verdict(init, answer)
    if mech == "krb5":
        assert minor == KRB5_ERROR_BASE + number, (hex(minor), text)
    else:
        assert out == SPNEGO_REJECT
    assert text.endswith(f"): {MIT_MESSAGES[number]}"), text


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("case", ["replay", "integrity", "wrong_principal", "key_version_mismatch",
                                  "enctype_not_in_keytab"])
def test_same_token_as_mit_acceptor(mit_lab: Any, case: str, mech: str) -> None:
    """MIT's acceptor, refusing the same token with the same keytab, sends the same token: the same framing,
    mechanism, TOK_ID, SPNEGO wrapper and KRB-ERROR fields; only the server time differs and, where
    fastkrb's code is more precise, the error number (recorded by the test)."""
    r = refuse(mit_lab, case, mech)
    ours = error_token(r.exc, r.token)
    assert ours is not None
    keytab = str(mit_lab.keytabs[r.keytab])

    def accept() -> bytes:
        with mitgss.environment(mit_lab.realm.env):
            creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
            ctx = gssapi.SecurityContext(creds=creds, usage="accept")
            if case == "replay":
                ctx.step(r.token)     # MIT's own replay cache must see the token once first
                ctx = gssapi.SecurityContext(creds=creds, usage="accept")
            out = ctx.step(r.token)   # python-gssapi hands back the error token; the error comes later
            with pytest.raises(GSSError):
                assert ctx.complete
            return bytes(out)
    theirs = fresh_thread(accept)
    a, b = inner_error(ours, mech == "spnego"), inner_error(theirs, mech == "spnego")
    facts = request_facts(r.token)
    assert facts is not None
    # fastkrb's framing and DER of MIT's own KRB-ERROR give MIT's token byte for byte
    assert frame_error(b, facts) == theirs
    print(f"KRB-ERROR-MIT|{case}|{mech}|fastkrb {a.error_code}|MIT {b.error_code}")
    assert abs(a.stime - b.stime) <= 5
    if case == "enctype_not_in_keytab":
        # MIT says KRB_AP_ERR_BADKEYVER (44) when the kvno is there but not the enctype; fastkrb's
        # krb_error for it is KRB_AP_ERR_NOKEY (45): that key is what the keytab lacks.
        assert (a.error_code, b.error_code) == (45, 44)
        b = KrbError(**{**b.__dict__, "error_code": 45})
    same = {"stime": 0, "susec": 0}
    assert KrbError(**{**a.__dict__, **same}) == KrbError(**{**b.__dict__, **same})


_MIT_CHILD = """
import json, sys, gssapi
from gssapi.raw.misc import GSSError
req = json.loads(sys.stdin.read())
creds = gssapi.Credentials(usage="accept", store={"keytab": req["keytab"]})
ctx = gssapi.SecurityContext(creds=creds, usage="accept")
out = ctx.step(bytes.fromhex(req["token"]))
try:
    done = ctx.complete
    print(json.dumps({"out": None, "error": f"accepted (complete={done})"}))
except GSSError as exc:
    print(json.dumps({"out": bytes(out or b"").hex(), "error": str(exc)}))
"""


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("case", ["clock_skew", "ticket_expired", "ticket_not_yet_valid"])
def test_same_token_as_mit_acceptor_at_moved_clock(mit_lab: Any, faketime: str, tmp_path: Path, case: str,
                                                   mech: str) -> None:
    """The time refusals: MIT's acceptor, its clock moved (libfaketime) to the ``now`` fastkrb validated
    with, sends the same token, with the same code and (to the second, give or take the child's start) the
    same server time."""
    r = refuse(mit_lab, case, mech)
    now = float(r.exc.details["now"])
    ours = error_token(r.exc, r.token)
    assert ours is not None
    env = {**os.environ, **mit_lab.realm.env, "KRB5RCACHEDIR": str(tmp_path), "LD_PRELOAD": faketime,
           "FAKETIME": f"{round(now - time.time()):+d}", "FAKETIME_DONT_RESET": "1", "DONT_FAKE_MONOTONIC": "1"}
    req = json.dumps({"token": r.token.hex(), "keytab": str(mit_lab.keytabs[r.keytab])})
    proc = subprocess.run([sys.executable, "-c", _MIT_CHILD], input=req, capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    res = json.loads(proc.stdout)
    assert res["out"], res["error"]
    theirs = bytes.fromhex(res["out"])
    a, b = inner_error(ours, mech == "spnego"), inner_error(theirs, mech == "spnego")
    facts = request_facts(r.token)
    assert facts is not None and frame_error(b, facts) == theirs
    print(f"KRB-ERROR-MIT|{case}|{mech}|fastkrb {a.error_code}|MIT {b.error_code}")
    assert abs(a.stime - b.stime) <= 5
    same = {"stime": 0, "susec": 0}
    assert KrbError(**{**a.__dict__, **same}) == KrbError(**{**b.__dict__, **same})


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
def test_no_token_without_mutual(mit_lab: Any, mech: str) -> None:
    """Without mutual authentication the client expects no answer (MIT sends none for krb5; its bare SPNEGO
    reject carries no reason): None, and the 401 keeps its bare ``Negotiate``."""
    r = refuse(mit_lab, "replay", mech, mutual=False)
    facts = request_facts(r.token)
    assert facts is not None and not facts.mutual_required
    assert error_token(r.exc, r.token) is None
    assert error_header(r.exc, r.token) is None


@pytest.mark.parametrize("code", sorted(set(E.ERRORS_BY_CODE) - ANSWERED_CODES))
def test_unanswered_codes(mit_lab: Any, code: str) -> None:
    """Refusals without a KRB_AP_ERR the client can name get no token, even for a mutual request."""
    token, _ = mit_lab.get_token("svc18", mutual=True)
    exc = E.error_for_code(code, "a refusal")
    assert error_token(exc, token) is None


def test_answered_codes_are_ap_errors() -> None:
    """Every answered code sends a KRB_AP_ERR_* (RFC 4120 §7.5.9: 31..47), from errors.py's krb_error."""
    for code in ANSWERED_CODES:
        number = E.ERRORS_BY_CODE[code].krb_error
        assert number is not None and 31 <= number <= 47, (code, number)


def test_header_and_token_forms(mit_lab: Any) -> None:
    """The request token may be given as the header, bare base64 or bytes; the answer is the same, and the
    header is ``Negotiate <b64>`` of the token. A bare AP-REQ (no GSS initiator) and junk get None."""
    r = refuse(mit_lab, "replay", "spnego")
    now = 1_800_000_000.25
    raw = error_token(r.exc, r.token, now=now)
    b64 = base64.b64encode(r.token).decode()
    assert raw is not None
    assert error_token(r.exc, b64, now=now) == raw
    assert error_token(r.exc, "Negotiate " + b64, now=now) == raw
    assert error_header(r.exc, "Negotiate " + b64, now=now) == "Negotiate " + base64.b64encode(raw).decode()
    err = inner_error(raw, True)
    assert (err.stime, err.susec) == (1_800_000_000, 250_000)
    init = decode_spnego(r.token)
    ap_req = gss_unwrap(init.mech_token).inner  # type: ignore[union-attr]
    assert error_token(r.exc, ap_req) is None
    assert error_token(r.exc, b"\x60\x03junk") is None
    assert error_token(r.exc, "not base64 at all!") is None


@pytest.mark.parametrize("framing", ["spnego", "krb5", "spnego-ms", "krb5-ms", "raw"])
def test_server_name_and_mech_echoed_exactly(framing: str) -> None:
    """The ticket's sname and realm come back component for component, whatever they hold ('/', '@' and
    '\\' inside a component, '@' in the realm), in a token of the OID the client's krb5 token carries (Windows'
    mistyped one included); a bare AP-REQ gets no answer. Tokens minted (no KDC), refused for a real replay."""
    principal = "HTTP/we\\/b\\@x/three\\\\@EX\\@MPLE.TEST"
    kt = Keytab()
    kt.add(principal, os.urandom(32), enctype=18, kvno=2)
    m = mint(kt, server=principal, client="alice@EX\\@MPLE.TEST", framing=framing)  # type: ignore[arg-type]
    v = Validator(kt, replay_cache="memory", cold_start=False)
    v.validate(m.token)
    now = int(time.time()) + 0.5
    with pytest.raises(E.Replay) as info:
        v.validate(m.token, now=now)
    answer = error_token(info.value, m.token)
    if framing == "raw":
        assert answer is None
        return
    assert answer is not None
    spnego = framing.startswith("spnego")
    if spnego:
        resp = decode_spnego(answer)
        assert isinstance(resp, NegTokenResp) and resp.response_token is not None
        mech = gss_unwrap(resp.response_token).mech
    else:
        mech = gss_unwrap(answer).mech
    # the OID of the client's krb5 token header, as MIT's mech_used (Windows' SPNEGO offers the MS OID first
    # but frames its mechToken with the krb5 one)
    assert mech == (OID_MS_KRB5 if framing == "krb5-ms" else OID_KRB5)
    err = KrbError.from_der(gss_unwrap(resp.response_token if spnego else answer).inner)
    assert (err.realm, err.sname.components) == ("EX@MPLE.TEST", ("HTTP", "we/b@x", "three\\"))
    assert (err.error_code, err.stime, err.susec) == (34, int(now), 500_000)


@pytest.mark.parametrize("err", [
    KrbError(error_code=34, stime=1796565600, susec=0, realm="EXAMPLE.TEST",
             sname=PrincipalName(2, ("HTTP", "web.example.test"))),
    KrbError(error_code=37, stime=0, susec=999_999, realm="R", sname=PrincipalName(-129, ())),
    KrbError(error_code=127, stime=2**31 + 5, susec=128, realm="ÉCOLE.EXAMPLE",
             sname=PrincipalName(1, ("a/b", "c@d", "\\")), ctime=1796565599, cusec=255,
             crealm="CLIENT.TEST", cname=PrincipalName(10, ("alice@corp",)), e_text="text", e_data=b"\x00\xff" * 100),
    KrbError(error_code=-1, stime=1796565600, susec=32768, realm="X" * 200,
             sname=PrincipalName(2**31 - 1, ("s",) * 40)),
])
def test_hand_der_is_pyasn1s(err: KrbError) -> None:
    """The hand encoder (the refusal path's, ~20 µs) writes what pyasn1 writes for every field and size."""
    assert krb_error_der(err) == err.to_der()


@pytest.mark.parametrize("value, octets", [(0, "00"), (127, "7f"), (128, "0080"), (-1, "ff"), (-128, "80"),
                                           (-129, "ff7f"), (-2**31, "80000000"), (2**31 - 1, "7fffffff")])
def test_hand_der_integers_are_minimal(value: int, octets: str) -> None:
    """X.690 §8.3.2: no leading 0x00 or 0xff octet that the sign does not need (pyasn1 writes -128 as ff80)."""
    err = KrbError(error_code=value, stime=0, susec=0, realm="R", sname=PrincipalName(1, ()))
    assert "a6" + f"{len(octets) // 2 + 2:02x}02{len(octets) // 2:02x}" + octets in krb_error_der(err).hex()
