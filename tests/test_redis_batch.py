"""Redis at fleet speed, against a real redis-server: the inserts of one turn of the event loop are one round trip
(first insert wins, also inside one batch; a failed round trip fails every insert of it closed), and the sidecar's
binary front door checks a whole chunk in C around that round trip and answers its frames in order: accepted,
malformed, replay (a duplicate in the same chunk, a token another request already used), identity, and
``replay_cache_unavailable`` for every frame of a chunk sent while Redis is down."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkrb.errors import ReplayCacheUnavailable
from fastkrb.replay.redis import RedisReplayCache
from fastkrb.sidecar import protocol
from fastkrb.testing import make_keytab, mint
from support.fake_transport import FakeTransport
from support.redis_server import RedisServer, redis_server_binary
from support.sidecar import Sidecar, parse_responses, recv_all

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")

SERVICE = "HTTP/batch.example.test@EXAMPLE.TEST"
CLIENT = "grace@EXAMPLE.TEST"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis-batch"))
    srv.start()
    yield srv
    srv.stop()


def _cache(srv: RedisServer) -> RedisReplayCache:
    if srv.proc is None or srv.proc.poll() is not None:
        srv.start()
    return RedisReplayCache.from_url(f"{srv.url}?prefix=b{random.getrandbits(48):x}:", cold_start=False,
                                     connect="async")


def _keys(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


# -- the cache ------------------------------------------------------------------------------------------------


def test_one_turn_of_the_loop_is_one_round_trip_and_the_first_insert_wins(redis_srv: RedisServer) -> None:
    k = _keys(4, seed=1)

    async def go() -> None:
        c = _cache(redis_srv)
        assert await c.ainsert(k[3], NOW + 301, NOW) == (True, None)   # already there before the batch
        before = c.stats()["batches"]
        out = await asyncio.gather(c.ainsert(k[0], NOW + 301, NOW), c.ainsert(k[1], NOW + 301, NOW),
                                   c.ainsert(k[0], NOW + 301, NOW + 0.5),   # the same authenticator, same batch
                                   c.ainsert_many([(k[2], NOW + 301), (k[3], NOW + 301), (k[2], NOW + 301)], NOW + 1))
        assert c.stats()["batches"] == before + 1
        assert out[0] == (True, None) and out[1] == (True, None)
        assert out[2] == (False, pytest.approx(NOW, abs=1e-6))   # the first SET's time stamp
        assert out[3] == [(True, None), (False, pytest.approx(NOW, abs=1e-6)),
                          (False, pytest.approx(NOW + 1, abs=1e-6))]
        st = c.stats()
        assert st["inserts"] == 4 and st["hits"] == 3 and st["errors"] == 0
        await c.aclose()

    asyncio.run(go())


def test_a_large_batch_reads_its_replies_through_hiredis(redis_srv: RedisServer) -> None:
    """The replies of a batch come from hiredis's reader one C call each (RedisReplayCache._read_replies), not
    a redis-py coroutine per reply: a batch larger than one recv brings, its answers in order."""
    from redis._parsers.hiredis import _AsyncHiredisParser

    k = _keys(3000, seed=7)

    async def go() -> None:
        c = _cache(redis_srv)
        conn = await c._apool.get_connection()
        try:
            assert isinstance(conn._parser, _AsyncHiredisParser)   # hiredis is a dependency: its parser in use
        finally:
            await c._apool.release(conn)
        first = await c.ainsert_many([(key, NOW + 301) for key in k[:2000]], NOW)
        again = await c.ainsert_many([(key, NOW + 301) for key in k[1000:]], NOW + 2)
        assert first == [(True, None)] * 2000
        assert again == [(False, pytest.approx(NOW, abs=1e-6))] * 1000 + [(True, None)] * 1000
        await c.aclose()

    asyncio.run(go())


def test_a_failed_round_trip_fails_every_insert_of_the_batch_closed(redis_srv: RedisServer) -> None:
    k = _keys(6, seed=2)

    async def go() -> None:
        c = _cache(redis_srv)
        assert await c.ainsert(k[0], NOW + 301, NOW) == (True, None)   # a pooled connection, then Redis goes
        redis_srv.stop()
        try:
            out = await asyncio.gather(*(c.ainsert(x, NOW + 301, NOW) for x in k[1:]),
                                       c.ainsert_many([(k[0], NOW + 301)], NOW), return_exceptions=True)
            assert all(isinstance(o, ReplayCacheUnavailable) for o in out), out
            assert c.stats()["errors"] >= 1
        finally:
            redis_srv.start()
        # back: answered again (the key of before the outage is gone with Redis's data: this namespace started anew)
        assert await c.ainsert(k[1], NOW + 301, NOW) == (True, None)
        await c.aclose()

    asyncio.run(go())


def test_a_hung_redis_fails_the_batch_closed_within_the_timeout(redis_srv: RedisServer) -> None:
    k = _keys(5, seed=3)

    async def go() -> None:
        c = _cache(redis_srv)
        assert await c.ainsert(k[0], NOW + 301, NOW) == (True, None)
        redis_srv.pause()
        try:
            t0 = time.monotonic()
            out = await asyncio.gather(*(c.ainsert(x, NOW + 301, NOW) for x in k[1:]), return_exceptions=True)
            assert all(isinstance(o, ReplayCacheUnavailable) for o in out), out
            assert time.monotonic() - t0 < 3.0   # socket_timeout 0.25 s, one retry at most
        finally:
            redis_srv.resume()
        # answered again; the hung Redis ran the timed-out SETs when it woke, so their keys are there (refused
        # meanwhile, and replays now: the client retries with a fresh authenticator)
        assert await c.ainsert(_keys(1, seed=33)[0], NOW + 301, NOW) == (True, None)
        assert (await c.ainsert(k[1], NOW + 301, NOW))[0] is False
        await c.aclose()

    asyncio.run(go())


# -- the sidecar's binary front door ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[tuple[Sidecar, Path]]:
    d = tmp_path_factory.mktemp("batch-sidecar")
    kt = d / "batch.keytab"
    kt.write_bytes(make_keytab((SERVICE,), rng=random.Random(15)).to_bytes())
    sc = Sidecar(d, kt, name="batch", workers=1, args=("--replay-cache", redis_srv.url + "?prefix=fastkrb:batch:"))
    sc.start()
    try:
        yield sc, kt
    finally:
        assert sc.stop() == 0


def _tokens(kt: Path, n: int) -> list[bytes]:
    m = mint(str(kt), client=CLIENT, server=SERVICE, now=time.time() + 1)
    return list(m.variants(n, now=time.time() + 1))


def _exchange(sc: Sidecar, chunks: list[bytes], answers: int, pause: float = 0.0) -> list[tuple[int, int, bytes]]:
    """Send the chunks on one connection (each with one send), read ``answers`` frames: (kind, request id, payload)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(sc.socket)
        for c in chunks:
            s.sendall(c)
            if pause:
                time.sleep(pause)
        got = b""
        while len(protocol.split_frames(got, 1 << 20)[0]) < answers:
            more = s.recv(65536)
            assert more, "the sidecar closed the connection"
            got += more
    return list(protocol.iter_frames(got, 1 << 20))


