/* In-process replay cache. See rcache.h. */
#include "rcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kcrypto.h"

typedef struct slot {
    uint8_t key[16];
    double expiry;
    double seen;
    int used;
} slot;

typedef struct ring_rec {
    uint8_t key[16];
    double expiry;
} ring_rec;

struct fk_rcache {
    pthread_mutex_t mu;
    slot *table;
    size_t mask;            /* table size - 1 (power of two, >= 2 * capacity) */
    ring_rec *ring;
    size_t capacity, head, count;
    uint64_t seed[2];
    fk_rcache_stats st;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* SipHash-1-3 of a 16-byte key under a per-cache random seed: bucket choice an attacker cannot steer. */
static uint64_t sip16(const uint64_t seed[2], const uint8_t key[16])
{
    uint64_t v0 = seed[0] ^ 0x736f6d6570736575ULL, v1 = seed[1] ^ 0x646f72616e646f6dULL;
    uint64_t v2 = seed[0] ^ 0x6c7967656e657261ULL, v3 = seed[1] ^ 0x7465646279746573ULL;
    uint64_t m[3] = {le64(key), le64(key + 8), (uint64_t)16 << 56};
#define SIPROUND                                                                                     \
    do {                                                                                             \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                    \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                       \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                       \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                    \
    } while (0)
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
    return v0 ^ v1 ^ v2 ^ v3;
}

fk_rcache *fk_rcache_new(size_t capacity)
{
    if (capacity < 16)
        capacity = 16;
    size_t size = 32;
    while (size < 2 * capacity)
        size <<= 1;
    fk_rcache *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    rc->table = calloc(size, sizeof(slot));
    rc->ring = calloc(capacity, sizeof(ring_rec));
    if (!rc->table || !rc->ring || pthread_mutex_init(&rc->mu, NULL) != 0 ||
        fk_random((uint8_t *)rc->seed, sizeof rc->seed) != FK_OK) {
        free(rc->table);
        free(rc->ring);
        free(rc);
        return NULL;
    }
    rc->mask = size - 1;
    rc->capacity = capacity;
    rc->st.capacity = capacity;
    return rc;
}

void fk_rcache_free(fk_rcache *rc)
{
    if (!rc)
        return;
    pthread_mutex_destroy(&rc->mu);
    free(rc->table);
    free(rc->ring);
    free(rc);
}

static size_t find(const fk_rcache *rc, const uint8_t key[16], int *found)
{
    size_t i = (size_t)sip16(rc->seed, key) & rc->mask;
    while (rc->table[i].used) {
        if (memcmp(rc->table[i].key, key, 16) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & rc->mask;
    }
    *found = 0;
    return i;
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void erase(fk_rcache *rc, size_t i)
{
    size_t j = i;
    for (;;) {
        rc->table[i].used = 0;
        for (;;) {
            j = (j + 1) & rc->mask;
            if (!rc->table[j].used)
                return;
            size_t home = (size_t)sip16(rc->seed, rc->table[j].key) & rc->mask;
            /* can slot j's entry move back to i? only if its home is not cyclically in (i, j] */
            if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)))
                break;
        }
        rc->table[i] = rc->table[j];
        i = j;
    }
}

static void expire(fk_rcache *rc, double now)
{
    while (rc->count) {
        ring_rec *r = &rc->ring[rc->head];
        if (r->expiry > now)
            break;
        int found;
        size_t i = find(rc, r->key, &found);
        /* a key re-inserted after expiring has a newer ring record: only drop it if expired */
        if (found && rc->table[i].expiry <= now) {
            erase(rc, i);
            rc->st.entries--;
            rc->st.evictions++;
        }
        rc->head = (rc->head + 1) % rc->capacity;
        rc->count--;
    }
}

int fk_rcache_insert(fk_rcache *rc, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    int found, ret = FK_RC_OK;
    pthread_mutex_lock(&rc->mu);
    expire(rc, now);
    size_t i = find(rc, key, &found);
    if (found && rc->table[i].expiry > now) {
        *first_seen = rc->table[i].seen;
        rc->st.hits++;
        ret = FK_RC_REPLAY;
    } else if (rc->count == rc->capacity) {
        rc->st.full++;
        ret = FK_RC_FULL;
    } else {
        if (!found) {
            memcpy(rc->table[i].key, key, 16);
            rc->table[i].used = 1;
            rc->st.entries++;
        }
        rc->table[i].expiry = expiry;
        rc->table[i].seen = now;
        ring_rec *r = &rc->ring[(rc->head + rc->count) % rc->capacity];
        memcpy(r->key, key, 16);
        r->expiry = expiry;
        rc->count++;
        rc->st.inserts++;
    }
    pthread_mutex_unlock(&rc->mu);
    return ret;
}

int fk_rcache_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return fk_rcache_insert((fk_rcache *)ctx, key, expiry, now, first_seen);
}

void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out)
{
    pthread_mutex_lock(&rc->mu);
    *out = rc->st;
    pthread_mutex_unlock(&rc->mu);
}
