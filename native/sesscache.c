/* The sidecar's native answers to session-cookie requests: see sesscache.h. */
#include "sesscache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A 64-bit mix, unkeyed, and that is safe here: only cookies that opened are stored (sessions.py remember:
 * AEAD output sealed under the session key with a fresh nonce, which no client can choose), so no probe
 * chain can be built on purpose; a looked-up value a client does choose walks at most one existing chain,
 * and the table is kept at most half full (fk_sess_init). */
static uint64_t vhash(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    return h ? h : 1;   /* 0 marks an empty slot */
}

int fk_sess_init(fk_sess *s, const uint8_t *name, size_t name_n, size_t max)
{
    memset(s, 0, sizeof(*s));
    if (name_n == 0 || name_n > FK_SESS_NAME_MAX || max == 0 || max > ((size_t)1 << 28))
        return -1;
    size_t cap = 16;
    while (cap < 2 * max)
        cap *= 2;
    s->slots = calloc(cap, sizeof(fk_sess_entry));
    if (s->slots == NULL)
        return -1;
    s->mask = cap - 1;
    s->max = max;
    memcpy(s->name, name, name_n);
    s->name_n = name_n;
    return 0;
}

void fk_sess_clear(fk_sess *s)
{
    if (s->slots == NULL)
        return;
    for (size_t i = 0; i <= s->mask; i++)
        free(s->slots[i].blob);
    memset(s->slots, 0, (s->mask + 1) * sizeof(fk_sess_entry));
    s->count = 0;
    s->hand = 0;
}

void fk_sess_free(fk_sess *s)
{
    fk_sess_clear(s);
    free(s->slots);
    s->slots = NULL;
}

/* The slot of the value, or of the empty slot where it would go (*found 0). The load stays at most 1/2,
 * so an empty slot ends every probe. */
