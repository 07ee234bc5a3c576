"""Key-selection failures on real tickets: fastkrb must say precisely why, as MIT's acceptor does.

MIT's rd_req explains a keytab miss in four ways (src/lib/krb5/krb/rd_req_dec.c): the ticket's kvno is
older than the keytab's ("ticket is likely out of date"), newer ("keytab is likely out of date"), the kvno
is there without the ticket's enctype, or the key of that kvno and enctype does not decrypt. Each case
here checks fastkrb's code, its details (ticket kvno, the keytab's kvnos) and cause, and MIT's reason, on the
tickets of each KDC kind (the ``realm`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from fastkrb import KerberosError
from support.apreq import parse_ap_req
from support.interop import make_validator
from support.keytabfile import read_keytab
from support.krb5conf import ENCTYPES


def reject(keytab: Any, token: bytes) -> KerberosError:
    with pytest.raises(KerberosError) as info:
        make_validator(keytab).validate(token)
    return info.value


def rotated_token(lab: Any, kvno: int) -> bytes:
    token, _ = lab.get_token("rotated", ccache=lab.ccaches[f"rotated_k{kvno}"])
    assert parse_ap_req(token).ticket_kvno == kvno
    return bytes(token)


# The ticket's kvno against the keytab's: (the word fastkrb's cause uses, the one it must not, MIT's reason).
KVNO_MISS = {
    "older": ("older", "newer", "ticket is likely out of date"),
    "newer": ("newer", "older", "keytab is likely out of date"),
}


@pytest.mark.parametrize(("ticket_kvno", "keytab", "keytab_kvnos", "ticket_is"), [
    (1, "rotated_k2", [2], "older"),
    (1, "rotated_k23", [2, 3], "older"),
    (2, "rotated_k3", [3], "older"),
    (2, "rotated_k1", [1], "newer"),
    (3, "rotated_k1", [1], "newer"),
    (3, "rotated_k12", [1, 2], "newer"),
])
def test_ticket_kvno_outside_the_keytab(realm: Any, ticket_kvno: int, keytab: str, keytab_kvnos: list[int],
                                        ticket_is: str) -> None:
    """A ticket older than every key (a keytab rotated ahead of the KDC) or newer (a stale keytab)."""
    said, not_said, mit_says = KVNO_MISS[ticket_is]
    token = rotated_token(realm, ticket_kvno)
    err = reject(realm.keytabs[keytab], token)
    assert err.code == "key_version_mismatch"
    assert err.details["ticket_kvno"] == ticket_kvno
    assert err.details["keytab_kvnos"] == keytab_kvnos
    assert said in err.cause.lower() and not_said not in err.cause.lower()
    assert err.fix
    ok, mit_err, _ = realm.mit_accept(rotated_token(realm, ticket_kvno), keytab)
    assert not ok and mit_says in mit_err


def test_enctype_missing_from_keytab(realm: Any) -> None:
    token, _ = realm.get_token("multi")
    et = parse_ap_req(token).ticket_enctype
    assert et == realm.ticket_enctypes["multi"]
    err = reject(realm.keytabs["multi_missing"], token)
    assert err.code == "enctype_not_in_keytab"
    assert err.details["ticket_kvno"] == 1
    assert err.details["keytab_kvnos"] == [1]
    assert ENCTYPES[et] in err.cause or str(et) in err.cause, "name the enctype the keytab lacks"
    assert "older" not in err.cause.lower() and "newer" not in err.cause.lower()
    ok, mit_err, _ = realm.mit_accept(realm.get_token("multi")[0], "multi_missing")
    assert not ok and "found in keytab but not with enctype" in mit_err


@pytest.mark.parametrize(("service", "keytab"), [("svc18", "svc18_wrong"), ("multi", "multi_wrong")])
def test_wrong_key_same_kvno_and_enctype(realm: Any, service: str, keytab: str) -> None:
    token, _ = realm.get_token(service)
    err = reject(realm.keytabs[keytab], token)
    assert err.code == "integrity"
    assert err.details["ticket_kvno"] == 1
    assert err.details["keytab_kvnos"] == [1]
    assert "older" not in err.cause.lower() and "newer" not in err.cause.lower()
    assert err.fix
    ok, mit_err, _ = realm.mit_accept(realm.get_token(service)[0], keytab)
    assert not ok and "found in keytab but cannot decrypt ticket" in mit_err


def test_wrong_principal_names_both_sides(realm: Any) -> None:
    token, _ = realm.get_token("multi")
    err = reject(realm.keytabs["other"], token)
    assert err.code == "wrong_principal"
    facts = err.cause + " " + repr(err.details)
    assert realm.services["multi"].split("@")[0] in facts
    assert realm.services["other"].split("@")[0] in facts


def test_errors_never_carry_key_material(realm: Any) -> None:
    keys = [e.key.hex() for e in read_keytab(realm.keytabs["rotated_k23"])]
    err = reject(realm.keytabs["rotated_k23"], rotated_token(realm, 1))
    text = repr(err.to_dict()) + str(err)
    assert not any(k in text for k in keys)
