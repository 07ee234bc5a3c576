"""Cross-realm: alice@ALPHA.TEST authenticates to HTTP/api.beta.test@BETA.TEST through the trust
krbtgt/BETA.TEST@ALPHA.TEST (two MIT KDCs). fastkrb must report the client's own realm and enforce
``allowed_realms``.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastkrb import KerberosError
from support.apreq import tamper
from support.interop import make_validator
from support.mitgss import finish_initiator


@pytest.mark.parametrize("mutual", [False, True], ids=["plain", "mutual"])
@pytest.mark.parametrize("mech", ["krb5", "spnego"])
def test_cross_realm_client(cross_lab: Any, mech: str, mutual: bool) -> None:
    token, init = cross_lab.get_token("api", mech=mech, mutual=mutual)
    res = make_validator(cross_lab.keytabs["api"], allowed_realms=["BETA.TEST", "ALPHA.TEST"]).validate(token)
    assert res.client == "alice@ALPHA.TEST"
    assert res.server == "HTTP/api.beta.test@BETA.TEST"
    assert res.enctype == cross_lab.ticket_enctypes["api"]
    if mutual:
        assert finish_initiator(init, res.response_token)
    ok, err, _ = cross_lab.mit_accept(token, "api")
    assert ok, err
    assert cross_lab.mit_inspect(cross_lab.get_token("api")[0], "api").client == res.client


def test_allowed_realms_admits_the_client_realm(cross_lab: Any) -> None:
    token, _ = cross_lab.get_token("api")
    res = make_validator(cross_lab.keytabs["api"], allowed_realms=["ALPHA.TEST"]).validate(token)
    assert res.client == "alice@ALPHA.TEST"


def test_allowed_realms_rejects_other_realms(cross_lab: Any) -> None:
    token, _ = cross_lab.get_token("api")
    v = make_validator(cross_lab.keytabs["api"], allowed_realms=["BETA.TEST"])
    with pytest.raises(KerberosError) as info:
        v.validate(token)
    err = info.value
    assert err.code == "realm_not_allowed"
    assert "ALPHA.TEST" in err.cause + " " + repr(err.details)


def test_local_client_of_the_same_realm(cross_lab: Any) -> None:
    token, _ = cross_lab.get_token("local")
    res = make_validator(cross_lab.keytabs["local"], allowed_realms=["ALPHA.TEST"]).validate(token)
    assert (res.client, res.server) == ("alice@ALPHA.TEST", "HTTP/local.alpha.test@ALPHA.TEST")


def test_default_allows_only_the_keytab_realms(cross_lab: Any) -> None:
    """Safe default (the issue's contract): a trusted foreign realm must be allowed explicitly."""
    token, _ = cross_lab.get_token("api")
    with pytest.raises(KerberosError) as info:
        make_validator(cross_lab.keytabs["api"]).validate(token)
    assert info.value.code == "realm_not_allowed"
    assert info.value.details["allowed_realms"] == ["BETA.TEST"]


def test_cross_realm_replay_and_tamper(cross_lab: Any) -> None:
    v = make_validator(cross_lab.keytabs["api"], allowed_realms=["BETA.TEST", "ALPHA.TEST"])
    token, _ = cross_lab.get_token("api")
    v.validate(token)
    for bad, code in ((token, "replay"), (tamper(cross_lab.get_token("api")[0], "ticket"), "integrity")):
        with pytest.raises(KerberosError) as info:
            v.validate(bad)
        assert info.value.code == code
