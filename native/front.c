/* The sidecar's native request path: HTTP head reader, answer encoders, counters and log lines.
 * See front.h; the loops over a chunk are in front.pxi. */
#include "front.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

int fk_out_reserve(fk_out *o, size_t more)
{
    if (o->cap - o->n >= more)
        return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap - o->n < more) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *p = realloc(o->p, cap);
    if (p == NULL)
        return -1;
    o->p = p;
    o->cap = cap;
    return 0;
}

void fk_out_free(fk_out *o)
{
    free(o->p);
    o->p = NULL;
    o->n = o->cap = 0;
}

static void put(fk_out *o, const void *p, size_t n)   /* room reserved by the caller */
{
    memcpy(o->p + o->n, p, n);
    o->n += n;
}

#define PUTS(o, s) put((o), (s), sizeof(s) - 1)

int fk_out_append(fk_out *o, const void *p, size_t n)
{
    if (fk_out_reserve(o, n) != 0)
        return -1;
    put(o, p, n);
    return 0;
}

static void be16(fk_out *o, uint32_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    memcpy(o->p + o->n, b, 2);
    o->n += 2;
}

static void be32(fk_out *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    memcpy(o->p + o->n, b, 4);
    o->n += 4;
}

static void be64(fk_out *o, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    memcpy(o->p + o->n, b, 8);
    o->n += 8;
}

static void f64(fk_out *o, double d)    /* struct ">d": IEEE 754 binary64, big-endian */
{
    uint64_t v;
    memcpy(&v, &d, 8);
    be64(o, v);
}

static void f32(fk_out *o, double d)    /* struct ">f": rounded to binary32 like PyFloat_Pack4 */
{
    float x = (float)d;
    uint32_t v;
    memcpy(&v, &x, 4);
    be32(o, v);
}

/* -- HTTP request heads ---------------------------------------------------------------------------------- */

/* Byte classes of a request head, one table lookup per byte. */
#define C_TCHAR 1    /* RFC 9110 §5.6.2 tchar */
#define C_TARGET 2   /* RFC 3986 origin-form (RFC 9112 §3.2.1): pchar, "/" and "?"; not "#", SP, quotes, braces */
#define C_VBYTE 4    /* RFC 9110 §5.5 field-value bytes: VCHAR, SP, HTAB. obs-text (0x80-0xFF) is legal but goes
                      * to Python, which decodes it as Latin-1 on its own terms */

static uint8_t cls[256];

__attribute__((constructor)) static void init_classes(void)   /* at load, before any thread can read it */
{
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (alnum || (c && strchr("!#$%&'*+-.^_`|~", c)))
            k |= C_TCHAR;
        if (alnum || (c && strchr("-._~%!$&'()*+,;=:@/?", c)))
            k |= C_TARGET;
        if (c == '\t' || (c >= 0x20 && c < 0x7f))
            k |= C_VBYTE;
        cls[c] = k;
    }
}

#define IS(c, k) (cls[(uint8_t)(c)] & (k))

int fk_ascii_ieq(const uint8_t *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)lit[i])
            return 0;
    }
    return 1;
}

/* An incomplete head that may still become a fast one: only head bytes, every line ended by CRLF
 * (RFC 9112 §2.2: a bare CR is invalid; a bare LF is left to Python), and a request line that starts like
 * "GET " or "HEAD ". Anything else is Python's at once, so it answers exactly when it does today. */
static int partial_ok(const uint8_t *p, size_t n)
{
    static const char get[] = "GET ", head[] = "HEAD ";
    size_t k = n < 4 ? n : 4;
    size_t j = n < 5 ? n : 5;
    if (memcmp(p, get, k) != 0 && memcmp(p, head, j) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\n') {
            if (i == 0 || p[i - 1] != '\r')
                return 0;
        } else if (c == '\r') {
            if (i + 1 < n && p[i + 1] != '\n')
                return 0;
        } else if (!IS(c, C_VBYTE)) {
            return 0;
        }
    }
    return 1;
}

