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
#include <sys/mman.h>

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

static inline __attribute__((always_inline)) void
probe_hashed(const fk_tab *t, uint64_t h, const uint8_t key[16], fk_tab_probe *p);

void fk_tab_probe_hashed(const fk_tab *t, uint64_t h, const uint8_t key[16], fk_tab_probe *p)
{
    probe_hashed(t, h, key, p);
}

void fk_tab_prefetch_records(const fk_tab *t, const fk_tab_probe *p)
{
    __builtin_prefetch(&t->recs[p->b[0] * BUCKET], 1);
    __builtin_prefetch(&t->recs[p->b[1] * BUCKET], 1);
}

static inline __attribute__((always_inline)) void
probe_hashed(const fk_tab *t, uint64_t h, const uint8_t key[16], fk_tab_probe *p)
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
    p->h = h;
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

#define ROOM (-1)          /* stop: a growing table's insert, which asks for room instead of failing full */
#define NEED_ROOM 100

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
        if (stop == ROOM)
            return NEED_ROOM;   /* a growing table makes room (nothing was changed but expiry) */
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


/* ---- the growing table (in-process; see rtab.h) ---------------------------------------------------- */

/* Tables of 2 MiB and more live in their own mapping with transparent huge pages where the kernel allows
 * them: at 10^6 entries a 4 KiB-page table costs a TLB miss on top of the cache miss. Smaller ones are
 * plain anonymous mappings: their pages are committed as they are first touched. */
#define HUGE_PAGE ((size_t)2 << 20)

