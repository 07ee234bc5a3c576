/* The replay table both native caches are made of: the in-process one (rcache.c) keeps it in private
 * memory, the shared one (shm.c) in a memory-mapped file. The caller holds its lock around every call
 * but fk_tab_probe.
 *
 * Three arrays and a control block (shm.c keeps several such tables, shards, one lock each):
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
 * Crash consistency (shm: a process may die inside the lock): the ring and the records are the truth,
 * the tags are derived from them. Head and count are one 64-bit word, stored once per change, and an
 * insert commits by that store after everything else is written; fk_tab_rebuild re-derives the tags.
 */
#ifndef FASTKRB_RTAB_H
#define FASTKRB_RTAB_H

#include <stddef.h>
#include <stdint.h>

#define FK_TAB_BUCKET 32
#define FK_TAB_DEFER 8
#define FK_TAB_MAX_CAPACITY ((uint64_t)1 << 30)

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

#endif
