"""fastkrb against real KDCs (MIT krb5 1.20 and Heimdal 7.8) and MIT's own initiator and acceptor.

Every token is made by MIT's GSSAPI initiator from tickets a real KDC issued (tests/support). Each test runs
once per KDC kind through the ``realm`` fixture (``[mit]``, ``[heimdal]``), on the same services, keytab
variants and ccaches (support.realm.populate). Positive cases check what fastkrb reports against the wire and
MIT's acceptor; the negative table checks fastkrb's exact error code and that MIT's acceptor reaches the same
accept/reject verdict on the same input.

Where the KDCs' tickets differ for a validator it is said once, by the realm: MIT's carry a PAC, Heimdal's
none (``realm.issues_pac``); each KDC picks its own ticket enctype for a multi-enctype service
(``realm.ticket_enctypes``). What one KDC alone does (MIT's PAC as its acceptor sees it, Heimdal's KDC
log) is checked on the fixtures themselves, in test_kdc_fixture.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Keytab
from support.apreq import parse_ap_req, tamper
from support.interop import CB, OTHER_CB, SKEW, make_validator, outcome
from support.mitgss import finish_initiator

PAC_BY_KDC = "MIT 1.20 KDCs put a PAC in every ticket; Heimdal's issues none without a windc plugin"


# --- every enctype, both mechs, with and without mutual authentication


@pytest.mark.parametrize("mutual", [False, True], ids=["plain", "mutual"])
@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_each_enctype_and_mech(realm: Any, enctype: int, mech: str, mutual: bool) -> None:
    svc = f"svc{enctype}"
    token, init = realm.get_token(svc, mech=mech, mutual=mutual)
    before = time.time()
    res = make_validator(realm.keytabs[svc]).validate(token)
    assert res.client == realm.user
    assert res.server == realm.services[svc]
    assert (res.enctype, res.kvno) == (enctype, 1)
    assert res.mutual is mutual
    assert res.delegated is None
    assert (res.pac is not None) is realm.issues_pac, PAC_BY_KDC
    assert res.auth_time <= before + 1
    assert res.start_time is not None and res.start_time <= before + 1
    assert res.end_time > before + 3600
    assert res.session_key
    if mutual:
        assert res.response_token
        assert finish_initiator(init, res.response_token), "MIT's initiator must accept our AP-REP"
        assert res.www_authenticate == "Negotiate " + base64.b64encode(res.response_token).decode()
    elif mech == "krb5":
        assert init.complete
    # MIT's acceptor agrees on the very same token (its replay cache is its own).
    ok, err, _ = realm.mit_accept(token, svc)
    assert ok, err


def test_spnego_non_mutual_response_completes_mit_initiator(realm: Any) -> None:
    """A SPNEGO initiator waits for accept-completed even without mutual auth; if we answer, MIT must take it."""
    token, init = realm.get_token("svc18", mech="spnego")
    res = make_validator(realm.keytabs["svc18"]).validate(token)
    if res.response_token is not None:
        assert finish_initiator(init, res.response_token)


@pytest.mark.parametrize(("mech", "mutual"), [("krb5", False), ("spnego", True)], ids=["krb5", "spnego-mutual"])
def test_multi_enctype_service(realm: Any, mech: str, mutual: bool) -> None:
    token, init = realm.get_token("multi", mutual=mutual, mech=mech)
    res = make_validator(realm.keytabs["multi"]).validate(token)
    assert res.enctype == realm.ticket_enctypes["multi"] == parse_ap_req(token).ticket_enctype
    if mutual:
        assert finish_initiator(init, res.response_token)


def test_one_keytab_for_many_services(realm: Any) -> None:
    v = make_validator(realm.keytabs["all"])
    for svc in ("svc17", "svc18", "svc19", "svc20", "multi", "other"):
        token, _ = realm.get_token(svc)
        assert v.validate(token).server == realm.services[svc]


def test_token_forms(realm: Any) -> None:
    v = make_validator(realm.keytabs["svc19"])
    for form in ("raw", "b64", "header"):
        token, _ = realm.get_token("svc19", mech="spnego")
        b64 = base64.b64encode(token).decode()
        given: bytes | str = {"raw": token, "b64": b64, "header": "Negotiate " + b64}[form]
        assert v.validate(given).client == realm.user


def test_flags_reported(realm: Any) -> None:
    token, _ = realm.get_token("svc18")
    res = make_validator(realm.keytabs["svc18"]).validate(token)
    assert res.flags is not None  # kinit -f: the ticket is forwardable; the form is the Validator's


# --- rotation


def test_rotated_keytab_accepts_old_and_new_tickets(realm: Any) -> None:
    v = make_validator(realm.keytabs["rotated_k12"])
    for kvno in (1, 2):
        token, init = realm.get_token("rotated", ccache=realm.ccaches[f"rotated_k{kvno}"], mutual=True)
        res = v.validate(token)
        assert res.kvno == kvno
        assert res.server == realm.services["rotated"]
        assert finish_initiator(init, res.response_token)
        ok, err, _ = realm.mit_accept(token, "rotated_k12")
        assert ok, err


def test_every_generation_in_one_keytab(realm: Any) -> None:
    v = make_validator(realm.keytabs["rotated_k123"])
    for kvno in (1, 2, 3):
        token, _ = realm.get_token("rotated", ccache=realm.ccaches[f"rotated_k{kvno}"])
        assert v.validate(token).kvno == kvno


# --- channel bindings and delegation


def test_channel_bindings_match(realm: Any) -> None:
    token, _ = realm.get_token("svc20", channel_bindings=CB)
    res = make_validator(realm.keytabs["svc20"]).validate(token, channel_bindings=CB)
    assert res.client == realm.user


def test_delegation(realm: Any) -> None:
    token, _ = realm.get_token("svc18", delegate=True)
    res = make_validator(realm.keytabs["svc18"]).validate(token)
    assert res.delegated is not None
    assert realm.mit_inspect(token, "svc18").delegated


def test_channel_bindings_and_delegation(realm: Any) -> None:
    v = make_validator(realm.keytabs["svc18"])
    token, _ = realm.get_token("svc18", channel_bindings=CB, delegate=True)
    res = v.validate(token, channel_bindings=CB)
    assert res.delegated is not None
    token, _ = realm.get_token("svc18", channel_bindings=CB)
    assert outcome(v, token, channel_bindings=OTHER_CB)[0] == "channel_bindings"


# --- the agreement table: fastkrb's code and MIT's verdict on the same input


@dataclass
class Scenario:
    token: bytes
    keytab: str  # lab keytab name
    acceptor_cb: bytes | None = None
    now_offset: float | None = None  # seconds from the real clock, for fastkrb's `now` and MIT's faketime
    presentations: int = 1  # >1: the same token again (replay); only the last outcome is compared
    validator_kw: dict[str, Any] | None = None


def _svc18(lab: Any, **kw: Any) -> bytes:
    return bytes(lab.get_token("svc18", **kw)[0])


CASES: dict[str, tuple[Callable[[Any], Scenario], str | None]] = {
    "valid": (lambda lab: Scenario(_svc18(lab), "svc18"), None),
    "valid_spnego": (lambda lab: Scenario(_svc18(lab, mech="spnego"), "svc18"), None),
    "tampered_ticket": (lambda lab: Scenario(tamper(_svc18(lab), "ticket"), "svc18"), "integrity"),
    "tampered_ticket_spnego": (
        lambda lab: Scenario(tamper(_svc18(lab, mech="spnego"), "ticket"), "svc18"), "integrity"),
    "tampered_authenticator": (
        lambda lab: Scenario(tamper(_svc18(lab), "authenticator"), "svc18"), "integrity"),
    "replay": (lambda lab: Scenario(_svc18(lab), "svc18", presentations=2), "replay"),
    "replay_spnego": (lambda lab: Scenario(_svc18(lab, mech="spnego"), "svc18", presentations=2), "replay"),
    "skew_within_tolerance": (lambda lab: Scenario(_svc18(lab), "svc18", now_offset=SKEW - 100), None),
    "skew_ahead": (lambda lab: Scenario(_svc18(lab), "svc18", now_offset=SKEW + 100), "clock_skew"),
    # Our clock behind the client's by less than the skew (further behind, the ticket is not yet valid).
    "skew_behind_within_tolerance": (lambda lab: Scenario(_svc18(lab), "svc18", now_offset=-(SKEW - 100)), None),
    "expired": (lambda lab: Scenario(_svc18(lab), "svc18", now_offset=11 * 3600), "ticket_expired"),
    "not_yet_valid": (lambda lab: Scenario(_svc18(lab), "svc18", now_offset=-3600), "ticket_not_yet_valid"),
    "stale_keytab_k2": (lambda lab: Scenario(
        lab.get_token("rotated", ccache=lab.ccaches["rotated_k2"])[0], "rotated_k1"), "key_version_mismatch"),
    "stale_keytab_k3": (lambda lab: Scenario(
        lab.get_token("rotated", ccache=lab.ccaches["rotated_k3"])[0], "rotated_k1"), "key_version_mismatch"),
    "wrong_keytab": (lambda lab: Scenario(_svc18(lab), "svc18_wrong"), "integrity"),
    "wrong_keytab_multi": (lambda lab: Scenario(lab.get_token("multi")[0], "multi_wrong"), "integrity"),
    "missing_enctype": (
        lambda lab: Scenario(lab.get_token("multi")[0], "multi_missing"), "enctype_not_in_keytab"),
    "other_principal": (lambda lab: Scenario(lab.get_token("multi")[0], "other"), "wrong_principal"),
    "truncated": (lambda lab: Scenario(_svc18(lab)[:-40], "svc18"), "malformed"),
    "truncated_half_spnego": (
        lambda lab: Scenario((t := _svc18(lab, mech="spnego"))[: len(t) // 2], "svc18"), "malformed"),
    "garbage": (lambda lab: Scenario(b"this is not a kerberos token", "svc18"), "malformed"),
    "garbage_gss_header": (lambda lab: Scenario(b"\x60\x82\xff\xff\x06\x09" + bytes(40), "svc18"), "malformed"),
    "cb_match": (lambda lab: Scenario(_svc18(lab, channel_bindings=CB), "svc18", acceptor_cb=CB), None),
    "cb_mismatch": (
        lambda lab: Scenario(_svc18(lab, channel_bindings=CB), "svc18", acceptor_cb=OTHER_CB), "channel_bindings"),
    "cb_acceptor_has_none": (lambda lab: Scenario(_svc18(lab, channel_bindings=CB), "svc18"), None),
    "cb_initiator_sent_none": (lambda lab: Scenario(_svc18(lab), "svc18", acceptor_cb=CB), None),
    "cb_aware_initiator_sent_none": (
        lambda lab: Scenario(_svc18(lab, client_aware_cb=True), "svc18", acceptor_cb=CB), "channel_bindings"),
    "cb_aware_match": (
        lambda lab: Scenario(_svc18(lab, client_aware_cb=True, channel_bindings=CB), "svc18", acceptor_cb=CB), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_agreement_with_mit(realm: Any, request: pytest.FixtureRequest, case: str) -> None:
    build, expected = CASES[case]
    sc = build(realm)
    if sc.now_offset is not None:
        request.getfixturevalue("faketime")  # MIT's verdict at the moved clock needs libfaketime
    v = make_validator(realm.keytabs[sc.keytab], **(sc.validator_kw or {}))
    now = None if sc.now_offset is None else time.time() + sc.now_offset
    for _ in range(sc.presentations - 1):
        assert v.validate(sc.token, now=now, channel_bindings=sc.acceptor_cb)
    code, res = outcome(v, sc.token, now=now, channel_bindings=sc.acceptor_cb)
    assert code == expected, f"{case}: fastkrb said {code or 'accept'} ({res}), expected {expected or 'accept'}"

    for _ in range(sc.presentations - 1):
        assert realm.mit_accept(sc.token, sc.keytab, sc.acceptor_cb, now=now).ok
    ok, err, _ = realm.mit_accept(sc.token, sc.keytab, sc.acceptor_cb, now=now)
    assert ok == (expected is None), f"{case}: MIT disagrees ({'accept' if ok else err})"


# --- policy knobs on real tickets


def test_enctype_not_permitted(realm: Any, tmp_path: Path) -> None:
    token, _ = realm.get_token("svc17")
    # beside svc17's aes128 key an unrelated aes256 one: a Validator whose enctypes no key has is refused at
    # construction, and the ticket's own enctype is what must be refused here
    kt = Keytab.load(realm.keytabs["svc17"])
    kt.add(realm.realm.principal("HTTP/unrelated.example"), bytes(32), enctype=18, kvno=1)
    kt.save(tmp_path / "svc17-plus.keytab")
    code, _ = outcome(make_validator(tmp_path / "svc17-plus.keytab", enctypes=(20, 19, 18)), token)
    assert code == "enctype_not_permitted"


def test_principals_restricts_the_keytab(realm: Any) -> None:
    v = make_validator(realm.keytabs["all"], principals=[realm.services["svc18"]])
    token, _ = realm.get_token("svc18")
    assert v.validate(token).server == realm.services["svc18"]
    token, _ = realm.get_token("svc19")
    assert outcome(v, token)[0] == "wrong_principal"


def test_clock_skew_details(realm: Any) -> None:
    token, _ = realm.get_token("svc18")
    code, err = outcome(make_validator(realm.keytabs["svc18"]), token, now=time.time() + 1000)
    assert code == "clock_skew"
    assert err.details, "the measured offset belongs in details"


def test_cold_start_rejects_authenticators_from_before_the_cache(realm: Any) -> None:
    early, _ = realm.get_token("svc18")
    time.sleep(1.1)
    v = make_validator(realm.keytabs["svc18"], cold_start=True)
    time.sleep(1.1)
    late, _ = realm.get_token("svc18")
    assert v.validate(late).client == realm.user
    assert outcome(v, early)[0] == "replay_cache_unavailable"