static size_t big_size(size_t n)
{
    return n >= HUGE_PAGE ? (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1) : (n + 4095) & ~(size_t)4095;
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

static uint64_t tab_bytes(uint64_t capacity)
{
    uint64_t slots = fk_tab_buckets(capacity) * BUCKET;
    return big_size(slots * sizeof(uint16_t)) + big_size(slots * sizeof(fk_tab_rec)) +
           big_size(capacity * sizeof(fk_tab_ring));
}

static void tab_release(fk_gtab *g, int i)
{
    fk_tab *t = &g->t[i];
    fk_tab_ctl *c = &g->ctl[i];
    if (t->capacity) {
        big_free(t->tags, fk_tab_slots(t) * sizeof(uint16_t));
        big_free(t->recs, fk_tab_slots(t) * sizeof(fk_tab_rec));
        big_free(t->ring, t->capacity * sizeof(fk_tab_ring));
        g->bytes -= tab_bytes(t->capacity);
    }
    g->done[0] += c->inserts;
    g->done[1] += c->hits;
    g->done[2] += c->evictions;
    g->done[3] += c->full;
    memset(c, 0, sizeof *c);
    memset(t, 0, sizeof *t);
    t->ctl = c;
}

static int tab_alloc(fk_gtab *g, int i, uint64_t capacity)
{
    fk_tab *t = &g->t[i];
    t->nb = fk_tab_buckets(capacity);
    t->capacity = capacity;
    t->seed[0] = g->seed[0];
    t->seed[1] = g->seed[1];
    t->tags = big_alloc(fk_tab_slots(t) * sizeof(uint16_t));
    t->recs = big_alloc(fk_tab_slots(t) * sizeof(fk_tab_rec));
    t->ring = big_alloc(capacity * sizeof(fk_tab_ring));
    g->bytes += tab_bytes(capacity);
    if (!t->tags || !t->recs || !t->ring) {
        big_free(t->tags, fk_tab_slots(t) * sizeof(uint16_t));
        big_free(t->recs, fk_tab_slots(t) * sizeof(fk_tab_rec));
        big_free(t->ring, capacity * sizeof(fk_tab_ring));
        t->capacity = 0;
        g->bytes -= tab_bytes(capacity);
        tab_release(g, i);
        return -1;
    }
    return 0;
}

/* The table taking inserts, published for fk_gtab_probe's lock-free prefetch. */
static void publish(fk_gtab *g)
{
    const fk_tab *t = &g->t[g->cur];
    g->shrink_at = t->capacity > g->first ? t->capacity / 8 : 0;
    __atomic_store_n(&g->snap_tags, g->t[g->cur].tags, __ATOMIC_RELAXED);
    __atomic_store_n(&g->snap_nb, g->t[g->cur].nb, __ATOMIC_RELAXED);
}

int fk_gtab_init(fk_gtab *g, uint64_t limit, uint64_t first, const uint64_t seed[2])
{
    memset(g, 0, sizeof *g);
    g->t[0].ctl = &g->ctl[0];
    g->t[1].ctl = &g->ctl[1];
    g->limit = limit;
    g->first = first ? first : FK_TAB_FIRST;
    if (g->first > limit)
        g->first = limit;
    g->seed[0] = seed[0];
    g->seed[1] = seed[1];
    if (tab_alloc(g, 0, g->first) != 0)
        return -1;
    publish(g);
    return 0;
}

void fk_gtab_free(fk_gtab *g)
{
    tab_release(g, 0);
    tab_release(g, 1);
}

/* Both buckets of a probe in table t (the tag and key do not depend on the table). */
static inline void buckets(const fk_tab *t, fk_tab_probe *p)
{
    p->nb = t->nb;
    p->b[0] = ((p->h & 0xffffffffu) * t->nb) >> 32;
    p->b[1] = ((p->h >> 32) * t->nb) >> 32;
    if (p->b[1] == p->b[0])
        p->b[1] = p->b[0] + 1 == t->nb ? 0 : p->b[0] + 1;
}

void fk_gtab_probe(const fk_gtab *g, const uint8_t key[16], fk_tab_probe *p)
{
    /* the table may be replaced before the caller takes the lock: the buckets are computed again under
     * it, and a prefetch of a stale address is only a wasted hint */
    fk_tab snap;
    snap.nb = __atomic_load_n(&g->snap_nb, __ATOMIC_RELAXED);
    snap.tags = __atomic_load_n(&g->snap_tags, __ATOMIC_RELAXED);
    probe_hashed(&snap, fk_sip16(g->seed, key), key, p);
    p->nb = snap.nb;
}

/* The key in one table: FK_RC_REPLAY (*first_seen set), else FK_RC_OK, *stale the slot of its expired
 * record if it has one (held until popped, but it does not count). */
static inline int find(fk_tab *t, const fk_tab_probe *p, double now, double *first_seen, uint64_t *stale)
{
    for (int i = 0; i < 2; i++) {
        for (uint32_t m = match(t->tags + p->b[i] * BUCKET, p->tag); m; m &= m - 1) {
            uint64_t s = p->b[i] * BUCKET + (uint64_t)__builtin_ctz(m);
            const fk_tab_rec *r = record(t, s);
            if (r->k0 != p->k0 || r->k1 != p->k1)
                continue;
            if (r->expiry > now) {
                *first_seen = r->seen;
                return FK_RC_REPLAY;
            }
            *stale = s;
        }
    }
    return FK_RC_OK;
}

/* A free slot in the emptier of the probe's buckets, or UINT64_MAX. */
static inline uint64_t free_slot(const fk_tab *t, const fk_tab_probe *p)
{
    uint32_t free0 = match(t->tags + p->b[0] * BUCKET, FREE), free1 = match(t->tags + p->b[1] * BUCKET, FREE);
    if (!(free0 | free1))
        return UINT64_MAX;
    int pick = __builtin_popcount(free1) > __builtin_popcount(free0);
    return p->b[pick] * BUCKET + (uint64_t)__builtin_ctz(pick ? free1 : free0);
}

/* Starts moving every entry into a new table of `capacity` (the old one keeps its ring, now the older
 * part of the FIFO). 0, or -1 with nothing changed (no memory). */
static __attribute__((noinline, cold)) int start_move(fk_gtab *g, uint64_t capacity)
{
    int to = !g->cur;
    if (tab_alloc(g, to, capacity) != 0)
        return -1;
    /* the old table takes no record writes from now on: its array becomes the truth */
    fk_tab *o = &g->t[g->cur];
    while (HI(o->ctl->pend_pos))
        flush_oldest(o);
    g->cur = to;
    g->migrating = 1;
    publish(g);
    return 0;
}

/* Moves up to n entries from the old ring's tail to the new ring's head; ends the move (unmapping the
 * old table) once it is empty. */
static __attribute__((noinline)) void migrate(fk_gtab *g, int n)
{
    fk_tab *t = &g->t[g->cur], *o = &g->t[!g->cur];
    fk_tab_ctl *tc = t->ctl, *oc = o->ctl;
    uint64_t ohead = LO(oc->ring_pos), ocount = HI(oc->ring_pos);
    for (; n > 0 && ocount; n--) {
        uint64_t oi = ohead + ocount - 1;
        if (oi >= o->capacity)
            oi -= o->capacity;
        const fk_tab_ring *r = &o->ring[oi];
        const fk_tab_rec *rec = &o->recs[r->slot];
        uint16_t tag = o->tags[r->slot];
        uint8_t key[16];
        memcpy(key, &rec->k0, 8);
        memcpy(key + 8, &rec->k1, 8);
        fk_tab_probe p;
        p.h = fk_sip16(g->seed, key);
        buckets(t, &p);
        uint64_t slot = free_slot(t, &p);
        if (slot == UINT64_MAX || HI(tc->ring_pos) == t->capacity)
            break;   /* both buckets full (the sizing makes it all but impossible): the entry stays in the
                      * old table, still found there, and leaves it by expiry; the move resumes later */
        defer_write(t, slot, rec);
        uint64_t head = LO(tc->ring_pos), count = HI(tc->ring_pos);
        head = head ? head - 1 : t->capacity - 1;
        t->ring[head] = (fk_tab_ring){r->expiry, (uint32_t)slot, 0};
        t->tags[slot] = tag;   /* the same tag (it is the hash's), or DEAD */
        set_pos(&tc->ring_pos, head, count + 1);
        o->tags[r->slot] = FREE;
        ocount--;
        set_pos(&oc->ring_pos, ohead, ocount);
    }
    if (!ocount) {
        tab_release(g, !g->cur);
        g->migrating = 0;
        return;
    }
    /* the records the next step reads, ahead of time */
    for (uint64_t k = 1; k <= FK_TAB_MIGRATE && k <= ocount; k++)
        __builtin_prefetch(&o->recs[o->ring[(ohead + ocount - k) % o->capacity].slot], 0);
}

/* The insert while a move is under way, or when the table needs room: both tables. */
static __attribute__((noinline)) int
insert_moving(fk_gtab *g, const fk_tab_probe *p0, double expiry, double now, double *first_seen)
{
    fk_tab *t = &g->t[g->cur], *o = NULL;
    fk_tab_probe p = *p0, q;
    if (g->migrating) {
        /* the old ring is the older part of the FIFO: it is popped first, the new one once it is empty */
        o = &g->t[!g->cur];
        expire(o, now);
        if (!HI(o->ctl->ring_pos)) {
            migrate(g, 0);
            o = NULL;
        }
    }
    if (!o)
        expire(t, now);
    buckets(t, &p);
    uint64_t stale = UINT64_MAX, ostale = UINT64_MAX;
    if (find(t, &p, now, first_seen, &stale) == FK_RC_REPLAY) {
        t->ctl->hits++;
        return FK_RC_REPLAY;
    }
    if (o) {
        q = p;
        buckets(o, &q);
        if (find(o, &q, now, first_seen, &ostale) == FK_RC_REPLAY) {
            t->ctl->hits++;
            return FK_RC_REPLAY;
        }
    }
    uint64_t count = HI(t->ctl->ring_pos);
    if (count + (o ? HI(o->ctl->ring_pos) : 0) >= g->limit) {
        t->ctl->full++;
        return FK_RC_FULL;
    }
    uint64_t slot = free_slot(t, &p);
    if (!o && (count == t->capacity || slot == UINT64_MAX) && t->capacity < g->limit) {
        uint64_t cap = t->capacity * 2 < g->limit ? t->capacity * 2 : g->limit;
        if (start_move(g, cap) != 0)
            return FK_RC_ERROR;   /* no memory for the room it needs: fail closed */
        g->grows++;
        o = t;
        ostale = stale;
        stale = UINT64_MAX;
        t = &g->t[g->cur];
        buckets(t, &p);
        count = 0;
        slot = free_slot(t, &p);
    }
    if (count == t->capacity || slot == UINT64_MAX) {
        t->ctl->full++;
        return FK_RC_FULL;
    }
    defer_write(t, slot, &(fk_tab_rec){p.k0, p.k1, now, expiry});
    uint64_t head = LO(t->ctl->ring_pos), tail = head + count;
    if (tail >= t->capacity)
        tail -= t->capacity;
    t->ring[tail] = (fk_tab_ring){expiry, (uint32_t)slot, 0};
    /* a key has one findable record: a stale one stays held (its ring record owns the slot) but is never
     * matched again, even by a clock that steps back */
    if (stale != UINT64_MAX)
        t->tags[stale] = DEAD;
    if (ostale != UINT64_MAX)
        o->tags[ostale] = DEAD;
    t->tags[slot] = p.tag;
    set_pos(&t->ctl->ring_pos, head, count + 1);
    t->ctl->inserts++;
    if (o)
        migrate(g, FK_TAB_MIGRATE);
    return FK_RC_OK;
}

int fk_gtab_insert(fk_gtab *g, fk_tab_probe *p, double expiry, double now, double *first_seen)
{
    if (__builtin_expect(g->migrating, 0))
        return insert_moving(g, p, expiry, now, first_seen);
    /* one table: the fixed table's insert, which asks for room where it would fail full */
    fk_tab *t = &g->t[g->cur];
    if (__builtin_expect(p->nb != t->nb, 0))
        buckets(t, p);   /* the table was replaced after fk_gtab_probe */
    int rc = insert_until(t, p, expiry, now, first_seen, ROOM);
    if (__builtin_expect(rc == NEED_ROOM, 0)) {
        if (t->capacity < g->limit)
            return insert_moving(g, p, expiry, now, first_seen);
        t->ctl->full++;
        return FK_RC_FULL;
    }
    /* an eighth full or less after this insert: a table a quarter the size (twice what it holds), so a
     * load that returns at once does not move the entries back and forth */
    if (__builtin_expect(HI(t->ctl->ring_pos) <= g->shrink_at, 0) && rc == FK_RC_OK &&
        start_move(g, t->capacity / 4 > g->first ? t->capacity / 4 : g->first) == 0) {
        g->shrinks++;
        migrate(g, FK_TAB_MIGRATE);
    }
    return rc;
}

void fk_gtab_stats_get(const fk_gtab *g, fk_gtab_stats *out)
{
    const fk_tab_ctl *a = &g->ctl[0], *b = &g->ctl[1];
    out->entries = HI(a->ring_pos) + HI(b->ring_pos);
    out->inserts = g->done[0] + a->inserts + b->inserts;
    out->hits = g->done[1] + a->hits + b->hits;
    out->evictions = g->done[2] + a->evictions + b->evictions;
    out->full = g->done[3] + a->full + b->full;
    out->table_capacity = g->t[g->cur].capacity;
    out->migrating = g->migrating ? HI(g->ctl[!g->cur].ring_pos) : 0;
    out->bytes = g->bytes;
    out->grows = g->grows;
    out->shrinks = g->shrinks;
}
