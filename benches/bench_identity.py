"""What an identity costs: validation alone, side by side with validation + AuthResult.identity + a 10-SID
membership test, for a 5-group AD ticket and a 1,000-group user (~9 KiB PAC), both minted.

Targets (issue 12): at most 1 µs above validation alone for 5 groups, at most 20 µs for 1,000 groups. The
membership test is the worst case: a SidSet of 10 SIDs of the user's own domain, none of them granted, so every
group is probed. Each token is shown once to a Validator with a warm memory replay cache (as the headline
bench). Run:

    PYTHONPATH=src .venv/bin/python -m pytest benches/bench_identity.py -q -p no:cacheprovider \\
        --benchmark-enable --benchmark-only --benchmark-disable-gc --benchmark-columns=min,median,mean,rounds

Groups: "identity 5 groups", "identity 1000 groups"; each also times Validator(policy=Policy(10 groups)).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REALM, TokenSet, fastkrb_validator, warm_replay_cache
from fastkrb import Policy, Validator
from fastkrb._native import SidSet
from fastkrb.testing import make_keytab, mint

DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"
N = 3000
# ten SIDs of the user's domain that the tickets below never grant: member_of probes every group
PROBE = SidSet([f"{DOMAIN_SID}-{rid}" for rid in range(9000, 9010)])


def _token_set(workdir: Path, groups: int) -> TokenSet:
    t = time.perf_counter()
    principal = f"HTTP/id{groups}.bench.test@{REALM}"
    kt = make_keytab([principal], enctypes=(18,))
    path = workdir / f"id{groups}.keytab"
    kt.save(path)
    rids = [513, *range(1100, 1100 + groups - 1)]
    pac = {"logon_info": {"group_rids": rids, "user_rid": 1105, "domain_sid": DOMAIN_SID}}
    first = mint(kt, server=principal, client=f"alice@{REALM}", framing="krb5", gss_flags=("replay", "sequence"),
                 pac=pac)
    tokens = first.variants(N)
    assert first.pac is not None and len(set(tokens)) == N
    res = fastkrb_validator(kt, "none").validate(tokens[0])
    assert res.identity is not None and res.identity.group_count == groups
    assert not res.identity.member_of(PROBE)
    return TokenSet(f"identity {groups} groups", tokens, path, principal, 18, "krb5", False,
                    "fastkrb.testing.mint (AD-like signed PAC)", 0, len(first.pac), time.perf_counter() - t)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, TokenSet]:
    d = tmp_path_factory.mktemp("identity")
    return {g: _token_set(d, g) for g in (5, 1000)}


def _bench(benchmark: Any, per_token: Any, ts: TokenSet, with_identity: bool) -> None:
    v = fastkrb_validator(ts.keytab, "warm")
    if with_identity:
        validate, probe = v.validate, PROBE

        def fn(token: bytes) -> bool:
            return validate(token).identity.member_of(probe)  # type: ignore[no-any-return, union-attr]
    else:
        fn = v.validate
    per_token(benchmark, fn, ts, impl="fastkrb", replay="memory (warm, 1e5 live)")
    benchmark.extra_info["identity"] = with_identity
    benchmark.extra_info["pac_bytes"] = ts.pac_bytes


def _bench_policy(benchmark: Any, per_token: Any, ts: TokenSet, groups: int) -> None:
    """Validator(policy=...) with a 10-group Policy that admits the caller through its last-listed group (one
    the ticket grants, so every other SID of the policy is probed first): the path a request really takes."""
    granted = f"{DOMAIN_SID}-{1100 + groups - 2}"
    policy = Policy(allowed_groups=[*(f"{DOMAIN_SID}-{rid}" for rid in range(9000, 9009)), granted])
    v = Validator(str(ts.keytab), replay_cache=warm_replay_cache(), cold_start=False, policy=policy)
    per_token(benchmark, v.validate, ts, impl="fastkrb", replay="memory (warm, 1e5 live)")
    benchmark.extra_info["identity"] = True
    benchmark.extra_info["policy_groups"] = 10
    benchmark.extra_info["pac_bytes"] = ts.pac_bytes


@pytest.mark.benchmark(group="identity 5 groups")
def test_validate_5_groups(benchmark: Any, per_token: Any, sets: dict[int, TokenSet]) -> None:
    _bench(benchmark, per_token, sets[5], False)


@pytest.mark.benchmark(group="identity 5 groups")
def test_validate_identity_member_of_5_groups(benchmark: Any, per_token: Any, sets: dict[int, TokenSet]) -> None:
    _bench(benchmark, per_token, sets[5], True)


@pytest.mark.benchmark(group="identity 5 groups")
def test_validate_policy_10_groups_5_groups(benchmark: Any, per_token: Any, sets: dict[int, TokenSet]) -> None:
    _bench_policy(benchmark, per_token, sets[5], 5)


@pytest.mark.benchmark(group="identity 1000 groups")
def test_validate_1000_groups(benchmark: Any, per_token: Any, sets: dict[int, TokenSet]) -> None:
    _bench(benchmark, per_token, sets[1000], False)


@pytest.mark.benchmark(group="identity 1000 groups")
def test_validate_identity_member_of_1000_groups(benchmark: Any, per_token: Any,
                                                 sets: dict[int, TokenSet]) -> None:
    _bench(benchmark, per_token, sets[1000], True)


@pytest.mark.benchmark(group="identity 1000 groups")
def test_validate_policy_10_groups_1000_groups(benchmark: Any, per_token: Any,
                                               sets: dict[int, TokenSet]) -> None:
    _bench_policy(benchmark, per_token, sets[1000], 1000)
