"""A native batch's replay keys to the network replay cache (Redis) in one round trip, for both front doors.

``_native.wire_batch`` and ``_native.http_batch`` check a chunk's requests in C up to the replay insert and
hand the batch to their front door, which sends it here; the answers (or one failure for all of them: fail
closed) come back to the front door, which has them answered in request order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastkrb.errors import KerberosError, replay_unavailable
from fastkrb.sidecar.conn import Connection

__all__ = ["submit"]


def submit(conn: Connection, batch: Any, done: Callable[[Any], None]) -> None:
    """Insert ``batch``'s replay keys (a ``_native.ReplayBatch``); ``done(answers)`` runs with the cache's answer
    per pending request, or one exception for all of them. A batch refused whole before the cache is done at
    once. Its requests count against the connection's MAX_PENDING while on the wire."""
    if not batch.items:   # every one refused before the cache
        done([])
        return
    n = len(batch)
    conn.track(n)
    cache = conn.ctx.engine.validator.replay_cache
    entries = getattr(cache, "submit_entries", None)   # RedisReplayCache's: a future, no task per chunk
    fut = (entries(batch.entries()) if entries is not None
           else asyncio.ensure_future(cache.ainsert_many(batch.items, batch.last_now)))

    def finished(f: asyncio.Future[Any]) -> None:
        conn.track(-n)
        if f.cancelled():
            answers: Any = replay_unavailable("the replay insert was cancelled")
        elif (exc := f.exception()) is not None:
            answers = exc if isinstance(exc, KerberosError) else replay_unavailable(f"{type(exc).__name__}: {exc}")
        else:
            answers = f.result()
        done(answers)

    fut.add_done_callback(finished)
