/* In-process replay cache. See rcache.h.
 *
 * Cost model: at 10^6 live entries the table (64 MB) is far larger than the caches, so an insert is
 * dominated by memory latency: the home slot of the new key, and the slot of the oldest entry that
 * expires now. Both addresses are known before the lock is taken (the ring keeps each entry's hash),
 * so they are prefetched together and the two misses overlap instead of adding up.
 */
#include "rcache.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kcrypto.h"

/* The index: 8 bytes per slot, so at 10^6 entries it stays within the last-level cache.
 * entry = (h >> POS_BITS) << POS_BITS | (ring position + 1); 0 = empty. The high 38 bits of the hash give
 * the home slot (low bits) and a tag (the rest), so probing reads the ring only when a tag matches and
 * backward-shift deletion never rehashes. */
#define POS_BITS 26
#define POS_MASK ((((uint64_t)1) << POS_BITS) - 1)
#define MAX_CAPACITY (POS_MASK - 1)   /* so the index (<= 2^27 slots) is addressed by 32 bits */

/* 32 bytes: the entries themselves, in insertion order (a FIFO ring), so expiry pops from the head and
 * inserts append at the tail: both sequential. */
typedef struct ring_rec {
    uint64_t k0, k1;        /* the 16-byte key */
    double seen;            /* first presentation */
    float ttl;              /* expiry - seen, rounded up: an entry may live a few µs longer, never shorter */
    uint32_t home;          /* the index slot its probe starts at: expiry needs no rehash */
} ring_rec;

struct fk_rcache {
    atomic_int mu;          /* a spinlock: unlock is a plain store, where a mutex costs a second atomic */
    uint64_t *index;
    size_t mask;            /* index size - 1 (power of two, >= 2 * capacity) */
    ring_rec *ring;
    size_t capacity, head, count;
    uint64_t seed[2];
    int closed;
    fk_rcache_stats st;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Critical sections are a few probes long; a waiter spins briefly, then yields its CPU. */
static inline void lock(atomic_int *l)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(l, memory_order_relaxed) && !atomic_exchange_explicit(l, 1, memory_order_acquire))
            return;
        if (spins < 100)
            cpu_relax();
        else
            sched_yield();
    }
}

static inline void unlock(atomic_int *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
}

uint64_t fk_sip16(const uint64_t seed[2], const uint8_t key[16])
{
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    uint64_t v0 = seed[0] ^ 0x736f6d6570736575ULL, v1 = seed[1] ^ 0x646f72616e646f6dULL;
    uint64_t v2 = seed[0] ^ 0x6c7967656e657261ULL, v3 = seed[1] ^ 0x7465646279746573ULL;
    uint64_t m[3];
    memcpy(&m[0], key, 8);
    memcpy(&m[1], key + 8, 8);
    m[2] = (uint64_t)16 << 56;
#define SIPROUND                                                                                     \
    do {                                                                                             \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                    \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                       \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                       \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                    \
    } while (0)
    /* SipHash-1-3 of a 16-byte key under a secret seed: bucket choice an attacker cannot steer. */
    for (int i = 0; i < 3; i++) {
        v3 ^= m[i];
        SIPROUND;
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
#undef SIPROUND
#undef ROTL
    return v0 ^ v1 ^ v2 ^ v3;
}

/* Big tables live in their own mapping with transparent huge pages where the kernel allows them:
 * at 10^6 entries a 4 KiB-page table costs a TLB miss on top of the cache miss. */
#define HUGE_PAGE ((size_t)2 << 20)

static size_t big_size(size_t n)
{
    return n >= HUGE_PAGE ? (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1) : n;
}

static void *big_alloc(size_t n)
{
    n = big_size(n);
    if (n < HUGE_PAGE) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    /* 2 MiB-aligned, so every part of the table can be a huge page */
    uint8_t *p = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t lead = (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
    if (lead)
        munmap(p, lead);
    if (HUGE_PAGE - lead)
        munmap(p + lead + n, HUGE_PAGE - lead);
#ifdef MADV_HUGEPAGE
    madvise(p + lead, n, MADV_HUGEPAGE);
#endif
    return p + lead;
}

static void big_free(void *p, size_t n)
{
    if (p)
        munmap(p, big_size(n));
}

fk_rcache *fk_rcache_new(size_t capacity)
{
    if (capacity < 16)
        capacity = 16;
    if (capacity > MAX_CAPACITY)
        return NULL;
    size_t size = 32;
    while (size < 2 * capacity)
        size <<= 1;
    fk_rcache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    rc->index = big_alloc(size * sizeof(uint64_t));
    rc->ring = big_alloc(capacity * sizeof(ring_rec));
    if (!rc->index || !rc->ring ||
        fk_random((uint8_t *)rc->seed, sizeof rc->seed) != FK_OK) {
        big_free(rc->index, size * sizeof(uint64_t));
        big_free(rc->ring, capacity * sizeof(ring_rec));
        free(rc);
        return NULL;
    }
    rc->mask = size - 1;
    rc->capacity = capacity;
    rc->st.capacity = capacity;
    return rc;
}

void fk_rcache_close(fk_rcache *rc)
{
    lock(&rc->mu);
    rc->closed = 1;
    unlock(&rc->mu);
}

void fk_rcache_free(fk_rcache *rc)
{
    if (!rc)
        return;
    big_free(rc->index, (rc->mask + 1) * sizeof(uint64_t));
    big_free(rc->ring, rc->capacity * sizeof(ring_rec));
    free(rc);
}

static inline int live(const ring_rec *r, double now)
{
    return r->seen + (double)r->ttl > now;
}

static inline size_t home_of(const fk_rcache *rc, uint64_t e)
{
    return (size_t)(e >> POS_BITS) & rc->mask;
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void erase(fk_rcache *rc, size_t i)
{
    size_t j = i;
    for (;;) {
        rc->index[i] = 0;
        for (;;) {
            j = (j + 1) & rc->mask;
            if (!rc->index[j])
                return;
            size_t home = home_of(rc, rc->index[j]);
            /* can slot j's entry move back to i? only if its home is not cyclically in (i, j] */
            if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)))
                break;
        }
        rc->index[i] = rc->index[j];
        i = j;
    }
}

