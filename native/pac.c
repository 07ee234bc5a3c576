/* MS-PAC: header and table, the ticket-binding checks, KERB_VALIDATION_INFO and SID sets. See pac.h. */
#include "pac.h"

#include <string.h>

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

/* ------------------------------------------------------------------------------------------------ */
/* PACTYPE (MS-PAC §2.3) and PAC_INFO_BUFFER (§2.4)                                                  */

int fk_pac_parse(fk_buf pac, fk_pac *out, const char **what)
{
    const uint8_t *p = pac.p;
    size_t n = pac.n;
    out->count = 0;
    out->present = 0;   /* buf[t] and off[t] are set, and read, only for the types present */
    if (n < 8) {
        *what = "PAC shorter than its 8-byte header";
        return FK_PAC_BAD;
    }
    uint32_t cnt = le32(p);
    if (le32(p + 4) != 0) {
        *what = "PAC Version is not 0";
        return FK_PAC_BAD;
    }
    if (cnt == 0 || cnt > FK_PAC_MAX_BUFFERS) {
        *what = "PAC cBuffers is 0 or above 256";
        return FK_PAC_BAD;
    }
    if ((n - 8) / 16 < cnt) {
        *what = "PAC buffer table runs past the PAC";
        return FK_PAC_BAD;
    }
    size_t table_end = 8 + 16 * (size_t)cnt;
    /* non-empty buffers by offset (insertion into a sorted stack array: at most 256 entries) */
    uint64_t start[FK_PAC_MAX_BUFFERS], end[FK_PAC_MAX_BUFFERS];
    size_t nspan = 0;
    int sorted = 1;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *b = p + 8 + 16 * (size_t)i;
        uint32_t type = le32(b), size = le32(b + 4);
        uint64_t off = le64(b + 8);
        if (off & 7) {
            *what = "PAC buffer offset is not 8-byte aligned";
            return FK_PAC_BAD;
        }
        if (off < table_end || off > n || size > n - off) {
            *what = "PAC buffer lies outside the PAC's data area";
            return FK_PAC_BAD;
        }
        if (type > 0 && type < FK_PAC_NTYPES && type != 3 && type != 4 && type != 5 && type != 8 && type != 9) {
            /* a known type twice is ambiguous (which one is checked, which one is read?): never valid */
            if (out->present & (1u << type)) {
                *what = "PAC has two buffers of one type";
                return FK_PAC_BAD;
            }
            out->present |= 1u << type;
            out->buf[type].p = p + off;
            out->buf[type].n = size;
            out->off[type] = (size_t)off;
        }
        if (size == 0)
            continue;
        if (nspan && off < start[nspan - 1])
            sorted = 0;
        start[nspan] = off;
        end[nspan] = off + size;
        nspan++;
    }
    if (!sorted) {
        /* insertion sort: AD, MIT, Heimdal and Samba all write the table in offset order, so this is rare */
        for (size_t i = 1; i < nspan; i++) {
            uint64_t s = start[i], e = end[i];
            size_t j = i;
            while (j > 0 && start[j - 1] > s) {
                start[j] = start[j - 1];
                end[j] = end[j - 1];
                j--;
            }
            start[j] = s;
            end[j] = e;
        }
    }
    for (size_t i = 1; i < nspan; i++)
        if (start[i] < end[i - 1]) {
            *what = "PAC buffers overlap";
            return FK_PAC_BAD;
        }
    out->count = cnt;
    return FK_PAC_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* UTF-16LE                                                                                           */

/* The next code point of UTF-16LE b at *i; -1 when invalid (odd length, unpaired surrogate). */
static int32_t u16_next(fk_buf b, size_t *i)
{
    if (b.n - *i < 2)
        return -1;
    uint32_t u = le16(b.p + *i);
    *i += 2;
    if (u >= 0xDC00 && u <= 0xDFFF)
        return -1;
    if (u >= 0xD800 && u <= 0xDBFF) {
        if (b.n - *i < 2)
            return -1;
        uint32_t lo = le16(b.p + *i);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return -1;
        *i += 2;
        return (int32_t)(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00));
    }
    return (int32_t)u;
}

