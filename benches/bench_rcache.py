"""Replay-cache benchmarks: what one check costs in each backend.

Run: ``PYTHONPATH=src python -m pytest benches/bench_rcache.py --benchmark-enable -s``
(``-k "not redis"`` without a redis-server).

- ``test_c_insert``: fresh keys inserted in C (``rcache_bench`` -> fk_rc_bench) while ``live`` entries are
  alive and the oldest expire at the insert rate (steady state, 301 s lifetimes); ``extra_info`` carries
  ns per insert (min and median over rounds). This is the cost the validator pays per token.
- ``test_redis_*``: one check through the Python API on loopback, unbatched and pipelined by 64.
- ``test_validate_shm_vs_memory``: full ``Validator.validate()`` on distinct real tokens with each cache
  (pre-filled with 10^5 live entries), rounds interleaved; the row is one round (both caches), extra_info
  the shm/memory ratio (the target is 1.10; reported, not asserted).
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Validator, _native
from fastkrb.replay import MemoryReplayCache, ShmReplayCache
from fastkrb.testing import make_keytab, mint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

NOW = 1_800_000_000.0
SPN = "HTTP/api.example.test@EXAMPLE.TEST"


def _report(benchmark: Any, label: str, values: list[float]) -> None:
    benchmark.extra_info["ns_min"] = round(min(values), 1)
    benchmark.extra_info["ns_median"] = round(statistics.median(values), 1)
    print(f"\n{label}: min {min(values):.1f} ns, median {statistics.median(values):.1f} ns "
          f"over {len(values)} rounds")


@pytest.mark.parametrize("live", [10**3, 10**5, 10**6], ids=["1e3", "1e5", "1e6"])
@pytest.mark.parametrize("kind", ["memory", "shm"])
def test_c_insert(benchmark: Any, tmp_path: Path, kind: str, live: int) -> None:
    """ns per insert, measured in C, with `live` entries alive."""
    results: list[float] = []
    rounds = itertools.count()

    def run() -> float:
        path = str(tmp_path / f"rc{next(rounds)}")
        ns = _native.rcache_bench(kind, live, 300_000, path if kind == "shm" else None, random.getrandbits(63))
        if os.path.exists(path):
            os.unlink(path)
        results.append(ns)
        return ns

    benchmark.pedantic(run, rounds=5, iterations=1)
    _report(benchmark, f"{kind} insert at {live:.0e} live", results)


# -- Redis ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from support.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    srv = RedisServer(tmp_path_factory.mktemp("redis-bench"))
    srv.start()
    yield srv.url
    srv.stop()


def _fresh_keys() -> Callable[[], bytes]:
    counter = itertools.count()
    salt = os.urandom(8)
    return lambda: salt + next(counter).to_bytes(8, "little")


def test_redis_unbatched(benchmark: Any, redis_url: str) -> None:
    """One SET NX PX GET (+ the marker GET) per check, one round trip each."""
    pytest.importorskip("redis")
    from fastkrb.replay.redis import RedisReplayCache

    c = RedisReplayCache.from_url(redis_url + "?prefix=bench1:", cold_start=False)
    key = _fresh_keys()
    benchmark(lambda: c.insert(key(), NOW + 300, NOW))
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_check"] = round(benchmark.stats.stats.median * 1e6, 2)


def test_redis_pipelined_64(benchmark: Any, redis_url: str) -> None:
    """64 checks per round trip (insert_many); extra_info: µs per check."""
    pytest.importorskip("redis")
    from fastkrb.replay.redis import RedisReplayCache

    c = RedisReplayCache.from_url(redis_url + "?prefix=bench64:", cold_start=False)
    key = _fresh_keys()
    benchmark(lambda: c.insert_many([(key(), NOW + 300) for _ in range(64)], NOW))
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_check"] = round(benchmark.stats.stats.median * 1e6 / 64, 2)


# -- full validate() -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokens() -> tuple[Any, list[bytes]]:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(1))
    m = mint(kt, server=SPN, now=NOW, framing="krb5", rng=random.Random(2))
    rng = random.Random(3)
    toks = [m.again(now=NOW, rng=rng).token for _ in range(1500)]
    return kt, [t if isinstance(t, bytes) else t.encode() for t in toks]


def _prefilled(cache: Any, n: int = 100_000) -> Any:
    rng = random.Random(4)
    cache.insert_many([(rng.randbytes(16), NOW + 300) for _ in range(n)], NOW)
    return cache


def test_validate_shm_vs_memory(benchmark: Any, tmp_path: Path, tokens: tuple[Any, list[bytes]]) -> None:
    """One round validates the 1500 tokens once with each cache, the two in turn (the order alternates by
    round, so drift cancels); the caches are built and pre-filled in the untimed setup. The row is that round
    (3000 validations); extra_info has each cache's ns per validate() (median over rounds) and their ratio."""
    kt, toks = tokens
    per: dict[str, list[float]] = {"memory": [], "shm": []}
    rounds = itertools.count()

    def setup() -> tuple[tuple[list[tuple[str, Validator]]], dict[str, Any]]:
        r = next(rounds)
        pair = []
        for kind in ("memory", "shm") if r % 2 else ("shm", "memory"):
            cache = (MemoryReplayCache(1 << 20) if kind == "memory"
                     else ShmReplayCache(str(tmp_path / f"v{r}"), 1 << 20, 300.0, False))
            pair.append((kind, Validator(kt, replay_cache=_prefilled(cache), cold_start=False)))
        return (pair,), {}

    def one_round(pair: list[tuple[str, Validator]]) -> None:
        for kind, v in pair:
            validate = v.validate
            t0 = time.perf_counter_ns()
            for t in toks:
                validate(t, now=NOW)
            per[kind].append((time.perf_counter_ns() - t0) / len(toks))
            assert (v.replay_stats() or {})["inserts"] == 100_000 + len(toks)

    benchmark.pedantic(one_round, setup=setup, rounds=8, iterations=1)
    mem, shm = statistics.median(per["memory"]), statistics.median(per["shm"])
    benchmark.extra_info.update({"validate_memory_ns": round(mem), "validate_shm_ns": round(shm),
                                 "ratio": round(shm / mem, 3), "rounds": len(per["shm"])})
    print(f"\nvalidate(): memory {mem:.0f} ns, shm {shm:.0f} ns, ratio {shm / mem:.3f}")
    # The target is a ratio <= 1.10; it is reported (extra_info, stdout), never asserted: a timing
    # assertion would fail on a busy machine without telling anything about the code.
