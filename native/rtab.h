/* The replay table both native caches are made of: the in-process one (rcache.c) keeps it in private
 * memory and lets it grow and shrink with its load (fk_gtab below), the shared one (shm.c) keeps
 * fixed-size tables in a memory-mapped file. The caller holds its lock around every call but
 * fk_tab_probe* and fk_gtab_probe.
 *
 * One table (fk_tab) is three arrays and a control block (shm.c keeps several such tables, shards, one
 * lock each):
 * - tags: 16 bits per slot, 32 slots per bucket (one cache line); a key may sit in either of two buckets
 *   chosen by keyed SipHash ("two choices"). At 10^6 live entries they take 2.6 MB, small enough to stay
 *   in the caches, so a fresh key is told from every held one without touching the large arrays: a tag
 *   matches by chance about once in 1300 inserts.
 * - records: 32 bytes per slot (key, first seen, expiry), read only when a tag matches.
 * - ring: the entries in insertion order (16 bytes: expiry, slot). Each insert first pops the expired
 *   ones at the head, so expiry is O(1) amortised and nothing ever scans the table. A ring record owns
 *   its slot until popped.
 * - control: ring head and count, the writes not yet made to the records, counters.
 *
 * The growing table (fk_gtab, in-process only): a table sized for the load, not for the configured
 * capacity, so resident memory follows the live entries (a fresh cache of capacity 2^20 holds a table
 * for 4096 entries, 248 KiB, where one for the capacity is 62 MiB). When its ring is full (or a key's
 * two buckets are) it starts a table of twice the capacity, and when the entries fall to an eighth of it,
 * one of a quarter; the configured capacity stays the hard bound on the entries held in both together:
 * at it an insert fails closed (FK_RC_FULL) as a fixed table does. The move is incremental: the old table
 * stays, inserts go to the new one, and each successful insert moves at most FK_TAB_MIGRATE entries from
 * the old ring's tail to the new ring's head, so the old ring followed by the new one is always the
 * single FIFO of a fixed table (expiry pops the old head first) and no insert copies the table. A key is
 * looked up in both tables while the move lasts; the old table's arrays are unmapped when it is empty.
 * The seed is the same in every table (the tag is a function of the hash alone, the buckets also of the
 * table's size), so the hash is computed once, before the lock.
 *
 * Crash consistency (shm only: a process may die inside the lock): the ring and the records are the
 * truth, the tags are derived from them. Head and count are one 64-bit word, stored once per change, and
 * an insert commits by that store after everything else is written; fk_tab_rebuild re-derives the tags.
 */
#ifndef FASTKRB_RTAB_H
#define FASTKRB_RTAB_H

#include <stddef.h>
#include <stdint.h>

#define FK_TAB_BUCKET 32
#define FK_TAB_DEFER 8
#define FK_TAB_MAX_CAPACITY ((uint64_t)1 << 30)
#define FK_TAB_FIRST 4096      /* a growing table's first (and smallest) capacity */
#define FK_TAB_MIGRATE 4       /* entries moved to the new table per insert while it grows or shrinks */

typedef struct fk_tab_rec {
    uint64_t k0, k1;        /* the 16-byte key */
    double seen;            /* first presentation */
    double expiry;
} fk_tab_rec;

typedef struct fk_tab_ring {
    double expiry;
    uint32_t slot;
    uint32_t pad;
} fk_tab_ring;

typedef struct fk_tab_ctl {
    uint64_t ring_pos;                   /* head | count << 32 */
    uint64_t pend_pos;                   /* first | n << 32: the deferred record writes */
    uint64_t pend_slot[FK_TAB_DEFER];
    fk_tab_rec pend[FK_TAB_DEFER];
    uint64_t inserts, hits, evictions, full;
} fk_tab_ctl;

typedef struct fk_tab {
    uint16_t *tags;
    fk_tab_rec *recs;
    fk_tab_ring *ring;
    fk_tab_ctl *ctl;
    uint64_t nb;            /* buckets */
    uint64_t capacity;      /* ring size: live entries held at most */
    uint64_t seed[2];
} fk_tab;

/* Where a key lives: computed (and its cache lines prefetched) before the lock is taken. */
typedef struct fk_tab_probe {
    uint64_t b[2];
    uint16_t tag;
    uint64_t k0, k1;
    uint64_t h;             /* the key's fk_sip16: another table's buckets are computed from it */
    uint64_t nb;            /* fk_gtab: the bucket count b[] was computed for */
} fk_tab_probe;

