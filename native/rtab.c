/* The replay table. See rtab.h.
 *
 * Cost model: at 10^6 live entries the records and the ring (60 MB) are far larger than the caches, and
 * this machine class pays ~160 ns for a DRAM read. So the decision "held or fresh" reads only the tags
 * (2.6 MB, cache-resident): the two candidate buckets of the new key (prefetched by fk_tab_probe_of,
 * before the caller's lock). A record is written FK_TAB_DEFER inserts after its own, once the line asked
 * for then has arrived: a store to a line still in DRAM holds up every later store behind it (stores
 * commit in order), which cost ~75 ns per insert. The ring is touched only at its head and tail
 * (sequential, prefetched by the hardware).
 */
#include "rtab.h"

#include <string.h>

#include "rcache.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define BUCKET FK_TAB_BUCKET
#define DEFER FK_TAB_DEFER
#define FREE 0            /* a slot no ring record owns */
#define DEAD 0xffff       /* owned until popped, never matched: the key was inserted again after expiring */
#define LO(w) ((uint64_t)(uint32_t)(w))
#define HI(w) ((w) >> 32)

/* Slots per live entry: with two choices the fullest of N buckets exceeds the mean by ~log log N / log 2,
 * so 1.3x keeps every bucket below 32 (none full in 3 * capacity steady-state inserts at 16 .. 3*10^6
 * live; 1.1x does fill some). Small tables get two buckets more: there the spread is relatively wider. */
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

uint64_t fk_tab_buckets(uint64_t capacity)
{
    return (capacity * 13 / 10 + BUCKET - 1) / BUCKET + 2;
}

void fk_tab_probe_of(const fk_tab *t, const uint8_t key[16], fk_tab_probe *p)
{
    fk_tab_probe_hashed(t, fk_sip16(t->seed, key), key, p);
}

void fk_tab_probe_hashed(const fk_tab *t, uint64_t h, const uint8_t key[16], fk_tab_probe *p)
{
    /* two buckets from the two halves (multiply-shift onto [0, nb): each takes its half's high bits);
     * the tag from a multiplicative mix of all 64, so keys sharing a bucket do not share tag bits */
    p->b[0] = ((h & 0xffffffffu) * t->nb) >> 32;
    p->b[1] = ((h >> 32) * t->nb) >> 32;
    if (p->b[1] == p->b[0])
        p->b[1] = p->b[0] + 1 == t->nb ? 0 : p->b[0] + 1;
    p->tag = (uint16_t)((h * 0x9e3779b97f4a7c15ULL) >> 48);
    if (p->tag == FREE || p->tag == DEAD)
        p->tag = 1;
    memcpy(&p->k0, key, 8);
    memcpy(&p->k1, key + 8, 8);
    __builtin_prefetch(t->tags + p->b[0] * BUCKET, 1);
    __builtin_prefetch(t->tags + p->b[1] * BUCKET, 1);
}

/* Bit j set: the bucket's slot j holds tag v. */
static inline uint32_t match(const uint16_t *bucket, uint16_t v)
{
#if defined(__SSE2__)
    const __m128i want = _mm_set1_epi16((short)v);
    const __m128i *q = (const __m128i *)(const void *)bucket;
    uint32_t m = 0;
    for (int i = 0; i < BUCKET / 16; i++) {
        /* 16-bit compares, packed to one byte per lane (0 and -1 saturate to themselves) */
        __m128i lo = _mm_cmpeq_epi16(_mm_load_si128(q + 2 * i), want);
        __m128i hi = _mm_cmpeq_epi16(_mm_load_si128(q + 2 * i + 1), want);
        m |= (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(lo, hi)) << (16 * i);
    }
    return m;
#else
    uint32_t m = 0;
    for (int j = 0; j < BUCKET; j++)
        m |= (uint32_t)(bucket[j] == v) << j;
    return m;
#endif
}

/* The record held at a slot: the newest deferred write to it, else the array. */
static inline const fk_tab_rec *record(const fk_tab *t, uint64_t slot)
{
    const fk_tab_ctl *c = t->ctl;
    for (uint64_t n = HI(c->pend_pos); n--;) {
        uint64_t i = (LO(c->pend_pos) + n) % DEFER;
        if (c->pend_slot[i] == slot)
            return &c->pend[i];
    }
    return &t->recs[slot];
}

