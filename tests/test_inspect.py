"""Every error code of the design, produced from a real MIT ticket or a real misconfiguration, and the
`fastkrb inspect` output (or the doctor finding, see test_doctor.py) that points at the cause.

Each case: make the failure for real, check the Validator's code, then check that inspect (same token,
same keytab, same validator options) shows the fact an operator needs: the ticket's kvno against the
keytab's, the enctype, the SPN, the times, the names, the bindings, the offered mechanisms.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spnego

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.krb import asn1, crypto, gss
from fastkrb.tools import kdcclient as kc
from fastkrb.tools.inspect_token import inspect_token
from support.krb5conf import ENCTYPES
from support.mitgss import environment

REPO = Path(__file__).resolve().parents[1]
CODES = ("malformed", "unsupported_mechanism", "enctype_not_permitted", "wrong_principal", "key_version_mismatch",
         "enctype_not_in_keytab", "integrity", "clock_skew", "ticket_expired", "ticket_not_yet_valid",
         "name_mismatch", "ticket_invalid", "realm_not_allowed", "replay", "channel_bindings",
         "replay_cache_unavailable")
SEEN: set[str] = set()  # the codes the running test's validations raised


@pytest.fixture(autouse=True)
def _produces(request: pytest.FixtureRequest) -> Iterator[None]:
    """A case marked ``produces(code, ...)`` must have had each of its codes raised by a real validation."""
    SEEN.clear()
    yield
    mark = request.node.get_closest_marker("produces")
    if mark is not None:
        missing = set(mark.args) - SEEN
        assert not missing, f"{request.node.name} never produced {sorted(missing)}"


def reject(token: Any, keytab: Any, **kw: Any) -> KerberosError:
    call = {k: kw.pop(k) for k in ("now", "channel_bindings") if k in kw}
    v = Validator(str(keytab), cold_start=kw.pop("cold_start", False), **kw)
    with pytest.raises(KerberosError) as info:
        v.validate(token, **call)
    SEEN.add(info.value.code)
    return info.value


def header(token: bytes) -> str:
    return "Negotiate " + base64.b64encode(token).decode()


def tok(lab: Any, service: str, **kw: Any) -> bytes:
    return bytes(lab.get_token(service, **kw)[0])


def ticket_times(lab: Any, token: bytes, keytab: str) -> dict[str, Any]:
    rep = inspect_token(token, lab.keytabs[keytab])
    return rep["ticket"]  # type: ignore[no-any-return]


# --- framing and mechanism --------------------------------------------------------------------------------------


@pytest.mark.produces("malformed")
def test_malformed_truncated_token(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")[:200]
    err = reject(t, mit_lab.keytabs["svc18"])
    assert err.code == "malformed"
    rep = inspect_token(t)
    assert rep["ok"] is False and "byte" in rep["error"]


@pytest.mark.produces("unsupported_mechanism")
def test_unsupported_mechanism_real_ntlm_fallback(mit_lab: Any) -> None:
    """pyspnego's Negotiate client with no Kerberos ticket falls back to NTLM inside SPNEGO, as browsers and
    Windows clients do when the SPN is unknown."""
    with environment({**mit_lab.realm.env, "KRB5CCNAME": f"FILE:{mit_lab.realm.workdir / 'no-such-cc'}"}):
        client = spnego.client("bob", "pw", hostname="svc18.fastkrb.test", service="HTTP", protocol="negotiate")
        first = client.step()
    err = reject(header(first), mit_lab.keytabs["svc18"])
    assert err.code == "unsupported_mechanism"
    rep = inspect_token(header(first))
    assert rep["mechs_offered"] == ["NTLM"] and rep["ntlm"]["message_type"] == "NEGOTIATE (1)"
    assert "fell back to NTLM" in rep["mechanism"]
    out = subprocess.run([sys.executable, "-m", "fastkrb", "inspect", header(first)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert out.returncode == 1 and "NTLM" in out.stdout


def test_unsupported_mechanism_ntlm_authenticate_names_the_user(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    users = tmp_path / "ntlm-users"
    users.write_text("EXAMPLE:bob:pw\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    client = spnego.client("bob", "pw", hostname="svc.example.test", protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    challenge = server.step(client.step())
    auth = client.step(challenge)
    rep = inspect_token(base64.b64encode(auth).decode())
    assert rep["ntlm"]["message_type"] == "AUTHENTICATE (3)" and rep["ntlm"]["user"] == "bob"


# --- keys and names ---------------------------------------------------------------------------------------------


@pytest.mark.produces("enctype_not_permitted")
def test_enctype_not_permitted(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")
    # a Validator whose enctypes no key has is refused at construction (issue 13): give the keytab an
    # unrelated aes256-sha384 key, so that the ticket's own enctype is what is not permitted
    kt = Keytab.load(str(mit_lab.keytabs["svc18"]))
    kt.add("HTTP/unrelated.example.test@" + kt.principals()[0].rsplit("@", 1)[1], os.urandom(32), enctype=20, kvno=1)
    path = str(mit_lab.keytabs["svc18"]) + ".plus-unrelated"
    kt.save(path)
    err = reject(t, path, enctypes=(20, 19))
    assert err.code == "enctype_not_permitted"
    rep = inspect_token(t, kt, enctypes=(20, 19))
    assert rep["ticket_enctype"] == "aes256-cts-hmac-sha1-96(18)"
    assert rep["verdict"]["code"] == "enctype_not_permitted"


@pytest.mark.produces("wrong_principal")
def test_wrong_principal(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc17")
    err = reject(t, mit_lab.keytabs["svc18"])
    assert err.code == "wrong_principal"
    rep = inspect_token(t, mit_lab.keytabs["svc18"])
    assert rep["server"] == mit_lab.services["svc17"]
    assert rep["keytab"]["has_server"] is False and rep["keytab"]["principals"] == [mit_lab.services["svc18"]]


@pytest.mark.produces("key_version_mismatch")
def test_key_version_mismatch_after_rotation(mit_lab: Any) -> None:
    t = tok(mit_lab, "rotated", ccache=mit_lab.ccaches["rotated_k1"])
    err = reject(t, mit_lab.keytabs["rotated_k3"])
    assert err.code == "key_version_mismatch"
    rep = inspect_token(t, mit_lab.keytabs["rotated_k3"])
    assert rep["ticket_kvno"] == 1 and rep["keytab"]["kvnos_for_server"] == [3]
    assert rep["verdict"]["code"] == "key_version_mismatch"


@pytest.mark.produces("enctype_not_in_keytab")
def test_enctype_not_in_keytab(mit_lab: Any) -> None:
    t = tok(mit_lab, "multi")
    err = reject(t, mit_lab.keytabs["multi_missing"])
    assert err.code == "enctype_not_in_keytab"
    rep = inspect_token(t, mit_lab.keytabs["multi_missing"])
    et = mit_lab.ticket_enctypes["multi"]
    name = f"{ENCTYPES[et]}({et})"
    assert rep["ticket_enctype"] == name and name not in rep["keytab"]["enctypes_for_server"]
    assert "has no key" in rep["ticket"]["error"]


@pytest.mark.produces("integrity")
def test_integrity_wrong_key_same_kvno(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")
    err = reject(t, mit_lab.keytabs["svc18_wrong"])
    assert err.code == "integrity"
    rep = inspect_token(t, mit_lab.keytabs["svc18_wrong"])
    assert rep["keytab"]["kvnos_for_server"] == [rep["ticket_kvno"]]
    assert "wrong key for that kvno" in rep["ticket"]["error"]  # right kvno and enctype, wrong key: doctor kdc.key


@pytest.mark.produces("name_mismatch")
def test_name_mismatch_forged_authenticator(mit_lab: Any) -> None:
    """A real ticket with an authenticator re-made (with the session key) for another client name."""
    t = tok(mit_lab, "svc18", mech="krb5")
    kt = Keytab.load(mit_lab.keytabs["svc18"])
    req = asn1.ApReq.from_der(gss.unwrap_ap_req(t))
    key = kt.entries[0]
    etp = asn1.EncTicketPart.from_der(crypto.decrypt(18, key.key, 2, req.ticket.enc_part.cipher))
    auth = asn1.Authenticator.from_der(crypto.decrypt(etp.key.keytype, etp.key.keyvalue, 11,
                                                      req.authenticator.cipher))
    forged = dataclasses.replace(auth, cname=asn1.PrincipalName(asn1.NT_PRINCIPAL, ("mallory",)))
    enc = asn1.EncryptedData(etp.key.keytype, crypto.encrypt(etp.key.keytype, etp.key.keyvalue, 11, forged.to_der()))
    bad = gss.gss_wrap(asn1.OID_KRB5, asn1.ApReq(req.ticket, enc, req.ap_options).to_der(), asn1.TOK_ID_AP_REQ)
    err = reject(bad, mit_lab.keytabs["svc18"])
    assert err.code == "name_mismatch"
    a = inspect_token(bad, mit_lab.keytabs["svc18"])["ticket"]
    assert a["client"] == mit_lab.realm.user and a["authenticator"]["client"] == "mallory@FASTKRB.TEST"
    assert a["authenticator"]["matches_ticket_client"] is False


@pytest.mark.produces("realm_not_allowed")
def test_realm_not_allowed_cross_realm(cross_lab: Any) -> None:
    t = tok(cross_lab, "api")
    err = reject(t, cross_lab.keytabs["api"])
    assert err.code == "realm_not_allowed"
    rep = inspect_token(t, cross_lab.keytabs["api"], allowed_realms=["BETA.TEST"])
    assert rep["realm"] == "BETA.TEST" and rep["ticket"]["client"] == "alice@ALPHA.TEST"
    assert rep["ticket"]["transited"] is not None or rep["verdict"]["code"] == "realm_not_allowed"
    assert rep["verdict"]["code"] == "realm_not_allowed"


# --- time -------------------------------------------------------------------------------------------------------


@pytest.mark.produces("clock_skew")
def test_clock_skew(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")
    now = time.time() + 900
    err = reject(t, mit_lab.keytabs["svc18"], now=now)
    assert err.code == "clock_skew"
    rep = inspect_token(t, mit_lab.keytabs["svc18"], now=now)
    assert rep["ticket"]["window_at_now"] == "valid"
    assert abs(rep["ticket"]["authenticator"]["offset_from_now_seconds"] + 900) < 5


@pytest.mark.produces("ticket_expired", "ticket_not_yet_valid")
def test_ticket_expired_and_not_yet_valid(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")
    times = Validator(str(mit_lab.keytabs["svc18"]), replay_cache="none", cold_start=False).validate(t)
    late, early = times.end_time + 3600, times.start_time - 3600
    assert reject(t, mit_lab.keytabs["svc18"], now=late).code == "ticket_expired"
    assert reject(t, mit_lab.keytabs["svc18"], now=early).code == "ticket_not_yet_valid"
    assert inspect_token(t, mit_lab.keytabs["svc18"], now=late)["ticket"]["window_at_now"] == "expired"
    assert inspect_token(t, mit_lab.keytabs["svc18"], now=early)["ticket"]["window_at_now"] == "not yet valid"


@pytest.mark.produces("ticket_invalid")
def test_ticket_invalid_postdated(mit_lab: Any) -> None:
    """A postdated ticket from the real KDC (AS-REQ with allow-postdate/postdated, as kinit -s does) carries
    the INVALID flag until the KDC validates it."""
    realm = mit_lab.realm
    svc = mit_lab.services["svc18"]
    addr = kc.KdcAddress("127.0.0.1", realm.port)
    start = int(time.time()) + 3600
    probe = kc.as_exchange(addr, realm.user, (18,), None)
    keys = kc.password_keys(realm.user, realm.password, (18,), probe.etype_info2)
    out = kc.as_exchange(addr, realm.user, (18,), keys, server=svc, kdc_options=("allow-postdate", "postdated"),
                         start=start, preauth=probe.preauth_required)
    assert out.credentials is not None, out.error
    token = kc.ap_req_token(out.credentials, clock_offset=start + 60 - time.time())
    err = reject(token, mit_lab.keytabs["svc18"], now=start + 60)
    assert err.code == "ticket_invalid"
    rep = inspect_token(token, mit_lab.keytabs["svc18"], now=start + 60)
    assert "invalid" in rep["ticket"]["flags"] and "postdated" in rep["ticket"]["flags"]


# --- replay, bindings, the cache --------------------------------------------------------------------------------


@pytest.mark.produces("replay")
def test_replay_same_authenticator_twice(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18")
    v = Validator(str(mit_lab.keytabs["svc18"]), cold_start=False)
    v.validate(t)
    with pytest.raises(KerberosError) as info:
        v.validate(t)
    SEEN.add(info.value.code)
    assert info.value.code == "replay"
    # inspect shows the authenticator's MAC tag: the same tag in two captures is one authenticator twice
    again = tok(mit_lab, "svc18")
    assert inspect_token(t)["authenticator_tag"] == inspect_token(header(t))["authenticator_tag"]
    assert inspect_token(t)["authenticator_tag"] != inspect_token(again)["authenticator_tag"]


@pytest.mark.produces("channel_bindings")
def test_channel_bindings_mismatch(mit_lab: Any) -> None:
    t = tok(mit_lab, "svc18", channel_bindings=b"tls-server-end-point:" + b"A" * 32)
    other = b"tls-server-end-point:" + b"B" * 32
    err = reject(t, mit_lab.keytabs["svc18"], channel_bindings=other)
    assert err.code == "channel_bindings"
    a = inspect_token(t, mit_lab.keytabs["svc18"], channel_bindings=other)["ticket"]["authenticator"]
    assert a["channel_bindings"] != "none" and a["channel_bindings_match"] is False
    assert a["channel_bindings"] == gss.channel_bindings_hash(b"tls-server-end-point:" + b"A" * 32).hex()


@pytest.mark.produces("replay_cache_unavailable")
def test_replay_cache_unavailable_cold_start(mit_lab: Any) -> None:
    """A validator (re)started after the client made its authenticator: its empty cache cannot know whether it
    saw it before (RFC 4120 §3.2.3), so it fails closed for clock_skew seconds."""
    t = tok(mit_lab, "svc18")
    time.sleep(1.1)
    err = reject(t, mit_lab.keytabs["svc18"], cold_start=True)
    assert err.code == "replay_cache_unavailable"
    a = inspect_token(t, mit_lab.keytabs["svc18"])["ticket"]["authenticator"]
    assert a["offset_from_now_seconds"] < -1  # the authenticator predates the cache's start


def test_cli_inspect_reads_a_binary_capture(mit_lab: Any, tmp_path: Path) -> None:
    t = tok(mit_lab, "rotated", ccache=mit_lab.ccaches["rotated_k2"])
    blob = tmp_path / "token.bin"
    blob.write_bytes(t)
    out = subprocess.run([sys.executable, "-m", "fastkrb", "inspect", "--json", "--keytab",
                          str(mit_lab.keytabs["rotated_k3"]), f"@{blob}"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert out.returncode == 1
    rep = json.loads(out.stdout)
    assert rep["ticket_kvno"] == 2 and rep["verdict"]["code"] == "key_version_mismatch"
    assert rep["verdict"]["details"]["keytab_kvnos"] == [3]


def test_every_code_has_a_real_case() -> None:
    """Every code of the design is some case's ``produces`` mark above, and each case proves its codes came out
    of a real validation when it runs (``_produces``): no case depends on which others ran before it."""
    marked = {code for fn in list(globals().values()) if callable(fn) and fn.__name__.startswith("test_")
              for mark in getattr(fn, "pytestmark", []) if mark.name == "produces" for code in mark.args}
    assert marked == set(CODES), f"codes without a case: {sorted(set(CODES) - marked)}"
