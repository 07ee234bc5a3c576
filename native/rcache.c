/* In-process replay cache. See rcache.h.
 *
 * Cost model: at 10^6 live entries the records and the ring (60 MB) are far larger than the caches, and
 * this machine class pays ~160 ns for a DRAM read. So the decision "held or fresh" reads only the tags
 * (2.6 MB, cache-resident): the two candidate buckets of the new key, and the slot of the oldest entry
 * that expires now, all three prefetched before the lock. The record of a fresh key is written without
 * being read (the CPU retires the store without waiting for the line), the ring is touched only at its
 * head and tail (sequential, prefetched by the hardware), and a record is read only when its tag
 * matches: a replay, or a chance match of 16 bits.
 */
#include "rcache.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kcrypto.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Tags: 16 bits per slot, 32 slots per bucket (one cache line); a key may sit in either of two buckets
 * (keyed hash, "two choices"). At 10^6 live entries the tags take 2.6 MB, small enough to stay in the
 * caches, so a fresh key is told apart from every held one without touching the large arrays: a tag
 * matches by chance for 1 insert in ~1300 (about 50 held tags compared, 2^16 values). */
#define BUCKET 32
#define FREE 0            /* a slot no ring record owns */
#define DEAD 0xffff       /* owned until popped, never matched: the key was inserted again after expiring */
/* Slots per live entry: with two choices the fullest of N buckets exceeds the mean by ~log log N / log 2,
 * so 1.3x keeps every bucket below 32 at 10^6 live (none full in the test's steady-state runs). */
#define SLACK_NUM 13
#define SLACK_DEN 10
#define MAX_CAPACITY ((size_t)1 << 30)

/* 32 bytes per slot, in slot order: read only when a tag matches, written once per insert (a store the
 * CPU does not wait for). */
typedef struct rec {
    uint64_t k0, k1;        /* the 16-byte key */
    double seen;            /* first presentation */
    double expiry;
} rec;

/* 16 bytes: the entries in insertion order (a FIFO ring), so expiry pops from the head and inserts
 * append at the tail, both sequential. A ring record owns its slot until popped: a key inserted again
 * after expiring takes a new slot, so popping never frees a slot someone else holds. */
typedef struct ring_rec {
    double expiry;
    uint32_t slot;
    uint32_t pad;
} ring_rec;

/* A record is written DEFER inserts after its own, once the line asked for then (prefetch for write) has
 * had time to arrive: a store to a line still in DRAM holds up every later store behind it (stores
 * commit in order), which cost ~75 ns per insert at 10^6 entries. Until then it waits here, in order,
 * and a lookup whose tag matches looks here first. */
#define DEFER 8

