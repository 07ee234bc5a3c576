# The in-process replay cache (rcache.c) with the fastkrb.replay interface: the one memory cache, used
# by the validator through its C insert and by Python callers through insert().

import time as _time

from libc.stdint cimport uint8_t

from rcache cimport (fk_rcache, fk_rc_backend, fk_rcache_stats, fk_rcache_new_sized, fk_rcache_close,
                     fk_rcache_closed, fk_rcache_free, fk_rcache_insert, fk_rcache_insert_cb, fk_rcache_prefetch_cb,
                     fk_rcache_stats_get)


cdef class MemoryReplayCache(NativeReplayBackend):
    """The in-process replay cache: threads of one process; exact capacity (full of live entries: it
    fails closed with ReplayCacheUnavailable instead of forgetting one), O(1) insert and expiry. Its
    table is sized for the entries it holds, not for the capacity (it grows and shrinks a few entries
    per insert), so a process pays memory for its load only. It outlives keytab reloads and is shared by
    every validator given it. ``initial_capacity``: the first table's size (default 4096), for tests."""

    cdef fk_rcache *rc
    cdef readonly double started
    cdef readonly size_t capacity

    def __cinit__(self, size_t capacity=1 << 20, started=None, size_t initial_capacity=0):
        self.rc = fk_rcache_new_sized(capacity, initial_capacity)
        if self.rc == NULL:
            raise MemoryError("replay cache allocation failed")
        self.capacity = capacity
        self.started = _time.time() if started is None else float(started)

    def __dealloc__(self):
        if self.rc != NULL:
            fk_rcache_free(self.rc)

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = fk_rcache_insert_cb
        b.prefetch = fk_rcache_prefetch_cb
        b.ctx = <void *>self.rc
        return b

    def insert(self, bytes key, double expiry, double now):
        """Atomic insert-if-absent: (True, None) when new, (False, first_seen) for a replay."""
        cdef double first = 0
        cdef int rc
        cdef const uint8_t *k = _key16(key)
        with nogil:
            rc = fk_rcache_insert(self.rc, k, expiry, now, &first)
        out = _answer(rc, first)
        if out is None:
            raise _unavailable("memory", rc, "closed" if fk_rcache_closed(self.rc) else
                               "out of memory growing its table")
        return out

    def insert_many(self, items, double now):
        """insert() for each (key, expiry) in order; a cache that cannot answer fails the whole batch."""
        cdef list out = []
        for key, expiry in items:
            out.append(self.insert(key, expiry, now))
        return out

    def stats(self):
        """Counters since creation: entries, inserts, hits, evictions, capacity, full, errors (always 0); and
        the table's state: table_capacity (entries the current table holds), migrating (entries still to
        move from the previous one), bytes (mapped for the tables), grows, shrinks."""
        cdef fk_rcache_stats st
        fk_rcache_stats_get(self.rc, &st)
        return {"entries": st.entries, "inserts": st.inserts, "hits": st.hits, "evictions": st.evictions,
                "capacity": st.capacity, "full": st.full, "errors": 0, "table_capacity": st.table_capacity,
                "migrating": st.migrating, "bytes": st.bytes, "grows": st.grows, "shrinks": st.shrinks}

    def close(self):
        """Later inserts fail closed; memory is released when the last reference goes."""
        fk_rcache_close(self.rc)
