# shm.h declared once: the replay table shared through a memory-mapped file (ShmReplayCache).

from libc.stdint cimport uint8_t, uint64_t

cdef extern from "shm.h" nogil:
    enum:
        FK_SHM_VERSION

    ctypedef struct fk_shm:
        pass

    ctypedef struct fk_shm_stats:
        uint64_t inserts, hits, evictions, full, errors, recoveries, entries, capacity, slots, shards, remaps

    fk_shm *fk_shm_open(const char *path, size_t capacity, double skew, int cold_start, char *err,
                        size_t errlen)
    void fk_shm_close(fk_shm *s)
    void fk_shm_free(fk_shm *s)
    int fk_shm_insert(fk_shm *s, const uint8_t *key, double expiry, double now, double *first_seen)
    int fk_shm_insert_cb(void *ctx, const uint8_t *key, double expiry, double now, double *first_seen)
    void fk_shm_prefetch_cb(void *ctx, const uint8_t *key) nogil
    int fk_shm_die_in_insert(fk_shm *s, const uint8_t *key, double expiry, double now, int stage)
    double fk_shm_started(fk_shm *s)
    uint64_t fk_shm_capacity(fk_shm *s)
    int fk_shm_created(fk_shm *s)
    void fk_shm_stats_get(fk_shm *s, fk_shm_stats *out)