/* The first CRLF CRLF of p[0..n), as memmem finds it, from one memchr per line: a head is a few dozen lines, and
 * memmem's general search cost more than the rest of the head reader. */
static const uint8_t *head_end(const uint8_t *p, size_t n)
{
    size_t i = 3;
    while (i < n) {
        const uint8_t *q = memchr(p + i, '\n', n - i);
        if (q == NULL)
            return NULL;
        i = (size_t)(q - p);
        if (q[-1] == '\r' && q[-2] == '\n' && q[-3] == '\r')
            return q - 3;
        i++;
    }
    return NULL;
}

/* The CR that ends the field value starting at p[i], when every byte before it is a field-value byte (C_VBYTE);
 * (size_t)-1 when another byte comes first. A CR is known to come before end. One pass, sixteen (SSE2) or eight
 * bytes at a time up to a byte that may not be plain (a control, DEL, obs-text; a tab is allowed), which is then
 * looked at alone. */
static size_t value_end(const uint8_t *p, size_t i, size_t end)
{
    for (;;) {
#if defined(__SSE2__)
        const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
        while (i + 16 <= end) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
            /* signed compare: 0x80-0xff are negative, below 0x20 like the controls */
            int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(x, sp), _mm_cmpeq_epi8(x, del)));
            if (m) {
                i += (size_t)__builtin_ctz((unsigned)m);
                break;
            }
            i += 16;
        }
#else
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        while (i + 8 <= end) {
            uint64_t x;
            memcpy(&x, p + i, 8);
            /* a byte below 0x20, or from 0x7f up (no false negatives; a false positive is looked at alone) */
            if ((((x - 0x20 * ones) & ~x) | ((x + ones) | x)) & highs)
                break;
            i += 8;
        }
#endif
        if (i >= end)
            return (size_t)-1;
        uint8_t c = p[i];
        if (c == '\r')
            return i;
        if (!IS(c, C_VBYTE))
            return (size_t)-1;
        i++;
    }
}