def _outcome(kind: int, payload: bytes) -> str:
    if kind in (protocol.ACCEPTED, protocol.ACCEPTED_EX):
        return "ok"
    assert kind == protocol.REJECTED, kind
    return protocol.decode_rejected(payload).code


def test_a_chunk_is_answered_in_request_order_with_replays_inside_and_across_batches(
        sidecar: tuple[Sidecar, Path]) -> None:
    sc, kt = sidecar
    t = _tokens(kt, 5)
    # t[3] is used by an earlier connection: already in Redis when the chunk comes
    assert [_outcome(k, p) for k, _, p in _exchange(sc, [protocol.encode_validate(1, t[3])], 1)] == ["ok"]
    frames = [protocol.encode_validate(10, t[0]), protocol.encode_validate(11, b"not a token at all"),
              protocol.encode_validate(12, t[0]),                # the same authenticator, same chunk
              protocol.encode_validate(13, t[3]),                # already used
              protocol.encode_validate_ex(14, t[1]),
              protocol.encode_validate(15, t[2])]
    out = _exchange(sc, [b"".join(frames)], len(frames))
    assert [rid for _, rid, _ in out] == [10, 11, 12, 13, 14, 15]
    assert [_outcome(k, p) for k, _, p in out] == ["ok", "malformed", "replay", "replay", "ok", "ok"]
    assert out[4][0] == protocol.ACCEPTED_EX
    first = protocol.decode_accepted(out[0][2])
    assert first.client == CLIENT
    assert protocol.decode_rejected(out[2][2]).details["first_seen_ago"] < 10


