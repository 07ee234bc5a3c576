"""The Redis replay cache: every host of a fleet shares one namespace.

One command per authenticator, ``SET <prefix><hex key> <value> NX PX <ttl> GET``: atomic insert-if-absent
with the entry's lifetime, and the reply is the first presentation's value (our time stamp) when it was
already there, so a replay costs no second round trip. We chose it over a Lua script: it is one plain
single-key command (Redis Cluster routes it with no hash tags, managed services that forbid EVAL accept
it, no script cache to reload after a failover), and Redis >= 7.0 has it. Servers older than 7.0 reject
``NX`` with ``GET``; we then fall back to the pipelined pair ``SET .. NX PX`` + ``GET`` (same round trip;
freshness still decided by the atomic SET alone).

Each round trip also reads the namespace's start marker ``<prefix>started`` *after* the SETs. The marker
(``SET NX``, no expiry) holds the time at which the namespace started empty and a random tag; if it is
missing (first use, a restart without persistence, FLUSHALL, eviction) or changed, the data the SETs were
checked against may be younger than the authenticators: this instance writes a new marker (or adopts the
new one) and applies the cold-start rule (RFC 4120 §3.2.3) from it. The value of every entry is unique
(time, instance tag, counter), so a SET retried after a lost reply is recognised as our own write.

Fail closed: any Redis error (refused, timeout, OOM, READONLY) raises ReplayCacheUnavailable; the client
reconnects by itself on the next call (one immediate retry on a dropped pooled connection, short socket
timeouts so a dead Redis costs at most ``socket_timeout``).

On the event loop (``ainsert``, ``ainsert_many``) every insert asked for in one turn of the loop goes into one
batch, and each batch is one round trip: the commands packed once, written with one ``send``, the replies read
back to back (a single server; a Cluster uses redis-py's pipeline, which splits by slot). Batches do not wait for
each other: while one is on the wire the next one forms and goes out on another pooled connection, so a busy
worker is never idle behind a fixed number of round trips. Two presentations of one authenticator in the same
batch are two SETs in order on one connection: the first wins, the second reads the first's value (a replay).
A failure of the round trip fails every insert of the batch closed. Run Redis with ``maxmemory-policy noeviction``
(an evicting Redis forgets live entries; with noeviction a full Redis fails closed instead); in a cluster,
a shard that loses its data without the marker's shard noticing is not detected: use persistence there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from binascii import hexlify
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from fastkrb import _native
from fastkrb.errors import ReplayCacheUnavailable, replay_unavailable

__all__ = ["RedisReplayCache", "DEFAULT_PREFIX"]

log = logging.getLogger("fastkrb")

DEFAULT_PREFIX = "fastkrb:rc:"
Answer = tuple[bool, "float | None"]
Item = "tuple[bool, float | None] | ReplayCacheUnavailable"
#: one insert of a batch: replay key, expiry, now
Entry = tuple[bytes, float, float]
_timeout: Any = getattr(asyncio, "timeout", None)   # Python >= 3.11

_OUR_PARAMS = ("prefix", "cluster", "legacy")


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _pack(cmd: tuple[Any, ...]) -> bytes:
    """One command of ``_commands`` in RESP (the protocol's request form: an array of bulk strings)."""
    if cmd[0] == "get":
        return b"*2\r\n$3\r\nGET\r\n" + _bulk(cmd[1])
    ttl = b"%d" % cmd[3]
    head = b"*7\r\n$3\r\nSET\r\n" if cmd[4] else b"*6\r\n$3\r\nSET\r\n"
    tail = b"$2\r\nPX\r\n" + _bulk(ttl) + b"$2\r\nNX\r\n" + (b"$3\r\nGET\r\n" if cmd[4] else b"")
    return head + _bulk(cmd[1]) + _bulk(cmd[2]) + tail


_FRESH = (True, None)


def _first_seen(value: Any) -> float | None:
    """The time stamp at the head of a value we SET ("<time> <tag> <seq>"); None for anything else."""
    try:
        return float(value.split(b" ", 1)[0])
    except (AttributeError, ValueError):
        return None


def _truthy(v: str) -> bool:
    return v.lower() in ("1", "true", "yes", "on")


class RedisReplayCache:
    """Replay cache in Redis (single server or Cluster); sync ``insert*`` and async ``ainsert*``."""

    def __init__(self, client: Any = None, *, aclient: Any = None, prefix: str = DEFAULT_PREFIX,
                 clock_skew: float = 300.0, cold_start: bool = True, legacy: bool | None = None,
                 description: str = "redis") -> None:
        """``client``: a redis.Redis / RedisCluster; ``aclient``: its redis.asyncio twin (either may be
        None when only that side is used). ``legacy=True`` forces the pre-7.0 command pair."""
        if client is None and aclient is None:
            raise ValueError("RedisReplayCache needs a client or an aclient")
        self._r = client
        self._ar = aclient
        self.prefix = prefix
        self.clock_skew = float(clock_skew)
        self.cold_start = bool(cold_start)
        self._legacy = legacy
        self._desc = description
        self._tag = os.urandom(6).hex()
        self._next_seq = 0   # the sequence number of the next value we SET: our own writes are told apart
        self._marker_key = prefix + "started"
        self._prefix_b, self._tag_b = prefix.encode(), self._tag.encode()
        self._marker_get = _pack(("get", self._marker_key.encode()))
        self._marker: bytes | None = None
        self._started = time.time()   # until the marker is read: as if empty from now (conservative)
        self._closed = False
        self._st = {"inserts": 0, "hits": 0, "errors": 0, "cold": 0, "restarts": 0, "batches": 0}
        # the batch forming in this turn of the event loop: its entries, and per caller (first entry, count, future)
        self._pending: list[Entry] = []
        self._waiters: list[tuple[int, int, asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # a single server's pool (the packed round trip); None for a Cluster (redis-py's pipeline splits by slot)
        self._apool: Any = getattr(aclient, "connection_pool", None) if aclient is not None else None
        if self._r is not None:
            try:
                t = time.time()
                self._adopt(self._r.get(self._marker_key) or self._write_marker(t), t)
            except RedisError as exc:
                self._st["errors"] += 1
                log.warning("fastkrb: Redis replay cache %s not reachable at start (%s); failing closed until "
                            "it is", self._desc, type(exc).__name__)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, clock_skew: float = 300.0, cold_start: bool = True,
                 socket_timeout: float = 0.25, connect: str = "both") -> RedisReplayCache:
        """``redis://[user:pass@]host:port/db?prefix=...&cluster=1&legacy=1`` (also ``rediss://``,
        ``unix://``); other query parameters go to redis-py. ``connect``: "sync", "async" or "both"."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.get("prefix", [DEFAULT_PREFIX])[-1]
        cluster = _truthy(query.get("cluster", ["0"])[-1])
        legacy_q = query.get("legacy")
        legacy = _truthy(legacy_q[-1]) if legacy_q else None
        rest = {k: v[-1] for k, v in query.items() if k not in _OUR_PARAMS}
        opts: dict[str, Any] = {}
        for k in ("socket_timeout", "socket_connect_timeout"):
            opts[k] = float(rest.pop(k, socket_timeout))
        clean = urlunsplit(parts._replace(query=urlencode(rest)))
        sync_c: Any = None
        async_c: Any = None
        if cluster:
            from redis.asyncio.cluster import RedisCluster as ARedisCluster
            from redis.cluster import RedisCluster

            if connect in ("sync", "both"):
                sync_c = RedisCluster.from_url(clean, **opts)
            if connect in ("async", "both"):
                async_c = ARedisCluster.from_url(clean, **opts)
        else:
            if connect in ("sync", "both"):
                sync_c = redis.Redis.from_url(clean, retry=Retry(NoBackoff(), 1), **opts)
            if connect in ("async", "both"):
                from redis.asyncio.retry import Retry as ARetry

                async_c = redis.asyncio.Redis.from_url(clean, retry=ARetry(NoBackoff(), 1), **opts)
        where = f"{parts.scheme}://{parts.hostname or parts.path}{':' + str(parts.port) if parts.port else ''}"
        return cls(sync_c, aclient=async_c, prefix=prefix, clock_skew=clock_skew, cold_start=cold_start,
                   legacy=legacy, description=where)

    # -- the interface --------------------------------------------------------------------------

    @property
    def started(self) -> float:
        """When the namespace last started empty (its start marker), as this instance last read it."""
        return self._started

    def insert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        out = self.insert_many([(key, expiry)], now)[0]
        if isinstance(out, ReplayCacheUnavailable):
            raise out
        return cast("tuple[bool, float | None]", out)

    def insert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[Any]:
        """One pipelined round trip for the batch. Each result is (fresh, first_seen), or a
        ReplayCacheUnavailable instance for an item refused by the cold-start rule; a Redis failure
        raises for the whole batch."""
        entries = [(key, expiry, now) for key, expiry in items]
        cmds, values = self._commands(entries)
        if self._r is None:
            raise self._fail("no synchronous client configured")
        try:
            replies = self._run(self._r, cmds)
        except ResponseError as exc:
            if self._legacy is None and "syntax" in str(exc).lower():
                self._legacy = True   # Redis < 7.0: no SET NX GET
                return self.insert_many(items, now)
            raise self._error(exc) from None
        except RedisError as exc:
            raise self._error(exc) from None
        try:
            self._adopt(replies[-1] if replies[-1] is not None else self._write_marker(now), now)
        except RedisError as exc:
            raise self._error(exc) from None
        return self._answers(entries, values, replies)

    async def ainsert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        out = (await self._batched([(key, expiry, now)]))[0]
        if isinstance(out, ReplayCacheUnavailable):
            raise out
        return cast("tuple[bool, float | None]", out)

    async def ainsert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[Any]:
        """insert_many without blocking the event loop: the items join the batch of this turn of the loop (one
        round trip for all of it); a Redis failure raises for the whole batch."""
        return await self.submit_many(items, now)

    def submit_many(self, items: Sequence[tuple[bytes, float]], now: float) -> asyncio.Future[list[Any]]:
        """ainsert_many without a coroutine: the future of the answers (for the sidecar's per-chunk batches,
        which add a callback instead of awaiting). Must be called on the running event loop."""
        return self._batched([(key, expiry, now) for key, expiry in items])

    def submit_entries(self, entries: list[Entry]) -> asyncio.Future[list[Any]]:
        """submit_many for entries already in the batch's form, (16-byte key, expiry, now) each: the sidecar's
        native batches (``_native.ReplayBatch.entries``), whose keys C made."""
        return self._batched(entries, checked=True)

    def _batched(self, entries: list[Entry], checked: bool = False) -> asyncio.Future[list[Any]]:
        """A future of ``entries``' answers, sent with everything else asked for in this turn of the loop. A cache
        that cannot answer at all (closed, no asyncio client) fails the future, never the caller's frame."""
        if not checked:
            for key, _, _ in entries:
                if len(key) != 16:
                    raise ValueError("replay key must be 16 bytes")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if self._closed or self._ar is None:
            fut.set_exception(self._fail("closed" if self._closed else "no asyncio client configured"))
            return fut
        if not entries:
            fut.set_result([])
            return fut
        if not self._pending:
            loop.call_soon(self._flush)
        self._waiters.append((len(self._pending), len(entries), fut))
        self._pending.extend(entries)
        return fut

    def _flush(self) -> None:
        """Send the batch formed in this turn of the loop; the next one forms while it is on the wire."""
        entries, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        if not entries:
            return
        task = asyncio.ensure_future(self._send(entries, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, entries: list[Entry], waiters: list[tuple[int, int, asyncio.Future[list[Any]]]]) -> None:
        try:
            out: list[Any] | ReplayCacheUnavailable = await self._round_trip(entries)
        except ReplayCacheUnavailable as exc:
            out = exc
        except Exception as exc:  # any failure must fail closed, and must reach every waiter
            out = self._fail(f"{type(exc).__name__}: {exc}")
        for first, n, fut in waiters:
            if fut.done():   # its caller gave up (cancelled)
                continue
            if isinstance(out, ReplayCacheUnavailable):
                fut.set_exception(out)
            else:
                fut.set_result(out[first:first + n])

    async def _round_trip(self, entries: list[Entry]) -> list[Any]:
        """One round trip for a batch: answers in order, or ReplayCacheUnavailable for all of it."""
        self._st["batches"] += 1
        try:
            if self._apool is not None and not self._legacy:
                payload, values = self._payload(entries)
                replies = await self._packed(payload, len(entries) + 1)
            else:
                cmds, values = self._commands(entries)
                replies = await self._arun(self._ar, cmds)
        except ResponseError as exc:
            if self._legacy is None and "syntax" in str(exc).lower():
                self._legacy = True   # Redis < 7.0: no SET NX GET
                return await self._round_trip(entries)
            raise self._error(exc) from None
        except RedisError as exc:
            raise self._error(exc) from None
        marker = replies[-1]
        now = max(e[2] for e in entries)
        if marker is None:
            try:
                await self._ar.set(self._marker_key, self._marker_value(now), nx=True)
                marker = await self._ar.get(self._marker_key)
            except RedisError as exc:
                raise self._error(exc) from None
        self._adopt(marker, now)
        return self._answers(entries, values, replies)

    def _payload(self, entries: Sequence[Entry]) -> tuple[bytes, list[bytes]]:
        """``_commands`` packed for the wire (RESP: arrays of bulk strings), formatted in C
        (``_native.redis_set_payload``), the marker's GET last (see the module docstring)."""
        if self._closed:
            raise self._fail("closed")
        seq0 = self._next_seq
        self._next_seq += len(entries)
        return _native.redis_set_payload(self._prefix_b, self._tag_b, entries if isinstance(entries, list)
                                         else list(entries), seq0, self._marker_get)

    async def _packed(self, payload: bytes, n: int) -> list[Any]:
        """The batch on one pooled connection of a single server: packed once, one send, the replies read back to
        back within one ``socket_timeout`` (redis-py's pipeline spends a timer and a coroutine per reply). A
        connection that fails is dropped; a dropped pooled connection is retried once, as the client's Retry
        does (a SET retried after a lost reply finds our own value: still fresh)."""
        for attempt in (0, 1):
            conn = await self._apool.get_connection()
            try:
                await conn.send_packed_command(payload, check_health=False)
                timeout = conn.socket_timeout
                if not timeout:
                    replies = await self._read_replies(conn, n)
                elif _timeout is not None:   # Python >= 3.11: a deadline without a task of its own
                    async with _timeout(timeout):
                        replies = await self._read_replies(conn, n)
                else:
                    replies = await asyncio.wait_for(self._read_replies(conn, n), timeout)
            except (RedisConnectionError, RedisTimeoutError, asyncio.TimeoutError, OSError) as exc:
                await conn.disconnect(nowait=True)
                await self._apool.release(conn)
                if isinstance(exc, (RedisTimeoutError, asyncio.TimeoutError)):
                    raise RedisTimeoutError(f"Timeout reading from {self._desc}") from None
                if attempt:
                    raise exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc)) from None
                continue
            except BaseException:
                await conn.disconnect(nowait=True)
                await self._apool.release(conn)
                raise
            await self._apool.release(conn)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies
        raise AssertionError("unreachable")

    @staticmethod
    async def _read_replies(conn: Any, n: int) -> list[Any]:
        # an error reply is returned, not raised, so the connection stays in step
        parser = conn._parser
        if not isinstance(parser, _AsyncHiredisParser):
            return [await parser.read_response() for _ in range(n)]
        # hiredis (a dependency): its reader's replies taken one C call each, the socket awaited only when it has
        # none left; read_response() would spend a coroutine and redis-py's per-reply checks on each (a RESP2
        # connection has no push replies between ours)
        gets = cast("Any", parser._reader).gets
        read = cast("Any", parser).read_from_socket
        out: list[Any] = []
        append = out.append
        left = n
        while left:
            reply = gets()
            if reply is _NOT_ENOUGH_DATA:
                await read()
            elif isinstance(reply, RedisConnectionError):
                raise reply
            else:
                append(reply)
                left -= 1
        return out

    def stats(self, count_entries: bool = False) -> dict[str, int]:
        """Counters of this instance. ``entries`` is -1 unless ``count_entries`` (a SCAN of the prefix);
        capacity is -1 (bounded by Redis's maxmemory, not by us)."""
        entries = -1
        if count_entries and self._r is not None:
            try:
                entries = sum(1 for k in self._r.scan_iter(match=self.prefix + "*", count=1000)
                              if k != self._marker_key.encode())
            except RedisError as exc:
                raise self._error(exc) from None
        return {"entries": entries, "inserts": self._st["inserts"], "hits": self._st["hits"], "evictions": 0,
                "capacity": -1, "full": 0, "errors": self._st["errors"], "cold": self._st["cold"],
                "restarts": self._st["restarts"], "batches": self._st["batches"]}

    def close(self) -> None:
        self._closed = True
        if self._r is not None:
            self._r.close()

    async def aclose(self) -> None:
        self._closed = True
        if self._tasks:   # batches on the wire: their callers get their answers (or the failure) first
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ar is not None:
            await self._ar.aclose()

    async def aping(self) -> None:
        """Returns when Redis answers a PING on the asyncio client; raises ReplayCacheUnavailable when it
        does not. For readiness probes: a failed probe is not counted among the cache's errors."""
        if self._ar is None:
            raise replay_unavailable("no asyncio client configured", backend="redis", name="Redis", where=self._desc)
        try:
            await self._ar.ping()
        except Exception as exc:  # any failure means not ready
            raise replay_unavailable(f"{type(exc).__name__}: {exc}", backend="redis", name="Redis",
                                     where=self._desc) from None

    # -- internals ------------------------------------------------------------------------------

    def _marker_value(self, now: float) -> bytes:
        return f"{now:.6f} {self._tag}".encode()

    def _commands(self, entries: Sequence[Entry]) -> tuple[list[tuple[Any, ...]], list[bytes]]:
        if self._closed:
            raise self._fail("closed")
        cmds: list[tuple[Any, ...]] = []
        values: list[bytes] = []
        prefix = self.prefix.encode()
        tag = self._tag.encode()
        for key, expiry, now in entries:
            if len(key) != 16:
                raise ValueError("replay key must be 16 bytes")
            ttl_ms = max(1, math.ceil((expiry - now) * 1000.0))
            value = b"%.6f %s %d" % (now, tag, self._next_seq)
            self._next_seq += 1
            name = prefix + hexlify(key)
            values.append(value)
            if self._legacy:
                cmds.append(("set", name, value, ttl_ms, False))
                cmds.append(("get", name))
            else:
                cmds.append(("set", name, value, ttl_ms, True))
        cmds.append(("get", self._marker_key.encode()))   # after the SETs: see the module docstring
        return cmds, values

    @staticmethod
    def _queue(pipe: Any, cmds: list[tuple[Any, ...]]) -> Any:
        for c in cmds:
            if c[0] == "set":
                # SET name value PX ttl NX [GET]
                pipe.set(c[1], c[2], px=c[3], nx=True, get=c[4])
            else:
                pipe.get(c[1])
        return pipe

    def _run(self, client: Any, cmds: list[tuple[Any, ...]]) -> list[Any]:
        return list(self._queue(client.pipeline(transaction=False), cmds).execute(raise_on_error=True))

    async def _arun(self, client: Any, cmds: list[tuple[Any, ...]]) -> list[Any]:
        return list(await self._queue(client.pipeline(transaction=False), cmds).execute(raise_on_error=True))

    def _write_marker(self, now: float) -> bytes | None:
        """The namespace has no start marker: it starts empty now (unless another instance beat us)."""
        self._r.set(self._marker_key, self._marker_value(now), nx=True)
        marker: bytes | None = self._r.get(self._marker_key)
        return marker

    def _adopt(self, marker: bytes | None, now: float) -> None:
        """Take the namespace's start time from its marker (a changed marker: it restarted empty)."""
        if marker is None or marker == self._marker:
            return
        try:
            started = float(marker.split(b" ", 1)[0])
        except ValueError:
            started = now   # not ours: assume it started just now (conservative)
        if self._marker is not None:
            self._st["restarts"] += 1
            log.warning("fastkrb: Redis replay cache %s restarted empty at %s (start marker %s); the cold-start "
                        "rule applies for %.0f s", self._desc, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                        time.gmtime(started)), "rewritten" if marker.endswith(self._tag.encode()) else "changed",
                        self.clock_skew)
        self._marker = marker
        self._started = started

    def _answers(self, entries: Sequence[Entry], values: list[bytes], replies: list[Any]) -> list[Any]:
        legacy = bool(self._legacy)
        started = self._started
        skew = self.clock_skew
        if not legacy and (not self.cold_start or min(e[2] for e in entries) >= started + skew):
            # the common case, one comparison per entry: SET NX GET's reply, no entry inside the cold-start window
            out: list[Any] = []
            hits = 0
            for seen, value in zip(replies[:-1], values, strict=True):   # the last reply is the marker's
                if seen is None or seen == value:   # inserted, or our own write retried after a lost reply
                    out.append(_FRESH)
                else:
                    hits += 1
                    out.append((False, _first_seen(seen)))
            self._st["inserts"] += len(out) - hits
            self._st["hits"] += hits
            return out
        out = []
        for n, ((_, expiry, now), value) in enumerate(zip(entries, values, strict=True)):
            if legacy:
                ok, seen = replies[2 * n], replies[2 * n + 1]
                fresh = bool(ok) or seen == value
            else:
                seen = replies[n]
                fresh = seen is None or seen == value   # our own write, retried after a lost reply
            if fresh:
                ctime = expiry - skew - 1.0
                if self.cold_start and now < started + skew and ctime < started:
                    self._st["cold"] += 1
                    out.append(self._cold(ctime))
                    continue
                self._st["inserts"] += 1
                out.append((True, None))
            else:
                self._st["hits"] += 1
                out.append((False, _first_seen(seen)))
        return out

    def _cold(self, ctime: float) -> ReplayCacheUnavailable:
        return replay_unavailable("cold_start", backend="redis", name="Redis", where=self._desc, started=self._started,
                                  ctime=ctime, clock_skew=self.clock_skew)

    def _fail(self, reason: str) -> ReplayCacheUnavailable:
        self._st["errors"] += 1
        return replay_unavailable(reason, backend="redis", name="Redis", where=self._desc)

    def _error(self, exc: RedisError) -> ReplayCacheUnavailable:
        return self._fail(f"{type(exc).__name__}: {exc}")
