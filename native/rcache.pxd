# rcache.h declared once: the backend contract every native replay cache offers the C validator
# (an insert function and its context), and the in-process table behind MemoryReplayCache.

from libc.stdint cimport uint8_t, uint64_t

cdef extern from "rcache.h" nogil:
    enum:
        FK_RC_OK
        FK_RC_REPLAY
        FK_RC_FULL
        FK_RC_ERROR
        FK_RC_COLD

    ctypedef struct fk_rcache:
        pass

    ctypedef int (*fk_rc_insert_fn)(void *ctx, const uint8_t *key, double expiry, double now,
                                    double *first_seen) nogil

    ctypedef void (*fk_rc_prefetch_fn)(void *ctx, const uint8_t *key) nogil

    ctypedef struct fk_rc_backend:
        fk_rc_insert_fn insert
        fk_rc_prefetch_fn prefetch
        void *ctx

    ctypedef struct fk_rcache_stats:
        uint64_t entries, inserts, hits, evictions, full, capacity
        uint64_t table_capacity, migrating, bytes, grows, shrinks

    fk_rcache *fk_rcache_new(size_t capacity)
    fk_rcache *fk_rcache_new_sized(size_t capacity, size_t first)
    void fk_rcache_close(fk_rcache *rc)
    int fk_rcache_closed(fk_rcache *rc)
    void fk_rcache_free(fk_rcache *rc)
    int fk_rcache_insert(fk_rcache *rc, const uint8_t *key, double expiry, double now, double *first_seen)
    int fk_rcache_insert_cb(void *ctx, const uint8_t *key, double expiry, double now, double *first_seen)
    void fk_rcache_prefetch_cb(void *ctx, const uint8_t *key) nogil
    void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out)
    double fk_rc_bench(fk_rc_backend b, size_t live, size_t n, uint64_t seed)
