/* The replay-cache model both cache targets check against (fuzz_rcache.c: in-process; fuzz_shm.c: the
 * shared file; both are the table of native/rtab.c), and the operation loop that drives a cache and the
 * model side by side.
 *
 * The input is a sequence of 4-byte operations [key][dt][ttl][flags] on a cache of capacity 16:
 * the key is one of 80 identities (so replays and re-insertions are frequent; flag bit 0 picks the
 * half whose first byte differs), the clock moves by dt/4 s (flag bit 1: backwards, as a worker with a
 * slower clock would), the entry lives ttl/2 s plus (flags >> 3) µs, and flags 0xff closes the cache
 * (every later insert must fail closed).
 * The model is the documented behaviour written the slow, obvious way (rtab.h): a FIFO ring of
 * insertion records decides when the cache is full; an entry is live while now < its expiry; popping
 * an expired record forgets its key unless the key was inserted again since. Every result and
 * first_seen must agree, and the entry count is the records held (live, or expired and not yet popped).
 */
#ifndef FASTKRB_FZ_RCMODEL_H
#define FASTKRB_FZ_RCMODEL_H

#include <stdint.h>
#include <string.h>

#include "fz_common.h"
#include "rcache.h"

#define FZ_CAP 16
#define FZ_NIDS 80

typedef struct fz_entry {
    int used;
    double expiry, seen;
    uint64_t latest;          /* sequence number of the key's latest ring record */
} fz_entry;

typedef struct fz_model {
    fz_entry e[FZ_NIDS];
    struct { int id; double expiry; uint64_t seq; } ring[FZ_CAP];
    size_t head, count;
    uint64_t seq;
    int closed;
} fz_model;

static void fz_model_expire(fz_model *m, double now)
{
    while (m->count) {
        int id = m->ring[m->head].id;
        if (m->ring[m->head].expiry > now)
            break;
        if (m->e[id].used && m->e[id].latest == m->ring[m->head].seq)
            m->e[id].used = 0;
        m->head = (m->head + 1) % FZ_CAP;
        m->count--;
    }
}

static int fz_model_insert(fz_model *m, int id, double expiry, double now, double *first)
{
    if (m->closed)
        return FK_RC_ERROR;
    fz_model_expire(m, now);
    if (m->e[id].used && m->e[id].expiry > now) {
        *first = m->e[id].seen;
        return FK_RC_REPLAY;
    }
    if (m->count == FZ_CAP)
        return FK_RC_FULL;
    size_t tail = (m->head + m->count) % FZ_CAP;
    m->e[id].used = 1;
    m->e[id].expiry = expiry;
    m->e[id].seen = now;
    m->e[id].latest = ++m->seq;
    m->ring[tail].id = id;
    m->ring[tail].expiry = expiry;
    m->ring[tail].seq = m->seq;
    m->count++;
    return FK_RC_OK;
}

static void fz_id_key(int id, uint8_t key[16])
{
    /* distinct 16-byte identities; each half shares its first 15 bytes */
    memset(key, 0x11, 16);
    key[15] = (uint8_t)(id % 40);
    if (id >= 40)
        key[0] = 0xff;
}

/* The cache under test. */
typedef struct fz_cache {
    void *ctx;
    int (*insert)(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen);
    void (*close)(void *ctx);
    uint64_t (*entries)(void *ctx);
    uint64_t (*capacity)(void *ctx);
} fz_cache;

static void fz_run_ops(const fz_cache *c, const uint8_t *data, size_t size)
{
    static fz_model m;
    memset(&m, 0, sizeof m);
    double now = 1e9;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t flags = data[i + 3];
        if (flags == 0xff) {
            c->close(c->ctx);
            m.closed = 1;
            continue;
        }
        int id = data[i] % 40 + ((flags & 1) ? 40 : 0);
        double dt = (double)data[i + 1] / 4.0;
        now += (flags & 2) ? -dt : dt;
        double expiry = now + (double)data[i + 2] / 2.0 + (double)(flags >> 3) * 1e-6;
        uint8_t key[16];
        fz_id_key(id, key);
        double f1 = -1, f2 = -1;
        int got = c->insert(c->ctx, key, expiry, now, &f1);
        int want = fz_model_insert(&m, id, expiry, now, &f2);
        FZ_CHECK(got == want);
        if (got == FK_RC_REPLAY)
            FZ_CHECK(f1 == f2);
        FZ_CHECK(c->entries(c->ctx) == m.count);
        FZ_CHECK(c->capacity(c->ctx) == FZ_CAP);
    }
}

#endif
