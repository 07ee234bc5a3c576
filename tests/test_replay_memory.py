"""The in-process replay cache and the fastkrb.replay interface: atomicity across threads, exact capacity
(fail closed, then expiry frees room), expiry on an injected clock, spec strings."""

from __future__ import annotations

import logging
import os
import random
import threading

import pytest

from fastkrb import KerberosError, Validator
from fastkrb.errors import ReplayCacheUnavailable
from fastkrb.replay import MemoryReplayCache, ReplayCache, ShmReplayCache, open_replay_cache
from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_800_000_000.0


def keys(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


def test_insert_replay_first_seen_and_expiry_on_injected_clock() -> None:
    c = MemoryReplayCache(1000)
    assert isinstance(c, ReplayCache)
    k = keys(1)[0]
    assert c.insert(k, NOW + 301, NOW) == (True, None)
    assert c.insert(k, NOW + 301, NOW + 0.25) == (False, pytest.approx(NOW, abs=1e-6))
    # still present just before expiry, gone at it: the clock is the caller's
    assert c.insert(k, NOW + 602, NOW + 300.999)[0] is False
    assert c.insert(k, NOW + 602, NOW + 301) == (True, None)
    st = c.stats()
    assert st["inserts"] == 2 and st["hits"] == 2 and st["capacity"] == 1000
    assert set(st) >= {"entries", "inserts", "hits", "evictions", "capacity", "full", "errors"}


def test_capacity_fails_closed_then_expiry_frees_room() -> None:
    c = MemoryReplayCache(16)
    ks = keys(40)
    for i, k in enumerate(ks[:16]):
        assert c.insert(k, NOW + 10 + i, NOW) == (True, None)
    with pytest.raises(ReplayCacheUnavailable) as ei:
        c.insert(ks[16], NOW + 100, NOW)
    assert ei.value.code == "replay_cache_unavailable" and "full" in ei.value.cause
    # a full cache still recognises its live entries as replays
    assert c.insert(ks[3], NOW + 13, NOW + 1)[0] is False
    assert c.stats()["full"] == 1 and c.stats()["entries"] == 16
    # the oldest two expire at NOW+10 and NOW+11: exactly two new entries fit at NOW+11
    assert c.insert(ks[17], NOW + 200, NOW + 11) == (True, None)
    assert c.insert(ks[18], NOW + 200, NOW + 11) == (True, None)
    with pytest.raises(ReplayCacheUnavailable):
        c.insert(ks[19], NOW + 200, NOW + 11)
    assert c.stats()["evictions"] == 2
    # an expired key can be inserted again (its authenticator would fail the skew check anyway)
    assert c.insert(ks[0], NOW + 300, NOW + 12) == (True, None)


def test_threads_accept_each_key_exactly_once() -> None:
    c = MemoryReplayCache(1 << 16)
    ks = keys(5000, seed=2)
    fresh = [0] * len(ks)
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(order: list[int]) -> None:
        barrier.wait()
        mine = [i for i in order if c.insert(ks[i], NOW + 300, NOW)[0]]
        with lock:
            for i in mine:
                fresh[i] += 1

    orders = [list(range(len(ks))) for _ in range(8)]
    for o in orders[4:]:
        random.Random(len(o)).shuffle(o)
    ts = [threading.Thread(target=worker, args=(o,)) for o in orders]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert fresh == [1] * len(ks)
    assert c.stats()["hits"] == 7 * len(ks)


def test_insert_many_and_close_fails_closed() -> None:
    c = MemoryReplayCache(64)
    ks = keys(3, seed=3)
    out = c.insert_many([(ks[0], NOW + 300), (ks[1], NOW + 300), (ks[0], NOW + 300)], NOW)
    assert out == [(True, None), (True, None), (False, pytest.approx(NOW))]
    c.close()
    with pytest.raises(ReplayCacheUnavailable):
        c.insert(ks[2], NOW + 300, NOW)


def test_bad_key_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        MemoryReplayCache(64).insert(b"short", NOW + 1, NOW)


def test_spec_strings(tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(open_replay_cache("memory", capacity=100), MemoryReplayCache)
    shm = open_replay_cache(f"shm:{tmp_path}/rc", capacity=100)
    assert isinstance(shm, ShmReplayCache) and shm.capacity == 100
    with caplog.at_level(logging.WARNING, logger="fastkrb"):
        assert open_replay_cache("none") is None
    assert "replay cache disabled" in caplog.text
    for bad in ("memcached://x", "shm:", "Memory"):
        with pytest.raises(ValueError):
            open_replay_cache(bad)


def test_validator_accepts_every_spec_and_objects(tmp_path: os.PathLike[str]) -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(5))
    tok = mint(kt, server=SPN, now=NOW, rng=random.Random(6)).token
    for spec in ("memory", f"shm:{tmp_path}/v.rc", MemoryReplayCache(128)):
        v = Validator(kt, replay_cache=spec, cold_start=False)  # type: ignore[arg-type]
        v.validate(tok, now=NOW)
        with pytest.raises(KerberosError) as ei:
            v.validate(tok, now=NOW + 1)
        assert ei.value.code == "replay"
        assert (v.replay_stats() or {})["hits"] == 1
    with pytest.raises(TypeError):
        Validator(kt, replay_cache=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Validator(kt, replay_cache="bogus")


def test_validator_full_memory_cache_is_replay_cache_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(7))
    v = Validator(kt, replay_cache=MemoryReplayCache(16), cold_start=False)
    toks = [mint(kt, server=SPN, now=NOW, rng=random.Random(100 + i)).token for i in range(19)]
    for t in toks[:16]:
        v.validate(t, now=NOW)
    with caplog.at_level(logging.WARNING, logger="fastkrb"):
        for t in toks[16:]:
            with pytest.raises(KerberosError) as ei:
                v.validate(t, now=NOW)
            assert ei.value.code == "replay_cache_unavailable"
    # said in the log (once, not per request) and in the stats
    full = [r for r in caplog.records if "replay cache full" in r.getMessage()]
    assert len(full) == 1 and "16 live entries, capacity 16" in full[0].getMessage()
    assert (v.replay_stats() or {})["full"] == 3
    # entries live until ctime + skew + 1: then there is room again; the expired authenticators
    # themselves are refused by the skew check, never accepted twice
    late = mint(kt, server=SPN, now=NOW + 302.5, rng=random.Random(99)).token
    v.validate(late, now=NOW + 302.5)
    with pytest.raises(KerberosError) as ei:
        v.validate(toks[0], now=NOW + 302.5)
    assert ei.value.code == "clock_skew"
