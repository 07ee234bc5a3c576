"""The real-KDC fixtures themselves: what each realm, keytab and ccache holds, and MIT's own verdicts.

These need no fastkrb code: they prove the ground the interop tests stand on (tokens come from real
initiators and KDCs, each negative keytab is negative for the stated reason, MIT's acceptor says so). Most
run once per KDC kind (the ``realm`` fixture); what one KDC alone does is at the end of each part.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.apreq import KRB5_OID, SPNEGO_OID, parse_ap_req, tamper
from support.interop import CB, OTHER_CB
from support.keytabfile import keytab_enctypes, keytab_kvnos, read_keytab, write_keytab
from support.krb5conf import ENCTYPE_BY_NAME
from support.mitgss import finish_initiator

# The names each kind's lab is built with (conftest -> support/kinds.py), spelt out rather than derived.
REALM_NAMES = {"mit": ("FASTKRB.TEST", "fastkrb.test"), "heimdal": ("HEIMDAL.TEST", "heimdal.test")}


def entries(path: Any) -> list[tuple[str, int, int]]:
    return [(e.principal, e.kvno, e.enctype) for e in read_keytab(path)]


# --- keytab tooling


def test_keytab_roundtrip_is_byte_exact(realm: Any) -> None:
    for name in ("all", "rotated_k12", "svc18_wrong"):
        path = realm.keytabs[name]
        copy = path.with_suffix(".copy")
        write_keytab(copy, read_keytab(path))
        assert copy.read_bytes() == path.read_bytes()


def test_keytab_reader_agrees_with_klist(realm: Any) -> None:
    out = realm.realm.run(["klist", "-k", "-e", str(realm.keytabs["all"])]).stdout
    listed = []
    for line in out.splitlines()[3:]:
        kvno, princ, et = line.split()
        listed.append((princ, int(kvno), ENCTYPE_BY_NAME[et.strip("()")]))
    assert listed == entries(realm.keytabs["all"])


# --- the MIT realm's contents


def test_single_enctype_services(realm: Any) -> None:
    for e in (17, 18, 19, 20):
        svc = realm.services[f"svc{e}"]
        name, domain = REALM_NAMES[realm.kind]
        assert svc == f"HTTP/svc{e}.{domain}@{name}"
        assert entries(realm.keytabs[f"svc{e}"]) == [(svc, 1, e)]
        assert realm.ticket_enctypes[f"svc{e}"] == e


def test_multi_enctype_service(realm: Any) -> None:
    assert keytab_enctypes(realm.keytabs["multi"]) == [17, 18, 19, 20]
    et = realm.ticket_enctypes["multi"]
    assert et in (17, 18, 19, 20)
    missing = keytab_enctypes(realm.keytabs["multi_missing"])
    assert et not in missing and len(missing) == 3
    assert keytab_kvnos(realm.keytabs["multi_missing"]) == [1]


def test_rotation_keytabs_hold_each_generation(realm: Any) -> None:
    svc = realm.services["rotated"]
    for combo in ("1", "2", "3", "12", "23", "123", "13"):
        assert keytab_kvnos(realm.keytabs[f"rotated_k{combo}"], svc) == [int(c) for c in combo]
    keys = {e.kvno: e.key for e in read_keytab(realm.keytabs["rotated_k123"]) if e.enctype == 18}
    assert len(set(keys.values())) == 3, "each rotation must change the key"


def test_wrong_keytabs_differ_only_in_key(realm: Any) -> None:
    for wrong, right in (("svc18_wrong", "svc18"), ("multi_wrong", "multi")):
        (w,) = read_keytab(realm.keytabs[wrong])
        good = {(e.principal, e.kvno, e.enctype): e.key for e in read_keytab(realm.keytabs[right])}
        assert (w.principal, w.kvno, w.enctype) in good
        assert good[(w.principal, w.kvno, w.enctype)] != w.key


# --- tokens from MIT's initiator


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
def test_tokens_are_framed_per_mech(realm: Any, mech: str) -> None:
    token, init = realm.get_token("svc19", mech=mech)
    assert token[0] == 0x60
    oid = KRB5_OID if mech == "krb5" else SPNEGO_OID
    assert oid in token[:20]
    view = parse_ap_req(token)
    name, domain = REALM_NAMES[realm.kind]
    assert (view.sname, view.realm) == (f"HTTP/svc19.{domain}", name)
    assert (view.ticket_enctype, view.ticket_kvno) == (19, 1)
    assert not view.ap_options[0] & 0x20  # mutual-required not set
    assert init.complete == (mech == "krb5")  # SPNEGO waits for the acceptor's NegTokenResp


def test_mutual_sets_ap_option(realm: Any) -> None:
    token, init = realm.get_token("svc20", mutual=True)
    assert parse_ap_req(token).ap_options[0] & 0x20
    assert not init.complete


def test_fresh_authenticator_each_token(realm: Any) -> None:
    a, _ = realm.get_token("svc18")
    b, _ = realm.get_token("svc18")
    va, vb = parse_ap_req(a), parse_ap_req(b)
    assert a[slice(*va.ticket_cipher)] == b[slice(*vb.ticket_cipher)], "same cached service ticket"
    assert a[slice(*va.authenticator_cipher)] != b[slice(*vb.authenticator_cipher)]


def test_rotated_ccaches_hold_each_kvno(realm: Any) -> None:
    for kvno in (1, 2, 3):
        token, _ = realm.get_token("rotated", ccache=realm.ccaches[f"rotated_k{kvno}"])
        assert parse_ap_req(token).ticket_kvno == kvno
        ok, err, _ = realm.mit_accept(token, "rotated_k12" if kvno < 3 else "rotated_k123")
        assert ok, err


def test_tamper_flips_one_byte_inside_the_cipher(realm: Any) -> None:
    token, _ = realm.get_token("svc18", mech="spnego")
    view = parse_ap_req(token)
    for part, span in (("ticket", view.ticket_cipher), ("authenticator", view.authenticator_cipher)):
        bad = tamper(token, part)
        diff = [i for i in range(len(token)) if token[i] != bad[i]]
        assert len(diff) == 1 and span[0] <= diff[0] < span[1]
        assert parse_ap_req(bad).sname == view.sname


# --- MIT's acceptor: the reference verdicts


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("svc", ["svc17", "svc18", "svc19", "svc20", "multi"])
def test_mit_accepts_and_its_ap_rep_completes_the_initiator(realm: Any, svc: str, mech: str) -> None:
    token, init = realm.get_token(svc, mech=mech, mutual=True)
    ok, err, out = realm.mit_accept(token, svc)
    assert ok, err
    assert out is not None
    assert finish_initiator(init, out)


def test_mit_rejects_a_corrupted_ap_rep(realm: Any) -> None:
    import gssapi

    token, init = realm.get_token("svc18", mutual=True)
    ok, err, out = realm.mit_accept(token, "svc18")
    assert ok, err
    bad = bytearray(out)
    bad[-5] ^= 1
    with pytest.raises(gssapi.exceptions.GSSError):
        finish_initiator(init, bytes(bad))


def test_mit_view_of_the_ticket(realm: Any) -> None:
    token, _ = realm.get_token("svc18", delegate=True)
    view = realm.mit_inspect(token, "svc18")
    assert view.client == f"alice@{REALM_NAMES[realm.kind][0]}"
    if realm.issues_pac:
        assert "urn:mspac:" in view.pac_buffers, "MIT 1.20 KDCs issue a PAC"
    else:
        assert view.pac_buffers == (), "Heimdal's KDC issues no PAC without a windc plugin"
    assert view.delegated
    token, _ = realm.get_token("svc18")
    assert not realm.mit_inspect(token, "svc18").delegated


def _mit_case(lab: Any, case: str) -> tuple[bool, str]:
    """MIT's verdict on one scenario of the interop table."""
    t, _ = lab.get_token("svc18")
    if case == "tampered_ticket":
        return lab.mit_accept(tamper(t, "ticket"), "svc18")[:2]
    if case == "tampered_authenticator":
        return lab.mit_accept(tamper(t, "authenticator"), "svc18")[:2]
    if case == "replay":
        assert lab.mit_accept(t, "svc18").ok
        return lab.mit_accept(t, "svc18")[:2]
    if case == "wrong_keytab":
        return lab.mit_accept(t, "svc18_wrong")[:2]
    if case == "stale_keytab":
        t, _ = lab.get_token("rotated", ccache=lab.ccaches["rotated_k2"])
        return lab.mit_accept(t, "rotated_k1")[:2]
    if case == "old_ticket":
        t, _ = lab.get_token("rotated", ccache=lab.ccaches["rotated_k1"])
        return lab.mit_accept(t, "rotated_k23")[:2]
    if case == "missing_enctype":
        t, _ = lab.get_token("multi")
        return lab.mit_accept(t, "multi_missing")[:2]
    if case == "other_principal":
        t, _ = lab.get_token("multi")
        return lab.mit_accept(t, "other")[:2]
    if case == "truncated":
        return lab.mit_accept(t[: len(t) // 2], "svc18")[:2]
    if case == "garbage":
        return lab.mit_accept(b"this is not a kerberos token", "svc18")[:2]
    if case == "cb_mismatch":
        t, _ = lab.get_token("svc18", channel_bindings=CB)
        return lab.mit_accept(t, "svc18", OTHER_CB)[:2]
    if case == "cbt_without_bindings":
        t, _ = lab.get_token("svc18", client_aware_cb=True)
        return lab.mit_accept(t, "svc18", CB)[:2]
    raise AssertionError(case)


@pytest.mark.parametrize(("case", "mit_says"), [
    ("tampered_ticket", "cannot decrypt ticket"),
    ("tampered_authenticator", "integrity check failed"),
    ("replay", "Request is a replay"),
    ("wrong_keytab", "found in keytab but cannot decrypt ticket"),
    ("stale_keytab", "keytab is likely out of date"),
    ("old_ticket", "ticket is likely out of date"),
    ("missing_enctype", "found in keytab but not with enctype"),
    ("other_principal", "not found in keytab"),
    ("truncated", ""),
    ("garbage", "Invalid token"),
    ("cb_mismatch", "channel bindings"),
    ("cbt_without_bindings", "channel bindings"),
])
def test_mit_rejects_each_negative_case_for_its_reason(realm: Any, case: str, mit_says: str) -> None:
    ok, err = _mit_case(realm, case)
    assert not ok
    assert mit_says in err


@pytest.mark.parametrize(("when", "mit_says"), [
    (+400, "Clock skew too great"),
    (-3600, "Ticket not yet valid"),
    (+11 * 3600, "Ticket expired"),
    (+200, None),
])
def test_mit_verdict_at_a_moved_clock(realm: Any, faketime: str, when: int, mit_says: str | None) -> None:
    token, _ = realm.get_token("svc18")
    ok, err, _out = realm.mit_accept(token, "svc18", now=time.time() + when)
    if mit_says is None:
        assert ok, err
    else:
        assert not ok
        assert mit_says in err


@pytest.mark.parametrize(("initiator_cb", "acceptor_cb", "aware", "accepted"), [
    (CB, CB, False, True),
    (CB, None, False, True),  # acceptor without bindings ignores the client's
    (None, CB, False, True),  # all-zero bindings: the client sent none
    (None, CB, True, False),  # ...unless it said it is CB-aware (KERB_AP_OPTIONS_CBT)
    (CB, CB, True, True),
])
def test_mit_channel_binding_rules(realm: Any, initiator_cb: bytes | None, acceptor_cb: bytes | None,
                                   aware: bool, accepted: bool) -> None:
    token, _ = realm.get_token("svc18", channel_bindings=initiator_cb, client_aware_cb=aware)
    ok, err, _out = realm.mit_accept(token, "svc18", acceptor_cb)
    assert ok == accepted, err


# --- Heimdal only


def test_heimdal_kdc_issued_the_tickets(heimdal_lab: Any) -> None:
    """Heimdal's own log shows the TGS exchanges: the tickets of the [heimdal] tests are Heimdal's."""
    for e in (17, 18, 19, 20):
        token, init = heimdal_lab.get_token(f"svc{e}", mutual=True)
        view = parse_ap_req(token)
        assert (view.realm, view.ticket_enctype, view.ticket_kvno) == ("HEIMDAL.TEST", e, 1)
        ok, err, out = heimdal_lab.mit_accept(token, f"svc{e}")
        assert ok, err
        assert finish_initiator(init, out)
    log = (heimdal_lab.realm.workdir / "kdc.log").read_text()
    assert "TGS-REQ alice@HEIMDAL.TEST" in log and "HTTP/svc17.heimdal.test@HEIMDAL.TEST" in log


# --- cross-realm


def test_cross_realm_ticket_path(cross_lab: Any) -> None:
    realm = cross_lab.realm
    token, init = cross_lab.get_token("api", mech="spnego", mutual=True)
    view = parse_ap_req(token)
    assert (view.sname, view.realm) == ("HTTP/api.beta.test", "BETA.TEST")
    klist = realm.run(["klist", "-c", f"FILE:{cross_lab.ccaches['default']}"]).stdout
    assert "krbtgt/BETA.TEST@ALPHA.TEST" in klist
    ok, err, out = cross_lab.mit_accept(token, "api")
    assert ok, err
    assert finish_initiator(init, out)
    token, _ = cross_lab.get_token("api")
    assert cross_lab.mit_inspect(token, "api").client == "alice@ALPHA.TEST"


def test_labs_build_quickly(realm: Any, cross_lab: Any) -> None:
    # Generous bounds: a regression to per-principal process spawning or KDC start polling shows here.
    assert realm.extra["build_seconds"] < 15
    assert cross_lab.extra["build_seconds"] < 15
