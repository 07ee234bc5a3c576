/* libFuzzer target: the in-process replay cache (native/rcache.c) against a reference model.
 *
 * The input is a sequence of 4-byte operations [key][dt][ttl][flags] on a cache of capacity 16:
 * the key is one of 80 identities (so replays and re-insertions are frequent; flag bit 0 picks the
 * half whose first byte differs), the clock moves by dt/4 s (flag bit 1: backwards, as a worker with a
 * slower clock would), the entry lives ttl/2 s plus (flags >> 3) µs, and flags 0xff closes the cache
 * (every later insert must fail closed).
 * The model is the documented behaviour written the slow, obvious way (rcache.h, rcache.c): a FIFO ring
 * of insertion records decides when the cache is full; an entry is live while now < its expiry; popping
 * an expired record forgets its key unless the key was inserted again since. Every result and first_seen
 * must agree, and the entry count is the records held (live, or expired and not yet popped). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"

#define CAP 16
#define NIDS 80

typedef struct model_entry {
    int used;
    double expiry, seen;
    uint64_t latest;          /* sequence number of the key's latest ring record */
} model_entry;

typedef struct model {
    model_entry e[NIDS];
    struct { int id; double expiry; uint64_t seq; } ring[CAP];
    size_t head, count;
    uint64_t seq;
    int closed;
} model;

static void model_expire(model *m, double now)
{
    while (m->count) {
        int id = m->ring[m->head].id;
        if (m->ring[m->head].expiry > now)
            break;
        if (m->e[id].used && m->e[id].latest == m->ring[m->head].seq)
            m->e[id].used = 0;
        m->head = (m->head + 1) % CAP;
        m->count--;
    }
}

static int model_insert(model *m, int id, double expiry, double now, double *first)
{
    if (m->closed)
        return FK_RC_ERROR;
    model_expire(m, now);
    if (m->e[id].used && m->e[id].expiry > now) {
        *first = m->e[id].seen;
        return FK_RC_REPLAY;
    }
    if (m->count == CAP)
        return FK_RC_FULL;
    size_t tail = (m->head + m->count) % CAP;
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

static void id_key(int id, uint8_t key[16])
{
    /* distinct 16-byte identities; each half shares its first 15 bytes */
    memset(key, 0x11, 16);
    key[15] = (uint8_t)(id % 40);
    if (id >= 40)
        key[0] = 0xff;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fk_rcache *rc = fk_rcache_new(CAP);
    FZ_CHECK(rc != NULL);
    static model m;
    memset(&m, 0, sizeof m);
    double now = 1e9;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t flags = data[i + 3];
        if (flags == 0xff) {
            fk_rcache_close(rc);
            m.closed = 1;
            continue;
        }
        int id = data[i] % 40 + ((flags & 1) ? 40 : 0);
        double dt = (double)data[i + 1] / 4.0;
        now += (flags & 2) ? -dt : dt;
        double expiry = now + (double)data[i + 2] / 2.0 + (double)(flags >> 3) * 1e-6;
        uint8_t key[16];
        id_key(id, key);
        double f1 = -1, f2 = -1;
        int got = fk_rcache_insert(rc, key, expiry, now, &f1);
        int want = model_insert(&m, id, expiry, now, &f2);
        FZ_CHECK(got == want);
        if (got == FK_RC_REPLAY)
            FZ_CHECK(f1 == f2);
        fk_rcache_stats st;
        fk_rcache_stats_get(rc, &st);
        FZ_CHECK(st.entries == m.count);
        FZ_CHECK(st.entries <= CAP && st.capacity == CAP);
    }
    fk_rcache_free(rc);
    return 0;
}
