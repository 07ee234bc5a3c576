"""Key-selection failures on real MIT tickets: fastkrb must say precisely why, as MIT's acceptor does.

MIT's rd_req explains a keytab miss in four ways (src/lib/krb5/krb/rd_req_dec.c): the ticket's kvno is
older than the keytab's ("ticket is likely out of date"), newer ("keytab is likely out of date"), the kvno
is there without the ticket's enctype, or the key of that kvno and enctype does not decrypt. Each case
here checks fastkrb's code, its details (ticket kvno, the keytab's kvnos) and cause, and MIT's reason.
"""

from __future__ import annotations

from typing import Any

import pytest

import kdc
from fastkrb import KerberosError, Validator


def reject(keytab: Any, token: bytes) -> KerberosError:
    v = Validator(keytab=str(keytab), clock_skew=300.0, replay_cache="memory", enctypes=(20, 19, 18, 17),
                  cold_start=False)
    with pytest.raises(KerberosError) as info:
        v.validate(token)
    return info.value


def rotated_token(lab: Any, kvno: int) -> bytes:
    token, _ = lab.get_token("rotated", ccache=lab.ccaches[f"rotated_k{kvno}"])
    assert kdc.parse_ap_req(token).ticket_kvno == kvno
    return bytes(token)


@pytest.mark.parametrize(("ticket_kvno", "keytab", "keytab_kvnos"), [
    (1, "rotated_k2", [2]),
    (1, "rotated_k23", [2, 3]),
    (2, "rotated_k3", [3]),
])
def test_ticket_older_than_every_key(mit_lab: Any, ticket_kvno: int, keytab: str, keytab_kvnos: list[int]) -> None:
    token = rotated_token(mit_lab, ticket_kvno)
    err = reject(mit_lab.keytabs[keytab], token)
    assert err.code == "key_version_mismatch"
    assert err.details["ticket_kvno"] == ticket_kvno
    assert err.details["keytab_kvnos"] == keytab_kvnos
    assert "older" in err.cause.lower() and "newer" not in err.cause.lower()
    assert err.fix
    ok, mit_err, _ = mit_lab.mit_accept(rotated_token(mit_lab, ticket_kvno), keytab)
    assert not ok and "ticket is likely out of date" in mit_err


@pytest.mark.parametrize(("ticket_kvno", "keytab", "keytab_kvnos"), [
    (2, "rotated_k1", [1]),
    (3, "rotated_k1", [1]),
    (3, "rotated_k12", [1, 2]),
])
def test_ticket_newer_than_every_key(mit_lab: Any, ticket_kvno: int, keytab: str, keytab_kvnos: list[int]) -> None:
    token = rotated_token(mit_lab, ticket_kvno)
    err = reject(mit_lab.keytabs[keytab], token)
    assert err.code == "key_version_mismatch"
    assert err.details["ticket_kvno"] == ticket_kvno
    assert err.details["keytab_kvnos"] == keytab_kvnos
    assert "newer" in err.cause.lower() and "older" not in err.cause.lower()
    assert err.fix
    ok, mit_err, _ = mit_lab.mit_accept(rotated_token(mit_lab, ticket_kvno), keytab)
    assert not ok and "keytab is likely out of date" in mit_err


def test_enctype_missing_from_keytab(mit_lab: Any) -> None:
    token, _ = mit_lab.get_token("multi")
    et = kdc.parse_ap_req(token).ticket_enctype
    assert et == mit_lab.ticket_enctypes["multi"]
    err = reject(mit_lab.keytabs["multi_missing"], token)
    assert err.code == "enctype_not_in_keytab"
    assert err.details["ticket_kvno"] == 1
    assert err.details["keytab_kvnos"] == [1]
    assert kdc.ENCTYPES[et] in err.cause or str(et) in err.cause, "name the enctype the keytab lacks"
    assert "older" not in err.cause.lower() and "newer" not in err.cause.lower()
    ok, mit_err, _ = mit_lab.mit_accept(mit_lab.get_token("multi")[0], "multi_missing")
    assert not ok and "found in keytab but not with enctype" in mit_err


@pytest.mark.parametrize(("service", "keytab"), [("svc18", "svc18_wrong"), ("multi", "multi_wrong")])
def test_wrong_key_same_kvno_and_enctype(mit_lab: Any, service: str, keytab: str) -> None:
    token, _ = mit_lab.get_token(service)
    err = reject(mit_lab.keytabs[keytab], token)
    assert err.code == "integrity"
    assert err.details["ticket_kvno"] == 1
    assert err.details["keytab_kvnos"] == [1]
    assert "older" not in err.cause.lower() and "newer" not in err.cause.lower()
    assert err.fix
    ok, mit_err, _ = mit_lab.mit_accept(mit_lab.get_token(service)[0], keytab)
    assert not ok and "found in keytab but cannot decrypt ticket" in mit_err


def test_wrong_principal_names_both_sides(mit_lab: Any) -> None:
    token, _ = mit_lab.get_token("multi")
    err = reject(mit_lab.keytabs["other"], token)
    assert err.code == "wrong_principal"
    facts = err.cause + " " + repr(err.details)
    assert "HTTP/multi.fastkrb.test" in facts
    assert "HTTP/other.fastkrb.test" in facts


def test_errors_never_carry_key_material(mit_lab: Any) -> None:
    keys = [e.key.hex() for e in kdc.read_keytab(mit_lab.keytabs["rotated_k23"])]
    err = reject(mit_lab.keytabs["rotated_k23"], rotated_token(mit_lab, 1))
    text = repr(err.to_dict()) + str(err)
    assert not any(k in text for k in keys)