static inline void set_pos(uint64_t *w, uint64_t first, uint64_t n)
{
    /* release: everything written before is in memory before the new position (a crash in between
     * leaves the old position, with the new data unreferenced) */
    __atomic_store_n(w, first | n << 32, __ATOMIC_RELEASE);
}

static void flush_oldest(fk_tab *t)
{
    fk_tab_ctl *c = t->ctl;
    uint64_t o = LO(c->pend_pos);
    t->recs[c->pend_slot[o]] = c->pend[o];
    set_pos(&c->pend_pos, (o + 1) % DEFER, HI(c->pend_pos) - 1);
}

/* Queues the write of a record; the oldest queued one goes to the array. Writes leave in order, so of
 * two queued writes to one slot (freed and taken again within DEFER inserts) the newer one lands last. */
static void defer_write(fk_tab *t, uint64_t slot, const fk_tab_rec *r)
{
    fk_tab_ctl *c = t->ctl;
    __builtin_prefetch(&t->recs[slot], 1);
    if (HI(c->pend_pos) == DEFER)
        flush_oldest(t);
    uint64_t i = (LO(c->pend_pos) + HI(c->pend_pos)) % DEFER;
    c->pend_slot[i] = slot;
    c->pend[i] = *r;
    set_pos(&c->pend_pos, LO(c->pend_pos), HI(c->pend_pos) + 1);
}

/* Pop the expired records at the head of the ring and free their slots. */
static void expire(fk_tab *t, double now)
{
    fk_tab_ctl *c = t->ctl;
    uint64_t head = LO(c->ring_pos), count = HI(c->ring_pos);
    while (count) {
        const fk_tab_ring *r = &t->ring[head];
        if (r->expiry > now)
            break;
        t->tags[r->slot] = FREE;
        c->evictions++;
        head = head + 1 == t->capacity ? 0 : head + 1;
        count--;
        set_pos(&c->ring_pos, head, count);
    }
    /* the slot the next pop will free: its tag line, ahead of time */
    if (count)
        __builtin_prefetch(&t->tags[t->ring[head].slot], 1);
    /* and the ring a few lines past its head and tail: with many rings (shm shards) the hardware
     * does not follow every stream */
    __builtin_prefetch(&t->ring[(head + 16) % t->capacity], 0);
    __builtin_prefetch(&t->ring[(head + count + 8) % t->capacity], 1);
}

uint64_t fk_tab_count(const fk_tab *t)
{
    return HI(t->ctl->ring_pos);
}

/* The insert, which the crash tests stop part way (stop 1..5); fk_tab_insert is it with stop 0, so the
 * compiler drops the test's branches from the hot path. */
static inline __attribute__((always_inline)) int
insert_until(fk_tab *t, const fk_tab_probe *p, double expiry, double now, double *first_seen, int stop)
{
    fk_tab_ctl *c = t->ctl;
    expire(t, now);
    const uint16_t *bk[2] = {t->tags + p->b[0] * BUCKET, t->tags + p->b[1] * BUCKET};
    uint64_t stale = UINT64_MAX;
    for (int i = 0; i < 2; i++) {
        for (uint32_t m = match(bk[i], p->tag); m; m &= m - 1) {
            uint64_t s = p->b[i] * BUCKET + (uint64_t)__builtin_ctz(m);
            const fk_tab_rec *r = record(t, s);
            if (r->k0 != p->k0 || r->k1 != p->k1)
                continue;
            if (r->expiry > now) {
                *first_seen = r->seen;
                c->hits++;
                return FK_RC_REPLAY;
            }
            stale = s;   /* this key, expired but not popped yet: it does not count */
        }
    }
    uint64_t head = LO(c->ring_pos), count = HI(c->ring_pos);
    uint32_t free0 = match(bk[0], FREE), free1 = match(bk[1], FREE);
    if (count == t->capacity || !(free0 | free1)) {
        c->full++;
        return FK_RC_FULL;
    }
    /* the emptier bucket: two choices keep the fullest one close to the mean */
    int pick = __builtin_popcount(free1) > __builtin_popcount(free0);
    uint64_t slot = p->b[pick] * BUCKET + (uint64_t)__builtin_ctz(pick ? free1 : free0);
    if (stop == 1)
        return FK_RC_OK;
    defer_write(t, slot, &(fk_tab_rec){p->k0, p->k1, now, expiry});
    if (stop == 2)
        return FK_RC_OK;
    uint64_t tail = head + count;
    if (tail >= t->capacity)
        tail -= t->capacity;
    t->ring[tail] = (fk_tab_ring){expiry, (uint32_t)slot, 0};
    if (stop == 3)
        return FK_RC_OK;
    /* a key has one findable record: the stale one stays held (its ring record owns the slot) but is
     * never matched again, even by a clock that steps back */
    if (stale != UINT64_MAX)
        t->tags[stale] = DEAD;
    t->tags[slot] = p->tag;
    if (stop == 4)
        return FK_RC_OK;
    set_pos(&c->ring_pos, head, count + 1);   /* the commit */
    c->inserts++;
    return FK_RC_OK;
}

