# Replay caches at the Python boundary: the shared-memory table (shm.c), the in-process one with the full
# fastkrb.replay interface, and a C-level insert benchmark. The validator calls both through
# fk_rc_backend without Python; these methods serve tests, tools and batch callers.

import os as _os

cdef extern from "shm.h":
    ctypedef struct fk_shm:
        pass
    ctypedef struct fk_shm_stats:
        uint64_t inserts, hits, evictions, full, errors, recoveries, entries, capacity, slots, shards, remaps
    fk_shm *fk_shm_open(const char *path, size_t capacity, double skew, int cold_start, char *err,
                        size_t errlen) nogil
    void fk_shm_close(fk_shm *s)
    void fk_shm_free(fk_shm *s)
    int fk_shm_insert(fk_shm *s, const uint8_t *key, double expiry, double now, double *first_seen) nogil
    int fk_shm_insert_cb(void *ctx, const uint8_t *key, double expiry, double now, double *first_seen) nogil
    int fk_shm_die_in_insert(fk_shm *s, const uint8_t *key, double expiry, double now, int stage)
    double fk_shm_started(fk_shm *s)
    uint64_t fk_shm_capacity(fk_shm *s)
    int fk_shm_created(fk_shm *s)
    void fk_shm_stats_get(fk_shm *s, fk_shm_stats *out) nogil
    int FK_SHM_VERSION

cdef extern from "rcache.h":
    int FK_RC_ERROR, FK_RC_COLD
    void fk_rcache_close(fk_rcache *rc)
    double fk_rc_bench(fk_rc_backend b, size_t live, size_t n, uint64_t seed) nogil

SHM_VERSION = FK_SHM_VERSION


cdef object _unavailable(str backend, int rc, str reason):
    """The typed fail-closed error for a native cache that cannot take an insert."""
    from fastkrb.errors import ReplayCacheUnavailable
    if rc == FK_RC_FULL:
        return ReplayCacheUnavailable(
            f"The {backend} replay cache is full of live entries; rather than forget one (and let its replay "
            "through) it refuses new authenticators until entries expire.",
            "Raise the replay cache capacity to cover the peak rate times twice the clock skew.",
            {"reason": "full", "backend": backend})
    if rc == FK_RC_COLD:
        return ReplayCacheUnavailable(
            f"The {backend} replay cache was re-created empty ({reason}) and this authenticator predates "
            "that: for clock_skew seconds it cannot know whether it was seen before (RFC 4120 §3.2.3).",
            "The client retries with a fresh authenticator and succeeds.",
            {"reason": "cold_start", "backend": backend})
    return ReplayCacheUnavailable(f"The {backend} replay cache cannot answer ({reason}); failing closed.",
                                  details={"reason": reason, "backend": backend})


cdef const uint8_t *_key16(object key) except NULL:
    if not isinstance(key, bytes) or PyBytes_GET_SIZE(key) != 16:
        raise ValueError("replay key must be 16 bytes")
    return <const uint8_t *>PyBytes_AS_STRING(key)


cdef object _answer(int rc, double first):
    if rc == FK_RC_OK:
        return (True, None)
    if rc == FK_RC_REPLAY:
        return (False, first if first != 0 else None)
    return None


cdef class InProcessReplayCache(MemoryReplayCache):
    """The in-process cache (rcache.c) with the fastkrb.replay interface: safe across threads, exact
    capacity (full of live entries -> ReplayCacheUnavailable), O(1) insert and expiry."""

    def insert(self, bytes key, double expiry, double now):
        """Atomic insert-if-absent: (True, None) when new, (False, first_seen) for a replay."""
        cdef double first = 0
        cdef int rc
        cdef const uint8_t *k = _key16(key)
        with nogil:
            rc = fk_rcache_insert(self.rc, k, expiry, now, &first)
        out = _answer(rc, first)
        if out is None:
            raise _unavailable("memory", rc, "closed" if rc == FK_RC_ERROR else "full")
        return out

    def insert_many(self, items, double now):
        """insert() for each (key, expiry) in order; a cache that cannot answer fails the whole batch."""
        cdef list out = []
        for key, expiry in items:
            out.append(self.insert(key, expiry, now))
        return out

    def stats(self):
        cdef fk_rcache_stats st
        fk_rcache_stats_get(self.rc, &st)
        return {"entries": st.entries, "inserts": st.inserts, "hits": st.hits, "evictions": st.evictions,
                "capacity": st.capacity, "full": st.full, "errors": 0}

    def close(self):
        """Later inserts fail closed; memory is released when the last reference goes."""
        fk_rcache_close(self.rc)