/* Pop the expired records at the head of the ring and drop their index entries. A record whose key was
 * inserted again (after expiring) no longer owns the index entry: it is only popped. */
static void expire(fk_rcache *rc, double now)
{
    while (rc->count) {
        const ring_rec *r = &rc->ring[rc->head];
        if (live(r, now))
            break;
        uint64_t want = (uint64_t)(rc->head + 1);
        for (size_t i = r->home; rc->index[i]; i = (i + 1) & rc->mask) {
            if ((rc->index[i] & POS_MASK) == want) {
                erase(rc, i);
                rc->st.entries--;
                rc->st.evictions++;
                break;
            }
        }
        rc->head = rc->head + 1 == rc->capacity ? 0 : rc->head + 1;
        rc->count--;
    }
}

static float ttl_up(double expiry, double seen)
{
    double d = expiry - seen;
    if (!(d > 0))
        return 0.0f;
    float f = (float)d;
    if ((double)f < d) {   /* next float up: for a positive finite float, the next bit pattern */
        uint32_t u;
        memcpy(&u, &f, 4);
        u++;
        memcpy(&f, &u, 4);
    }
    return f;
}

int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    int ret = FK_RC_OK;
    uint64_t k0, k1;
    memcpy(&k0, key, 8);
    memcpy(&k1, key + 8, 8);
    uint64_t hh = fk_sip16(rc->seed, key) >> POS_BITS;
    size_t i = (size_t)hh & rc->mask, home = i;
    __builtin_prefetch(&rc->index[i], 1);
    /* and the slot the oldest entry will free: a hint read without the lock (relaxed, masked) */
    size_t oldest = __atomic_load_n(&rc->head, __ATOMIC_RELAXED);
    if (oldest < rc->capacity)
        __builtin_prefetch(&rc->index[__atomic_load_n(&rc->ring[oldest].home, __ATOMIC_RELAXED) & rc->mask], 1);
    lock(&rc->mu);
    if (rc->closed) {
        unlock(&rc->mu);
        return FK_RC_ERROR;
    }
    expire(rc, now);
    ring_rec *found = NULL;
    for (; rc->index[i]; i = (i + 1) & rc->mask) {
        uint64_t e = rc->index[i];
        if ((e >> POS_BITS) == hh) {
            ring_rec *r = &rc->ring[(e & POS_MASK) - 1];
            if (r->k0 == k0 && r->k1 == k1) {
                found = r;
                break;
            }
        }
    }
    if (found && live(found, now)) {
        *first_seen = found->seen;
        rc->st.hits++;
        ret = FK_RC_REPLAY;
    } else if (rc->count == rc->capacity) {
        rc->st.full++;
        ret = FK_RC_FULL;
    } else {
        size_t tail = rc->head + rc->count;
        if (tail >= rc->capacity)
            tail -= rc->capacity;
        ring_rec *r = &rc->ring[tail];
        r->k0 = k0;
        r->k1 = k1;
        r->seen = now;
        r->ttl = ttl_up(expiry, now);
        r->home = (uint32_t)home;
        /* an expired, not yet popped entry of the same key: its index slot now names the new record */
        rc->index[i] = (hh << POS_BITS) | (uint64_t)(tail + 1);
        if (!found)
            rc->st.entries++;
        rc->count++;
        rc->st.inserts++;
    }
    unlock(&rc->mu);
    return ret;
}

int fk_rcache_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return fk_rcache_insert((fk_rcache *)ctx, key, expiry, now, first_seen);
}

void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out)
{
    lock(&rc->mu);
    *out = rc->st;
    unlock(&rc->mu);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double fk_rc_bench(fk_rc_backend b, size_t live, size_t n, uint64_t seed)
{
    /* simulated time: entries live 301 s (a 300 s skew), inserts arrive every 301/live s, so `live` of
     * them are alive at once */
    const double ttl = 301.0, dt = ttl / (double)(live ? live : 1);
    uint8_t key[16];
    double first;
    uint64_t x = seed;
    size_t i = 0;
    for (; i < 2 * live; i++) {
        uint64_t a = splitmix(&x), c = splitmix(&x);
        memcpy(key, &a, 8);
        memcpy(key + 8, &c, 8);
        double now = (double)i * dt + 1.7e9;
        if (b.insert(b.ctx, key, now + ttl, now, &first) != FK_RC_OK)
            return -1.0;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int bad = 0;
    for (size_t j = 0; j < n; j++, i++) {
        uint64_t a = splitmix(&x), c = splitmix(&x);
        memcpy(key, &a, 8);
        memcpy(key + 8, &c, 8);
        double now = (double)i * dt + 1.7e9;
        bad |= b.insert(b.ctx, key, now + ttl, now, &first) != FK_RC_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (bad)
        return -1.0;
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)n;
}