static size_t find(const fk_sess *s, uint64_t h, const uint8_t *v, size_t n, int *found)
{
    size_t i = (size_t)h & s->mask;
    for (;;) {
        const fk_sess_entry *e = &s->slots[i];
        if (e->hash == 0) {
            *found = 0;
            return i;
        }
        if (e->hash == h && e->value_n == n && memcmp(e->blob, v, n) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & s->mask;
    }
}

/* Empty slot i, shifting back the entries of its probe run that may move (Knuth's algorithm R). */
static void remove_at(fk_sess *s, size_t i)
{
    free(s->slots[i].blob);
    size_t j = i;
    for (;;) {
        j = (j + 1) & s->mask;
        fk_sess_entry *e = &s->slots[j];
        if (e->hash == 0)
            break;
        size_t home = (size_t)e->hash & s->mask;
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {   /* i lies within [home, j): e may sit there */
            s->slots[i] = *e;
            i = j;
        }
    }
    memset(&s->slots[i], 0, sizeof(fk_sess_entry));
    s->count--;
}

static void evict(fk_sess *s)   /* CLOCK: the first entry the hand finds unused since its last pass */
{
    for (;;) {   /* count > 0: within two turns of the hand a used bit is found clear */
        size_t i = s->hand;
        s->hand = (s->hand + 1) & s->mask;
        fk_sess_entry *e = &s->slots[i];
        if (e->hash == 0)
            continue;
        if (e->used) {
            e->used = 0;
            continue;
        }
        remove_at(s, i);
        return;
    }
}

int fk_sess_put(fk_sess *s, const uint8_t *value, size_t value_n, const uint8_t *head, size_t head_n,
                const uint8_t *mid, size_t mid_n, const uint8_t *tail, size_t tail_n, double end)
{
    if (s->slots == NULL || value_n == 0 || value_n > 65536 || head_n > 65536 || mid_n > 65536 || tail_n > 65536)
        return -1;
    uint8_t *b = malloc(value_n + head_n + mid_n + tail_n);
    if (b == NULL)
        return -1;
    memcpy(b, value, value_n);
    memcpy(b + value_n, head, head_n);
    memcpy(b + value_n + head_n, mid, mid_n);
    memcpy(b + value_n + head_n + mid_n, tail, tail_n);
    uint64_t h = vhash(value, value_n);
    int found;
    size_t i = find(s, h, value, value_n, &found);
    if (found) {
        free(s->slots[i].blob);
    } else {
        if (s->count >= s->max) {
            evict(s);
            i = find(s, h, value, value_n, &found);
        }
        s->count++;
    }
    fk_sess_entry *e = &s->slots[i];
    e->hash = h;
    e->end = end;
    e->blob = b;
    e->value_n = (uint32_t)value_n;
    e->head_n = (uint32_t)head_n;
    e->mid_n = (uint32_t)mid_n;
    e->tail_n = (uint32_t)tail_n;
    e->used = 0;
    return 0;
}

int fk_sess_drop(fk_sess *s, const uint8_t *value, size_t value_n)
{
    int found;
    if (s->slots == NULL || s->count == 0)
        return 0;
    size_t i = find(s, vhash(value, value_n), value, value_n, &found);
    if (!found)
        return 0;
    remove_at(s, i);
    return 1;
}

double fk_sess_end(const fk_sess *s, const uint8_t *value, size_t value_n)
{
    int found;
    if (s->slots == NULL || s->count == 0)
        return -1;
    size_t i = find(s, vhash(value, value_n), value, value_n, &found);
    return found ? s->slots[i].end : -1;
}

/* -- the request -------------------------------------------------------------------------------------------- */

static int ws(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* The named cookie's value in one Cookie header, as SessionCookies.value_from reads it: the first item
 * (split at ';', stripped) whose text before its first '=' is the name; its value stripped, then stripped
 * of '"' at both ends. 1 found, 0 not there. */
static int cookie_value(const fk_sess *s, const uint8_t *cv, size_t cn, const uint8_t **value, size_t *value_n)
{
    size_t a = 0;
    for (;;) {
        const uint8_t *semi = memchr(cv + a, ';', cn - a);
        size_t b = semi ? (size_t)(semi - cv) : cn;
        size_t x = a, y = b;
        while (x < y && ws(cv[x]))
            x++;
        while (y > x && ws(cv[y - 1]))
            y--;
        const uint8_t *eq = memchr(cv + x, '=', y - x);
        if (eq != NULL && (size_t)(eq - (cv + x)) == s->name_n && memcmp(cv + x, s->name, s->name_n) == 0) {
            size_t v0 = (size_t)(eq - cv) + 1, v1 = y;
            while (v0 < v1 && ws(cv[v0]))
                v0++;
            while (v0 < v1 && cv[v0] == '"')
                v0++;
            while (v1 > v0 && cv[v1 - 1] == '"')
                v1--;
            *value = cv + v0;
            *value_n = v1 - v0;
            return 1;
        }
        if (semi == NULL)
            return 0;
        a = b + 1;
    }
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* log.py's session line: {"time", <mid: event .. worker, "latency_us":>, latency, "peer", <tail: "kid"}>. */
static int log_line(fk_front *f, const fk_sess_entry *e, double now, double latency, fk_buf peer, fk_buf xff)
{
    fk_out *o = &f->log;
    char tmp[64];
    int k;
    if (fk_front_log_time(f, now) != 0)
        return -1;
    const uint8_t *b = e->blob + e->value_n + e->head_n;
    if (fk_out_append(o, b, e->mid_n) != 0)
        return -1;
    k = snprintf(tmp, sizeof(tmp), "%.1f,\"peer\":\"", latency * 1e6);
    if (k < 0 || (size_t)k >= sizeof(tmp) || fk_out_append(o, tmp, (size_t)k) != 0 || fk_out_append(o, peer.p, peer.n) != 0)
        return -1;
    if (xff.p != NULL) {   /* http.py: f"{peer} for={xff.decode('latin-1')[:200]}" */
        if (FK_OUT_APPENDS(o, " for=") != 0 || fk_json_str(o, xff.p, xff.n < 200 ? xff.n : 200, 1) != 0)
            return -1;
    }
    if (FK_OUT_APPENDS(o, "\"") != 0 || fk_out_append(o, b + e->mid_n, e->tail_n) != 0)
        return -1;
    f->log_lines++;
    return 0;
}

int fk_sess_http(fk_sess *s, fk_front *f, const uint8_t *p, size_t n, int close, double now, fk_buf peer)
{
    if (s->slots == NULL || s->count == 0)
        return 0;
    double t0 = mono();
    /* the request line: GET or HEAD, then http.py's routing of /auth without a policy (fk_http_read_head's) */
    size_t i;
    if (n >= 4 && memcmp(p, "GET ", 4) == 0)
        i = 4;
    else if (n >= 5 && memcmp(p, "HEAD ", 5) == 0)
        i = 5;
    else
        return 0;
    const uint8_t *tgt = p + i;
    const uint8_t *sp = memchr(tgt, ' ', n - i);
    if (sp == NULL)
        return 0;
    size_t tlen = (size_t)(sp - tgt);
    const uint8_t *q = memchr(tgt, '?', tlen);
    size_t plen = q ? (size_t)(q - tgt) : tlen;
    if (plen == 5 && memcmp(tgt, "/auth", 5) == 0) {
        if (q != NULL && tlen - plen > 1)
            return 0;   /* a policy query */
    } else if (plen >= 6 && memcmp(tgt, "/auth/", 6) == 0) {
        if (plen >= 13 && memcmp(tgt, "/auth/policy/", 13) == 0)
            return 0;
    } else {
        return 0;
    }
    const uint8_t *le = memchr(sp, '\n', (size_t)(p + n - sp));
    if (le == NULL)
        return 0;
    i = (size_t)(le - p) + 1;
    /* the field lines (well-formed: fk_http_read_head read them): no Authorization, one Cookie, at most one
     * X-Forwarded-For */
    const uint8_t *cookie = NULL, *xff = NULL;
    size_t cookie_n = 0, xff_n = 0;
    while (i + 2 < n) {
        const uint8_t *colon = memchr(p + i, ':', n - i);
        if (colon == NULL)
            return 0;
        size_t c = (size_t)(colon - p);
        const uint8_t *cr = memchr(p + c, '\r', n - c);
        if (cr == NULL)
            return 0;
        size_t v0 = c + 1, v1 = (size_t)(cr - p);
        while (v0 < v1 && ws(p[v0]))
            v0++;
        while (v1 > v0 && ws(p[v1 - 1]))
            v1--;
        const uint8_t *name = p + i;
        size_t nlen = c - i;
        if (nlen == 6 && fk_ascii_ieq(name, nlen, "cookie")) {
            if (cookie != NULL)
                return 0;   /* two Cookie headers: value_from's order over them is Python's */
            cookie = p + v0;
            cookie_n = v1 - v0;
        } else if (nlen == 13 && fk_ascii_ieq(name, nlen, "authorization")) {
            return 0;       /* Negotiate, bearer or anything else: http.py decides */
        } else if (nlen == 15 && fk_ascii_ieq(name, nlen, "x-forwarded-for")) {
            if (xff != NULL)
                return 0;
            xff = p + v0;
            xff_n = v1 - v0;
        }
        i = (size_t)(cr - p) + 2;
    }
    const uint8_t *value;
    size_t value_n;
    if (cookie == NULL || !cookie_value(s, cookie, cookie_n, &value, &value_n) || value_n == 0)
        return 0;
    int found;
    size_t at = find(s, vhash(value, value_n), value, value_n, &found);
    if (!found)
        return 0;
    fk_sess_entry *e = &s->slots[at];
    if (now >= e->end) {   /* ended: Python opens it, refuses it and clears the cookie */
        remove_at(s, at);
        return 0;
    }
    e->used = 1;
    fk_out *o = &f->out;
    static const char shut[] = "Connection: close\r\n";
    static const char cl0[] = "Content-Length: 0\r\n\r\n";
    if (fk_out_reserve(o, e->head_n + sizeof(shut) + sizeof(cl0)) != 0)
        return -1;
    memcpy(o->p + o->n, e->blob + e->value_n, e->head_n);
    o->n += e->head_n;
    if (close) {
        memcpy(o->p + o->n, shut, sizeof(shut) - 1);
        o->n += sizeof(shut) - 1;
    }
    memcpy(o->p + o->n, cl0, sizeof(cl0) - 1);
    o->n += sizeof(cl0) - 1;
    s->hits++;
    if (f->log_decisions) {
        fk_buf xb = {xff, xff_n};
        if (log_line(f, e, now, mono() - t0, peer, xb) != 0)
            return -1;
    }
    return 1;
}
