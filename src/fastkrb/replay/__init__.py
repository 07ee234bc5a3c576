"""Replay caches: one atomic check-and-insert of an authenticator's identity, kept where it must be shared.

RFC 4120 §3.2.3: servers sharing a service principal must share one replay cache, and a cache that lost
its state must refuse what it cannot vouch for until the skew window has passed. The validator computes
the identity (12 bytes of the authenticator's MAC + a hash of the principal whose key decrypted the
ticket) and its expiry (ctime + clock_skew + 1); a backend only answers "first time?" atomically.

Backends, by spec string (``open_replay_cache`` / ``Validator(replay_cache=...)``; ``parse_replay_spec``
is the one parser of these strings):

- ``"memory"``: in-process (threads of one process); native, exact capacity.
- ``"shm:/path/file"``: every process on the host that opens the same file; native, survives restarts.
- ``"redis://host:port/db?prefix=fastkrb:rc:"``: every host of a fleet (``rediss://`` for TLS;
  ``cluster=1`` for Redis Cluster; ``unix://`` for a socket).
- ``"none"``: no replay protection (explicit only; logged as a warning).

Every backend is a ``ReplayCache``; one reached over the network is also an ``AsyncReplayCache``, which an
event loop awaits instead of blocking on. Every backend fails closed: when it cannot answer, or is full of
live entries, ``insert`` raises ``ReplayCacheUnavailable``. ``started`` is when the cache last started
empty, for the cold-start rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from fastkrb._native import SHM_VERSION, MemoryReplayCache, NativeReplayBackend, ShmReplayCache
from fastkrb.errors import ReplayCacheUnavailable

if TYPE_CHECKING:
    from fastkrb.replay.redis import RedisReplayCache

__all__ = ["ReplayCache", "AsyncReplayCache", "MemoryReplayCache", "ShmReplayCache", "RedisReplayCache",
           "NativeReplayBackend", "ReplaySpec", "ReplayKind", "parse_replay_spec", "open_replay_cache",
           "ReplayCacheUnavailable", "SHM_VERSION"]

log = logging.getLogger("fastkrb")

Answer = tuple[bool, "float | None"]


@runtime_checkable
class ReplayCache(Protocol):
    """What every backend offers; ``insert`` is one atomic insert-if-absent."""

    @property
    def started(self) -> float:
        """Unix time at which this cache last started empty (memory: creation; shm: the file's creation;
        redis: the namespace's start marker)."""
        ...

    def insert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        """(True, None) the first time ``key`` is seen before ``expiry``; (False, first_seen) for a replay
        (first_seen may be None when unknown). Raises ReplayCacheUnavailable when it cannot answer."""
        ...

    def insert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[tuple[bool, float | None]]:
        """insert() for a batch (one round trip where the backend is remote). A remote backend may put a
        ReplayCacheUnavailable in place of an item it refuses by the cold-start rule (RedisReplayCache)."""
        ...

    def stats(self) -> dict[str, int]:
        """entries, inserts, hits, evictions, capacity, full, errors (backends may add more)."""
        ...

    def close(self) -> None:
        """Release resources; later inserts fail closed."""
        ...


@runtime_checkable
class AsyncReplayCache(ReplayCache, Protocol):
    """A ReplayCache across the network (Redis): an event loop awaits its round trips instead of blocking.

    ``Validator.avalidate`` awaits ``ainsert`` for such a cache; the sidecar probes ``aping`` for its
    readiness and calls ``aclose`` when it stops.
    """

    async def ainsert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        """insert() without blocking the event loop."""
        ...

    async def ainsert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[tuple[bool, float | None]]:
        """insert_many() without blocking the event loop."""
        ...

    async def aping(self) -> None:
        """Returns when the backend answers; raises ReplayCacheUnavailable when it does not."""
        ...

    async def aclose(self) -> None:
        """Release the event loop's connections; later ainsert() calls fail closed."""
        ...


ReplayKind = Literal["none", "memory", "shm", "redis"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class ReplaySpec:
    """A replay-cache spec string, parsed: which backend, and where (the shm file, the Redis URL)."""

    kind: ReplayKind
    location: str = ""      # shm: the file's path; redis: the URL as given; otherwise empty

    @property
    def is_async(self) -> bool:
        """True when the backend is reached over the network (an AsyncReplayCache)."""
        return self.kind == "redis"


def parse_replay_spec(spec: str) -> ReplaySpec:
    """The one reading of a spec string: ``"memory"``, ``"shm:/path"`` (``shm:///path`` too),
    ``"redis://..."`` / ``"rediss://..."`` / ``"unix://..."``, or ``"none"``. Raises ValueError otherwise."""
    if spec == "none":
        return ReplaySpec("none")
    if spec == "memory":
        return ReplaySpec("memory")
    if spec.startswith("shm:"):
        path = spec[4:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("shm replay cache needs a path: 'shm:/path/to/file'")
        return ReplaySpec("shm", path)
    if spec.startswith(_REDIS_SCHEMES):
        return ReplaySpec("redis", spec)
    raise ValueError(f"unknown replay cache {spec!r}: use 'memory', 'shm:/path', 'redis://host:port/db', or 'none'")


def __getattr__(name: str) -> object:
    # the Redis backend imports the redis client: only when asked for
    if name == "RedisReplayCache":
        from fastkrb.replay.redis import RedisReplayCache

        return RedisReplayCache
    raise AttributeError(name)


def open_replay_cache(spec: str, *, capacity: int = 1 << 20, clock_skew: float = 300.0,
                      cold_start: bool = True) -> ReplayCache | None:
    """The backend a spec string names; None for ``"none"`` (logged as a warning).

    ``capacity`` is the number of live entries to hold (peak validations per second x 2 x clock_skew
    is enough); ``clock_skew`` and ``cold_start`` are the validator's (a backend that re-creates itself
    while running applies the cold-start rule on its own).
    """
    parsed = parse_replay_spec(spec)
    if parsed.kind == "none":
        log.warning("fastkrb: replay cache disabled (replay_cache='none'): replayed tokens will be accepted")
        return None
    if parsed.kind == "memory":
        return MemoryReplayCache(capacity)
    if parsed.kind == "shm":
        return ShmReplayCache(parsed.location, capacity, clock_skew, cold_start)
    from fastkrb.replay.redis import RedisReplayCache

    return RedisReplayCache.from_url(parsed.location, clock_skew=clock_skew, cold_start=cold_start)
