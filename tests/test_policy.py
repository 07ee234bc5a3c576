"""fastkrb.Policy: users, groups and realms; AND across kinds, any within one; the ``forbidden`` error.

Two sources of results: plain records (the policy reads only ``client``, ``client_realm``, ``server`` and
``identity``) whose ``identity`` is a real ``fastkrb._native.Identity`` decoded from a signed PAC that carries
exactly the SIDs a test names, and real Validator results of minted tokens whose PAC has a LOGON_INFO.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fastkrb import Forbidden, GroupNames, KerberosError, Policy, Validator
from fastkrb._native import Identity, SidSet
from fastkrb.errors import error_for_code
from fastkrb.groups import write_map
from fastkrb.krb.pac import build_pac
from fastkrb.testing import make_keytab, mint

DOM = "S-1-5-21-1004336348-1177238915-682003330"
OTHER = "S-1-5-21-99-98-97"
READERS, WRITERS, ADMINS = f"{DOM}-1200", f"{DOM}-1201", f"{DOM}-512"
ALICE_SID = f"{DOM}-1104"
SERVICE = "HTTP/api.corp.example@CORP.EXAMPLE"
MAP = {READERS: "CORP\\api-readers", WRITERS: "CORP\\api-writers", ADMINS: "CORP\\Domain Admins",
       f"{OTHER}-1200": "PARTNER\\api-readers"}


def ident(groups: tuple[str, ...] = (), user: str = ALICE_SID, primary: str = f"{DOM}-513") -> Identity:
    """The native Identity of a signed PAC granting exactly ``primary`` and ``groups`` to ``user``: SIDs in the
    user's domain as GroupIds, the others as ExtraSids (the user and its primary group share LogonDomainId)."""
    dom, _, user_rid = user.rpartition("-")
    pdom, _, primary_rid = primary.rpartition("-")
    assert pdom == dom, "a LOGON_INFO's user and primary group are in one domain"
    rids = [int(primary_rid)] + [int(g.rpartition("-")[2]) for g in groups if g.rpartition("-")[0] == dom]
    extra = [g for g in groups if g.rpartition("-")[0] != dom]
    logon = {"domain_sid": dom, "user_rid": int(user_rid), "primary_group_rid": int(primary_rid), "group_rids": rids,
             "extra_sids": extra, "user_name": "alice", "logon_domain_name": "CORP"}
    pac = build_pac(client_name="alice", auth_time=1_700_000_000, server_key=(18, bytes(32)), logon_info=logon,
                    upn="alice@corp.example", dns_domain="CORP.EXAMPLE")
    out = Identity.from_pac(pac)
    assert out is not None and out.user_sid == user and out.primary_group_sid == primary
    assert sorted(out.group_sids) == sorted({primary, *groups})
    return out


def result(client: str = "alice@CORP.EXAMPLE", identity: Any = None, server: str = SERVICE) -> Any:
    return SimpleNamespace(client=client, client_realm=client.rpartition("@")[2], server=server, identity=identity)


def refused(policy: Policy, res: Any) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        policy.check(res)
    return info.value


# -- semantics ------------------------------------------------------------------------------------------------

def test_an_empty_policy_allows_every_authenticated_client() -> None:
    p = Policy()
    p.check(result())
    p.check(result("bob@ELSEWHERE.TEST"))


def test_realms_are_exact_and_case_sensitive() -> None:
    p = Policy(allowed_realms=["CORP.EXAMPLE", "PARTNER.EXAMPLE"])
    p.check(result("alice@CORP.EXAMPLE"))
    p.check(result("bob@PARTNER.EXAMPLE"))
    for client in ("alice@corp.example", "alice@EVIL.CORP.EXAMPLE", "alice@CORP"):
        e = refused(p, result(client))
        assert e.details["constraint"] == "realms"


def test_users_full_principal_exact_and_case_sensitive() -> None:
    p = Policy(allowed_users=["alice@CORP.EXAMPLE", "svc/batch@CORP.EXAMPLE"])
    p.check(result("alice@CORP.EXAMPLE"))
    p.check(result("svc/batch@CORP.EXAMPLE"))
    for client in ("Alice@CORP.EXAMPLE", "alice@PARTNER.EXAMPLE", "alicex@CORP.EXAMPLE", "svc@CORP.EXAMPLE"):
        assert refused(p, result(client)).details["constraint"] == "users"


def test_bare_user_names_match_in_the_service_realm_only() -> None:
    p = Policy(allowed_users=["alice"])
    p.check(result("alice@CORP.EXAMPLE"))                      # the service is HTTP/...@CORP.EXAMPLE
    e = refused(p, result("alice@PARTNER.EXAMPLE"))           # a trusted realm's alice is another person
    assert e.details == {"client": "alice@PARTNER.EXAMPLE", "realm": "PARTNER.EXAMPLE", "constraint": "users",
                         "group_count": 0, "has_identity": False}
    refused(p, result("ALICE@CORP.EXAMPLE"))
    p.check(result("alice@PARTNER.EXAMPLE", server="HTTP/api.partner.example@PARTNER.EXAMPLE"))