int fk_http_read_head(const uint8_t *p, size_t n, size_t max_head, fk_http_head *h)
{
    memset(h, 0, sizeof(*h));
    if (n == 0)
        return FK_HEAD_PARTIAL;
    const uint8_t *e = head_end(p, n);
    if (e == NULL) {
        if (n > FK_HEAD_PARTIAL_MAX || n > max_head || !partial_ok(p, n))
            return FK_HEAD_SLOW_CONN;
        return FK_HEAD_PARTIAL;
    }
    size_t end = (size_t)(e - p) + 4;
    h->len = end;

    /* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3): single spaces, no leading
     * empty line (§2.2 allows ignoring one; Python's parser decides about it). */
    /* GET and HEAD are answered alike (http.py does not look at the method); another method may carry a
     * body, so Python's parser frames it */
    size_t i;
    if (end >= 4 && memcmp(p, "GET ", 4) == 0)
        i = 4;
    else if (end >= 5 && memcmp(p, "HEAD ", 5) == 0)
        i = 5;
    else
        return FK_HEAD_SLOW_CONN;
    size_t t0 = i;
    while (i < end && IS(p[i], C_TARGET))
        i++;
    size_t t1 = i;
    if (t1 == t0 || p[t0] != '/' || p[i] != ' ')   /* origin-form only (§3.2.1) */
        return FK_HEAD_SLOW_CONN;
    i++;
    int minor;
    if (end - i >= 10 && memcmp(p + i, "HTTP/1.1\r\n", 10) == 0)
        minor = 1;
    else if (end - i >= 10 && memcmp(p + i, "HTTP/1.0\r\n", 10) == 0)
        minor = 0;
    else
        return FK_HEAD_SLOW_CONN;
    i += 10;

    /* field-line = field-name ":" OWS field-value OWS CRLF (RFC 9112 §5). No whitespace between name and
     * colon (§5.1: a server must reject it), no obs-fold (§5.2), no bare CR or LF (§2.2): all Python's. */
    size_t head_size = t1 - t0;   /* http.py counts url + (name + value + 4) per field against max_request_size */
    int conn_close = 0, conn_keep = 0, seen_conn = 0, seen_cl = 0, slow_one = 0;
    const uint8_t *auth = NULL;
    size_t auth_n = 0;
    while (i < end - 2) {
        size_t n0 = i;
        while (i < end && IS(p[i], C_TCHAR))
            i++;
        size_t nlen = i - n0;
        if (nlen == 0 || p[i] != ':')
            return FK_HEAD_SLOW_CONN;
        i++;
        while (p[i] == ' ' || p[i] == '\t')
            i++;
        size_t v0 = i;
        i = value_end(p, i, end);   /* a CR comes: the head ends in CRLFCRLF */
        if (i == (size_t)-1 || p[i + 1] != '\n')
            return FK_HEAD_SLOW_CONN;
        size_t v1 = i;
        while (v1 > v0 && (p[v1 - 1] == ' ' || p[v1 - 1] == '\t'))
            v1--;
        i += 2;
        const uint8_t *name = p + n0, *val = p + v0;
        size_t vlen = v1 - v0;
        head_size += nlen + vlen + 4;
        switch (nlen) {
        case 6:
            if (fk_ascii_ieq(name, nlen, "expect"))
                return FK_HEAD_SLOW_CONN;   /* 100-continue: a body follows */
            break;
        case 7:
            if (fk_ascii_ieq(name, nlen, "upgrade"))
                return FK_HEAD_SLOW_CONN;
            break;
        case 10:
            if (fk_ascii_ieq(name, nlen, "connection")) {
                /* RFC 9110 §7.6.1; only the single options llhttp and we agree on without a list parse */
                if (seen_conn++)
                    return FK_HEAD_SLOW_CONN;
                if (fk_ascii_ieq(val, vlen, "close"))
                    conn_close = 1;
                else if (fk_ascii_ieq(val, vlen, "keep-alive"))
                    conn_keep = 1;
                else
                    return FK_HEAD_SLOW_CONN;
            }
            break;
        case 13:
            if (fk_ascii_ieq(name, nlen, "authorization")) {
                if (auth != NULL)
                    slow_one = 1;   /* two: http.py keeps the last; let it */
                auth = val;
                auth_n = vlen;
            }
            break;
        case 14:
            if (fk_ascii_ieq(name, nlen, "content-length")) {
                /* RFC 9112 §6.3: only an explicit empty body keeps the head bodiless */
                if (seen_cl++ || !(vlen == 1 && val[0] == '0'))
                    return FK_HEAD_SLOW_CONN;
            }
            break;
        case 15:
            if (fk_ascii_ieq(name, nlen, "x-forwarded-for")) {
                if (h->xff.p != NULL)
                    slow_one = 1;
                h->xff.p = val;
                h->xff.n = vlen;
            }
            break;
        case 16:
            if (fk_ascii_ieq(name, nlen, "proxy-connection"))
                return FK_HEAD_SLOW_CONN;   /* llhttp reads it like Connection */
            break;
        case 17:
            if (fk_ascii_ieq(name, nlen, "transfer-encoding"))
                return FK_HEAD_SLOW_CONN;   /* a chunked (or any coded) body, RFC 9112 §6.1 */
            break;
        default:
            break;
        }
    }
    /* near the limit: Python's exact count (and its 431) decides */
    if (head_size + 256 > max_head)
        return FK_HEAD_SLOW_CONN;
    /* RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive" */
    h->keep_alive = minor ? !conn_close : (conn_keep && !conn_close);
    if (slow_one)
        return FK_HEAD_SLOW_ONE;

    /* /auth (empty query: no policy), or /auth/<anything> except /auth/policy/...: http.py's routing */
    const uint8_t *tgt = p + t0;
    size_t tlen = t1 - t0;
    const uint8_t *q = memchr(tgt, '?', tlen);
    size_t plen = q ? (size_t)(q - tgt) : tlen;
    if (plen == 5 && memcmp(tgt, "/auth", 5) == 0) {
        if (q != NULL && tlen - plen > 1)
            return FK_HEAD_SLOW_ONE;   /* a policy query */
    } else if (plen >= 6 && memcmp(tgt, "/auth/", 6) == 0) {
        if (plen >= 13 && memcmp(tgt, "/auth/policy/", 13) == 0)
            return FK_HEAD_SLOW_ONE;
    } else {
        return FK_HEAD_SLOW_ONE;       /* /healthz, /metrics, 404 */
    }
    /* Authorization: Negotiate <token> (RFC 4559 §4.2; the scheme is case-blind, RFC 9110 §11.1) with exactly
     * one space: then krb/negotiate.py's reader (partition at the first space, strip) gives the same bytes,
     * which the validator reads as base64 (or refuses) the same way. Anything else is that reader's. */
    if (auth == NULL || auth_n < 11 || !fk_ascii_ieq(auth, 9, "negotiate") || auth[9] != ' ' || auth[10] == ' '
        || auth[10] == '\t')
        return FK_HEAD_SLOW_ONE;
    h->token.p = auth + 10;
    h->token.n = auth_n - 10;
    return FK_HEAD_FAST;
}

