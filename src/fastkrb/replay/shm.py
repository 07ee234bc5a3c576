"""The shared-memory replay cache (native/shm.c): every process on a host that opens the same file.

The table lives in a memory-mapped file (put it on tmpfs, e.g. /dev/shm or /run, unless it must survive
a reboot), created 0600: only the service's user may open it. Processes sharing it must share a clock
within a second (same host). A missing, other-version or damaged file is re-created, and the cold-start
rule applies from its creation (``started``).
"""

from __future__ import annotations

from fastkrb import _native

__all__ = ["ShmReplayCache", "SHM_VERSION"]

ShmReplayCache = _native.ShmReplayCache
SHM_VERSION: int = _native.SHM_VERSION
