"""Resident memory stays flat over 10^6 validations, valid and invalid mixed (issue 7: leaks and limits).

Every path that allocates is exercised at volume: accepted tokens (an AuthResult each, an AP-REP for
mutual authentication, a replay-cache entry), replays, bit-flipped copies of accepted tokens, garbage,
tokens for a key version the keytab lacks, oversized tokens, header strings. Each rejection builds a
typed KerberosError with its facts in Python, so a leaked reference there shows as well as a leaked
malloc in C. After a warm-up (the replay cache's table pages, the allocator's pools, the DRBG buffers
are touched once), the resident set must not grow by more than RSS_BOUND over the rest.

Authenticators of one batch expire before the next (`now` moves 400 s per batch, the skew is 300 s),
so a correct replay cache holds one batch at a time; a cache that never forgot would grow here too.
"""

from __future__ import annotations

import base64
import gc
import os
import random
import time

import pytest

from fastkrb import KerberosError, Validator
from fastkrb.errors import Replay
from fastkrb.testing import make_keytab, mint

TOTAL = 1_000_000
BATCH = 10_000
WARMUP_BATCHES = 5
RSS_BOUND = 4 * 1024 * 1024   # 4 MiB over ~950,000 validations: a leak of 5 bytes per call would show
BASE = 1_700_000_000
STEP = 400                    # seconds between batches: more than clock_skew + 1


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def setup() -> tuple[Validator, object, object]:
    rng = random.Random(7)
    kt = make_keytab(rng=rng)
    life = BASE + (TOTAL // BATCH + 2) * STEP + 3600
    good = mint(kt, now=BASE, endtime=life, framing="krb5", rng=rng)           # mutual: an AP-REP each
    other = mint(make_keytab(rng=rng, kvno=9), now=BASE, endtime=life, framing="raw", rng=rng)
    v = Validator(kt, cold_start=False, replay_capacity=1 << 15, max_token_size=16 * 1024)
    return v, good, other


def run_batch(v: Validator, good: object, other: object, i: int, rng: random.Random) -> dict[str, int]:
    now = BASE + i * STEP
    valid = good.variants(7000, now=now)  # type: ignore[attr-defined]
    headers = {j for j in range(0, 7000, 14)}          # 500 of them sent as "Negotiate <b64>" strings
    counts = {"accepted": 0, "replay": 0, "mutated_rejected": 0, "garbage_rejected": 0, "kvno": 0,
              "too_large": 0}
    for j, tok in enumerate(valid):
        t = "Negotiate " + base64.b64encode(tok).decode() if j in headers else tok
        res = v.validate(t, now=now)
        counts["accepted"] += res.response_token is not None
    for tok in rng.sample(valid, 500):
        try:
            v.validate(tok, now=now)
        except Replay:
            counts["replay"] += 1
    for tok in rng.sample(valid, 1000):
        b = bytearray(tok)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        try:
            v.validate(bytes(b), now=now)
        except KerberosError:
            counts["mutated_rejected"] += 1
    for _ in range(1000):
        junk = rng.randbytes(rng.randrange(600))
        if rng.random() < 0.3:
            junk = b"\x60" + junk            # looks like a GSS token
        try:
            v.validate(junk, now=now)
        except KerberosError:
            counts["garbage_rejected"] += 1
    for tok in other.variants(490, now=now):  # type: ignore[attr-defined]
        try:
            v.validate(tok, now=now)
        except KerberosError as exc:
            counts["kvno"] += exc.code == "key_version_mismatch"
    for n in range(10):
        try:
            v.validate(b"\x60" + bytes(20_000 + n), now=now)
        except KerberosError as exc:
            counts["too_large"] += 1
            assert exc.code == "malformed"
    return counts


def test_rss_flat_over_a_million_validations(setup: tuple[Validator, object, object]) -> None:
    v, good, other = setup
    rng = random.Random(11)
    nbatches = TOTAL // BATCH
    start = time.monotonic()
    totals: dict[str, int] = {}
    rss_start = 0
    for i in range(nbatches):
        if i == WARMUP_BATCHES:
            gc.collect()
            rss_start = rss()
        c = run_batch(v, good, other, i, rng)
        for k, n in c.items():
            totals[k] = totals.get(k, 0) + n
        # every batch: all valid tokens accepted once, every replay and mutation refused
        assert c == {"accepted": 7000, "replay": 500, "mutated_rejected": 1000, "garbage_rejected": 1000,
                     "kvno": 490, "too_large": 10}, c
    gc.collect()
    rss_end = rss()
    elapsed = time.monotonic() - start
    validations = sum(totals.values())
    assert validations == TOTAL
    print(f"\n{validations} validations in {elapsed:.1f} s; RSS after warm-up {rss_start / 2**20:.1f} MiB, "
          f"at end {rss_end / 2**20:.1f} MiB, growth {(rss_end - rss_start) / 1024:.0f} KiB; {totals}")
    stats = v.replay_stats()
    assert stats is not None and stats["entries"] <= 2 * 7000, stats   # one batch (+ the one expiring)
    assert rss_end - rss_start <= RSS_BOUND, (rss_start, rss_end)