/* -- names ----------------------------------------------------------------------------------------------- */

/* Python's strict UTF-8 decoder: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t x;
        if (i + 8 <= n && (memcpy(&x, s + i, 8), !(x & 0x8080808080808080ULL))) {   /* eight ASCII bytes */
            i += 8;
            continue;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* MIT's unparse (result.pxi's _name): components joined by '/', then '@realm'; '/', '@', '\' escaped in a
 * component, '@' and '\' in the realm. */
static int unparse(fk_out *o, const fk_buf *comp, int ncomp, fk_buf realm)
{
    size_t cap = 2 * realm.n + 2;
    for (int i = 0; i < ncomp; i++)
        cap += 2 * comp[i].n + 1;
    if (fk_out_reserve(o, cap) != 0)
        return -1;
    uint8_t *d = o->p + o->n;   /* a local cursor: a byte store through o->p may alias o->n */
    for (int i = 0; i < ncomp; i++) {
        if (i)
            *d++ = '/';
        for (size_t j = 0; j < comp[i].n; j++) {
            uint8_t ch = comp[i].p[j];
            if (ch == '/' || ch == '@' || ch == '\\')
                *d++ = '\\';
            *d++ = ch;
        }
    }
    *d++ = '@';
    for (size_t j = 0; j < realm.n; j++) {
        uint8_t ch = realm.p[j];
        if (ch == '@' || ch == '\\')
            *d++ = '\\';
        *d++ = ch;
    }
    o->n = (size_t)(d - o->p);
    return 0;
}

int fk_front_names(fk_front *f, const fk_result *r)
{
    fk_out *o = &f->names;
    o->n = 0;
    if (unparse(o, r->tkt.cname.comp, r->tkt.cname.ncomp, r->tkt.crealm) != 0)
        return -1;
    f->client_n = o->n;
    int rc;
    if (r->alias == 1)   /* the clear-text sname is an alias: the server is the key's principal */
        rc = unparse(o, r->key->comp, r->key->ncomp, r->key->realm);
    else
        rc = unparse(o, r->req.sname.comp, r->req.sname.ncomp, r->req.realm);
    if (rc != 0)
        return -1;
    f->server_n = o->n - f->client_n;
    size_t s = f->client_n;   /* short_name: client.rsplit("@", 1)[0] */
    while (s > 0 && o->p[s - 1] != '@')
        s--;
    f->short_n = s ? s - 1 : 0;
    if (!utf8_ok(o->p, o->n) || !utf8_ok(r->tkt.crealm.p, r->tkt.crealm.n))
        return 1;
    return 0;
}

