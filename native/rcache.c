/* In-process replay cache: the growing table of rtab.c (fk_gtab) in private memory, under one spinlock.
 * See rcache.h. */
#include "rcache.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kcrypto.h"
#include "rtab.h"

struct fk_rcache {
    atomic_int mu;          /* a spinlock: unlock is a plain store, where a mutex costs a second atomic */
    fk_gtab g;
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

fk_rcache *fk_rcache_new(size_t capacity)
{
    return fk_rcache_new_sized(capacity, 0);
}

fk_rcache *fk_rcache_new_sized(size_t capacity, size_t first)
{
    if (capacity < 16)
        capacity = 16;
    if (capacity > FK_TAB_MAX_CAPACITY)
        return NULL;
    fk_rcache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    uint64_t seed[2];
    if (fk_random((uint8_t *)seed, sizeof seed) != FK_OK || fk_gtab_init(&rc->g, capacity, first, seed) != 0) {
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

int fk_rcache_closed(fk_rcache *rc)
{
    lock(&rc->mu);
    int closed = rc->closed;
    unlock(&rc->mu);
    return closed;
}

void fk_rcache_free(fk_rcache *rc)
{
    if (!rc)
        return;
    fk_gtab_free(&rc->g);
    free(rc);
}

int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    fk_tab_probe p;
    fk_gtab_probe(&rc->g, key, &p);
    lock(&rc->mu);
    int ret = rc->closed ? FK_RC_ERROR : fk_gtab_insert(&rc->g, &p, expiry, now, first_seen);
    unlock(&rc->mu);
    return ret;
}

int fk_rcache_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return fk_rcache_insert((fk_rcache *)ctx, key, expiry, now, first_seen);
}

void fk_rcache_prefetch_cb(void *ctx, const uint8_t key[16])
{
    fk_tab_probe p;   /* fk_gtab_probe prefetches the buckets' tag lines, lock-free */
    fk_gtab_probe(&((fk_rcache *)ctx)->g, key, &p);
}

void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out)
{
    fk_gtab_stats st;
    lock(&rc->mu);
    fk_gtab_stats_get(&rc->g, &st);
    out->capacity = rc->g.limit;
    unlock(&rc->mu);
    out->entries = st.entries;
    out->inserts = st.inserts;
    out->hits = st.hits;
    out->evictions = st.evictions;
    out->full = st.full;
    out->table_capacity = st.table_capacity;
    out->migrating = st.migrating;
    out->bytes = st.bytes;
    out->grows = st.grows;
    out->shrinks = st.shrinks;
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
