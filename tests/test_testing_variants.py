"""Minted.variants: fast distinct tokens for loads, each valid exactly once."""

from __future__ import annotations

import random

from fastkrb import KerberosError, Validator
from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"


def test_variants_are_distinct_valid_and_single_use() -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18, 20), kvno=1, rng=random.Random(1))
    now = 1_800_000_000.0
    for framing in ("spnego", "krb5", "raw", "header"):
        m = mint(kt, server=SPN, now=now, framing=framing, rng=random.Random(2))  # type: ignore[arg-type]
        toks = m.variants(300, now=now)
        assert len(set(toks)) == 300
        v = Validator(kt, cold_start=False)
        for t in toks:
            assert v.validate(t, now=now).client == m.client
        try:
            v.validate(toks[0], now=now)
        except KerberosError as exc:
            assert exc.code == "replay"
        else:
            raise AssertionError("a variant was accepted twice")