int fk_front_has_identity(const fk_result *r)
{
    return r->pac_verified && r->pac_logon.p != NULL;
}

/* -- binary answers (docs/protocol.md) ------------------------------------------------------------------ */

static const char *const FRAMES[] = {"raw", "krb5", "spnego", "spnego"};

int fk_front_wire_accepted(fk_front *f, const fk_result *r, uint32_t rid, int ex)
{
    const uint8_t *names = f->names.p;
    const char *framing = FRAMES[r->frame.kind & 3];
    size_t lfr = strlen(framing);
    size_t lc = f->client_n, ls = f->server_n, lsn = f->short_n, lr = r->tkt.crealm.n, lrep = r->reply.n;
    /* ">HHIIIBddddfHHHHBH" (protocol.py's _ACC) */
    size_t fixed = 2 + 2 + 4 + 4 + 4 + 1 + 8 * 4 + 4 + 2 * 4 + 1 + 2;
    size_t acc = fixed + lc + ls + lsn + lr + lfr + lrep;
    size_t body = ex ? 4 + acc + 3 : acc;
    if (lc > 0xffff || ls > 0xffff || lsn > 0xffff || lr > 0xffff || lrep > 0xffff)
        return 1;   /* protocol.py's struct.pack would refuse: Python's path answers */
    fk_out *o = &f->out;
    if (fk_out_reserve(o, 9 + body) != 0)
        return -1;
    be32(o, (uint32_t)(5 + body));
    o->p[o->n++] = ex ? 0x84 : 0x81;
    be32(o, rid);
    if (ex)
        be32(o, (uint32_t)acc);
    uint8_t bits = (uint8_t)((r->mutual ? 1 : 0) | (r->deleg.n ? 2 : 0) | (r->pac_verified ? 4 : 0));
    be16(o, (uint16_t)r->req.tkt_etype);
    be16(o, (uint16_t)r->tkt.keytype);
    be32(o, r->key->kvno);
    be32(o, r->tkt.flags);
    be32(o, r->gss_flags);
    o->p[o->n++] = bits;
    f64(o, (double)r->tkt.authtime);
    f64(o, (double)r->tkt_start);
    f64(o, (double)r->tkt.endtime);
    f64(o, (double)r->auth.ctime);
    f32(o, r->skew_seconds);
    be16(o, (uint32_t)lc);
    be16(o, (uint32_t)ls);
    be16(o, (uint32_t)lsn);
    be16(o, (uint32_t)lr);
    o->p[o->n++] = (uint8_t)lfr;
    be16(o, (uint32_t)lrep);
    put(o, names, lc);
    put(o, names + lc, ls);
    put(o, names, lsn);
    put(o, r->tkt.crealm.p, lr);
    put(o, framing, lfr);
    if (lrep)
        put(o, r->reply.p, lrep);
    if (ex) {   /* ext flags 0 (no identity), policy length 0 */
        o->p[o->n++] = 0;
        be16(o, 0);
    }
    return 0;
}

/* -- HTTP answers ---------------------------------------------------------------------------------------- */

/* http.py's header_value: UTF-8 with every byte below 0x20 and DEL %-escaped (a name never splits a header). */
static int header_value(fk_out *o, const uint8_t *s, size_t n)
{
    if (fk_out_reserve(o, 3 * n) != 0)
        return -1;
    static const char hex[] = "0123456789ABCDEF";
    uint8_t *d = o->p + o->n;   /* a local cursor: a byte store through o->p may alias o->n */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c < 0x20 || c == 0x7f) {
            *d++ = '%';
            *d++ = (uint8_t)hex[c >> 4];
            *d++ = (uint8_t)hex[c & 15];
        } else {
            *d++ = c;
        }
    }
    o->n = (size_t)(d - o->p);
    return 0;
}

