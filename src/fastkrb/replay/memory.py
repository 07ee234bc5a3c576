"""The in-process replay cache (native/rcache.c): threads of one process; exact capacity, O(1) insert
and expiry, fails closed when full of live entries."""

from __future__ import annotations

from fastkrb import _native

__all__ = ["MemoryReplayCache"]

MemoryReplayCache = _native.InProcessReplayCache