def test_partial_frames_and_many_chunks_keep_their_order(sidecar: tuple[Sidecar, Path]) -> None:
    sc, kt = sidecar
    t = _tokens(kt, 60)
    frames = b"".join(protocol.encode_validate(100 + i, tok) for i, tok in enumerate(t))
    frames += protocol.encode_validate(999, t[7])   # a replay of a frame of an earlier chunk
    # cut anywhere, frames split across sends: each send is its own chunk and batch, answered in order
    cuts = sorted(random.Random(4).sample(range(1, len(frames)), 12))
    chunks = [frames[a:b] for a, b in zip([0, *cuts], [*cuts, len(frames)], strict=True)]
    out = _exchange(sc, chunks, 61, pause=0.01)
    assert [rid for _, rid, _ in out] == [*range(100, 160), 999]
    assert [_outcome(k, p) for k, _, p in out] == ["ok"] * 60 + ["replay"]


def test_redis_down_fails_every_frame_of_the_chunk_closed_then_recovers(sidecar: tuple[Sidecar, Path],
                                                                       redis_srv: RedisServer) -> None:
    sc, kt = sidecar
    t = _tokens(kt, 8)
    assert [_outcome(k, p) for k, _, p in _exchange(sc, [protocol.encode_validate(1, t[0])], 1)] == ["ok"]
    redis_srv.stop()
    try:
        frames = [protocol.encode_validate(20 + i, tok) for i, tok in enumerate(t[1:7])]
        frames.insert(3, protocol.encode_validate(40, b"garbage"))   # refused before the cache, still in order
        out = _exchange(sc, [b"".join(frames)], len(frames))
        assert [rid for _, rid, _ in out] == [20, 21, 22, 40, 23, 24, 25]
        codes = [_outcome(k, p) for k, _, p in out]
        assert codes == ["replay_cache_unavailable"] * 3 + ["malformed"] + ["replay_cache_unavailable"] * 3
    finally:
        redis_srv.start()
    # Redis restarted empty: the cold-start rule refuses authenticators older than its new start marker, and a
    # fresh one is accepted; tokens whose insert failed were never recorded
    fresh = _tokens(kt, 1)[0]
    deadline = time.monotonic() + 10
    while True:
        got = [_outcome(k, p) for k, _, p in _exchange(sc, [protocol.encode_validate(50, fresh)], 1)]
        if got == ["ok"] or time.monotonic() > deadline:
            break
        assert got == ["replay_cache_unavailable"]   # the first round trip after the restart may still fail
        fresh = _tokens(kt, 1)[0]
        time.sleep(0.2)
    assert got == ["ok"]