int fk_front_http_accepted(fk_front *f, const fk_result *r, int close)
{
    fk_out *o = &f->out;
    const uint8_t *names = f->names.p;
    static const char status[] = "HTTP/1.1 200 OK\r\nX-Remote-User: ";
    if (FK_OUT_APPENDS(o, status) != 0 || header_value(o, names, f->short_n) != 0
        || FK_OUT_APPENDS(o, "\r\nX-Remote-Principal: ") != 0 || header_value(o, names, f->client_n) != 0
        || FK_OUT_APPENDS(o, "\r\nX-Remote-Realm: ") != 0 || header_value(o, r->tkt.crealm.p, r->tkt.crealm.n) != 0
        || FK_OUT_APPENDS(o, "\r\n") != 0)
        return -1;
    if (r->reply.n) {   /* RFC 4559 §5: the AP-REP for mutual authentication */
        static const char www[] = "WWW-Authenticate: Negotiate ";
        if (fk_out_reserve(o, sizeof(www) + (r->reply.n + 2) / 3 * 4 + 2) != 0)
            return -1;
        PUTS(o, www);
        o->n += fk_b64_encode(r->reply.p, r->reply.n, (char *)o->p + o->n);
        PUTS(o, "\r\n");
    }
    static const char keep[] = "Cache-Control: no-store\r\n";
    static const char shut[] = "Connection: close\r\n";
    static const char cl0[] = "Content-Length: 0\r\n\r\n";
    if (fk_out_reserve(o, sizeof(keep) + sizeof(shut) + sizeof(cl0)) != 0)
        return -1;
    PUTS(o, keep);
    if (close)
        PUTS(o, shut);
    PUTS(o, cl0);
    return 0;
}

/* -- counters and log lines ------------------------------------------------------------------------------ */

static int bisect_left(const double *b, int n, double v)
{
    int i = 0;
    while (i < n && b[i] < v)
        i++;
    return i;
}

void fk_front_observe(fk_front *f, const fk_result *r, double latency)
{
    double sk = r->skew_seconds < 0 ? -r->skew_seconds : r->skew_seconds;
    f->st.accepted++;
    f->st.lat[bisect_left(f->lat_bounds, f->nlat, latency)]++;
    f->st.lat_sum += latency;
    f->st.skew[bisect_left(f->skew_bounds, f->nskew, sk)]++;
    f->st.skew_sum += sk;
}

/* A JSON string body as json.dumps(ensure_ascii=False) writes it: '"' and '\' escaped, \n \r \t \b \f, other
 * controls as \u00xx; everything else (valid UTF-8 here) as is. latin1: the input is Latin-1 text, each
 * byte from 0x80 on written as its UTF-8 pair. */
int fk_json_str(fk_out *o, const uint8_t *s, size_t n, int latin1)
{
    if (fk_out_reserve(o, 6 * n) != 0)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        size_t j = i;   /* a run of bytes written as they are (the common case: all of them) */
        while (j < n && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' && !(latin1 && s[j] >= 0x80))
            j++;
        if (j > i) {
            put(o, s + i, j - i);
            i = j;
            if (i == n)
                break;
        }
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            o->p[o->n++] = '\\';
            o->p[o->n++] = c;
        } else if (c < 0x20) {
            o->p[o->n++] = '\\';
            switch (c) {
            case '\n': o->p[o->n++] = 'n'; break;
            case '\r': o->p[o->n++] = 'r'; break;
            case '\t': o->p[o->n++] = 't'; break;
            case '\b': o->p[o->n++] = 'b'; break;
            case '\f': o->p[o->n++] = 'f'; break;
            default:
                PUTS(o, "u00");
                o->p[o->n++] = (uint8_t)hex[c >> 4];
                o->p[o->n++] = (uint8_t)hex[c & 15];
            }
        } else if (latin1 && c >= 0x80) {
            o->p[o->n++] = (uint8_t)(0xc0 | (c >> 6));
            o->p[o->n++] = (uint8_t)(0x80 | (c & 0x3f));
        } else {
            o->p[o->n++] = c;
        }
    }
    return 0;
}