int fk_tab_insert(fk_tab *t, const fk_tab_probe *p, double expiry, double now, double *first_seen)
{
    return insert_until(t, p, expiry, now, first_seen, 0);
}

int fk_tab_insert_until(fk_tab *t, const fk_tab_probe *p, double expiry, double now, double *first_seen, int stop)
{
    return insert_until(t, p, expiry, now, first_seen, stop);
}

/* Walks the ring in order and re-derives (rebuild) or checks (verify: every step-th entry) each tag. */
static int walk(fk_tab *t, int rebuild, uint64_t step)
{
    const fk_tab_ctl *c = t->ctl;
    uint64_t head = LO(c->ring_pos), count = HI(c->ring_pos);
    if (head >= t->capacity || count > t->capacity)
        return -1;
    uint64_t held = 0;
    for (uint64_t s = 0; s < fk_tab_slots(t); s++)
        held += t->tags[s] != FREE;
    if (rebuild)
        memset(t->tags, 0, fk_tab_slots(t) * sizeof(uint16_t));
    else if (held != count)
        return -1;
    for (uint64_t i = 0; i < count; i += step) {
        const fk_tab_ring *r = &t->ring[(head + i) % t->capacity];
        if (r->slot >= fk_tab_slots(t))
            return -1;
        const fk_tab_rec *rec = record(t, r->slot);
        uint8_t key[16];
        memcpy(key, &rec->k0, 8);
        memcpy(key + 8, &rec->k1, 8);
        fk_tab_probe p;
        fk_tab_probe_of(t, key, &p);
        uint64_t b = r->slot / BUCKET;
        /* the record must be the one this ring entry wrote, in one of its key's buckets */
        if (rec->expiry != r->expiry || (b != p.b[0] && b != p.b[1]))
            return -1;
        if (!rebuild) {
            if (t->tags[r->slot] != p.tag && t->tags[r->slot] != DEAD)
                return -1;
            continue;
        }
        if (t->tags[r->slot] != FREE)
            return -1;   /* two ring entries own one slot */
        for (int k = 0; k < 2; k++)
            for (uint32_t m = match(t->tags + p.b[k] * BUCKET, p.tag); m; m &= m - 1) {
                uint64_t o = p.b[k] * BUCKET + (uint64_t)__builtin_ctz(m);
                const fk_tab_rec *ro = record(t, o);
                if (ro->k0 == p.k0 && ro->k1 == p.k1)
                    t->tags[o] = DEAD;   /* an older record of the same key */
            }
        t->tags[r->slot] = p.tag;
    }
    return 0;
}

int fk_tab_verify(const fk_tab *t)
{
    fk_tab_ctl *c = t->ctl;
    if (HI(c->pend_pos) > DEFER || LO(c->pend_pos) >= DEFER)
        return -1;
    for (uint64_t n = 0; n < HI(c->pend_pos); n++)
        if (c->pend_slot[(LO(c->pend_pos) + n) % DEFER] >= fk_tab_slots(t))
            return -1;
    /* every entry's tag is counted; the records of at most 4096 entries are read (opening a large table
     * must not hold the lock for a pass over 10^6 records in DRAM) */
    uint64_t count = HI(c->ring_pos);
    return walk((fk_tab *)t, 0, count > 4096 ? count / 4096 : 1);
}

int fk_tab_rebuild(fk_tab *t)
{
    fk_tab_ctl *c = t->ctl;
    if (HI(c->pend_pos) > DEFER || LO(c->pend_pos) >= DEFER)
        return -1;
    while (HI(c->pend_pos)) {
        if (c->pend_slot[LO(c->pend_pos)] >= fk_tab_slots(t))
            return -1;
        flush_oldest(t);
    }
    return walk(t, 1, 1);
}
