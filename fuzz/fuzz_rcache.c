/* libFuzzer target: the in-process replay cache (native/rcache.c) against a reference model.
 *
 * The input is a sequence of 4-byte operations [key][dt][ttl][flags] on a cache of capacity 16:
 * the key is one of 40 identities (so replays and re-insertions are frequent; flag bit 0 gives it a
 * first byte 0xff to vary the hash), the clock moves by dt (flag bit 1: backwards, as a worker with a
 * slower clock would), and the entry lives ttl. The model is the documented behaviour written the slow,
 * obvious way: a list of live entries and the FIFO ring of insertion records that decides when the
 * cache is full (rcache.h). Every result, first_seen and the entry count must agree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"

#define CAP 16
#define NIDS 80

typedef struct model_entry {
    int used;
    double expiry, seen;
    uint64_t rec;          /* the insertion (ring record) that owns this entry */
} model_entry;

typedef struct model {
    model_entry e[NIDS];
    struct { int id; double expiry; uint64_t rec; } ring[CAP];
    size_t head, count;
    uint64_t entries, inserted;
} model;

static void model_expire(model *m, double now)
{
    while (m->count) {
        int id = m->ring[m->head].id;
        if (m->ring[m->head].expiry > now)
            break;
        /* a key inserted again after expiring is owned by its newer record: popping the older one
         * leaves it (rcache.h: "A record whose key was inserted again ... is only popped") */
        if (m->e[id].used && m->e[id].rec == m->ring[m->head].rec && m->e[id].expiry <= now) {
            m->e[id].used = 0;
            m->entries--;
        }
        m->head = (m->head + 1) % CAP;
        m->count--;
    }
}

static int model_insert(model *m, int id, double expiry, double now, double *first)
{
    model_expire(m, now);
    if (m->e[id].used && m->e[id].expiry > now) {
        *first = m->e[id].seen;
        return FK_RC_REPLAY;
    }
    if (m->count == CAP)
        return FK_RC_FULL;
    if (!m->e[id].used)
        m->entries++;
    m->e[id].used = 1;
    m->e[id].expiry = expiry;
    m->e[id].seen = now;
    m->e[id].rec = ++m->inserted;
    m->ring[(m->head + m->count) % CAP].id = id;
    m->ring[(m->head + m->count) % CAP].expiry = expiry;
    m->ring[(m->head + m->count) % CAP].rec = m->inserted;
    m->count++;
    return FK_RC_OK;
}

static void id_key(int id, uint8_t key[16])
{
    /* distinct 16-byte identities; half share their first 15 bytes to stress probing */
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
        int id = data[i] % 40 + ((data[i + 3] & 1) ? 40 : 0);
        double dt = (double)data[i + 1] / 4.0;
        now += (data[i + 3] & 2) ? -dt : dt;
        double expiry = now + (double)data[i + 2] / 2.0;
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
        FZ_CHECK(st.entries == m.entries);
        FZ_CHECK(st.entries <= CAP && st.capacity == CAP);
    }
    fk_rcache_free(rc);
    return 0;
}