int fk_utf16_valid(fk_buf b)
{
    if (b.n & 1)
        return 0;
    size_t i = 0;
    while (i < b.n)
        if (u16_next(b, &i) < 0)
            return 0;
    return 1;
}

static size_t utf8_put(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------------------------------ */
/* PAC_CLIENT_INFO (MS-PAC §2.7)                                                                      */

#define FILETIME_UNIX_EPOCH_S 11644473600LL   /* 1601-01-01 to 1970-01-01 in seconds */
#define NT_ENTERPRISE 10                       /* RFC 6806 §5 */

/* Name (valid UTF-16LE) parsed as a principal without realm and compared with cname: 1 equal, 0 not.
 * The quoting is RFC 1964 §2.1.1's (as krb5_parse_name reads it): "\/", "\@", "\\" stand for the
 * character, "\n", "\t", "\b", "\0" for the control characters; '/' separates components; an unescaped
 * '@' would start a realm, which this name must not have. verbatim: no quoting at all (one component). */
static int name_matches(fk_buf name, const fk_name *cname, int verbatim)
{
    int c = 0;
    size_t pos = 0, i = 0;
    if (cname->ncomp < 1)
        return 0;
    while (i < name.n) {
        int32_t cp = u16_next(name, &i);
        if (cp < 0)
            return 0;
        if (!verbatim) {
            if (cp == '\\') {
                if (i >= name.n)
                    return 0;  /* a trailing backslash does not parse */
                cp = u16_next(name, &i);
                if (cp < 0)
                    return 0;
                cp = cp == 'n' ? '\n' : cp == 't' ? '\t' : cp == 'b' ? '\b' : cp == '0' ? 0 : cp;
            } else if (cp == '/') {
                if (pos != cname->comp[c].n || c + 1 >= cname->ncomp)
                    return 0;
                c++;
                pos = 0;
                continue;
            } else if (cp == '@') {
                return 0;
            }
        }
        uint8_t u8[4];
        size_t k = utf8_put((uint32_t)cp, u8);
        if (cname->comp[c].n - pos < k || memcmp(cname->comp[c].p + pos, u8, k) != 0)
            return 0;
        pos += k;
    }
    return c == cname->ncomp - 1 && pos == cname->comp[c].n;
}

int fk_pac_check_client(const fk_pac *p, const fk_name *cname, int64_t authtime, const char **what)
{
    if (!(p->present & (1u << FK_PAC_CLIENT_INFO))) {
        *what = "PAC has no PAC_CLIENT_INFO";
        return FK_PAC_BAD;
    }
    fk_buf b = p->buf[FK_PAC_CLIENT_INFO];
    if (b.n < 10) {
        *what = "PAC_CLIENT_INFO is shorter than 10 bytes";
        return FK_PAC_BAD;
    }
    uint64_t ft = le64(b.p);
    size_t nlen = le16(b.p + 8);
    if (nlen > b.n - 10) {
        *what = "PAC_CLIENT_INFO NameLength runs past the buffer";
        return FK_PAC_BAD;
    }
    fk_buf name = {b.p + 10, nlen};
    if (!fk_utf16_valid(name)) {
        *what = "PAC_CLIENT_INFO Name is not valid UTF-16";
        return FK_PAC_BAD;
    }
    /* ClientId: the ticket's authtime as a FILETIME; Kerberos times have whole seconds */
    if ((int64_t)(ft / 10000000u) - FILETIME_UNIX_EPOCH_S != authtime) {
        *what = "PAC_CLIENT_INFO ClientId is not the ticket's authtime";
        return FK_PAC_MISMATCH;
    }
    /* an NT-ENTERPRISE name ("user@upn.suffix", one component) is written verbatim by AD, quoted
     * ("user\@upn.suffix") by an unparser: either is that one component */
    int enterprise = cname->name_type == NT_ENTERPRISE && cname->ncomp == 1;
    if (!(enterprise && name_matches(name, cname, 1)) && !name_matches(name, cname, 0)) {
        *what = "PAC_CLIENT_INFO Name is not the ticket's client";
        return FK_PAC_MISMATCH;
    }
    return FK_PAC_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* UPN_DNS_INFO (MS-PAC §2.10)                                                                        */

int fk_upn_decode(fk_buf b, fk_upn *u, const char **what)
{
    if (b.n < 12) {
        *what = "UPN_DNS_INFO is shorter than 12 bytes";
        return FK_PAC_BAD;
    }
    size_t ulen = le16(b.p), uoff = le16(b.p + 2), dlen = le16(b.p + 4), doff = le16(b.p + 6);
    if (uoff > b.n || ulen > b.n - uoff || doff > b.n || dlen > b.n - doff) {
        *what = "UPN_DNS_INFO Upn or DnsDomainName runs past the buffer";
        return FK_PAC_BAD;
    }
    u->upn = (fk_buf){b.p + uoff, ulen};
    u->dns = (fk_buf){b.p + doff, dlen};
    u->flags = le32(b.p + 8);
    if (!fk_utf16_valid(u->upn) || !fk_utf16_valid(u->dns)) {
        *what = "UPN_DNS_INFO Upn or DnsDomainName is not valid UTF-16";
        return FK_PAC_BAD;
    }
    return FK_PAC_OK;
}

static uint32_t ascii_lower(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* UTF-16LE dns (valid) equals the UTF-8 realm, ASCII letters compared without case. */
static int dns_is_realm(fk_buf dns, fk_buf realm)
{
    size_t i = 0, pos = 0;
    while (i < dns.n) {
        int32_t cp = u16_next(dns, &i);
        uint8_t u8[4];
        size_t k = utf8_put((uint32_t)cp, u8);
        if (realm.n - pos < k)
            return 0;
        if (k == 1) {
            if (ascii_lower(u8[0]) != ascii_lower(realm.p[pos]))
                return 0;
        } else if (memcmp(realm.p + pos, u8, k) != 0) {
            return 0;
        }
        pos += k;
    }
    return pos == realm.n;
}

int fk_pac_check_upn(const fk_pac *p, fk_buf crealm, fk_buf srealm, const char **what)
{
    if (!(p->present & (1u << FK_PAC_UPN_DNS_INFO)))
        return FK_PAC_OK;
    fk_upn u;
    int rc = fk_upn_decode(p->buf[FK_PAC_UPN_DNS_INFO], &u, what);
    if (rc != FK_PAC_OK)
        return rc;
    /* The client's domain is its realm; a user of a trusted non-AD realm mapped to an AD account gets
     * a PAC that names that account's domain, the realm that issued the ticket. */
    if (!dns_is_realm(u.dns, crealm) && !dns_is_realm(u.dns, srealm)) {
        *what = "UPN_DNS_INFO DnsDomainName is not the ticket's realm";
        return FK_PAC_MISMATCH;
    }
    return FK_PAC_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* KERB_VALIDATION_INFO (MS-PAC §2.5) in NDR type serialization v1 (MS-RPCE §2.2.6)                   */

typedef struct ndr {
    const uint8_t *p;
    size_t n;          /* end of the serialized object */
    size_t pos;
} ndr;

static int nfail(fk_derr *e, const char *what, size_t at)
{
    e->what = what;
    e->offset = at;
    return -1;
}

static int take(ndr *r, uint64_t k, size_t *at)
{
    if (r->pos > r->n || k > r->n - r->pos)
        return -1;
    *at = r->pos;
    r->pos += (size_t)k;
    return 0;
}

static int u32(ndr *r, uint32_t *v)
{
    size_t at;
    r->pos = (r->pos + 3) & ~(size_t)3;
    if (take(r, 4, &at) != 0)
        return -1;
    *v = le32(r->p + at);
    return 0;
}

/* An RPC_UNICODE_STRING's header (Length, MaximumLength, Buffer pointer) */
typedef struct ustr {
    uint32_t len, max, ptr;
} ustr;

static ustr ustr_at(const uint8_t *p)
{
    return (ustr){le16(p), le16(p + 2), le32(p + 4)};
}

/* The deferred body of an RPC_UNICODE_STRING: a conformant varying array of WCHAR (MaximumCount, Offset,
 * ActualCount, then the characters), each count matching the header. */
static int ustr_body(ndr *r, ustr h, fk_buf *out, fk_derr *e, const char *what)
{
    size_t at;
    out->p = r->p;
    out->n = 0;
    if (h.ptr == 0)
        return 0;
    r->pos = (r->pos + 3) & ~(size_t)3;
    if (take(r, 12, &at) != 0)
        return nfail(e, what, r->pos);
    uint64_t maxc = le32(r->p + at), offset = le32(r->p + at + 4), actual = le32(r->p + at + 8);
    if (offset != 0 || actual > maxc || actual * 2 != h.len || maxc * 2 != h.max)
        return nfail(e, "RPC_UNICODE_STRING counts do not match its Length/MaximumLength", at);
    if (take(r, actual * 2, &at) != 0)
        return nfail(e, what, r->pos);
    out->p = r->p + at;
    out->n = (size_t)(actual * 2);
    if (!fk_utf16_valid(*out))
        return nfail(e, "RPC_UNICODE_STRING is not valid UTF-16", at);
    return 0;
}

/* A conformant array of GROUP_MEMBERSHIP (8 bytes each) of the announced count. */
static int groups(ndr *r, uint32_t count, uint32_t ptr, const uint8_t **out, fk_derr *e)
{
    uint32_t n;
    size_t at;
    *out = NULL;
    if (ptr == 0)
        return count ? nfail(e, "group count without an array", r->pos) : 0;
    if (u32(r, &n) != 0)
        return nfail(e, "truncated group array", r->pos);
    if (n != count)
        return nfail(e, "group array size differs from its count", r->pos - 4);
    if (take(r, 8 * (uint64_t)n, &at) != 0)
        return nfail(e, "truncated group array", r->pos);
    *out = r->p + at;
    return 0;
}

/* A conformant RPC_SID: the sub-authority count, then the SID (Revision 1, the same count). */
static int sid(ndr *r, const uint8_t **out, fk_derr *e)
{
    uint32_t n;
    size_t at;
    if (u32(r, &n) != 0)
        return nfail(e, "truncated SID", r->pos);
    if (n > 15)
        return nfail(e, "SID with more than 15 sub-authorities", r->pos - 4);
    if (take(r, 8 + 4 * (uint64_t)n, &at) != 0)
        return nfail(e, "truncated SID", r->pos);
    if (r->p[at + 1] != n)
        return nfail(e, "SID SubAuthorityCount differs from its NDR count", at);
    if (r->p[at] != 1)
        return nfail(e, "SID Revision is not 1", at);
    *out = r->p + at;
    return 0;
}

/* Offsets in the fixed part (216 bytes after the top-level referent, all little-endian) */
#define KVI_SIZE 216
#define KVI_NAMES 48          /* six RPC_UNICODE_STRING headers: EffectiveName .. HomeDirectoryDrive */
#define KVI_USER_ID 100
#define KVI_PRIMARY 104
#define KVI_GROUP_COUNT 108
#define KVI_GROUP_PTR 112
#define KVI_SERVER 136        /* LogonServer, then LogonDomainName at 144 */
#define KVI_DOMAIN_SID 152
#define KVI_SID_COUNT 196
#define KVI_EXTRA_PTR 200
#define KVI_RES_DOM_PTR 204
#define KVI_RES_COUNT 208
#define KVI_RES_PTR 212

int fk_logon_decode(const uint8_t *p, size_t n, fk_logon *out, fk_derr *e)
{
    memset(out, 0, sizeof *out);
    /* MS-RPCE §2.2.6.1 common header (version 1, little-endian, 8 bytes) + §2.2.6.2 private header */
    if (n < 16)
        return nfail(e, "truncated type serialization header", 0);
    if (p[0] != 1 || p[1] != 0x10 || le16(p + 2) != 8)
        return nfail(e, "type serialization header is not version 1, little-endian, 8 bytes", 0);
    uint64_t objlen = le32(p + 8);
    if (objlen % 8 || objlen > n - 16)
        return nfail(e, "ObjectBufferLength not a multiple of 8 or past the buffer", 8);
    ndr r = {p, 16 + (size_t)objlen, 16};
    uint32_t top;
    size_t at;
    if (u32(&r, &top) != 0)
        return nfail(e, "truncated top-level pointer", r.pos);
    if (top == 0)
        return nfail(e, "null KERB_VALIDATION_INFO pointer", 16);
    if (take(&r, KVI_SIZE, &at) != 0)
        return nfail(e, "truncated KERB_VALIDATION_INFO", r.pos);
    const uint8_t *f = p + at;

    ustr hdr[8];
    for (int i = 0; i < 6; i++)
        hdr[i] = ustr_at(f + KVI_NAMES + 8 * i);
    hdr[6] = ustr_at(f + KVI_SERVER);
    hdr[7] = ustr_at(f + KVI_SERVER + 8);
    for (int i = 0; i < 8; i++)
        if ((hdr[i].len & 1) || hdr[i].len > hdr[i].max || (hdr[i].ptr == 0 && hdr[i].len))
            return nfail(e, "RPC_UNICODE_STRING Length, MaximumLength and pointer are inconsistent", r.pos);
    out->user_rid = le32(f + KVI_USER_ID);
    out->primary_rid = le32(f + KVI_PRIMARY);
    uint32_t group_count = le32(f + KVI_GROUP_COUNT), group_ptr = le32(f + KVI_GROUP_PTR);
    uint32_t dom_ptr = le32(f + KVI_DOMAIN_SID);
    uint32_t sid_count = le32(f + KVI_SID_COUNT), extra_ptr = le32(f + KVI_EXTRA_PTR);
    uint32_t res_dom_ptr = le32(f + KVI_RES_DOM_PTR);
    uint32_t res_count = le32(f + KVI_RES_COUNT), res_ptr = le32(f + KVI_RES_PTR);

    /* the deferred referents, in the order of their pointers in the structure (C706 §14.3.12.3) */
    fk_buf s;
    for (int i = 0; i < 6; i++) {
        if (ustr_body(&r, hdr[i], &s, e, "truncated RPC_UNICODE_STRING") != 0)
            return -1;
        if (i == 0)
            out->name = s;
    }
    out->ngroups = group_count;
    if (groups(&r, group_count, group_ptr, &out->groups, e) != 0)
        return -1;
    if (ustr_body(&r, hdr[6], &s, e, "truncated LogonServer") != 0 ||
        ustr_body(&r, hdr[7], &out->domain, e, "truncated LogonDomainName") != 0)
        return -1;
    if (dom_ptr && sid(&r, &out->dom_sid, e) != 0)
        return -1;
    if (extra_ptr == 0) {
        if (sid_count)
            return nfail(e, "SidCount without an ExtraSids array", r.pos);
    } else {
        uint32_t cnt;
        if (u32(&r, &cnt) != 0)
            return nfail(e, "truncated ExtraSids", r.pos);
        if (cnt != sid_count)
            return nfail(e, "ExtraSids array size differs from SidCount", r.pos - 4);
        if (take(&r, 8 * (uint64_t)cnt, &at) != 0)
            return nfail(e, "truncated ExtraSids", r.pos);
        const uint8_t *arr = p + at;
        /* the SIDs follow the whole array, in array order */
        for (uint32_t i = 0; i < cnt; i++) {
            const uint8_t *x;
            if (le32(arr + 8 * (size_t)i) == 0)
                return nfail(e, "null ExtraSids SID pointer", (size_t)(arr - p) + 8 * (size_t)i);
            size_t here = r.pos;
            if (sid(&r, &x, e) != 0)
                return -1;
            if (i == 0)
                out->extra = p + ((here + 3) & ~(size_t)3);
        }
        out->nextra = cnt;
    }
    if (res_dom_ptr && sid(&r, &out->res_sid, e) != 0)
        return -1;
    out->nres = res_count;
    if (groups(&r, res_count, res_ptr, &out->res_groups, e) != 0)
        return -1;
    if (r.pos <= r.n && r.n - r.pos >= 8)
        return nfail(e, "bytes left inside the serialized KERB_VALIDATION_INFO", r.pos);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* SIDs (MS-DTYP §2.4.2)                                                                              */

static uint64_t sid_auth(const uint8_t *sid)
{
    uint64_t a = 0;
    for (int i = 2; i < 8; i++)
        a = (a << 8) | sid[i];
    return a;
}

static size_t put_u64(char *out, uint64_t v)
{
    char tmp[24];
    size_t k = 0, n = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        out[n++] = tmp[--k];
    return n;
}

static size_t sid_head(const uint8_t *sid, unsigned nsub, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    uint64_t a = sid_auth(sid);
    size_t o = 0;
    memcpy(out, "S-1-", 4);
    o = 4;
    if (a < (1ull << 32)) {
        o += put_u64(out + o, a);
    } else {
        out[o++] = '0';
        out[o++] = 'x';
        for (int i = 11; i >= 0; i--)
            out[o++] = hex[(a >> (4 * i)) & 15];
    }
    for (unsigned i = 0; i < nsub; i++) {
        out[o++] = '-';
        o += put_u64(out + o, le32(sid + 8 + 4 * i));
    }
    return o;
}

size_t fk_sid_format(const uint8_t *sid, char *out)
{
    return sid_head(sid, sid[1], out);
}

size_t fk_sid_format_rid(const uint8_t *dom, uint32_t rid, char *out)
{
    size_t o = sid_head(dom, dom[1], out);
    out[o++] = '-';
    return o + put_u64(out + o, rid);
}

/* decimal (or 0x hex when hex_ok) number of s[*i..n) below limit; -1 when none or too large */
static int parse_num(const char *s, size_t n, size_t *i, uint64_t limit, int hex_ok, uint64_t *v)
{
    uint64_t x = 0;
    size_t j = *i;
    int base = 10;
    if (hex_ok && n - j > 2 && s[j] == '0' && (s[j + 1] == 'x' || s[j + 1] == 'X')) {
        base = 16;
        j += 2;
    }
    size_t start = j;
    while (j < n && s[j] != '-') {
        char c = s[j];
        uint64_t d;
        if (c >= '0' && c <= '9')
            d = (uint64_t)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (uint64_t)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (uint64_t)(c - 'A' + 10);
        else
            return -1;
        if (j - start >= 20)
            return -1;
        x = x * (uint64_t)base + d;
        if (x >= limit)
            return -1;
        j++;
    }
    if (j == start)
        return -1;
    *i = j;
    *v = x;
    return 0;
}

int fk_sid_parse(const char *s, size_t n, uint8_t out[FK_SID_MAX], size_t *outlen)
{
    size_t i = 4;
    uint64_t auth, sub;
    if (n < 5 || (s[0] != 'S' && s[0] != 's') || s[1] != '-' || s[2] != '1' || s[3] != '-')
        return -1;
    if (parse_num(s, n, &i, 1ull << 48, 1, &auth) != 0)
        return -1;
    int k = 0;
    while (i < n) {
        i++;  /* the '-' */
        if (k == 15 || parse_num(s, n, &i, 1ull << 32, 0, &sub) != 0)
            return -1;
        out[8 + 4 * k] = (uint8_t)sub;
        out[9 + 4 * k] = (uint8_t)(sub >> 8);
        out[10 + 4 * k] = (uint8_t)(sub >> 16);
        out[11 + 4 * k] = (uint8_t)(sub >> 24);
        k++;
    }
    out[0] = 1;
    out[1] = (uint8_t)k;
    for (int j = 0; j < 6; j++)
        out[2 + j] = (uint8_t)(auth >> (8 * (5 - j)));
    *outlen = 8 + 4 * (size_t)k;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* SID sets                                                                                           */

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

/* The hash of a SID's first k sub-authorities (its domain part when k = count - 1). */
static uint64_t prefix_hash(const uint8_t *sid, unsigned k)
{
    uint64_t h = mix(0x243F6A8885A308D3ull, sid_auth(sid));
    h = mix(h, k);
    for (unsigned i = 0; i < k; i++)
        h = mix(h, le32(sid + 8 + 4 * i));
    return h;
}

static inline uint64_t rid_hash(uint64_t hp, uint32_t rid)
{
    return mix(mix(hp, rid), 0x5BD1E995u);
}

static uint64_t sid_hash(const uint8_t *sid)
{
    unsigned n = sid[1];
    if (n == 0)
        return mix(prefix_hash(sid, 0), 0x1B873593u);
    return rid_hash(prefix_hash(sid, n - 1), le32(sid + 8 + 4 * (n - 1)));
}

/* Is the slot's SID base's authority and first k sub-authorities, then rid? */
static int slot_is(const fk_sid_slot *e, const uint8_t *base, unsigned k, uint32_t rid)
{
    return e->sid[1] == k + 1 && memcmp(e->sid + 2, base + 2, 6) == 0 &&
           memcmp(e->sid + 8, base + 8, 4 * (size_t)k) == 0 && le32(e->sid + 8 + 4 * k) == rid;
}

static int probe_rid(const fk_sidset *s, uint64_t h, const uint8_t *base, unsigned k, uint32_t rid)
{
    for (size_t i = (size_t)h & s->mask;; i = (i + 1) & s->mask) {
        const fk_sid_slot *e = &s->slots[i];
        if (!e->used)
            return 0;
        if (e->h == h && slot_is(e, base, k, rid))
            return 1;
    }
}

int fk_sidset_has(const fk_sidset *s, const uint8_t *sid)
{
    unsigned n = sid[1];
    if (s->count == 0)
        return 0;
    if (n)
        return probe_rid(s, sid_hash(sid), sid, n - 1, le32(sid + 8 + 4 * (n - 1)));
    uint64_t h = sid_hash(sid);
    for (size_t i = (size_t)h & s->mask;; i = (i + 1) & s->mask) {
        const fk_sid_slot *e = &s->slots[i];
        if (!e->used)
            return 0;
        if (e->h == h && memcmp(e->sid, sid, 8) == 0)
            return 1;
    }
}

int fk_sidset_add(fk_sidset *s, const uint8_t *sid)
{
    if (fk_sidset_has(s, sid))
        return 0;
    uint64_t h = sid_hash(sid);
    size_t i = (size_t)h & s->mask;
    while (s->slots[i].used)
        i = (i + 1) & s->mask;
    fk_sid_slot *e = &s->slots[i];
    e->used = 1;
    e->h = h;
    memcpy(e->sid, sid, 8 + 4 * (size_t)sid[1]);
    s->count++;
    if (sid[1]) {
        uint64_t hp = prefix_hash(sid, sid[1] - 1u);
        size_t j;
        for (j = 0; j < s->nprefixes && s->prefixes[j] != hp; j++)
            ;
        if (j == s->nprefixes)
            s->prefixes[s->nprefixes++] = hp;
    }
    return 1;
}

static int has_prefix(const fk_sidset *s, uint64_t hp)
{
    for (size_t j = 0; j < s->nprefixes; j++)
        if (s->prefixes[j] == hp)
            return 1;
    return 0;
}

/* Any of the count GROUP_MEMBERSHIP RIDs under the domain SID dom (of domain-part hash hp) in the set? */
static int rids_member(const fk_sidset *s, uint64_t hp, const uint8_t *dom, const uint8_t *g, uint32_t count)
{
    unsigned k = dom[1];
    for (uint32_t i = 0; i < count; i++) {
        uint32_t rid = le32(g + 8 * (size_t)i);
        if (probe_rid(s, rid_hash(hp, rid), dom, k, rid))
            return 1;
    }
    return 0;
}

int fk_logon_member(const fk_logon *l, const fk_sidset *s)
{
    if (s->count == 0)
        return 0;
    if (l->dom_sid) {
        /* the user, the primary group and GroupIds are RIDs of LogonDomainId: one domain hash for all,
         * and none of them can match when no SID of the set is in that domain */
        const uint8_t *dom = l->dom_sid;
        unsigned k = dom[1];
        uint64_t hp = prefix_hash(dom, k);
        if (has_prefix(s, hp) &&
            (probe_rid(s, rid_hash(hp, l->user_rid), dom, k, l->user_rid) ||
             probe_rid(s, rid_hash(hp, l->primary_rid), dom, k, l->primary_rid) ||
             rids_member(s, hp, dom, l->groups, l->ngroups)))
            return 1;
    }
    const uint8_t *x = l->nextra ? l->extra + 4 : NULL;
    for (uint32_t i = 0; i < l->nextra; i++, x = fk_logon_next_extra(x))
        if (fk_sidset_has(s, x))
            return 1;
    if (l->res_sid && l->nres) {
        uint64_t hp = prefix_hash(l->res_sid, l->res_sid[1]);
        if (has_prefix(s, hp) && rids_member(s, hp, l->res_sid, l->res_groups, l->nres))
            return 1;
    }
    return 0;
}