def test_metrics_count_the_batched_decisions(sidecar: tuple[Sidecar, Path]) -> None:
    sc, kt = sidecar
    t = _tokens(kt, 3)
    frames = b"".join(protocol.encode_validate(i, tok) for i, tok in enumerate([t[0], t[1], t[0], t[2]]))

    def counts() -> dict[str, float]:
        status, _, body = sc.http("GET", "/metrics")
        assert status == 200
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("fastkrb_decisions_total{"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    before = counts()
    assert [_outcome(k, p) for k, _, p in _exchange(sc, [frames], 4)] == ["ok", "ok", "replay", "ok"]
    after = counts()

    def delta(part: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if part in k)

    assert delta('outcome="accepted"') == 3
    assert delta('code="replay"') == 1


def test_sigterm_mid_batch_answers_and_logs_every_frame(tmp_path: Path, redis_srv: RedisServer) -> None:
    """Draining waits for the batches on the wire to Redis: SIGTERM while most of a deep pipeline is unanswered
    loses neither an answer nor a decision line."""
    kt = tmp_path / "drain.keytab"
    kt.write_bytes(make_keytab((SERVICE,), rng=random.Random(16)).to_bytes())
    sc = Sidecar(tmp_path, kt, name="drain", args=("--replay-cache", redis_srv.url + "?prefix=fastkrb:drain:")).start()
    try:
        toks = _tokens(kt, 1500)   # after the start: older authenticators meet the cold-start rule of a new namespace
        s = sc.connect()
        sender = threading.Thread(target=s.sendall,
                                  args=(b"".join(protocol.encode_validate(i + 1, t) for i, t in enumerate(toks)),))
        sender.start()
        first = s.recv(65536)
        sc.signal(signal.SIGTERM)
        data = first + recv_all(s)
        sender.join(30)
        s.close()
        out = list(protocol.iter_frames(data, 1 << 20))
        assert [rid for _, rid, _ in out] == list(range(1, 1501))
        assert {k for k, _, _ in out} == {protocol.ACCEPTED}
    finally:
        assert sc.stop() == 0
    decisions = [e for e in sc.events() if e.get("event") == "decision"]
    assert len(decisions) == 1500 and all(e["outcome"] == "accepted" for e in decisions)


def test_a_closed_cache_fails_the_batch_closed_through_its_future(redis_srv: RedisServer) -> None:
    async def go() -> None:
        c = _cache(redis_srv)
        await c.aclose()
        fut = c.submit_many([(k, NOW + 301) for k in _keys(3, seed=5)], NOW)   # no raise in the caller's frame
        with pytest.raises(ReplayCacheUnavailable):
            await fut
        with pytest.raises(ReplayCacheUnavailable):
            await c.ainsert(_keys(1, seed=6)[0], NOW + 301, NOW)

    asyncio.run(go())


def test_the_native_payload_is_the_resp_of_each_set() -> None:
    """_native.redis_set_payload writes, byte for byte, what RESP makes of each ``SET name value PX ttl NX GET``
    (the reference below formats it in Python, as RedisReplayCache did before), values included."""
    import math
    from binascii import hexlify

    from fastkrb import _native

    def bulk(b: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(b), b)

    def reference(prefix: bytes, tag: bytes, entries: list[tuple[bytes, float, float]], seq0: int,
                  tail: bytes) -> tuple[bytes, list[bytes]]:
        out, values = [], []
        for i, (key, expiry, now) in enumerate(entries):
            value = b"%.6f %s %d" % (now, tag, seq0 + i)
            ttl = b"%d" % max(1, math.ceil((expiry - now) * 1000.0))
            values.append(value)
            out.append(b"*7\r\n" + b"".join(bulk(x) for x in (b"SET", prefix + hexlify(key), value, b"PX", ttl,
                                                                b"NX", b"GET")))
        return b"".join(out) + tail, values

    rng = random.Random(3)
    for prefix in (b"", b"fastkrb:rc:", b"p" * 300):
        entries = []
        for _ in range(200):
            now = rng.choice([NOW, NOW + rng.random(), 1e9 + rng.random() * 1e-3, 0.0, 12345.6789125])
            expiry = now + rng.choice([301.0, 300.0000001, 0.0, -5.0, 1e-9, rng.random() * 1e6, 0.0015])
            entries.append((rng.randbytes(16), expiry, now))
        tail = b"*2\r\n$3\r\nGET\r\n" + bulk(prefix + b"started")
        for seq0 in (0, 7, 2**40):
            assert _native.redis_set_payload(prefix, b"0a1b2c3d4e5f", entries, seq0, tail) == \
                reference(prefix, b"0a1b2c3d4e5f", entries, seq0, tail)
    with pytest.raises(ValueError):
        _native.redis_set_payload(b"", b"t", [(b"short", 1.0, 0.0)], 0, b"")
    with pytest.raises(TypeError):
        _native.redis_set_payload(b"", b"t", [(bytes(16), 1.0)], 0, b"")


# -- the sidecar's HTTP front door ------------------------------------------------------------------------------


def _http(auth: bytes | None, *, close: bool = False, xff: bytes | None = None, path: bytes = b"/auth") -> bytes:
    head = b"GET " + path + b" HTTP/1.1\r\nHost: sidecar\r\nX-Original-URI: /reports\r\n"
    if xff is not None:
        head += b"X-Forwarded-For: " + xff + b"\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n"


def _negotiate(tok: bytes) -> bytes:
    return b"Negotiate " + base64.b64encode(tok)


def _http_exchange(sc: Sidecar, chunks: list[bytes], pause: float = 0.0) -> list[tuple[int, dict[str, str], bytes]]:
    """Send the chunks on one connection, read until the sidecar closes it (the last request says close)."""
    s = sc.connect()
    try:
        for c in chunks:
            s.sendall(c)
            if pause:
                time.sleep(pause)
        data = recv_all(s)
    finally:
        s.close()
    return parse_responses(data)


def _summary(responses: list[tuple[int, dict[str, str], bytes]]) -> list[tuple[Any, ...]]:
    """What an answer says, but the AP-REP (random), the causes' timings and the health document (the worker's
    own facts)."""
    return [(status, h.get("x-auth-error"), h.get("x-remote-user"), h.get("connection"),
             h.get("www-authenticate", "").split(" ")[0] or None,
             json.loads(body).get("code") if b'"code"' in body else None)
            for status, h, body in responses]


@pytest.fixture(scope="module")
def http_pair(tmp_path_factory: pytest.TempPathFactory,
              redis_srv: RedisServer) -> Iterator[tuple[Sidecar, Sidecar, Path]]:
    """Two sidecars on the same Redis (each its own namespace): the native request path, and the Python one."""
    d = tmp_path_factory.mktemp("batch-http")
    kt = d / "http.keytab"
    kt.write_bytes(make_keytab((SERVICE,), rng=random.Random(17)).to_bytes())
    native = Sidecar(d, kt, name="native", args=("--replay-cache", redis_srv.url + "?prefix=fastkrb:hn:"))
    python = Sidecar(d, kt, name="python", args=("--replay-cache", redis_srv.url + "?prefix=fastkrb:hp:",
                                                  "--no-native-front"))
    native.start()
    python.start()
    try:
        yield native, python, kt
    finally:
        assert native.stop() == 0
        assert python.stop() == 0


def test_http_requests_are_answered_in_order_as_the_python_path_answers(
        http_pair: tuple[Sidecar, Sidecar, Path]) -> None:
    """A pipelined mix in one send: Negotiate heads checked in C around one Redis round trip, and between them
    heads only Python answers (no token, /healthz), in request order; a replay inside the chunk and one of an
    earlier connection's token; the same answers as the Python path gives."""
    native, python, kt = http_pair
    t = _tokens(kt, 4)
    chunk = b"".join([
        _http(_negotiate(t[0])),
        _http(None),                                   # no token: Python's 401 challenge, between two batches
        _http(_negotiate(t[0])),                       # the same authenticator again
        _http(_negotiate(t[3])),                       # used by an earlier connection
        _http(None, path=b"/healthz"),
        _http(b"Negotiate AAAA"),                      # refused before the cache (malformed)
        _http(_negotiate(t[1]), xff=b"192.0.2.17"),
        _http(_negotiate(t[2]), close=True),
    ])
    got = {}
    for sc in (native, python):
        assert [s for s, _, _ in _http_exchange(sc, [_http(_negotiate(t[3]), close=True)])] == [200]
        got[sc] = _http_exchange(sc, [chunk])
    assert _summary(got[native]) == _summary(got[python])
    assert [(s, h.get("x-auth-error")) for s, h, _ in got[native]] == [
        (200, None), (401, "no_token"), (401, "replay"), (401, "replay"), (200, None), (401, "malformed"),
        (200, None), (200, None)]
    assert got[native][0][1]["x-remote-user"] == CLIENT.split("@")[0]
    assert got[native][0][1]["www-authenticate"].startswith("Negotiate ")   # the AP-REP: mutual authentication
    assert got[native][-1][1]["connection"] == "close"
    assert _decisions_for(native, "192.0.2.17") == ["accepted"]


def test_http_refusals_keep_the_forwarded_for_in_their_log_lines(http_pair: tuple[Sidecar, Sidecar, Path]) -> None:
    """The refusals Python answers for a batch (one refused before the cache, one the cache calls a replay) log
    the client nginx forwarded for, as the Python path does: the batch hands the X-Forwarded-For bytes only to
    those answers."""
    native, python, kt = http_pair
    t = _tokens(kt, 2)
    for n, sc in enumerate((native, python)):
        malformed, replay, fresh = (f"198.51.100.{10 * n + k}" for k in (1, 2, 3))
        chunk = b"".join([
            _http(_negotiate(t[n]), xff=fresh.encode()),
            _http(b"Negotiate AAAA", xff=malformed.encode()),
            _http(_negotiate(t[n]), xff=replay.encode(), close=True),
        ])
        assert [(s, h.get("x-auth-error")) for s, h, _ in _http_exchange(sc, [chunk])] == [
            (200, None), (401, "malformed"), (401, "replay")]
        assert _decisions_for(sc, fresh) == ["accepted"]
        assert _decisions_for(sc, malformed) == ["rejected"]
        assert _decisions_for(sc, replay) == ["rejected"]


def _decisions_for(sc: Sidecar, xff: str) -> list[str]:
    """The outcomes logged for requests forwarded for ``xff``, once the worker has written them (its log is
    written in batches, at the latest every tick)."""
    deadline = time.monotonic() + 10
    while True:
        out = [e["outcome"] for e in sc.events() if e.get("event") == "decision" and e.get("frontend") == "http"
               and e.get("peer", "").endswith(f" for={xff}")]
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_http_heads_cut_anywhere_keep_their_order(http_pair: tuple[Sidecar, Sidecar, Path]) -> None:
    native, _, kt = http_pair
    t = _tokens(kt, 12)
    heads = [_http(_negotiate(tok)) for tok in t] + [_http(_negotiate(t[5]), close=True)]
    data = b"".join(heads)
    cuts = sorted(random.Random(8).sample(range(1, len(data)), 10))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = _http_exchange(native, chunks, pause=0.01)
    assert [(s, h.get("x-auth-error")) for s, h, _ in out] == [(200, None)] * 12 + [(401, "replay")]


def test_http_redis_down_fails_the_requests_closed(http_pair: tuple[Sidecar, Sidecar, Path],
                                                   redis_srv: RedisServer) -> None:
    native, _, kt = http_pair
    t = _tokens(kt, 3)
    redis_srv.stop()
    try:
        out = _http_exchange(native, [_http(_negotiate(t[0])) + _http(b"Negotiate AAAA")
                                      + _http(_negotiate(t[1]), close=True)])
        assert [(s, h.get("x-auth-error")) for s, h, _ in out] == [
            (503, "replay_cache_unavailable"), (401, "malformed"), (503, "replay_cache_unavailable")]
        assert out[0][1].get("retry-after") == "1"
    finally:
        redis_srv.start()


def test_http_negotiate_heads_are_checked_natively_around_one_round_trip(tmp_path: Path,
                                                                          redis_srv: RedisServer) -> None:
    """In a worker with a Redis replay cache, a chunk of Negotiate heads is one native batch (no Python decision
    per request), and its answers come once Redis has answered."""
    import dataclasses

    from fastkrb.keytab import Keytab
    from fastkrb.sidecar.app import make_validator
    from fastkrb.sidecar.binary import WireHandler
    from fastkrb.sidecar.config import ServerConfig
    from fastkrb.sidecar.conn import Connection, WorkerContext
    from fastkrb.sidecar.engine import Engine
    from fastkrb.sidecar.http import HttpHandler
    from fastkrb.sidecar.log import JsonLog
    from fastkrb.sidecar.metrics import Stats

    kt = tmp_path / "inproc.keytab"
    kt.write_bytes(make_keytab((SERVICE,), rng=random.Random(18)).to_bytes())
    cfg = ServerConfig(keytab=str(kt), socket=None, cold_start=False,
                       replay_cache=redis_srv.url + f"?prefix=fastkrb:ip{random.getrandbits(32):x}:")
    toks = _tokens(kt, 3)

    async def go() -> tuple[list[int], int, int, bytes]:
        loop = asyncio.get_running_loop()
        log = JsonLog(str(tmp_path / "inproc.log"), worker=0)
        stats = Stats(0, None)
        engine = Engine(make_validator(cfg, Keytab.load(kt)), stats, log, is_async=True)
        python_decisions = 0
        adecide = engine.adecide

        async def counted(*a: Any, **k: Any) -> Any:
            nonlocal python_decisions
            python_decisions += 1
            return await adecide(*a, **k)

        engine.adecide = counted  # type: ignore[method-assign]
        ctx = WorkerContext(dataclasses.replace(cfg, native_front=True), engine, stats, log, loop,
                            lambda: {"ready": True}, lambda: b"", wire=WireHandler, http=HttpHandler)
        assert ctx.front is not None
        sizes: list[int] = []
        handed = HttpHandler._replay_batch

        def spy(self: HttpHandler, batch: Any) -> None:
            sizes.append(len(batch))
            handed(self, batch)

        HttpHandler._replay_batch = spy  # type: ignore[method-assign]
        try:
            t = FakeTransport(None)
            c = Connection(ctx)
            c.connection_made(t)  # type: ignore[arg-type]
            c.data_received(b"".join(_http(_negotiate(x)) for x in [*toks, toks[0]]))
            written_before = len(t.out)
            for _ in range(200):
                if b"".join(t.out).count(b"HTTP/1.1 ") >= 4:
                    break
                await asyncio.sleep(0.01)
            log.close()
            return sizes, python_decisions, written_before, b"".join(t.out)
        finally:
            HttpHandler._replay_batch = handed  # type: ignore[method-assign]
            await engine.validator.replay_cache.aclose()

    sizes, python_decisions, written_before, out = asyncio.run(go())
    assert sizes == [4]               # one batch for the chunk's four heads
    assert python_decisions == 0      # none decided by the Python path
    assert written_before == 0        # nothing written before Redis answered
    statuses = [int(line.split(b" ")[1]) for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses == [200, 200, 200, 401]


def test_http_connection_gone_mid_round_trip_is_still_decided_and_logged(http_pair: tuple[Sidecar, Sidecar, Path],
                                                                          redis_srv: RedisServer) -> None:
    native, _, kt = http_pair
    tok = _tokens(kt, 1)[0]
    err_before = len((native.dir / "stderr.txt").read_text())
    redis_srv.pause()
    try:
        s = native.connect()
        s.sendall(_http(_negotiate(tok), xff=b"198.51.100.77"))
        time.sleep(0.05)
        s.close()
    finally:
        redis_srv.resume()
    assert _decisions_for(native, "198.51.100.77") == ["accepted"]
    assert "Traceback" not in (native.dir / "stderr.txt").read_text()[err_before:]
    # the worker answers the next request as before
    assert [s for s, _, _ in _http_exchange(native, [_http(_negotiate(_tokens(kt, 1)[0]), close=True)])] == [200]
