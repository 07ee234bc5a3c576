/* In-process replay cache: atomic insert-if-absent of a 16-byte authenticator identity with expiry.
 *
 * A two-choice bucketed table: 16-bit tags (32 per cache line) say which slots may hold a key, and the
 * full records sit in a parallel array read only when a tag matches. A FIFO ring in insertion order
 * gives expiry: each insert first pops the expired entries at the head of the ring, so expiry costs
 * O(1) amortised and no call scans the table. The table is sized for the entries held, not for the
 * capacity: it grows (and shrinks) by moving a few entries per insert into a table of the next size
 * (rtab.h, fk_gtab), so memory follows the load. Bounded: when `capacity` live entries are held the insert
 * fails closed (FK_RC_FULL) instead of forgetting one. One spinlock; the critical section is a few
 * cache-resident reads.
 */
#ifndef FASTKRB_RCACHE_H
#define FASTKRB_RCACHE_H

#include <stddef.h>
#include <stdint.h>

#define FK_RC_OK 0        /* inserted: first presentation */
#define FK_RC_REPLAY 1    /* present and live: a replay (first_seen set) */
#define FK_RC_FULL 2      /* capacity of live entries reached: fail closed */
#define FK_RC_ERROR 3      /* cannot answer (closed, damaged, contention beyond bounds, no memory): fail closed */
#define FK_RC_COLD 4       /* the backend restarted empty under the caller: cold-start rule (RFC 4120 §3.2.3) */

typedef struct fk_rcache fk_rcache;

/* What the validator calls: any native backend (memory here, shared memory in shm.c) offers this
 * function and an opaque context. Returns FK_RC_*; *first_seen is set for FK_RC_REPLAY. */
typedef int (*fk_rc_insert_fn)(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen);

/* A hint, optional (NULL): the validator names the key it will insert as soon as it is known (before the
 * authenticator is decrypted), so the table's cache lines (and their page walk) arrive while the crypto
 * runs; in a table of hundreds of MiB the insert is otherwise a cache and TLB miss. No effect on state. */
typedef void (*fk_rc_prefetch_fn)(void *ctx, const uint8_t key[16]);

typedef struct fk_rc_backend {
    fk_rc_insert_fn insert;
    fk_rc_prefetch_fn prefetch;
    void *ctx;
} fk_rc_backend;

typedef struct fk_rcache_stats {
    uint64_t entries, inserts, hits, evictions, full, capacity;
    uint64_t table_capacity, migrating, bytes, grows, shrinks;   /* the growing table (rtab.h, fk_gtab_stats) */
} fk_rcache_stats;

fk_rcache *fk_rcache_new(size_t capacity);
/* The same with the first table sized for `first` entries (0: FK_TAB_FIRST); tests start tiny tables. */
fk_rcache *fk_rcache_new_sized(size_t capacity, size_t first);
/* Inserts after close fail closed (FK_RC_ERROR); memory is released by fk_rcache_free. */
void fk_rcache_close(fk_rcache *rc);
int fk_rcache_closed(fk_rcache *rc);
void fk_rcache_free(fk_rcache *rc);
int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen);
/* fk_rcache_insert with the backend signature (ctx is the fk_rcache). */
int fk_rcache_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen);
void fk_rcache_prefetch_cb(void *ctx, const uint8_t key[16]);
void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out);

/* Mean ns per insert through any backend in steady state: `live` entries held while fresh keys arrive
 * and the oldest expire at the same rate (`n` timed inserts after a warm-up of 2 * live). */
double fk_rc_bench(fk_rc_backend b, size_t live, size_t n, uint64_t seed);

#endif