def test_an_enterprise_name_with_an_escaped_at_is_a_bare_name() -> None:
    p = Policy(allowed_users=["alice\\@corp.example"])
    p.check(result("alice\\@corp.example@CORP.EXAMPLE"))
    refused(p, result("alice@CORP.EXAMPLE"))


def test_a_user_sid_matches_the_pac_user() -> None:
    p = Policy(allowed_users=[ALICE_SID])
    p.check(result("ALICE@CORP.EXAMPLE", ident()))          # whatever case the client asked for its ticket in
    refused(p, result("alice@CORP.EXAMPLE", ident(user=f"{DOM}-1105")))
    refused(p, result("alice@CORP.EXAMPLE"))                  # no PAC: no user SID to compare


def test_groups_by_sid_match_user_primary_or_any_group() -> None:
    p = Policy(allowed_groups=[READERS])
    p.check(result(identity=ident((WRITERS, READERS))))
    p.check(result(identity=ident(primary=READERS)))
    p.check(result(identity=ident(user=READERS)))
    e = refused(p, result(identity=ident((WRITERS,))))
    assert e.code == "forbidden" and e.krb_error is None
    assert e.details == {"client": "alice@CORP.EXAMPLE", "realm": "CORP.EXAMPLE", "constraint": "groups",
                         "group_count": 2, "has_identity": True, "user_sid": ALICE_SID}
    assert "alice@CORP.EXAMPLE is refused by the policy" in e.cause and READERS in e.cause
    assert "carried 2 group SIDs" in e.cause
    assert "new logon" in e.fix and "klist purge" in e.fix and "PAC" in e.fix


def test_groups_refuse_a_ticket_without_pac_and_say_why() -> None:
    p = Policy(allowed_groups=[READERS], name="readers")
    e = refused(p, result("alice@FASTKRB.TEST"))
    assert e.details == {"client": "alice@FASTKRB.TEST", "realm": "FASTKRB.TEST", "constraint": "groups",
                         "group_count": 0, "has_identity": False, "policy": "readers"}
    assert "policy 'readers'" in e.cause and "no PAC logon information" in e.cause
    assert "MIT and Heimdal" in e.cause
    assert "allowed_users" in e.fix and "NO_AUTH_DATA_REQUIRED" in e.fix


def test_kinds_combine_with_and_entries_with_or() -> None:
    p = Policy(allowed_users=["alice", "bob"], allowed_groups=[READERS, WRITERS], allowed_realms=["CORP.EXAMPLE"],
               name="rw")
    p.check(result("alice@CORP.EXAMPLE", ident((WRITERS,))))
    p.check(result("bob@CORP.EXAMPLE", ident((READERS,))))
    assert refused(p, result("carol@CORP.EXAMPLE", ident((READERS,)))).details["constraint"] == "users"
    assert refused(p, result("alice@CORP.EXAMPLE", ident((ADMINS,)))).details["constraint"] == "groups"
    assert refused(p, result("alice@CORP.EXAMPLE")).details["constraint"] == "groups"
    # the first rule that refuses is the one named: realms before users before groups
    e = refused(p, result("carol@PARTNER.EXAMPLE", ident((ADMINS,))))
    assert e.details["constraint"] == "realms" and "realm PARTNER.EXAMPLE" in e.cause
    assert not p.allows(result("carol@CORP.EXAMPLE")) and p.allows(result("bob@CORP.EXAMPLE", ident((WRITERS,))))


def test_the_error_travels_by_code() -> None:
    e = refused(Policy(allowed_users=["bob"], name="b"), result())
    again = error_for_code(e.code, e.cause, e.fix, e.to_dict()["details"])
    assert type(again) is Forbidden and isinstance(again, KerberosError)
    assert again.details == e.details and again.cause == e.cause


def test_bad_rules_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="not a well-formed SID"):
        Policy(allowed_groups=["S-1-5-21-x"])
    with pytest.raises(ValueError, match="are names, not SIDs"):
        Policy(allowed_groups=["api-readers"])
    with pytest.raises(TypeError):
        Policy(allowed_users="alice")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Policy(allowed_realms=[" CORP.EXAMPLE"])


def test_long_rule_lists_are_shortened_in_the_cause() -> None:
    users = [f"user{i}" for i in range(40)]
    e = refused(Policy(allowed_users=users), result())
    assert "user0, user1, user2, user3, user4 and 35 more" in e.cause


# -- names through the map -------------------------------------------------------------------------------------

