/* In-process replay cache: the table of rtab.c in private memory (huge pages where the kernel allows
 * them), under one spinlock. See rcache.h. */
#include "rcache.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kcrypto.h"
#include "rtab.h"

struct fk_rcache {
    atomic_int mu;          /* a spinlock: unlock is a plain store, where a mutex costs a second atomic */
    fk_tab t;
    fk_tab_ctl ctl;
    int closed;
};

/* Critical sections are a few probes long; a waiter spins briefly, then yields its CPU. */
static inline void lock(atomic_int *l)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(l, memory_order_relaxed) && !atomic_exchange_explicit(l, 1, memory_order_acquire))
            return;
        if (spins < 100)
            fk_cpu_relax();
        else
            sched_yield();
    }
}

static inline void unlock(atomic_int *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
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

static void free_arrays(fk_tab *t)
{
    big_free(t->tags, fk_tab_slots(t) * sizeof(uint16_t));
    big_free(t->recs, fk_tab_slots(t) * sizeof(fk_tab_rec));
    big_free(t->ring, t->capacity * sizeof(fk_tab_ring));
}

fk_rcache *fk_rcache_new(size_t capacity)
{
    if (capacity < 16)
        capacity = 16;
    if (capacity > FK_TAB_MAX_CAPACITY)
        return NULL;
    fk_rcache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    fk_tab *t = &rc->t;
    t->nb = fk_tab_buckets(capacity);
    t->capacity = capacity;
    t->ctl = &rc->ctl;
    t->tags = big_alloc(fk_tab_slots(t) * sizeof(uint16_t));
    t->recs = big_alloc(fk_tab_slots(t) * sizeof(fk_tab_rec));
    t->ring = big_alloc(capacity * sizeof(fk_tab_ring));
    if (!t->tags || !t->recs || !t->ring || fk_random((uint8_t *)t->seed, sizeof t->seed) != FK_OK) {
        free_arrays(t);
        free(rc);
        return NULL;
    }
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
    free_arrays(&rc->t);
    free(rc);
}

int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    fk_tab_probe p;
    fk_tab_probe_of(&rc->t, key, &p);
    lock(&rc->mu);
    int ret = rc->closed ? FK_RC_ERROR : fk_tab_insert(&rc->t, &p, expiry, now, first_seen);
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
    out->entries = fk_tab_count(&rc->t);
    out->inserts = rc->ctl.inserts;
    out->hits = rc->ctl.hits;
    out->evictions = rc->ctl.evictions;
    out->full = rc->ctl.full;
    out->capacity = rc->t.capacity;
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