static int fmt(fk_out *o, const char *format, ...) __attribute__((format(printf, 2, 3)));

static int fmt(fk_out *o, const char *format, ...)
{
    size_t room = 128;
    for (;;) {
        if (fk_out_reserve(o, room) != 0)
            return -1;
        va_list ap;
        va_start(ap, format);
        int k = vsnprintf((char *)o->p + o->n, room, format, ap);
        va_end(ap);
        if (k < 0)
            return -1;
        if ((size_t)k < room) {
            o->n += (size_t)k;
            return 0;
        }
        room = (size_t)k + 1;
    }
}

/* x with d decimals (d <= 3) exactly as printf("%.*f") and Python's format(x, ".3f") write it: the exact
 * binary value rounded half to even. x = m * 2^-s with m a 53-bit integer, so x * 10^d = m * 10^d * 2^-s and
 * m * 10^d < 2^63: one shift and the bits shifted out decide the rounding, no floating-point arithmetic.
 * NaN, infinities and magnitudes from 2^40 on (never a skew or a latency) go to printf. */
static int fixed(fk_out *o, double x, int d)
{
    static const uint64_t p10[4] = {1, 10, 100, 1000};
    double a = fabs(x);
    if (!(a < 1099511627776.0))
        return fmt(o, "%.*f", d, x);
    if (fk_out_reserve(o, 32) != 0)
        return -1;
    uint64_t bits, q = 0;
    memcpy(&bits, &a, 8);
    if (a != 0) {
        int be = (int)(bits >> 52);                          /* the sign bit is clear: a >= 0 */
        uint64_t m = bits & ((1ULL << 52) - 1);
        int s = 1074;                                        /* subnormal: a = m * 2^-1074 */
        if (be) {
            m |= 1ULL << 52;
            s = 1075 - be;                                   /* a = m * 2^-s, s > 12 as a < 2^40 */
        }
        uint64_t v = m * p10[d];
        if (s < 64) {
            q = v >> s;
            uint64_t r = v & ((1ULL << s) - 1), half = 1ULL << (s - 1);
            if (r > half || (r == half && (q & 1)))
                q++;
        }   /* else v < 2^63 <= half: rounds to 0 */
    }
    if (signbit(x))
        o->p[o->n++] = '-';
    char tmp[24];
    int k = 0;
    uint64_t ip = q / p10[d], fp = q % p10[d];
    for (int i = 0; i < d; i++, fp /= 10)
        tmp[k++] = (char)('0' + fp % 10);
    if (d)
        tmp[k++] = '.';
    do {
        tmp[k++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    while (k)
        o->p[o->n++] = (uint8_t)tmp[--k];
    return 0;
}

static int dec(fk_out *o, int32_t v)   /* a JSON integer */
{
    char tmp[12];
    int k = 0;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    do {
        tmp[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (fk_out_reserve(o, 12) != 0)
        return -1;
    if (v < 0)
        o->p[o->n++] = '-';
    while (k)
        o->p[o->n++] = (uint8_t)tmp[--k];
    return 0;
}

/* f->mid for this answer: taken from the cache when its names, enctype, kvno and front door are the last
 * line's, formatted again otherwise. 0 / -1. */
static int middle(fk_front *f, const fk_result *r, int http)
{
    const uint8_t *names = f->names.p;
    int32_t tail[5] = {r->req.tkt_etype, (int32_t)r->key->kvno, http, (int32_t)f->client_n, f->worker};
    size_t nn = f->client_n + f->server_n;
    fk_out *k = &f->mid_key;
    if (k->n == nn + sizeof tail && memcmp(k->p, names, nn) == 0 && memcmp(k->p + nn, tail, sizeof tail) == 0)
        return 0;
    k->n = 0;
    fk_out *o = &f->mid;
    o->n = 0;
    if (FK_OUT_APPENDS(o, "\"event\":\"decision\",\"outcome\":\"accepted\",\"code\":\"ok\",\"client\":\"") != 0
        || fk_json_str(o, names, f->client_n, 0) != 0 || FK_OUT_APPENDS(o, "\",\"server\":\"") != 0
        || fk_json_str(o, names + f->client_n, f->server_n, 0) != 0
        || FK_OUT_APPENDS(o, "\",\"enctype\":") != 0 || dec(o, r->req.tkt_etype) != 0 || FK_OUT_APPENDS(o, ",\"kvno\":") != 0
        || dec(o, (int32_t)r->key->kvno) != 0   /* AuthResult.kvno is a C int */
        || FK_OUT_APPENDS(o, ",\"frontend\":\"") != 0 || fk_out_append(o, http ? "http" : "wire", 4) != 0
        || FK_OUT_APPENDS(o, "\",\"worker\":") != 0
        || (f->worker < 0 ? FK_OUT_APPENDS(o, "null") : dec(o, f->worker)) != 0)
        return -1;
    if (fk_out_append(k, names, nn) != 0 || fk_out_append(k, tail, sizeof tail) != 0) {
        k->n = 0;
        return -1;
    }
    return 0;
}

int fk_front_log_time(fk_front *f, double now)
{
    fk_out *o = &f->log;
    long long sec = (long long)now;   /* log.py's _time: int(now), then the milliseconds truncated */
    if (sec != f->stamp_sec || f->stamp[0] == 0) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || strftime(f->stamp, sizeof(f->stamp), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            return -1;
        f->stamp_sec = sec;
    }
    int ms = (int)((now - (double)sec) * 1000);
    if (ms >= 0 && ms < 1000) {
        size_t ls = strlen(f->stamp);
        if (fk_out_reserve(o, ls + 16) != 0)
            return -1;
        PUTS(o, "{\"time\":\"");
        put(o, f->stamp, ls);
        uint8_t *d = o->p + o->n;
        d[0] = '.';
        d[1] = (uint8_t)('0' + ms / 100);
        d[2] = (uint8_t)('0' + ms / 10 % 10);
        d[3] = (uint8_t)('0' + ms % 10);
        o->n += 4;
        PUTS(o, "Z\",");
    } else if (fmt(o, "{\"time\":\"%s.%03dZ\",", f->stamp, ms) != 0) {
        return -1;
    }
    return 0;
}

int fk_front_log_accepted(fk_front *f, const fk_result *r, int http, double latency, double now, fk_buf peer,
                          fk_buf xff)
{
    fk_out *o = &f->log;
    if (fk_front_log_time(f, now) != 0
        || middle(f, r, http) != 0 || fk_out_append(o, f->mid.p, f->mid.n) != 0
        || (r->mutual ? FK_OUT_APPENDS(o, ",\"mutual\":true,\"skew\":") : FK_OUT_APPENDS(o, ",\"mutual\":false,\"skew\":")) != 0
        || fixed(o, r->skew_seconds, 3) != 0 || FK_OUT_APPENDS(o, ",\"latency_us\":") != 0 || fixed(o, latency * 1e6, 1) != 0
        || FK_OUT_APPENDS(o, ",\"peer\":\"") != 0
        || fk_out_append(o, peer.p, peer.n) != 0)
        return -1;
    if (xff.p != NULL) {   /* http.py: f"{peer} for={xff.decode('latin-1')[:200]}" */
        if (FK_OUT_APPENDS(o, " for=") != 0 || fk_json_str(o, xff.p, xff.n < 200 ? xff.n : 200, 1) != 0)
            return -1;
    }
    if (FK_OUT_APPENDS(o, "\"}\n") != 0)
        return -1;
    f->log_lines++;
    return 0;
}
