"""fastkrb against tickets issued by a real Heimdal 7.8 KDC (MIT's initiator builds the AP-REQs).

Heimdal's tickets differ from MIT's where it matters to a validator: no PAC, the start time is always
present, its own choice of ticket enctype for multi-enctype services, and its own keytab export.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import kdc
from fastkrb import KerberosError, Validator


def make_validator(keytab: Any, **kw: Any) -> Any:
    kw.setdefault("clock_skew", 300.0)
    kw.setdefault("replay_cache", "memory")
    kw.setdefault("enctypes", (20, 19, 18, 17))
    kw.setdefault("cold_start", False)
    return Validator(keytab=str(keytab), **kw)


def code_of(v: Any, token: bytes, **kw: Any) -> str | None:
    try:
        v.validate(token, **kw)
    except KerberosError as exc:
        return exc.code
    return None


@pytest.mark.parametrize("mutual", [False, True], ids=["plain", "mutual"])
@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_each_enctype_and_mech(heimdal_lab: Any, enctype: int, mech: str, mutual: bool) -> None:
    svc = f"svc{enctype}"
    token, init = heimdal_lab.get_token(svc, mech=mech, mutual=mutual)
    before = time.time()
    res = make_validator(heimdal_lab.keytabs[svc]).validate(token)
    assert res.client == "alice@HEIMDAL.TEST"
    assert res.server == heimdal_lab.services[svc]
    assert (res.enctype, res.kvno) == (enctype, 1)
    assert res.mutual is mutual
    assert res.pac is None, "Heimdal's KDC issues no PAC without a windc plugin"
    assert res.start_time is not None and res.start_time <= before + 1
    assert res.end_time > before
    if mutual:
        assert kdc.finish_initiator(init, res.response_token), "MIT's initiator must accept our AP-REP"
    ok, err, _ = heimdal_lab.mit_accept(token, svc)
    assert ok, err


def test_multi_enctype_service(heimdal_lab: Any) -> None:
    token, _ = heimdal_lab.get_token("multi")
    res = make_validator(heimdal_lab.keytabs["multi"]).validate(token)
    assert res.enctype == heimdal_lab.ticket_enctypes["multi"]


def test_rotated_keytab_accepts_old_and_new_tickets(heimdal_lab: Any) -> None:
    v = make_validator(heimdal_lab.keytabs["rotated_k12"])
    for kvno in (1, 2):
        token, _ = heimdal_lab.get_token("rotated", ccache=heimdal_lab.ccaches[f"rotated_k{kvno}"])
        assert v.validate(token).kvno == kvno


def test_channel_bindings_and_delegation(heimdal_lab: Any) -> None:
    cb = b"tls-server-end-point:" + bytes(range(32))
    v = make_validator(heimdal_lab.keytabs["svc18"])
    token, _ = heimdal_lab.get_token("svc18", channel_bindings=cb, delegate=True)
    res = v.validate(token, channel_bindings=cb)
    assert res.delegated is not None
    token, _ = heimdal_lab.get_token("svc18", channel_bindings=cb)
    assert code_of(v, token, channel_bindings=b"tls-server-end-point:" + bytes(32)) == "channel_bindings"


@pytest.mark.parametrize(("case", "expected"), [
    ("stale_keytab", "key_version_mismatch"),
    ("missing_enctype", "enctype_not_in_keytab"),
    ("other_principal", "wrong_principal"),
    ("tampered_ticket", "integrity"),
    ("tampered_authenticator", "integrity"),
    ("replay", "replay"),
    ("expired", "ticket_expired"),
])
def test_negative_cases_agree_with_mit(heimdal_lab: Any, request: pytest.FixtureRequest, case: str,
                                      expected: str) -> None:
    lab = heimdal_lab
    keytab, now, shows = "svc18", None, 1
    if case == "stale_keytab":
        token, keytab = lab.get_token("rotated", ccache=lab.ccaches["rotated_k2"])[0], "rotated_k1"
    elif case == "missing_enctype":
        token, keytab = lab.get_token("multi")[0], "multi_missing"
    elif case == "other_principal":
        token, keytab = lab.get_token("multi")[0], "other"
    elif case.startswith("tampered_"):
        token = kdc.tamper(lab.get_token("svc18")[0], case.removeprefix("tampered_"))
    elif case == "replay":
        token, shows = lab.get_token("svc18")[0], 2
    else:
        request.getfixturevalue("faketime")
        token, now = lab.get_token("svc18")[0], time.time() + 11 * 3600
    v = make_validator(lab.keytabs[keytab])
    for _ in range(shows - 1):
        v.validate(token)
        assert lab.mit_accept(token, keytab).ok
    assert code_of(v, token, now=now) == expected
    ok, err, _ = lab.mit_accept(token, keytab, now=now)
    assert not ok, f"MIT accepted the {case} token ({err})"
