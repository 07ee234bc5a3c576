"""Per-token cost of validating real AP-REQs: fastkrb's Validator and MIT's gss_accept_sec_context, same tokens.

Each bench times one call per token (pytest-benchmark stats are per token) and shows each token once, to a
Validator / MIT acceptor made for that bench, so no replay is ever hit. fastkrb's replay cache is "warm"
(the steady state of a running service: table pages faulted in, 10^5 live entries) unless the name says
"cold" (replay_cache="memory" as constructed) or "rcache_none" (the crypto path alone). MIT runs with its
default replay cache (file2, in a fresh temporary KRB5RCACHEDIR) unless the name says "rcache_none".
Groups: headline, enctype, mutual, framing, pac_size.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import (
    ENCTYPE_LABELS,
    N_TOKENS,
    N_VARIANT,
    PAC_SIZES_KIB,
    BenchLab,
    MitAcceptor,
    TokenSet,
    fastkrb_validator,
)

IMPLS = ("fastkrb", "mit")


def _run(benchmark: Any, per_token: Any, impl: str, ts: TokenSet, replay: str = "warm") -> None:
    """One fresh fastkrb Validator or MIT acceptor, then one timed call per token of ``ts``."""
    if impl == "fastkrb":
        v = fastkrb_validator(ts.keytab, replay)
        per_token(benchmark, v.validate, ts, impl="fastkrb", replay={"warm": "memory (warm, 1e5 live)",
                                                                     "cold": "memory (fresh)",
                                                                     "none": "none"}[replay])
        stats = v.replay_stats()
        if stats is not None and benchmark.enabled:
            assert stats["hits"] == 0, "a bench token was replayed"
            benchmark.extra_info["replay_entries_after"] = stats["entries"]
    else:
        mit_rc = "none" if replay == "none" else "dfl"
        with MitAcceptor(ts.keytab, rcache=mit_rc) as mit:
            per_token(benchmark, mit.accept, ts, impl="mit",
                      replay="none" if mit_rc == "none" else "MIT default (file2 rcache)")
            if mit_rc == "dfl":
                assert mit.rcache_files(), "MIT wrote no replay cache file"


# --- headline: aes256-cts-hmac-sha1-96, MIT tokens, krb5 framing, no mutual (like curl --negotiate)

@pytest.mark.benchmark(group="headline aes256-sha1")
def test_fastkrb_full_aes256_memory(benchmark: Any, per_token: Any, aes256_tokens: TokenSet) -> None:
    """The headline figure: full validation incl. an in-memory replay-cache insert (target <= 5 us)."""
    _run(benchmark, per_token, "fastkrb", aes256_tokens, "warm")


@pytest.mark.benchmark(group="headline aes256-sha1")
def test_mit_gss_accept_aes256(benchmark: Any, per_token: Any, aes256_tokens: TokenSet) -> None:
    _run(benchmark, per_token, "mit", aes256_tokens)


@pytest.mark.benchmark(group="headline aes256-sha1")
def test_fastkrb_full_aes256_memory_cold(benchmark: Any, per_token: Any, aes256_tokens: TokenSet) -> None:
    """A Validator made just now: its replay table's pages fault in on first touch."""
    _run(benchmark, per_token, "fastkrb", aes256_tokens, "cold")


@pytest.mark.benchmark(group="headline aes256-sha1")
def test_fastkrb_crypto_path_aes256_rcache_none(benchmark: Any, per_token: Any, aes256_tokens: TokenSet) -> None:
    _run(benchmark, per_token, "fastkrb", aes256_tokens, "none")


@pytest.mark.benchmark(group="headline aes256-sha1")
def test_mit_gss_accept_aes256_rcache_none(benchmark: Any, per_token: Any, aes256_tokens: TokenSet) -> None:
    _run(benchmark, per_token, "mit", aes256_tokens, "none")


# --- variants (N_VARIANT tokens each)

@pytest.mark.benchmark(group="enctype")
@pytest.mark.parametrize("enctype", [17, 18, 19, 20], ids=[ENCTYPE_LABELS[e] for e in (17, 18, 19, 20)])
@pytest.mark.parametrize("impl", IMPLS)
def test_full_enctype(benchmark: Any, per_token: Any, lab: BenchLab, impl: str, enctype: int) -> None:
    _run(benchmark, per_token, impl, lab.real_tokens(enctype, n=N_VARIANT))


@pytest.mark.benchmark(group="mutual")
@pytest.mark.parametrize("mutual", [False, True], ids=["no_mutual", "mutual"])
@pytest.mark.parametrize("impl", IMPLS)
def test_full_mutual(benchmark: Any, per_token: Any, lab: BenchLab, impl: str, mutual: bool) -> None:
    """Mutual authentication adds the AP-REP (one more encryption) to every validation."""
    _run(benchmark, per_token, impl, lab.real_tokens(18, mutual=mutual, n=N_VARIANT))


@pytest.mark.benchmark(group="framing")
@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("impl", IMPLS)
def test_full_framing(benchmark: Any, per_token: Any, lab: BenchLab, impl: str, mech: str) -> None:
    _run(benchmark, per_token, impl, lab.real_tokens(18, mech=mech, n=N_VARIANT))


@pytest.mark.benchmark(group="pac_size")
@pytest.mark.parametrize("pac_kib", PAC_SIZES_KIB, ids=[f"pac_{k:g}KiB" for k in PAC_SIZES_KIB])
@pytest.mark.parametrize("impl", IMPLS)
def test_full_pac_size(benchmark: Any, per_token: Any, lab: BenchLab, impl: str, pac_kib: float) -> None:
    """Minted AD-like tickets (aes256-sha1, signed PAC with a LOGON_INFO of many groups). Both verify the
    PAC's server signature during the call (MIT too: it drops a PAC that fails, fastkrb rejects the token)."""
    _run(benchmark, per_token, impl, lab.ad_tokens(pac_kib))


# --- the operator bench's embedded tokens (fastkrb bench): the same per-token timing, so the report's
# in-process figure can be checked against this micro benchmark

@pytest.fixture(scope="module")
def embedded_tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenSet:
    from fastkrb.capacity.planner import embedded_source

    src = embedded_source(tmp_path_factory.mktemp("embedded"))
    toks = next(src.chunks(N_TOKENS))
    return TokenSet(label="fastkrb bench embedded (minted aes256, minimal PAC)", tokens=toks,
                    keytab=src.keytab_path, principal="HTTP/api.bench.test@BENCH.TEST", enctype=18,
                    framing="krb5", mutual=False, source="minted", ticket_cipher_bytes=0, pac_bytes=None,
                    gen_seconds=0.0)


@pytest.mark.benchmark(group="fastkrb bench embedded tokens")
def test_fastkrb_embedded_memory(benchmark: Any, per_token: Any, embedded_tokens: TokenSet) -> None:
    _run(benchmark, per_token, "fastkrb", embedded_tokens, "warm")