/* SipHash-1-3 of a 16-byte key under a 128-bit seed: the table's hash (and shm.c's header checksum). */
uint64_t fk_sip16(const uint64_t seed[2], const uint8_t key[16]);

/* Buckets for a capacity (slots = 32 * buckets, 1.3 per live entry). */
uint64_t fk_tab_buckets(uint64_t capacity);

static inline uint64_t fk_tab_slots(const fk_tab *t)
{
    return t->nb * FK_TAB_BUCKET;
}

/* For spinning on a lock (rcache.c, shm.c) before yielding the CPU. */
static inline void fk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
void fk_tab_probe_of(const fk_tab *t, const uint8_t key[16], fk_tab_probe *p);
/* The same from the key's fk_sip16 under t->seed, computed by the caller (shm.c picks a shard with it). */
void fk_tab_probe_hashed(const fk_tab *t, uint64_t h, const uint8_t key[16], fk_tab_probe *p);
/* Ahead of an insert (rcache.h's prefetch hint): a line of each probed bucket's records too, so the page
 * walk for the record the insert will write (a TLB miss in a table of hundreds of MiB without huge pages)
 * is done while the caller still decrypts; fk_tab_probe_hashed has the tag lines on their way already. */
void fk_tab_prefetch_records(const fk_tab *t, const fk_tab_probe *p);

/* FK_RC_OK, FK_RC_REPLAY (*first_seen set) or FK_RC_FULL. */
int fk_tab_insert(fk_tab *t, const fk_tab_probe *p, double expiry, double now, double *first_seen);
/* Crash tests only: the insert stopped before the record write (stop 1), the ring write (2), the tag
 * write (3), the commit (4), or after the commit (5), as a process killed there would leave it. */
int fk_tab_insert_until(fk_tab *t, const fk_tab_probe *p, double expiry, double now, double *first_seen, int stop);
/* Entries held (live, or expired and not popped yet). */
uint64_t fk_tab_count(const fk_tab *t);
/* After a writer died inside the lock: makes the deferred writes, then re-derives every tag from the
 * ring and the records. 0, or -1 when they contradict each other (damage: the table must be replaced). */
int fk_tab_rebuild(fk_tab *t);
/* Read-only form of the same check (a file being opened). */
int fk_tab_verify(const fk_tab *t);

/* ---- the growing table (in-process) ---- */

typedef struct fk_gtab {
    fk_tab t[2];            /* t[cur] takes the inserts; t[!cur] is being emptied into it while migrating */
    fk_tab_ctl ctl[2];
    int cur, migrating;
    uint64_t limit;         /* the configured capacity: entries held in both tables at most */
    uint64_t first;         /* the first table's capacity, and the smallest a shrink makes */
    uint64_t seed[2];
    uint64_t bytes;         /* mapped for both tables' arrays */
    uint64_t done[4];       /* inserts, hits, evictions, full of the tables already released */
    uint64_t grows, shrinks;
    uint64_t shrink_at;     /* entries at or below which t[cur] shrinks (0: it is the smallest) */
    uint16_t *snap_tags;    /* t[cur]'s tags and buckets, read without the lock to prefetch */
    uint64_t snap_nb;
} fk_gtab;

typedef struct fk_gtab_stats {
    uint64_t entries, inserts, hits, evictions, full;
    uint64_t table_capacity;    /* the capacity of the table taking inserts */
    uint64_t migrating;         /* entries still in the table being emptied (0: no move under way) */
    uint64_t bytes, grows, shrinks;
} fk_gtab_stats;

/* A table for min(limit, first) entries (first 0: FK_TAB_FIRST). 0, or -1 (no memory). */
int fk_gtab_init(fk_gtab *g, uint64_t limit, uint64_t first, const uint64_t seed[2]);
void fk_gtab_free(fk_gtab *g);
/* Without the lock: the key's hash and its buckets in the current table, prefetched. */
void fk_gtab_probe(const fk_gtab *g, const uint8_t key[16], fk_tab_probe *p);
/* FK_RC_OK, FK_RC_REPLAY (*first_seen set), FK_RC_FULL (limit reached), FK_RC_ERROR (no memory to grow).
 * The probe's buckets are recomputed when the table changed since fk_gtab_probe. */
int fk_gtab_insert(fk_gtab *g, fk_tab_probe *p, double expiry, double now, double *first_seen);
void fk_gtab_stats_get(const fk_gtab *g, fk_gtab_stats *out);

#endif
