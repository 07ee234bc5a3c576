"""AuthResult.identity, Identity and SidSet: the native KERB_VALIDATION_INFO decoder (native/pac.c).

The reference is fastkrb.krb.pac, an independent Python decoder: on real Active Directory PACs (the six
Kerberos.NET tokens, gokrb5's PAC and the MS-PAC specification sample), on minted PACs with random group
lists (hypothesis, 0..1000 groups, ExtraSids, resource groups), and on malformed NDR, where the rule is:

    Identity raises MalformedToken exactly when fastkrb.krb.pac rejects the LOGON_INFO, or the LOGON_INFO has
    no LogonDomainId (no SID of the user can be formed), or it has ResourceGroupIds without a
    ResourceGroupDomainSid (those groups cannot be named). Never anything else, never a crash.

Validation itself never decodes the NDR (MIT and Heimdal do not read LOGON_INFO): a malformed one surfaces on
``result.identity``, i.e. in whatever policy reads it, as MalformedToken.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastkrb import KerberosError, Keytab, Validator
from fastkrb._native import AuthResult, Identity, SidSet
from fastkrb.errors import MalformedToken
from fastkrb.krb.pac import LOGON_INFO, UPN_FLAG_U, Pac, build_pac, encode_logon_info, sid_to_str
from fastkrb.testing import make_keytab, mint

VECTORS = Path(__file__).parent / "vectors"
AD = json.loads((VECTORS / "ad_tokens.json").read_text())
PAC_JSON = json.loads((VECTORS / "pac.json").read_text())
NOW = 1_700_000_000.0
REALM = "EXAMPLE.TEST"
SPN = f"HTTP/api.example.test@{REALM}"


def reference(pac: Pac) -> dict[str, Any] | None:
    """What Identity.to_dict() must be, from the Python decoder."""
    li = pac.logon_info
    if li is None:
        return None
    upn = pac.upn_dns_info
    groups = [*li.group_sids, *(e.sid for e in li.extra_sids), *li.resource_group_sids]
    return {"user_sid": li.user_sid, "primary_group_sid": li.primary_group_sid, "group_sids": groups,
            "group_count": len(groups), "logon_name": li.effective_name, "logon_domain": li.logon_domain_name,
            "dns_domain": None if upn is None else upn.dns_domain, "upn": None if upn is None else upn.upn,
            "upn_implicit": bool(upn is not None and upn.flags & UPN_FLAG_U)}


def granted(pac: Pac) -> set[str]:
    ref = reference(pac)
    assert ref is not None
    return {ref["user_sid"], ref["primary_group_sid"], *ref["group_sids"]}


def check(ident: Identity | None, pac: Pac) -> None:
    ref = reference(pac)
    if ref is None:
        assert ident is None
        return
    assert ident is not None
    assert ident.to_dict() == ref
    assert ident.group_sids == tuple(ref["group_sids"]) and ident.group_count == len(ref["group_sids"])
    assert (ident.user_sid, ident.primary_group_sid, ident.logon_name, ident.logon_domain) == (
        ref["user_sid"], ref["primary_group_sid"], ref["logon_name"], ref["logon_domain"])
    assert (ident.dns_domain, ident.upn, ident.upn_implicit) == (ref["dns_domain"], ref["upn"], ref["upn_implicit"])
    every = granted(pac)
    for sid in sorted(every):
        assert ident.member_of(SidSet([sid])), sid
    strangers = {"S-1-5-21-1-1-1-1", "S-1-1-0", "S-1-5-32-544"}
    assert ident.member_of(SidSet(strangers)) == bool(strangers & every)
    assert not ident.member_of(SidSet([]))


def one_buffer_pac(ndr: bytes, t: int = LOGON_INFO) -> bytes:
    return struct.pack("<IIIIQ", 1, 0, t, len(ndr), 24) + ndr


# --- real AD PACs


@pytest.mark.parametrize("tid", sorted(t["id"] for t in AD["tokens"]))
def test_ad_tokens(tid: str) -> None:
    t = next(x for x in AD["tokens"] if x["id"] == tid)
    kt = Keytab()
    kt.add(t["service_principal"], bytes.fromhex(t["service_key_hex"]), enctype=t["service_key_enctype"],
           kvno=t["service_key_kvno"])
    v = Validator(kt, enctypes=(23,) if t["service_key_enctype"] == 23 else (18, 17), replay_cache="none",
                  cold_start=False)
    res = v.validate(bytes.fromhex(t["token_hex"]), now=t["validation_time_unix"])
    ident = res.identity
    check(ident, res.pac)
    assert ident is res.identity, "decoded once"
    # the values ad_tokens.json lists for this PAC (the rc4 ones are the Kerberos.NET test's assertions)
    li = AD["decoded"][t["decoded"]]["pac"]["logon_info"]
    upn = AD["decoded"][t["decoded"]]["pac"]["upn_dns_info"]
    dom = li["LogonDomainId"]
    assert ident is not None
    assert ident.user_sid == f"{dom}-{li['UserId']}" == "S-1-5-21-4028881986-3284141023-698984075-1106"
    assert ident.primary_group_sid == f"{dom}-{li['PrimaryGroupId']}"
    assert ident.group_sids == (*(f"{dom}-{g['RelativeId']}" for g in li["GroupIds"]),
                                *(e["Sid"] for e in li["ExtraSids"]))
    assert ident.group_count == li["GroupCount"] + li["SidCount"] == 18
    assert ident.logon_name == li["EffectiveName"]["value"] == "user.test"
    assert ident.logon_domain == li["LogonDomainName"]["value"] == "DOMAIN"
    assert (ident.upn, ident.dns_domain, ident.upn_implicit) == (upn["Upn"], upn["DnsDomainName"], False)
    assert ident.member_of(SidSet([f"{dom}-512"]))                  # Domain Admins, a GroupIds RID
    assert ident.member_of(SidSet([li["ExtraSids"][3]["Sid"]]))      # an ExtraSid
    assert not ident.member_of(SidSet([f"{dom}-500", "S-1-5-32-544"]))


def test_gokrb5_pac() -> None:
    p = PAC_JSON["pacs"][0]
    data = bytes.fromhex(p["pac_hex"])
    ident = Identity.from_pac(data)
    check(ident, Pac(data))
    exp = p["expected"]["kerb_validation_info"]
    assert ident is not None
    assert ident.user_sid == f"{exp['logon_domain_id']}-{exp['user_id']}"
    assert ident.group_sids == (*(f"{exp['logon_domain_id']}-{g['relative_id']}" for g in exp["group_ids"]),
                                *(e["sid"] for e in exp["extra_sids"]))
    assert ident.logon_name == exp["effective_name"] == "testuser1"
    assert (ident.upn, ident.dns_domain) == ("testuser1@test.gokrb5", "TEST.GOKRB5")


@pytest.mark.parametrize("index", [0, 1])
def test_kerb_validation_info_samples(index: int) -> None:
    sample = PAC_JSON["kerb_validation_info_samples"][index]
    data = one_buffer_pac(bytes.fromhex(sample["ndr_hex"]))
    ident = Identity.from_pac(data)
    check(ident, Pac(data))
    assert ident is not None and ident.upn is None and ident.dns_domain is None
    if index == 1:   # the MS-PAC specification's example user
        exp = sample["expected"]
        assert ident.logon_name == "lzhu" and ident.logon_domain == "NTDEV"
        assert ident.user_sid == "S-1-5-21-397955417-626881126-188441444-2914711"
        assert ident.group_count == exp["group_count"] + exp["sid_count"]
        assert ident.group_sids[exp["group_count"]:exp["group_count"] + 12] == tuple(
            e["sid"] for e in exp["extra_sids_first_12"])
        # S-1-5-21-773533881-...-513 is another domain's Domain Users, granted as an ExtraSid
        assert ident.member_of(SidSet(["S-1-5-21-773533881-1816936887-355810188-513"]))


# --- minted PACs against the Python decoder


_SUB = st.integers(0, 2**32 - 1)
_DOMAIN = st.lists(_SUB, min_size=1, max_size=14).map(lambda s: "S-1-5-21-" + "-".join(map(str, s[:12])))
_SID = st.builds(lambda a, subs: sid_to_str(bytes([1, len(subs)]) + a.to_bytes(6, "big")
                                            + struct.pack(f"<{len(subs)}I", *subs)),
                 st.one_of(st.sampled_from([0, 1, 5, 16, 2**32 - 1, 2**32, 2**48 - 1]), st.integers(0, 2**48 - 1)),
                 st.lists(_SUB, max_size=15))


@st.composite
def logon_specs(draw: Any, max_groups: int = 1000) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "user_rid": draw(_SUB), "domain_sid": draw(_DOMAIN), "primary_group_rid": draw(_SUB),
        "group_rids": draw(st.lists(_SUB, max_size=max_groups)),
        "extra_sids": draw(st.lists(_SID, max_size=40)),
        "user_name": draw(st.text(max_size=20)), "logon_domain_name": draw(st.text(max_size=15)),
    }
    if draw(st.booleans()):
        spec["resource_domain_sid"] = draw(_DOMAIN)
        spec["resource_group_rids"] = draw(st.lists(_SUB, max_size=60))
    return spec


def _build(spec: dict[str, Any], kt: Keytab, upn: str | None = "alice@example.test") -> bytes:
    return build_pac(client_name="alice", auth_time=NOW, server_key=(18, kt.entries[0].key), logon_info=spec,
                     upn=upn, dns_domain=REALM if upn else None)


KT = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(21))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=logon_specs(), upn=st.sampled_from([None, "alice@example.test"]), probe=st.lists(_SID, max_size=10),
       pick=st.randoms(use_true_random=False))
def test_minted_pacs_match_the_python_decoder(spec: dict[str, Any], upn: str | None, probe: list[str],
                                              pick: random.Random) -> None:
    data = _build(spec, KT, upn)
    pac = Pac(data)
    ident = Identity.from_pac(data)
    assert ident is not None
    assert ident.to_dict() == reference(pac)
    every = granted(pac)
    # a 10-SID set of strangers, then with one granted SID mixed in
    assert ident.member_of(SidSet(probe)) == bool(every & set(probe))
    hit = pick.choice(sorted(every))
    if hit.count("-") <= 17:   # a GroupIds SID under a 15-sub-authority domain has 16: no set can hold it
        assert ident.member_of(SidSet([*probe, hit]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=logon_specs())
def test_identity_through_validation(spec: dict[str, Any]) -> None:
    m = mint(KT, server=SPN, now=NOW, pac=_build(spec, KT), rng=random.Random(3))
    res = Validator(KT, replay_cache="none", cold_start=False).validate(m.token, now=NOW)
    assert res.identity is not None
    assert res.identity.to_dict() == reference(res.pac)


def test_a_thousand_groups() -> None:
    spec = {"user_rid": 1104, "domain_sid": "S-1-5-21-1-2-3", "group_rids": list(range(5000, 6000))}
    m = mint(KT, server=SPN, now=NOW, pac=_build(spec, KT), rng=random.Random(4))
    assert 8_000 < len(m.pac or b"") < 10_000
    res = Validator(KT, replay_cache="none", cold_start=False).validate(m.token, now=NOW)
    ident = res.identity
    assert ident is not None and ident.group_count == 1000
    assert ident.group_sids[0] == "S-1-5-21-1-2-3-5000" and ident.group_sids[-1] == "S-1-5-21-1-2-3-5999"
    assert ident.member_of(SidSet(["S-1-5-21-1-2-3-5999"]))
    assert ident.member_of(SidSet(["S-1-5-21-1-2-3-1104"]))          # the user
    assert not ident.member_of(SidSet(["S-1-5-21-1-2-3-6000", "S-1-5-21-1-2-4-5000", "S-1-5-21-1-2-3"]))


# --- malformed NDR: typed errors per the rule above, never a crash


def _outcome(data: bytes) -> tuple[str, Any]:
    """("ok", to_dict) / ("none", None) / ("malformed", cause) from the native decoder."""
    try:
        ident = Identity.from_pac(data)
    except MalformedToken as exc:
        assert exc.code == "malformed" and exc.cause.startswith("PAC ")
        return "malformed", exc.cause
    return ("none", None) if ident is None else ("ok", ident.to_dict())


def _expected(data: bytes) -> str:
    """The rule, from the Python decoder (for PACs whose only decoded buffer is LOGON_INFO)."""
    try:
        li = Pac(data).logon_info
    except MalformedToken:
        return "malformed"
    if li is None:
        return "none"
    if li.logon_domain_id is None or (li.resource_group_ids and li.resource_group_domain_sid is None):
        return "malformed"
    return "ok"


def _agree(data: bytes) -> None:
    got, value = _outcome(data)
    want = _expected(data)
    assert got == want, (got, value)
    if got == "ok":
        assert value == reference(Pac(data))


def _ndr_of(spec: dict[str, Any]) -> bytes:
    pac = Pac(_build(spec, KT, None))
    raw = pac.raw(LOGON_INFO)
    assert raw is not None
    return raw


SPEC = {"user_rid": 1104, "domain_sid": "S-1-5-21-1-2-3", "group_rids": [513, 1105, 1106],
        "extra_sids": ["S-1-18-1", "S-1-5-21-9-9-9-512"], "resource_domain_sid": "S-1-5-21-7-7-7",
        "resource_group_rids": [1000, 1001], "full_name": "Alice A", "logon_server": "DC1"}


def test_every_truncation() -> None:
    ndr = _ndr_of(SPEC)
    for n in range(len(ndr)):
        _agree(one_buffer_pac(ndr[:n]))
        # the same length, but the object still claims its full size
        _agree(one_buffer_pac(ndr[:n] + bytes(-n % 8)))
    _agree(one_buffer_pac(ndr))


def _patch(ndr: bytes, off: int, value: int) -> bytes:
    b = bytearray(ndr)
    struct.pack_into("<I", b, off, value & 0xFFFFFFFF)
    return bytes(b)


# offsets in the NDR (16-byte headers + 4-byte referent + the fixed part): see pac.c's KVI_* constants
_FIELDS = {"objlen": 8, "top": 16, "group_count": 20 + 108, "group_ptr": 20 + 112, "domain_sid_ptr": 20 + 152,
           "sid_count": 20 + 196, "extra_ptr": 20 + 200, "res_dom_ptr": 20 + 204, "res_count": 20 + 208,
           "res_ptr": 20 + 212, "name_hdr": 20 + 48, "name_ptr": 20 + 52}


@pytest.mark.parametrize("field", sorted(_FIELDS))
@pytest.mark.parametrize("value", [0, 1, 2, 3, 7, 0x7FFFFFFF, 0xFFFFFFFF, 0x20000, 0x10000000])
def test_lying_counts_and_pointers(field: str, value: int) -> None:
    _agree(one_buffer_pac(_patch(_ndr_of(SPEC), _FIELDS[field], value)))


def test_pointers_past_the_end_and_nulls() -> None:
    ndr = _ndr_of(SPEC)
    # a SID count beyond 15, a SubAuthorityCount disagreeing with the NDR count, a bad revision
    sid_at = ndr.find(bytes([1, 4, 0, 0, 0, 0, 0, 5]))   # S-1-5-21-1-2-3 (LogonDomainId)
    assert sid_at > 0
    for off, val in ((sid_at - 4, 16), (sid_at - 4, 3), (sid_at - 4, 5)):
        _agree(one_buffer_pac(_patch(ndr, off, val)))
    for b1 in (0, 2, 0x20):
        bad = bytearray(ndr)
        bad[sid_at] = b1
        _agree(one_buffer_pac(bytes(bad)))
    # no LogonDomainId at all, and resource groups without their domain: well-formed NDR, but no identity
    li = Pac(_build(SPEC, KT, None)).logon_info
    assert li is not None
    for odd in (dataclasses.replace(li, logon_domain_id=None),
                dataclasses.replace(li, resource_group_domain_sid=None)):
        data = one_buffer_pac(encode_logon_info(odd))
        assert Pac(data).logon_info == odd, "the Python decoder takes it"
        got = _outcome(data)
        assert got[0] == "malformed" and ("LogonDomainId" in got[1] or "ResourceGroupDomainSid" in got[1])
    # the LOGON_INFO buffer running past the PAC, and a PAC without one
    assert _outcome(one_buffer_pac(ndr)[:-8])[0] == "malformed"
    assert _outcome(one_buffer_pac(b"\x00" * 8, t=10)) == ("none", None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                         min_size=1, max_size=6),
       cut=st.integers(0, 10**6))
def test_mutated_ndr(seed: int, flips: list[tuple[int, int]], cut: int) -> None:
    ndr = bytearray(_ndr_of(SPEC))
    for pos, val in flips:
        ndr[pos % len(ndr)] = val
    if cut % 3 == 0:
        del ndr[cut % len(ndr):]
    _agree(one_buffer_pac(bytes(ndr)))


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.tuples(st.integers(0, 400), st.sampled_from([0, 1, 2, 8, 15, 16, 0x20000, 0xFFFFFFFF,
                                                                        0x7FFFFFF0, 1000, 2**20])),
                      min_size=1, max_size=4))
def test_mutated_ndr_words(words: list[tuple[int, int]]) -> None:
    ndr = _ndr_of(SPEC)
    for pos, val in words:
        ndr = _patch(ndr, (pos * 4) % (len(ndr) - 4), val)
    _agree(one_buffer_pac(ndr))


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=600))
def test_random_bytes(blob: bytes) -> None:
    _agree(one_buffer_pac(blob))
    got, _ = _outcome(blob)   # a whole PAC of noise: a verdict, never a crash
    if got != "malformed":
        Pac(blob)


def test_malformed_logon_info_surfaces_on_identity_not_validation() -> None:
    """A signed PAC whose LOGON_INFO does not decode: validation accepts (as MIT does), identity raises."""
    ndr = _patch(_ndr_of(SPEC), _FIELDS["group_count"], 99)
    pac = Pac(_build(SPEC, KT))
    bufs = [(b.type, pac.data[b.offset:b.offset + b.size]) for b in pac.buffers]
    bufs = [(t, ndr if t == LOGON_INFO else r) for t, r in bufs]
    from test_pac_checks import assemble, sign  # the PAC assembler of the checks' tests

    m = mint(KT, server=SPN, now=NOW, pac=sign(assemble(bufs), (18, KT.entries[0].key)), rng=random.Random(5))
    res = Validator(KT, replay_cache="none", cold_start=False).validate(m.token, now=NOW)
    assert res.pac_verified
    with pytest.raises(MalformedToken) as info:
        _ = res.identity
    assert "LOGON_INFO (type 1)" in info.value.cause and "group array" in info.value.cause
    assert info.value.details["pac_part"] == "LOGON_INFO (type 1)"


# --- SidSet


def test_sidset_parsing() -> None:
    s = SidSet(["S-1-5-32-544", "s-1-5-32-544", "S-1-1-0", "S-1-0x000100000000-7", "S-1-5", "S-1-5-21-1-2-3-4",
                "S-1-5-" + "-".join(["1"] * 15)])
    assert len(s) == 6   # the lower-case s is the same SID
    assert "S-1-5-32-544" in s and "s-1-5-32-544" in s and "S-1-1-0" in s and "S-1-5" in s
    assert "S-1-4294967296-7" in s, "an authority of 2^32 in decimal or hex is one SID"
    assert "S-1-5-32-545" not in s and "S-1-5-21-1-2-3" not in s and "S-1-5-21-1-2-3-4-5" not in s
    assert "not a sid" not in s and "" not in s
    assert repr(s).startswith("SidSet([")
    with pytest.raises(TypeError):
        _ = 5 in s   # type: ignore[operator]
    assert len(SidSet()) == 0 and len(SidSet(iter(["S-1-1-0"]))) == 1


@pytest.mark.parametrize("bad", ["", "S", "S-1", "S-1-", "S-2-5-32", "X-1-5", "S-1-5-", "S-1-5--1", "S-1-5-a",
                                 "S-1-5-4294967296", "S-1-281474976710656", "S-1-0x1000000000000",
                                 "S-1-5-" + "-".join(["1"] * 16), "S-1-5-32-544 ", " S-1-5", "S-1-+5",
                                 "S-1-5-1_0", "S-1-0x", "S-1-5-\u0661"])
def test_sidset_rejects(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        SidSet(["S-1-1-0", bad])
    assert repr(bad) in str(info.value)


def test_sidset_types() -> None:
    with pytest.raises(TypeError):
        SidSet("S-1-1-0")
    with pytest.raises(TypeError):
        SidSet([b"S-1-1-0"])  # type: ignore[list-item]


# --- objects


def test_identity_objects() -> None:
    with pytest.raises(TypeError):
        Identity()
    empty = Identity.__new__(Identity)
    with pytest.raises(ValueError):
        _ = empty.user_sid
    assert empty.member_of(SidSet(["S-1-1-0"])) is False
    with pytest.raises(TypeError):
        Identity.from_pac(_build(SPEC, KT)).member_of(["S-1-1-0"])  # type: ignore[arg-type, union-attr]
    assert Identity.from_pac(build_pac(client_name="a", auth_time=NOW, server_key=(18, KT.entries[0].key),
                                       minimal=True)) is None
    with pytest.raises(MalformedToken):
        Identity.from_pac(b"\x01\x00\x00\x00\x01\x00\x00\x00" + bytes(16))


def test_pickles() -> None:
    m = mint(KT, server=SPN, now=NOW, pac=_build(SPEC, KT), rng=random.Random(6))
    res = Validator(KT, replay_cache="none", cold_start=False).validate(m.token, now=NOW)
    ident = res.identity
    assert ident is not None
    res2 = pickle.loads(pickle.dumps(res))
    assert isinstance(res2, AuthResult) and res2.identity is not None
    assert res2.identity.to_dict() == ident.to_dict()
    assert pickle.loads(pickle.dumps(ident)).to_dict() == ident.to_dict()
    s = SidSet(["S-1-5-21-1-2-3-513"])
    s2 = pickle.loads(pickle.dumps(s))
    assert len(s2) == 1 and ident.member_of(s2)
    assert repr(ident).startswith("Identity(user_sid='S-1-5-21-1-2-3-1104'")


# --- the policy hook (Validator(policy=...)), as the Policy engine will use it


class _Refuse(KerberosError):
    code = "forbidden_test"


class _GroupPolicy:
    def __init__(self, sids: list[str]) -> None:
        self.sids = SidSet(sids)
        self.calls = 0

    def check(self, result: Any) -> None:
        self.calls += 1
        ident = result.identity
        if ident is None or not ident.member_of(self.sids):
            raise _Refuse("not in the group")


def test_policy_runs_after_validation() -> None:
    import asyncio

    pol = _GroupPolicy(["S-1-5-21-9-9-9-512"])   # an ExtraSid of SPEC
    v = Validator(KT, replay_cache="memory", cold_start=False, policy=pol)
    assert v.policy is pol
    m = mint(KT, server=SPN, now=NOW, pac=_build(SPEC, KT), rng=random.Random(7))
    assert v.validate(m.token, now=NOW).identity is not None
    assert asyncio.run(v.avalidate(m.again(now=NOW, cusec=11).token, now=NOW)).client == f"alice@{REALM}"
    assert pol.calls == 2
    refused = Validator(KT, replay_cache="none", cold_start=False, policy=_GroupPolicy(["S-1-5-32-544"]))
    with pytest.raises(_Refuse):
        refused.validate(m.token, now=NOW)
    with pytest.raises(_Refuse):
        asyncio.run(refused.avalidate(m.token, now=NOW))
    # a failed validation never reaches the policy
    with pytest.raises(KerberosError) as info:
        v.validate(m.token, now=NOW)
    assert info.value.code == "replay" and pol.calls == 2
    with pytest.raises(AttributeError):
        v.policy = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        Validator(KT, policy=object())
    reloaded = Validator(KT, replay_cache="none", cold_start=False, policy=pol)
    reloaded.reload(KT)
    reloaded.validate(m.again(now=NOW, cusec=12).token, now=NOW)
    assert pol.calls == 3


def test_no_policy_is_the_native_call() -> None:
    v = Validator(KT, replay_cache="none", cold_start=False)
    assert v.policy is None
    assert type(v.validate.__self__).__name__ == "NativeValidator", "no Python frame on the hot path"
