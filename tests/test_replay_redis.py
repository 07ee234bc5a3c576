"""The Redis replay cache against a real redis-server on loopback: exactly once across processes, fail
closed while Redis is down or hung and accepted again after, the cold-start rule when the namespace's
marker is lost (restart without persistence, FLUSHALL), TTLs from the injected clock, the pre-7.0
command pair, and the asyncio API."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.errors import ReplayCacheUnavailable
from fastkrb.replay.redis import RedisReplayCache
from fastkrb.testing import make_keytab, mint
from support.redis_server import RedisServer, redis_server_binary

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_800_000_000.0
CTX = mp.get_context("spawn")

if redis_server_binary() is None:
    pytest.skip("redis-server not installed (apt-get install redis-server; make test does)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def url(server: RedisServer, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (the server is shared)."""
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    return f"{server.url}?prefix=t{random.getrandbits(48):x}:"


@pytest.fixture(scope="module")
def kt() -> Keytab:
    return make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(21))


def keys(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


def code_of(v: Validator, token: Any, **kw: Any) -> str:
    with pytest.raises(KerberosError) as ei:
        v.validate(token, **kw)
    return ei.value.code


def _validate_worker(url: str, kt_bytes: bytes, tokens: list[bytes], order: list[int], barrier: Any,
                     out: Any) -> None:
    v = Validator(Keytab.from_bytes(kt_bytes), replay_cache=url, cold_start=False)
    accepted, codes = [], Counter[str]()
    barrier.wait()
    for i in order:
        try:
            v.validate(tokens[i], now=NOW + 1)
            accepted.append(i)
        except KerberosError as e:
            codes[e.code] += 1
    out.put((accepted, dict(codes)))


def test_processes_accept_every_token_exactly_once(url: str, kt: Keytab) -> None:
    tokens = [mint(kt, server=SPN, now=NOW, framing="krb5", rng=random.Random(500 + i)).token for i in range(200)]
    nproc = 4
    barrier, out = CTX.Barrier(nproc), CTX.Queue()
    orders = [list(range(len(tokens))) for _ in range(nproc)]
    orders[3].reverse()
    ps = [CTX.Process(target=_validate_worker, args=(url, kt.to_bytes(), tokens, o, barrier, out)) for o in orders]
    for p in ps:
        p.start()
    results = [out.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(30)
    counts = Counter(i for acc, _ in results for i in acc)
    assert sorted(counts) == list(range(len(tokens))) and set(counts.values()) == {1}
    assert sum((Counter(c) for _, c in results), Counter()) == {"replay": (nproc - 1) * len(tokens)}


def test_insert_first_seen_ttl_from_injected_clock(url: str) -> None:
    c = RedisReplayCache.from_url(url, clock_skew=300.0, cold_start=False)
    k = keys(1)[0]
    assert c.insert(k, NOW + 301.25, NOW) == (True, None)
    fresh, first = c.insert(k, NOW + 301.25, NOW + 3)
    assert not fresh and first == pytest.approx(NOW, abs=1e-6)
    r = redis.Redis.from_url(url.split("?")[0])
    pttl = r.pttl(c.prefix + k.hex())
    assert 301_000 <= pttl <= 301_250   # expiry - now, whatever the wall clock says
    assert r.get(c.prefix + "started") is not None
    out = c.insert_many([(kk, NOW + 10) for kk in [*keys(3, seed=2), k]], NOW)
    assert out[:3] == [(True, None)] * 3 and out[3][0] is False
    st = c.stats(count_entries=True)
    assert st["entries"] == 4 and st["inserts"] == 4 and st["hits"] == 2


def test_legacy_command_pair_has_the_same_semantics(url: str) -> None:
    c = RedisReplayCache.from_url(url + "&legacy=1", cold_start=False)
    k = keys(1, seed=3)[0]
    assert c.insert(k, NOW + 301, NOW) == (True, None)
    assert c.insert(k, NOW + 301, NOW + 1) == (False, pytest.approx(NOW, abs=1e-6))
    # a SET retried after a lost reply finds its own value: still fresh
    assert c._answers([(k, NOW + 301, NOW)], [b"v"], [None, b"v", b"m"]) == [(True, None)]


def test_redis_down_fails_closed_then_back_with_cold_start(server: RedisServer, url: str, kt: Keytab) -> None:
    v = Validator(kt, replay_cache=url, cold_start=True)
    t0 = v._replay.started
    toks = [mint(kt, server=SPN, now=t0 + 10, rng=random.Random(600 + i)).token for i in range(4)]
    v.validate(toks[0], now=t0 + 10)
    assert code_of(v, toks[0], now=t0 + 11) == "replay"
    server.stop()
    try:
        start = time.monotonic()
        with pytest.raises(KerberosError) as ei:
            v.validate(toks[1], now=t0 + 12)
        assert ei.value.code == "replay_cache_unavailable" and "ConnectionError" in ei.value.cause
        assert time.monotonic() - start < 2
    finally:
        server.start()   # no persistence: every key and the start marker are gone
    # back: the namespace restarted empty at t0+20; what predates it is refused for clock_skew seconds,
    # including the replay of toks[0] that the lost data would have caught
    assert code_of(v, toks[0], now=t0 + 20) == "replay_cache_unavailable"
    assert code_of(v, toks[1], now=t0 + 20) == "replay_cache_unavailable"
    assert v._replay.started == pytest.approx(t0 + 20)
    fresh = mint(kt, server=SPN, now=t0 + 21, rng=random.Random(700)).token
    v.validate(fresh, now=t0 + 21)
    assert code_of(v, fresh, now=t0 + 22) == "replay"
    assert (v.replay_stats() or {})["restarts"] == 1


def test_hung_redis_fails_closed_within_the_timeout_and_recovers(server: RedisServer, url: str) -> None:
    c = RedisReplayCache.from_url(url, cold_start=False, socket_timeout=0.2)
    k1, k2 = keys(2, seed=4)
    assert c.insert(k1, NOW + 300, NOW)[0]
    server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(ReplayCacheUnavailable) as ei:
            c.insert(k2, NOW + 300, NOW)
        assert "Timeout" in ei.value.cause and time.monotonic() - start < 1.5
    finally:
        server.resume()
    # same data (nothing was lost): the replay is still caught, and fresh keys go in
    assert c.insert(k1, NOW + 300, NOW + 1)[0] is False
    # k2 may or may not have reached Redis before the timeout; either answer is safe, never an error
    c.insert(k2, NOW + 300, NOW + 1)


def test_flushall_triggers_the_cold_start_rule(url: str, kt: Keytab) -> None:
    v = Validator(kt, replay_cache=url, cold_start=True)
    t0 = v._replay.started
    old = mint(kt, server=SPN, now=t0 + 5, rng=random.Random(800)).token
    v.validate(old, now=t0 + 5)
    redis.Redis.from_url(url.split("?")[0]).flushall()
    with pytest.raises(KerberosError) as ei:
        v.validate(old, now=t0 + 6)      # the replay the flush would have let through
    assert ei.value.code == "replay_cache_unavailable" and "RFC 4120" in ei.value.cause
    assert ei.value.details["cache_started"] == pytest.approx(t0 + 6)
    new = mint(kt, server=SPN, now=t0 + 7, rng=random.Random(801)).token
    v.validate(new, now=t0 + 7)
    # after the skew window the rule is over
    late = mint(kt, server=SPN, now=t0 + 400, rng=random.Random(802)).token
    v.validate(late, now=t0 + 400)


def test_marker_written_by_another_instance_is_adopted(url: str) -> None:
    a = RedisReplayCache.from_url(url, cold_start=True)
    b = RedisReplayCache.from_url(url, cold_start=True)
    assert a.started == b.started   # one namespace, one start
    redis.Redis.from_url(url.split("?")[0]).flushall()
    k1, k2 = keys(2, seed=5)
    t = time.time() + 1000
    # a finds the marker missing and writes it; b adopts a's marker on its next round trip
    with pytest.raises(ReplayCacheUnavailable):
        a.insert(k1, t - 100 + 301, t)
    with pytest.raises(ReplayCacheUnavailable):
        b.insert(k2, t - 100 + 301, t + 1)
    assert b.started == a.started == pytest.approx(t)


def test_asyncio_api(url: str) -> None:
    async def run() -> list[Any]:
        c = RedisReplayCache.from_url(url, cold_start=False, connect="async")
        k1, k2 = keys(2, seed=6)
        out = [await c.ainsert(k1, NOW + 300, NOW)]
        out += await c.ainsert_many([(k1, NOW + 300), (k2, NOW + 300)], NOW + 1)
        with pytest.raises(ReplayCacheUnavailable):
            c.insert(k2, NOW + 300, NOW)   # no sync client configured: fails closed, not crashes
        await c.aclose()
        return out

    assert asyncio.run(run()) == [(True, None), (False, pytest.approx(NOW)), (True, None)]


def test_unreachable_at_start_fails_closed(tmp_path: Path) -> None:
    from support.procs import free_port

    c = RedisReplayCache.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    with pytest.raises(ReplayCacheUnavailable):
        c.insert(keys(1)[0], NOW + 300, NOW)
    assert c.stats()["errors"] >= 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from support.redis_server import RedisCluster

    c = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
    except (RuntimeError, OSError) as exc:
        c.stop()
        pytest.skip(f"cannot start a local Redis Cluster: {exc}")
    yield c
    c.stop()


def test_redis_cluster_single_key_commands(cluster: Any, kt: Keytab) -> None:
    url = cluster.url + f"&prefix=c{random.getrandbits(32):x}:"
    c = RedisReplayCache.from_url(url, cold_start=False)
    ks = keys(300, seed=7)
    assert c.insert_many([(k, NOW + 300) for k in ks], NOW) == [(True, None)] * len(ks)
    again = c.insert_many([(k, NOW + 300) for k in ks], NOW + 1)
    assert all(not fresh and first == pytest.approx(NOW) for fresh, first in again)
    # the keys really are spread over the shards (no hash tags needed: one key per command)
    per_node = [redis.Redis(port=n.port).dbsize() for n in cluster.nodes]
    assert all(n > 0 for n in per_node) and sum(per_node) == len(ks) + 1
    # and the validator works over it
    v = Validator(kt, replay_cache=url, cold_start=False)
    tok = mint(kt, server=SPN, now=NOW, rng=random.Random(900)).token
    v.validate(tok, now=NOW)
    assert code_of(v, tok, now=NOW) == "replay"

    async def run() -> list[Any]:
        a = RedisReplayCache.from_url(url, cold_start=False, connect="async")
        out = await a.ainsert_many([(ks[0], NOW + 300), (keys(1, seed=8)[0], NOW + 300)], NOW + 2)
        await a.aclose()
        return out

    assert asyncio.run(run()) == [(False, pytest.approx(NOW)), (True, None)]
