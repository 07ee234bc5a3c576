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
timeouts so a dead Redis costs at most ``socket_timeout``). Run Redis with ``maxmemory-policy noeviction``
(an evicting Redis forgets live entries; with noeviction a full Redis fails closed instead); in a cluster,
a shard that loses its data without the marker's shard noticing is not detected: use persistence there.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from fastkrb.errors import ReplayCacheUnavailable, replay_unavailable

__all__ = ["RedisReplayCache", "DEFAULT_PREFIX"]

log = logging.getLogger("fastkrb")

DEFAULT_PREFIX = "fastkrb:rc:"
Answer = tuple[bool, "float | None"]
Item = "tuple[bool, float | None] | ReplayCacheUnavailable"

_OUR_PARAMS = ("prefix", "cluster", "legacy")


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
        self._seq = itertools.count()
        self._marker_key = prefix + "started"
        self._marker: bytes | None = None
        self._started = time.time()   # until the marker is read: as if empty from now (conservative)
        self._closed = False
        self._st = {"inserts": 0, "hits": 0, "errors": 0, "cold": 0, "restarts": 0}
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
        cmds, values = self._commands(items, now)
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
        return self._answers(items, values, replies, now)

    async def ainsert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        out = (await self.ainsert_many([(key, expiry)], now))[0]
        if isinstance(out, ReplayCacheUnavailable):
            raise out
        return cast("tuple[bool, float | None]", out)

    async def ainsert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[Any]:
        """insert_many on the redis.asyncio client (for the sidecar's event loop)."""
        cmds, values = self._commands(items, now)
        if self._ar is None:
            raise self._fail("no asyncio client configured")
        try:
            replies = await self._arun(self._ar, cmds)
        except ResponseError as exc:
            if self._legacy is None and "syntax" in str(exc).lower():
                self._legacy = True
                return await self.ainsert_many(items, now)
            raise self._error(exc) from None
        except RedisError as exc:
            raise self._error(exc) from None
        marker = replies[-1]
        if marker is None:
            try:
                await self._ar.set(self._marker_key, self._marker_value(now), nx=True)
                marker = await self._ar.get(self._marker_key)
            except RedisError as exc:
                raise self._error(exc) from None
        self._adopt(marker, now)
        return self._answers(items, values, replies, now)

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
                "restarts": self._st["restarts"]}

    def close(self) -> None:
        self._closed = True
        if self._r is not None:
            self._r.close()

    async def aclose(self) -> None:
        self._closed = True
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

    def _commands(self, items: Sequence[tuple[bytes, float]], now: float) -> tuple[list[tuple[Any, ...]], list[bytes]]:
        if self._closed:
            raise self._fail("closed")
        cmds: list[tuple[Any, ...]] = []
        values: list[bytes] = []
        for key, expiry in items:
            if len(key) != 16:
                raise ValueError("replay key must be 16 bytes")
            ttl_ms = max(1, math.ceil((expiry - now) * 1000.0))
            value = f"{now:.6f} {self._tag} {next(self._seq)}".encode()
            name = self.prefix + key.hex()
            values.append(value)
            if self._legacy:
                cmds.append(("set", name, value, ttl_ms, False))
                cmds.append(("get", name))
            else:
                cmds.append(("set", name, value, ttl_ms, True))
        cmds.append(("get", self._marker_key))   # after the SETs: see the module docstring
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

    def _answers(self, items: Sequence[tuple[bytes, float]], values: list[bytes], replies: list[Any],
                 now: float) -> list[Any]:
        out: list[Any] = []
        step = 2 if self._legacy else 1
        for n, ((_, expiry), value) in enumerate(zip(items, values, strict=True)):
            if self._legacy:
                ok, seen = replies[n * step], replies[n * step + 1]
                fresh = bool(ok) or seen == value
            else:
                seen = replies[n]
                fresh = seen is None or seen == value   # our own write, retried after a lost reply
            if fresh:
                ctime = expiry - self.clock_skew - 1.0
                if self.cold_start and now < self._started + self.clock_skew and ctime < self._started:
                    self._st["cold"] += 1
                    out.append(self._cold(ctime))
                    continue
                self._st["inserts"] += 1
                out.append((True, None))
            else:
                self._st["hits"] += 1
                try:
                    first: float | None = float(seen.split(b" ", 1)[0])
                except (AttributeError, ValueError):
                    first = None
                out.append((False, first))
        return out

    def _cold(self, ctime: float) -> ReplayCacheUnavailable:
        return replay_unavailable("cold_start", backend="redis", name="Redis", where=self._desc, started=self._started,
                                  ctime=ctime, clock_skew=self.clock_skew)

    def _fail(self, reason: str) -> ReplayCacheUnavailable:
        self._st["errors"] += 1
        return replay_unavailable(reason, backend="redis", name="Redis", where=self._desc)

    def _error(self, exc: RedisError) -> ReplayCacheUnavailable:
        return self._fail(f"{type(exc).__name__}: {exc}")
