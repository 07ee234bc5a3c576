"""Two sidecar instances (as on two hosts) sharing one replay cache in a real Redis: a token accepted by
one is refused by the other, over both front doors. Also exercises the sidecar's asynchronous path
(``Validator.avalidate``: the Redis round trip is awaited, never blocking the event loop)."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkrb import Replay, ReplayCacheUnavailable
from fastkrb.client import AsyncClient, Client, RemoteAuthResult
from fastkrb.testing import make_keytab, mint
from support.redis_server import RedisServer, redis_server_binary
from support.sidecar import Sidecar

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")

SERVICE = "HTTP/fleet.example.test@EXAMPLE.TEST"
CLIENT = "frank@EXAMPLE.TEST"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sidecar, Sidecar, Path, RedisServer]]:
    d = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(d / "redis")
    redis.start()
    kt = d / "fleet.keytab"
    kt.write_bytes(make_keytab((SERVICE,), rng=random.Random(6)).to_bytes())
    url = redis.url + "?prefix=fastkrb:test:"
    a = Sidecar(d, kt, name="host-a", workers=2, args=("--replay-cache", url)).start()
    b = Sidecar(d, kt, name="host-b", workers=1, args=("--replay-cache", url)).start()
    try:
        yield a, b, kt, redis
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
        redis.stop()


def test_accepted_by_one_refused_by_the_other(fleet: tuple[Sidecar, Sidecar, Path, RedisServer]) -> None:
    a, b, kt, _ = fleet
    m = mint(str(kt), client=CLIENT, server=SERVICE, now=time.time() + 1)
    toks = m.variants(20, now=time.time() + 1)
    with Client(a.socket) as ca, Client(b.socket) as cb:
        assert ca.validate(toks[0]).client == CLIENT
        with pytest.raises(Replay) as ei:
            cb.validate(toks[0])
        assert ei.value.details["first_seen_ago"] < 10
        # and the other way round, pipelined
        out_b = cb.validate_many(toks[1:10])
        out_a = ca.validate_many(toks[1:10])
        assert all(isinstance(r, RemoteAuthResult) for r in out_b)
        assert all(isinstance(r, Replay) for r in out_a)
    # over HTTP as a proxy would ask
    value = "Negotiate " + base64.b64encode(toks[10]).decode()
    assert b.http("GET", "/auth", {"Authorization": value})[0] == 200
    status, h, _ = a.http("GET", "/auth", {"Authorization": value})
    assert status == 401 and h["x-auth-error"] == "replay"


def test_async_client_against_the_redis_backed_sidecar(fleet: tuple[Sidecar, Sidecar, Path, RedisServer]) -> None:
    a, b, kt, _ = fleet
    m = mint(str(kt), client=CLIENT, server=SERVICE, now=time.time() + 1)
    toks = m.variants(200, now=time.time() + 1)

    async def go() -> None:
        async with AsyncClient(a.socket) as ca, AsyncClient(b.socket) as cb:
            first = await asyncio.gather(*(ca.validate(t) for t in toks))
            assert all(r.client == CLIENT for r in first)
            again = await cb.validate_many(toks)
            assert all(isinstance(r, Replay) for r in again)

    asyncio.run(go())


def _settled(s: Sidecar, want: int, timeout: float = 20.0) -> bytes:
    """/healthz answers `want` on 10 requests in a row: each worker probes Redis on its own (every 2 s),
    and a request reaches either, so one answer says nothing about the other worker."""
    deadline, streak, body = time.monotonic() + timeout, 0, b""
    while streak < 10:
        assert time.monotonic() < deadline, f"/healthz did not settle on {want}"
        status, _, body = s.http("GET", "/healthz")
        streak = streak + 1 if status == want else 0
        time.sleep(0.05)
    return body


def test_healthz_follows_redis(fleet: tuple[Sidecar, Sidecar, Path, RedisServer]) -> None:
    a, _, kt, redis = fleet
    _settled(a, 200)
    redis.pause()   # hangs without losing data
    try:
        assert b'"reachable": false' in _settled(a, 503)
        tok = mint(str(kt), client=CLIENT, server=SERVICE, now=time.time() + 1).token_bytes
        with Client(a.socket, timeout=10) as c, pytest.raises(ReplayCacheUnavailable):
            c.validate(tok)   # and validation fails closed meanwhile
    finally:
        redis.resume()
    _settled(a, 200)
