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


# -- the growing table (native/rtab.h, fk_gtab) ----------------------------------------------------------

def _all_fresh(c: MemoryReplayCache, ks: list[bytes], expiry: float, now: float) -> None:
    for k in ks:
        assert c.insert(k, expiry, now) == (True, None)


def _all_replays(c: MemoryReplayCache, ks: list[bytes], now: float, seen: float) -> None:
    bad = [i for i, k in enumerate(ks) if c.insert(k, NOW + 999, now) != (False, pytest.approx(seen))]
    assert bad == []


def test_fresh_cache_maps_a_small_table_whatever_its_capacity() -> None:
    """Memory follows the entries held: a fresh cache of the default capacity (2^20) maps a table for 4096
    entries (about 250 KiB, where a table for the capacity is 60 MiB), and 1000 entries stay in it."""
    c = MemoryReplayCache()
    st = c.stats()
    assert st["capacity"] == 1 << 20 and st["table_capacity"] == 4096
    assert 100_000 < st["bytes"] <= 256 * 1024
    _all_fresh(c, keys(1000, seed=10), NOW + 300, NOW)
    assert c.stats()["bytes"] == st["bytes"] and c.stats()["grows"] == 0


def test_replays_found_in_both_tables_while_the_table_grows() -> None:
    c = MemoryReplayCache(100_000)
    ks = keys(4097, seed=11)
    _all_fresh(c, ks[:4096], NOW + 300, NOW)
    assert c.stats()["table_capacity"] == 4096 and c.stats()["migrating"] == 0
    # the 4097th entry starts a table twice the size; 4 entries move per insert, the rest wait in the old
    assert c.insert(ks[4096], NOW + 300, NOW) == (True, None)
    st = c.stats()
    assert st["table_capacity"] == 8192 and st["grows"] == 1 and st["migrating"] == 4096 - 4
    assert st["entries"] == 4097
    # every key is a replay, wherever it sits (replays move nothing: the move is still under way after)
    _all_replays(c, ks, NOW + 1, NOW)
    assert c.stats()["migrating"] == 4096 - 4 and c.stats()["hits"] == 4097
    # fresh inserts during the move: each is new, each moves 4 more; old and new keys stay replays
    more = keys(600, seed=12)
    _all_fresh(c, more, NOW + 300, NOW + 2)
    assert c.stats()["migrating"] == 4096 - 4 - 4 * 600
    _all_replays(c, ks, NOW + 3, NOW)
    _all_replays(c, more, NOW + 3, NOW + 2)
    # the move ends (the old table is unmapped) and nothing was lost
    _all_fresh(c, keys(500, seed=13), NOW + 300, NOW + 4)
    st = c.stats()
    assert st["migrating"] == 0 and st["entries"] == 4097 + 600 + 500
    _all_replays(c, ks, NOW + 5, NOW)
    _all_replays(c, more, NOW + 5, NOW + 2)


def test_replays_found_after_many_growths() -> None:
    """From a first table of 16 entries to 36,000 (12 growths, the last one still moving): every key is a
    replay, wherever it sits."""
    c = MemoryReplayCache(1 << 20, initial_capacity=16)
    ks = keys(36_000, seed=14)
    _all_fresh(c, ks, NOW + 300, NOW)
    st = c.stats()
    assert st["grows"] == 12 and st["table_capacity"] == 65536 and st["migrating"] > 0
    _all_replays(c, ks, NOW + 1, NOW)
    st = c.stats()
    assert st["entries"] == st["inserts"] == st["hits"] == 36_000 and st["migrating"] == 32768 - 4 * 3232


def test_capacity_is_the_exact_bound_across_growth() -> None:
    """The table grows up to the capacity, not past it (16 .. 8192, then 10,000): the 10,001st live entry
    fails closed as a fixed table's would, and the held ones are still replays."""
    c = MemoryReplayCache(10_000, initial_capacity=16)
    ks = keys(10_001, seed=15)
    _all_fresh(c, ks[:10_000], NOW + 300, NOW)
    with pytest.raises(ReplayCacheUnavailable) as ei:
        c.insert(ks[10_000], NOW + 300, NOW)
    assert "full" in ei.value.cause
    st = c.stats()
    assert st["entries"] == 10_000 and st["full"] == 1 and st["table_capacity"] == 10_000
    _all_replays(c, ks[:10_000], NOW + 1, NOW)
    # one expiry makes room for exactly one
    c2 = MemoryReplayCache(10_000, initial_capacity=16)
    for i, k in enumerate(ks[:10_000]):
        assert c2.insert(k, NOW + (100 if i == 0 else 200), NOW)[0]
    assert c2.insert(ks[10_000], NOW + 300, NOW + 100.5) == (True, None)
    with pytest.raises(ReplayCacheUnavailable):
        c2.insert(keys(1, seed=16)[0], NOW + 300, NOW + 100.5)
    assert c2.stats()["evictions"] == 1 and c2.stats()["full"] == 1


def test_expiry_pops_both_tables_and_the_table_shrinks_when_the_load_drops() -> None:
    c = MemoryReplayCache()
    fresh_bytes = c.stats()["bytes"]
    ks = keys(40_000, seed=17)
    _all_fresh(c, ks, NOW + 10, NOW)
    st = c.stats()
    assert st["migrating"] > 0 and st["table_capacity"] == 65536 and st["bytes"] > 10 * fresh_bytes
    # all expire: one insert pops them from the old table and the new one, in FIFO order
    assert c.insert(b"\x01" * 16, NOW + 400, NOW + 10) == (True, None)
    st = c.stats()
    assert st["entries"] == 1 and st["evictions"] == 40_000 and st["migrating"] == 0
    # an eighth full or less: each insert starts a table a quarter the size, down to the first size
    for i in range(4):
        assert c.insert(bytes([2 + i]) * 16, NOW + 400, NOW + 11) == (True, None)
    st = c.stats()
    assert st["table_capacity"] == 4096 and st["shrinks"] == 2 and st["bytes"] == fresh_bytes
    assert c.insert(b"\x01" * 16, NOW + 400, NOW + 12) == (False, pytest.approx(NOW + 10))
    # an expired key counts as absent, from whichever table
    assert c.insert(ks[7], NOW + 400, NOW + 12) == (True, None)


@pytest.mark.parametrize("first", [16, 4096])
def test_threads_accept_each_key_exactly_once_while_the_table_grows(first: int) -> None:
    c = MemoryReplayCache(1 << 20, initial_capacity=first)
    ks = keys(20_000, seed=18)
    fresh = [0] * len(ks)
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(order: list[int]) -> None:
        barrier.wait()
        mine = [i for i in order if c.insert(ks[i], NOW + 300, NOW)[0]]
        with lock:
            for i in mine:
                fresh[i] += 1

    orders = [list(range(len(ks))) for _ in range(4)]
    for o in orders[2:]:
        random.Random(len(o) + len(orders)).shuffle(o)
    ts = [threading.Thread(target=worker, args=(o,)) for o in orders]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert fresh == [1] * len(ks)
    st = c.stats()
    assert st["hits"] == 3 * len(ks) and st["entries"] == len(ks) and st["grows"] >= 2