def test_group_names_resolve_in_full_by_short_name_and_in_any_case() -> None:
    names = GroupNames(MAP)
    p = Policy(allowed_groups=["corp\\API-READERS"], group_names=names)
    assert p.resolved == (READERS,)
    p.check(result(identity=ident((READERS,))))
    assert Policy(allowed_groups=["API-Writers"], group_names=names).resolved == (WRITERS,)
    assert Policy(allowed_groups=["domain admins", READERS], group_names=names).resolved == (READERS, ADMINS)
    with pytest.raises(ValueError, match="ambiguous"):   # CORP\api-readers and PARTNER\api-readers
        Policy(allowed_groups=["api-readers"], group_names=names)
    with pytest.raises(ValueError, match="no group named 'nobody'"):
        Policy(allowed_groups=["nobody"], group_names=names)


def test_names_follow_the_map_file(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    write_map(path, {READERS: "CORP\\api-readers"})
    names = GroupNames.load(path, reload_interval=0.01)
    p = Policy(allowed_groups=["CORP\\api-readers"], group_names=names, name="readers")
    member = result(identity=ident((READERS,)))
    newcomer = result(identity=ident((f"{DOM}-1300",)))
    p.check(member)
    refused(p, newcomer)
    # the group is recreated (a new SID under the old name): the policy follows the name
    write_map(path, {f"{DOM}-1300": "CORP\\api-readers", READERS: "CORP\\api-readers-old"})
    time.sleep(0.02)
    p.check(newcomer)
    refused(p, member)
    assert p.resolved == (f"{DOM}-1300",)
    # the name disappears: matches nothing (fail closed), said in the refusal
    write_map(path, {READERS: "CORP\\something-else"})
    time.sleep(0.02)
    e = refused(p, newcomer)
    assert e.details["unresolved_groups"] == ["CORP\\api-readers"]
    assert "not in the group map" in e.cause
    # a broken file keeps the map in service
    path.write_text("{not json")
    time.sleep(0.02)
    refused(p, newcomer)
    assert names.error is not None and "not JSON" in names.error


def test_the_sid_set_is_compiled_once_per_map_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastkrb.policy as policy_mod

    built: list[tuple[str, ...]] = []
    real = policy_mod._sid_set

    def counting(sids: Any) -> Any:
        built.append(tuple(sids))
        return real(built[-1])

    monkeypatch.setattr(policy_mod, "_sid_set", counting)
    names = GroupNames(MAP)
    p = Policy(allowed_groups=["CORP\\api-readers", WRITERS], group_names=names)
    for _ in range(1000):
        p.check(result(identity=ident((WRITERS,))))
    assert built == [(WRITERS, READERS)]


def test_sid_set_refuses_malformed_sids() -> None:
    from fastkrb import _native

    s = _native.SidSet([READERS, WRITERS, READERS])
    assert type(s) is SidSet
    assert len(s) == 2 and READERS in s and ADMINS not in s
    with pytest.raises(ValueError):
        _native.SidSet(["S-1-5-21-x"])


# -- real results: minted AD-style tickets through the Validator --------------------------------------------------

@pytest.fixture(scope="module")
def keytab() -> Any:
    return make_keytab((SERVICE,), rng=random.Random(12))


def ad_token(keytab: Any, client: str = "alice@CORP.EXAMPLE", groups: tuple[int, ...] = (513, 1200),
             user_rid: int = 1104) -> str:
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": user_rid, "group_rids": groups,
                          "logon_domain_name": "CORP"}}
    return mint(keytab, client=client, server=SERVICE, pac=pac, now=time.time()).header


def test_real_results_carry_the_pac_identity(keytab: Any) -> None:
    res = Validator(keytab, cold_start=False).validate(ad_token(keytab, groups=(513, 1200, 1201)))
    ident = res.identity
    assert type(ident) is Identity
    assert ident.user_sid == ALICE_SID and ident.primary_group_sid == f"{DOM}-513"
    assert ident.group_sids == (f"{DOM}-513", READERS, WRITERS) and ident.group_count == 3
    assert ident.logon_name == "alice" and ident.logon_domain == "CORP"
    assert json.loads(json.dumps(ident.to_dict()))["user_sid"] == ALICE_SID


def test_policy_on_real_results(keytab: Any) -> None:
    v = Validator(keytab, cold_start=False)
    p = Policy(allowed_groups=["CORP\\api-readers"], group_names=GroupNames(MAP), allowed_realms=["CORP.EXAMPLE"])
    p.check(v.validate(ad_token(keytab, groups=(513, 1200))))
    e = refused(p, v.validate(ad_token(keytab, groups=(513, 1201))))
    assert e.details["group_count"] == 2 and e.details["user_sid"] == ALICE_SID
    # a ticket without LOGON_INFO (what MIT and Heimdal issue) has no identity
    plain = v.validate(mint(keytab, client="alice@CORP.EXAMPLE", server=SERVICE, now=time.time()).header)
    assert plain.identity is None
    assert refused(p, plain).details["has_identity"] is False
    Policy(allowed_users=["alice"]).check(plain)
