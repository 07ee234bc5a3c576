"""Where the time goes, stage by stage, for a real MIT aes256 token: each stage looped in C
(Validator.profile), so no Python call overhead hides a stage's cost. The per-stage figures are in
extra_info (ns per token); the benchmark's own timing is that of the whole profiling call."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import TokenSet, fastkrb_validator, warm_replay_cache


@pytest.mark.benchmark(group="stages (C, ns per token in extra_info)")
def test_stage_costs_aes256(benchmark: Any, aes256_tokens: TokenSet) -> None:
    v = fastkrb_validator(aes256_tokens.keytab, "none")
    rc = warm_replay_cache()
    tok = aes256_tokens.tokens[0]
    stages = benchmark.pedantic(v.profile, args=(tok,), kwargs={"iterations": 20_000, "replay": rc}, rounds=3)
    assert stages["full_validate"] > 0 and stages["replay_insert"] > 0
    benchmark.extra_info.update({f"{k}_ns": round(x, 1) for k, x in stages.items()})