cdef class ShmReplayCache(NativeReplayBackend):
    """The replay cache every process on a host shares through one memory-mapped file (shm.c)."""

    cdef fk_shm *shm
    cdef readonly str path
    cdef readonly double clock_skew
    cdef readonly bint cold_start

    def __cinit__(self, path, size_t capacity=1 << 20, double clock_skew=300.0, bint cold_start=True):
        cdef char err[256]
        cdef bytes p = _os.fsencode(path)
        cdef const char *cp = p
        err[0] = 0
        self.path = _os.fsdecode(p)
        self.clock_skew = clock_skew
        self.cold_start = cold_start
        with nogil:
            self.shm = fk_shm_open(cp, capacity, clock_skew, cold_start, err, sizeof(err))
        if self.shm == NULL:
            raise _unavailable("shm", FK_RC_ERROR,
                               f"cannot open {self.path}: {err.decode('utf-8', 'replace')}")

    def __dealloc__(self):
        if self.shm != NULL:
            fk_shm_free(self.shm)

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = fk_shm_insert_cb
        b.ctx = <void *>self.shm
        return b

    @property
    def started(self):
        """Creation time of the table file (a re-created file starts empty: the cold-start rule applies)."""
        return fk_shm_started(self.shm)

    @property
    def capacity(self):
        return fk_shm_capacity(self.shm)

    @property
    def created(self):
        """True when this open created or re-created the file."""
        return bool(fk_shm_created(self.shm))

    def insert(self, bytes key, double expiry, double now):
        """Atomic insert-if-absent across processes: (True, None) or (False, first_seen)."""
        cdef double first = 0
        cdef int rc
        cdef const uint8_t *k = _key16(key)
        with nogil:
            rc = fk_shm_insert(self.shm, k, expiry, now, &first)
        out = _answer(rc, first)
        if out is None:
            raise _unavailable("shm", rc, {FK_RC_ERROR: "closed, or the table was wedged or damaged and is being replaced",
                                           FK_RC_COLD: "file replaced"}.get(rc, "full"))
        return out

    def insert_many(self, items, double now):
        """insert() for each (key, expiry) in order."""
        cdef list out = []
        for key, expiry in items:
            out.append(self.insert(key, expiry, now))
        return out

    def stats(self):
        """Counters since the file was created, summed over every process."""
        cdef fk_shm_stats st
        with nogil:
            fk_shm_stats_get(self.shm, &st)
        return {"entries": st.entries, "inserts": st.inserts, "hits": st.hits, "evictions": st.evictions,
                "capacity": st.capacity, "full": st.full, "errors": st.errors, "recoveries": st.recoveries,
                "slots": st.slots, "shards": st.shards, "remaps": st.remaps}

    def close(self):
        """Later inserts fail closed; the mapping is released when the last reference goes."""
        fk_shm_close(self.shm)

    def _die_in_insert(self, bytes key, double expiry, double now, int stage):
        """Tests only: run insert(key) up to `stage` (1-5) and keep the lock, as a process killed there."""
        return fk_shm_die_in_insert(self.shm, _key16(key), expiry, now, stage)


def rcache_bench(str kind, size_t live, size_t n=1000000, path=None, uint64_t seed=1):
    """Mean ns per insert measured in C (fk_rc_bench) with `live` entries alive: kind 'memory' or 'shm'."""
    cdef NativeReplayBackend cache
    cdef fk_rc_backend b
    cdef double ns
    if kind == "memory":
        cache = InProcessReplayCache(live + 16)
    elif kind == "shm":
        if path is None:
            raise ValueError("shm bench needs a path")
        cache = ShmReplayCache(path, live, 300.0, False)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    b = cache.backend()
    with nogil:
        ns = fk_rc_bench(b, live, n, seed)
    if ns < 0:
        raise RuntimeError(f"{kind} cache refused an insert during the benchmark")
    return ns
