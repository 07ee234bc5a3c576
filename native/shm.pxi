# The replay cache every process on a host shares through one memory-mapped file (shm.c).

import os as _os

from libc.stdint cimport uint8_t

from rcache cimport fk_rc_backend, FK_RC_ERROR, FK_RC_COLD
from shm cimport (fk_shm, fk_shm_stats, fk_shm_open, fk_shm_close, fk_shm_free, fk_shm_insert, fk_shm_insert_cb, fk_shm_prefetch_cb,
                  fk_shm_die_in_insert, fk_shm_started, fk_shm_capacity, fk_shm_created, fk_shm_stats_get,
                  FK_SHM_VERSION)

SHM_VERSION = FK_SHM_VERSION


cdef class ShmReplayCache(NativeReplayBackend):
    """The replay cache every process on a host shares through one memory-mapped file.

    Put the file on tmpfs (/dev/shm, /run) unless it must survive a reboot; it is created 0600, so only
    the service's user may open it. Processes sharing it must share a clock within a second (same host).
    A missing, other-version or damaged file is re-created, and the cold-start rule (RFC 4120 §3.2.3)
    applies from its creation (``started``).
    """

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
            raise _unavailable("shm", FK_RC_ERROR, f"cannot open {self.path}: {err.decode('utf-8', 'replace')}")

    def __dealloc__(self):
        if self.shm != NULL:
            fk_shm_free(self.shm)

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = fk_shm_insert_cb
        b.prefetch = fk_shm_prefetch_cb
        b.ctx = <void *>self.shm
        return b

    @property
    def started(self):
        """Creation time of the table file (a re-created file starts empty: the cold-start rule applies)."""
        return fk_shm_started(self.shm)

    @property
    def capacity(self):
        """Live entries the mapped file was sized for (an existing file keeps its own geometry)."""
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
            # expiry is ctime + clock_skew + 1 (the validator's rule), so the authenticator's time is known
            raise _unavailable("shm", rc, "closed, or the table was wedged or damaged and is being replaced",
                               fk_shm_started(self.shm), expiry - self.clock_skew - 1.0, self.clock_skew)
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