struct fk_rcache {
    atomic_int mu;          /* a spinlock: unlock is a plain store, where a mutex costs a second atomic */
    uint16_t *tags;
    rec *recs;
    ring_rec *ring;
    uint64_t nb;            /* buckets */
    size_t capacity, head, count;
    uint64_t seed[2];
    int closed;
    unsigned npend, pend_head;
    uint64_t pend_slot[DEFER];
    rec pend[DEFER];
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

static size_t nslots(const fk_rcache *rc)
{
    return (size_t)rc->nb * BUCKET;
}

fk_rcache *fk_rcache_new(size_t capacity)
{
    if (capacity < 16)
        capacity = 16;
    if (capacity > MAX_CAPACITY)
        return NULL;
    fk_rcache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    /* small tables get a bucket of headroom more: there the spread of two choices is relatively wider */
    rc->nb = ((uint64_t)capacity * SLACK_NUM / SLACK_DEN + BUCKET - 1) / BUCKET + 2;
    rc->tags = big_alloc(nslots(rc) * sizeof(uint16_t));
    rc->recs = big_alloc(nslots(rc) * sizeof(rec));
    rc->ring = big_alloc(capacity * sizeof(ring_rec));
    if (!rc->tags || !rc->recs || !rc->ring ||
        fk_random((uint8_t *)rc->seed, sizeof rc->seed) != FK_OK) {
        big_free(rc->tags, nslots(rc) * sizeof(uint16_t));
        big_free(rc->recs, nslots(rc) * sizeof(rec));
        big_free(rc->ring, capacity * sizeof(ring_rec));
        free(rc);
        return NULL;
    }
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
    big_free(rc->tags, nslots(rc) * sizeof(uint16_t));
    big_free(rc->recs, nslots(rc) * sizeof(rec));
    big_free(rc->ring, rc->capacity * sizeof(ring_rec));
    free(rc);
}

/* Bit j set: the bucket's slot j holds tag t (t = 0: slot j is free). */
static inline uint32_t match(const uint16_t *bucket, uint16_t t)
{
#if defined(__SSE2__)
    const __m128i want = _mm_set1_epi16((short)t);
    const __m128i *v = (const __m128i *)(const void *)bucket;
    uint32_t m = 0;
    for (int q = 0; q < BUCKET / 16; q++) {
        /* 16-bit compares, packed to one byte per lane (0 or -1 saturate to themselves) */
        __m128i lo = _mm_cmpeq_epi16(_mm_load_si128(v + 2 * q), want);
        __m128i hi = _mm_cmpeq_epi16(_mm_load_si128(v + 2 * q + 1), want);
        m |= (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(lo, hi)) << (16 * q);
    }
    return m;
#else
    uint32_t m = 0;
    for (int j = 0; j < BUCKET; j++)
        m |= (uint32_t)(bucket[j] == t) << j;
    return m;
#endif
}

/* Pop the expired records at the head of the ring and free their slots. */
static void expire(fk_rcache *rc, double now)
{
    while (rc->count) {
        const ring_rec *r = &rc->ring[rc->head];
        if (r->expiry > now)
            break;
        rc->tags[r->slot] = FREE;
        rc->st.entries--;
        rc->st.evictions++;
        rc->head = rc->head + 1 == rc->capacity ? 0 : rc->head + 1;
        rc->count--;
    }
}

/* The record held at a slot: the newest pending write to it, else the array. */
static inline const rec *record(const fk_rcache *rc, uint64_t slot)
{
    for (unsigned n = rc->npend; n--;) {
        unsigned i = (rc->pend_head + n) % DEFER;
        if (rc->pend_slot[i] == slot)
            return &rc->pend[i];
    }
    return &rc->recs[slot];
}

/* Queues the write of a record; the oldest queued one goes to the array. Writes leave in order, so of
 * two pending writes to one slot (freed and taken again within DEFER inserts) the newer one lands last. */
static inline void defer_write(fk_rcache *rc, uint64_t slot, const rec *r)
{
    __builtin_prefetch(&rc->recs[slot], 1);
    if (rc->npend == DEFER) {
        unsigned o = rc->pend_head;
        rc->recs[rc->pend_slot[o]] = rc->pend[o];
        rc->pend_head = (o + 1) % DEFER;
        rc->npend--;
    }
    unsigned i = (rc->pend_head + rc->npend) % DEFER;
    rc->pend_slot[i] = slot;
    rc->pend[i] = *r;
    rc->npend++;
}

int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    int ret = FK_RC_OK;
    uint64_t k0, k1;
    memcpy(&k0, key, 8);
    memcpy(&k1, key + 8, 8);
    uint64_t h = fk_sip16(rc->seed, key);
    /* two buckets from the two halves (multiply-shift onto [0, nb): each takes its half's high bits);
     * the tag from a multiplicative mix of all 64, so keys sharing a bucket do not share tag bits */
    uint64_t b[2] = {((h & 0xffffffffu) * rc->nb) >> 32, ((h >> 32) * rc->nb) >> 32};
    if (b[1] == b[0])
        b[1] = b[0] + 1 == rc->nb ? 0 : b[0] + 1;
    uint16_t tag = (uint16_t)((h * 0x9e3779b97f4a7c15ULL) >> 48);
    if (tag == FREE || tag == DEAD)
        tag = 1;
    const uint16_t *bk[2] = {rc->tags + b[0] * BUCKET, rc->tags + b[1] * BUCKET};
    __builtin_prefetch(bk[0], 1);
    __builtin_prefetch(bk[1], 1);
    /* and the slot the oldest entry will free: a hint read without the lock (relaxed, bounded) */
    size_t oldest = __atomic_load_n(&rc->head, __ATOMIC_RELAXED);
    if (oldest < rc->capacity) {
        uint32_t os = __atomic_load_n(&rc->ring[oldest].slot, __ATOMIC_RELAXED);
        if (os < nslots(rc))
            __builtin_prefetch(&rc->tags[os], 1);
    }
    lock(&rc->mu);
    if (rc->closed) {
        unlock(&rc->mu);
        return FK_RC_ERROR;
    }
    expire(rc, now);
    uint64_t stale = UINT64_MAX;
    for (int i = 0; i < 2; i++) {
        for (uint32_t m = match(bk[i], tag); m; m &= m - 1) {
            uint64_t s = b[i] * BUCKET + (uint64_t)__builtin_ctz(m);
            const rec *r = record(rc, s);
            if (r->k0 != k0 || r->k1 != k1)
                continue;
            if (r->expiry > now) {
                *first_seen = r->seen;
                rc->st.hits++;
                unlock(&rc->mu);
                return FK_RC_REPLAY;
            }
            stale = s;   /* this key, expired but not popped yet: it does not count */
        }
    }
    uint32_t free0 = match(bk[0], FREE), free1 = match(bk[1], FREE);
    if (rc->count == rc->capacity || !(free0 | free1)) {
        rc->st.full++;
        ret = FK_RC_FULL;
    } else {
        /* the emptier bucket: two choices keep the fullest one close to the mean */
        int pick = __builtin_popcount(free1) > __builtin_popcount(free0);
        uint64_t slot = b[pick] * BUCKET + (uint64_t)__builtin_ctz(pick ? free1 : free0);
        size_t tail = rc->head + rc->count;
        if (tail >= rc->capacity)
            tail -= rc->capacity;
        /* a key has one findable record: the stale one stays held (its ring record owns the slot) but is
         * never matched again, even by a clock that steps back */
        if (stale != UINT64_MAX)
            rc->tags[stale] = DEAD;
        rc->tags[slot] = tag;
        defer_write(rc, slot, &(rec){k0, k1, now, expiry});
        rc->ring[tail].expiry = expiry;
        rc->ring[tail].slot = (uint32_t)slot;
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
