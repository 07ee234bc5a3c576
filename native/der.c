/* DER reader/writer and the Kerberos/GSS/SPNEGO message grammars. See der.h. */
#include "der.h"

#include <string.h>

#if defined(__x86_64__)
#include <tmmintrin.h>
#endif

#define ALWAYS_INLINE __attribute__((always_inline))

/* ---- reader ------------------------------------------------------------------------------------ */

typedef struct dctx {
    const uint8_t *base;
    fk_derr *e;
} dctx;

static inline ALWAYS_INLINE int fail(dctx *c, const char *what, const uint8_t *at)
{
    if (c->e) {
        c->e->what = what;
        c->e->offset = (at && c->base && at >= c->base) ? (size_t)(at - c->base) : 0;
    }
    return -1;
}

/* Read one definite-length TLV from *in (low tag numbers only: every tag Kerberos uses is < 31). */
static inline ALWAYS_INLINE int tlv(fk_buf *in, uint8_t *tag, fk_buf *val)
{
    if (in->n < 2)
        return -1;
    uint8_t t = in->p[0];
    if ((t & 0x1f) == 0x1f)
        return -1;
    size_t pos = 1, len;
    uint8_t l = in->p[pos++];
    if (l < 0x80) {
        len = l;
    } else {
        size_t k = l & 0x7f;
        if (k == 0 || k > 4)   /* indefinite length (BER) is not DER; > 4 GiB is absurd */
            return -1;
        if (in->n - pos < k)
            return -1;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = (len << 8) | in->p[pos++];
    }
    if (in->n - pos < len)
        return -1;
    *tag = t;
    val->p = in->p + pos;
    val->n = len;
    in->p += pos + len;
    in->n -= pos + len;
    return 0;
}

static inline ALWAYS_INLINE int expect(dctx *c, fk_buf *in, uint8_t want, fk_buf *val, const char *what)
{
    uint8_t t;
    const uint8_t *at = in->p;
    if (tlv(in, &t, val) != 0 || t != want)
        return fail(c, what, at);
    return 0;
}

static inline ALWAYS_INLINE int peek(const fk_buf *in, uint8_t want)
{
    return in->n > 0 && in->p[0] == want;
}

/* [n] EXPLICIT wrapper around exactly one inner TLV of tag `inner`. */
static inline ALWAYS_INLINE int field(dctx *c, fk_buf *in, int n, uint8_t inner, fk_buf *val, const char *what)
{
    fk_buf wrap;
    if (expect(c, in, (uint8_t)(0xa0 | n), &wrap, what) != 0)
        return -1;
    if (expect(c, &wrap, inner, val, what) != 0)
        return -1;
    if (wrap.n != 0)
        return fail(c, what, wrap.p);
    return 0;
}

static inline ALWAYS_INLINE int to_int64(fk_buf v, int64_t *out)
{
    if (v.n == 0 || v.n > 8)
        return -1;
    int64_t x = (v.p[0] & 0x80) ? -1 : 0;
    for (size_t i = 0; i < v.n; i++)
        x = (int64_t)(((uint64_t)x << 8) | v.p[i]);
    *out = x;
    return 0;
}

static inline ALWAYS_INLINE int field_int32(dctx *c, fk_buf *in, int n, int32_t *out, const char *what)
{
    fk_buf v;
    int64_t x;
    if (field(c, in, n, 0x02, &v, what) != 0)
        return -1;
    if (to_int64(v, &x) != 0 || x < INT32_MIN || x > INT32_MAX)
        return fail(c, what, v.p);
    *out = (int32_t)x;
    return 0;
}

/* UInt32 fields; Windows encodes some as negative Int32, which MIT also accepts (two's complement). */
static inline ALWAYS_INLINE int field_uint32(dctx *c, fk_buf *in, int n, uint32_t *out, const char *what)
{
    fk_buf v;
    int64_t x;
    if (field(c, in, n, 0x02, &v, what) != 0)
        return -1;
    if (to_int64(v, &x) != 0 || x < INT32_MIN || x > (int64_t)UINT32_MAX)
        return fail(c, what, v.p);
    *out = (uint32_t)x;
    return 0;
}

/* KerberosFlags (BIT STRING): the first 32 bits, bit 0 = MSB of the first octet (RFC 4120 §5.2.8). */
static inline ALWAYS_INLINE int field_flags(dctx *c, fk_buf *in, int n, uint32_t *out, const char *what)
{
    fk_buf v;
    if (field(c, in, n, 0x03, &v, what) != 0)
        return -1;
    if (v.n < 1 || v.p[0] > 7)
        return fail(c, what, v.p);
    uint32_t f = 0;
    for (size_t i = 0; i < 4; i++)
        f = (f << 8) | (i + 1 < v.n ? v.p[i + 1] : 0);
    *out = f;
    return 0;
}

/* The last two "YYYYMMDD" this thread converted: a ticket's times and its authenticator's fall on one or
 * two days (a ticket ends the day after it starts). */
typedef struct {
    uint64_t ymd;   /* the eight digits as read */
    int64_t days;
    int held;       /* 0 until a date was converted: eight NUL bytes are no date */
} day_memo;
static _Thread_local day_memo t_day[2];

static int digits(const uint8_t *p, int n, int *d)
{
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        d[i] = p[i] - '0';
    }
    return 0;
}

int fk_parse_time(fk_buf v, int64_t *out)
{
    /* GeneralizedTime restricted by RFC 4120 §5.2.3 to "YYYYMMDDHHMMSSZ". */
    if (v.n != 15 || v.p[14] != 'Z')
        return -1;
    int d[8];
    uint64_t ymd;
    int64_t days;
    memcpy(&ymd, v.p, 8);
    if (t_day[0].held && ymd == t_day[0].ymd) {
        days = t_day[0].days;
    } else if (t_day[1].held && ymd == t_day[1].ymd) {
        days = t_day[1].days;
    } else {
        if (digits(v.p, 8, d) != 0)
            return -1;
        int64_t y = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3];
        int mo = d[4] * 10 + d[5], dd = d[6] * 10 + d[7];
        if (mo < 1 || mo > 12 || dd < 1 || dd > 31)
            return -1;
        /* days from civil (proleptic Gregorian) */
        y -= mo <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + dd - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = era * 146097 + doe - 719468;
        t_day[1] = t_day[0];
        t_day[0] = (day_memo){ymd, days, 1};
    }
    if (digits(v.p + 8, 6, d) != 0)
        return -1;
    int hh = d[0] * 10 + d[1], mi = d[2] * 10 + d[3], ss = d[4] * 10 + d[5];
    if (hh > 23 || mi > 59 || ss > 60)
        return -1;
    *out = days * 86400 + hh * 3600 + mi * 60 + ss;
    return 0;
}

static inline ALWAYS_INLINE int field_time(dctx *c, fk_buf *in, int n, int64_t *out, const char *what)
{
    fk_buf v;
    if (field(c, in, n, 0x18, &v, what) != 0)
        return -1;
    if (fk_parse_time(v, out) != 0)
        return fail(c, what, v.p);
    return 0;
}

static inline ALWAYS_INLINE int field_string(dctx *c, fk_buf *in, int n, fk_buf *out, const char *what)
{
    return field(c, in, n, 0x1b, out, what); /* KerberosString/Realm: GeneralString */
}

static int field_name(dctx *c, fk_buf *in, int n, fk_name *nm, const char *what)
{
    fk_buf seq, list, s;
    if (field(c, in, n, 0x30, &seq, what) != 0)
        return -1;
    if (field_int32(c, &seq, 0, &nm->name_type, what) != 0)
        return -1;
    if (field(c, &seq, 1, 0x30, &list, what) != 0)
        return -1;
    if (seq.n != 0)
        return fail(c, what, seq.p);
    nm->ncomp = 0;
    while (list.n) {
        if (nm->ncomp == FK_MAX_COMPONENTS)
            return fail(c, "principal name has too many components", list.p);
        if (expect(c, &list, 0x1b, &s, what) != 0)
            return -1;
        nm->comp[nm->ncomp++] = s;
    }
    if (nm->ncomp == 0)
        return fail(c, "principal name has no components", seq.p);
    return 0;
}

/* EncryptedData ::= SEQUENCE { etype [0] Int32, kvno [1] UInt32 OPTIONAL, cipher [2] OCTET STRING } */
static int field_encdata(dctx *c, fk_buf *in, int n, int32_t *etype, int *has_kvno, uint32_t *kvno,
                         fk_buf *cipher, const char *what)
{
    fk_buf seq;
    if (field(c, in, n, 0x30, &seq, what) != 0)
        return -1;
    if (field_int32(c, &seq, 0, etype, what) != 0)
        return -1;
    *has_kvno = 0;
    if (peek(&seq, 0xa1)) {
        if (field_uint32(c, &seq, 1, kvno, what) != 0)
            return -1;
        *has_kvno = 1;
    }
    if (field(c, &seq, 2, 0x04, cipher, what) != 0)
        return -1;
    if (seq.n != 0)
        return fail(c, what, seq.p);
    return 0;
}

/* EncryptionKey ::= SEQUENCE { keytype [0] Int32, keyvalue [1] OCTET STRING } */
static int field_key(dctx *c, fk_buf *in, int n, int32_t *type, fk_buf *key, const char *what)
{
    fk_buf seq;
    if (field(c, in, n, 0x30, &seq, what) != 0)
        return -1;
    if (field_int32(c, &seq, 0, type, what) != 0 || field(c, &seq, 1, 0x04, key, what) != 0)
        return -1;
    if (seq.n != 0)
        return fail(c, what, seq.p);
    return 0;
}

/* An APPLICATION-tagged SEQUENCE filling the whole input. */
static int app_seq(dctx *c, fk_buf in, uint8_t app, fk_buf *seq, const char *what)
{
    fk_buf outer;
    if (expect(c, &in, app, &outer, what) != 0)
        return -1;
    if (in.n != 0)
        return fail(c, "trailing bytes after message", in.p);
    if (expect(c, &outer, 0x30, seq, what) != 0)
        return -1;
    if (outer.n != 0)
        return fail(c, "trailing bytes in message", outer.p);
    return 0;
}

/* RFC 4120 §5.5.1 */
int fk_decode_apreq(fk_buf in, fk_apreq *r, fk_derr *e)
{
    dctx c = {in.p, e};
    fk_buf seq, tkt, tseq;
    int32_t pvno, mt, tvno;
    memset(r, 0, sizeof *r);
    if (app_seq(&c, in, 0x6e, &seq, "AP-REQ") != 0)
        return -1;
    if (field_int32(&c, &seq, 0, &pvno, "AP-REQ pvno") != 0)
        return -1;
    if (pvno != 5)
        return fail(&c, "AP-REQ pvno is not 5", seq.p);
    if (field_int32(&c, &seq, 1, &mt, "AP-REQ msg-type") != 0)
        return -1;
    if (mt != 14)
        return fail(&c, "AP-REQ msg-type is not 14", seq.p);
    if (field_flags(&c, &seq, 2, &r->ap_options, "AP-REQ ap-options") != 0)
        return -1;
    /* ticket [3] Ticket ::= [APPLICATION 1] SEQUENCE {...} */
    fk_buf wrap;
    if (expect(&c, &seq, 0xa3, &wrap, "AP-REQ ticket") != 0)
        return -1;
    r->ticket = wrap;
    if (expect(&c, &wrap, 0x61, &tkt, "Ticket") != 0 || wrap.n != 0)
        return fail(&c, "Ticket", r->ticket.p);
    if (expect(&c, &tkt, 0x30, &tseq, "Ticket") != 0 || tkt.n != 0)
        return fail(&c, "Ticket", r->ticket.p);
    if (field_int32(&c, &tseq, 0, &tvno, "Ticket tkt-vno") != 0)
        return -1;
    if (tvno != 5)
        return fail(&c, "Ticket tkt-vno is not 5", tseq.p);
    if (field_string(&c, &tseq, 1, &r->realm, "Ticket realm") != 0)
        return -1;
    if (field_name(&c, &tseq, 2, &r->sname, "Ticket sname") != 0)
        return -1;
    if (field_encdata(&c, &tseq, 3, &r->tkt_etype, &r->has_kvno, &r->tkt_kvno, &r->tkt_cipher,
                      "Ticket enc-part") != 0)
        return -1;
    if (tseq.n != 0)
        return fail(&c, "trailing bytes in Ticket", tseq.p);
    int has_akvno;
    uint32_t akvno;
    if (field_encdata(&c, &seq, 4, &r->auth_etype, &has_akvno, &akvno, &r->auth_cipher,
                      "AP-REQ authenticator") != 0)
        return -1;
    if (seq.n != 0)
        return fail(&c, "trailing bytes in AP-REQ", seq.p);
    return 0;
}

/* RFC 4120 §5.3 */
int fk_decode_enc_ticket(fk_buf in, fk_enc_ticket *t, fk_derr *e)
{
    dctx c = {in.p, e};
    fk_buf seq, v;
    memset(t, 0, sizeof *t);
    if (app_seq(&c, in, 0x63, &seq, "EncTicketPart") != 0)
        return -1;
    if (field_flags(&c, &seq, 0, &t->flags, "EncTicketPart flags") != 0)
        return -1;
    if (field_key(&c, &seq, 1, &t->keytype, &t->key, "EncTicketPart key") != 0)
        return -1;
    if (field_string(&c, &seq, 2, &t->crealm, "EncTicketPart crealm") != 0)
        return -1;
    if (field_name(&c, &seq, 3, &t->cname, "EncTicketPart cname") != 0)
        return -1;
    /* transited [4] TransitedEncoding ::= SEQUENCE { tr-type [0] Int32, contents [1] OCTET STRING } */
    if (field(&c, &seq, 4, 0x30, &v, "EncTicketPart transited") != 0)
        return -1;
    if (field_int32(&c, &v, 0, &t->tr_type, "TransitedEncoding tr-type") != 0 ||
        field(&c, &v, 1, 0x04, &t->transited, "TransitedEncoding contents") != 0 || v.n != 0)
        return fail(&c, "EncTicketPart transited", v.p);
    if (field_time(&c, &seq, 5, &t->authtime, "EncTicketPart authtime") != 0)
        return -1;
    if (peek(&seq, 0xa6)) {
        if (field_time(&c, &seq, 6, &t->starttime, "EncTicketPart starttime") != 0)
            return -1;
        t->has_starttime = 1;
    }
    if (field_time(&c, &seq, 7, &t->endtime, "EncTicketPart endtime") != 0)
        return -1;
    if (peek(&seq, 0xa8)) {
        if (field_time(&c, &seq, 8, &t->renew_till, "EncTicketPart renew-till") != 0)
            return -1;
        t->has_renew_till = 1;
    }
    if (peek(&seq, 0xa9) && field(&c, &seq, 9, 0x30, &t->caddr, "EncTicketPart caddr") != 0)
        return -1;
    if (peek(&seq, 0xaa) && field(&c, &seq, 10, 0x30, &t->authdata, "EncTicketPart authorization-data") != 0)
        return -1;
    if (seq.n != 0)
        return fail(&c, "trailing bytes in EncTicketPart", seq.p);
    return 0;
}

/* RFC 4120 §5.5.1 */
int fk_decode_authenticator(fk_buf in, fk_authenticator *a, fk_derr *e)
{
    dctx c = {in.p, e};
    fk_buf seq, v;
    int32_t vno;
    memset(a, 0, sizeof *a);
    if (app_seq(&c, in, 0x62, &seq, "Authenticator") != 0)
        return -1;
    if (field_int32(&c, &seq, 0, &vno, "Authenticator authenticator-vno") != 0)
        return -1;
    if (vno != 5)
        return fail(&c, "Authenticator vno is not 5", seq.p);
    if (field_string(&c, &seq, 1, &a->crealm, "Authenticator crealm") != 0)
        return -1;
    if (field_name(&c, &seq, 2, &a->cname, "Authenticator cname") != 0)
        return -1;
    if (peek(&seq, 0xa3)) {
        if (field(&c, &seq, 3, 0x30, &v, "Authenticator cksum") != 0)
            return -1;
        if (field_int32(&c, &v, 0, &a->cksumtype, "Checksum cksumtype") != 0 ||
            field(&c, &v, 1, 0x04, &a->cksum, "Checksum checksum") != 0 || v.n != 0)
            return fail(&c, "Authenticator cksum", v.p);
        a->has_cksum = 1;
    }
    if (field_int32(&c, &seq, 4, &a->cusec, "Authenticator cusec") != 0)
        return -1;
    if (a->cusec < 0 || a->cusec > 999999)
        return fail(&c, "Authenticator cusec out of range", seq.p);
    if (field_time(&c, &seq, 5, &a->ctime, "Authenticator ctime") != 0)
        return -1;
    if (peek(&seq, 0xa6)) {
        if (field_key(&c, &seq, 6, &a->subkey_type, &a->subkey, "Authenticator subkey") != 0)
            return -1;
        a->has_subkey = 1;
    }
    if (peek(&seq, 0xa7)) {
        if (field_uint32(&c, &seq, 7, &a->seq, "Authenticator seq-number") != 0)
            return -1;
        a->has_seq = 1;
    }
    if (peek(&seq, 0xa8) && field(&c, &seq, 8, 0x30, &a->authdata, "Authenticator authorization-data") != 0)
        return -1;
    if (seq.n != 0)
        return fail(&c, "trailing bytes in Authenticator", seq.p);
    return 0;
}

int fk_find_authdata(fk_buf authdata, int32_t ad_type, fk_buf *out)
{
    /* AuthorizationData ::= SEQUENCE OF SEQUENCE { ad-type [0] Int32, ad-data [1] OCTET STRING };
     * AD-IF-RELEVANT (1) wraps another AuthorizationData DER in ad-data (RFC 4120 §5.2.6.1).
     * An explicit stack bounds the nesting at 4 levels. */
    fk_buf stack[4];
    int depth = 0;
    stack[depth++] = authdata;
    dctx c = {NULL, NULL};
    while (depth > 0) {
        fk_buf *cur = &stack[depth - 1];
        if (cur->n == 0) {
            depth--;
            continue;
        }
        fk_buf el, data;
        int32_t type;
        if (expect(&c, cur, 0x30, &el, "") != 0)
            return -1;
        if (field_int32(&c, &el, 0, &type, "") != 0 || field(&c, &el, 1, 0x04, &data, "") != 0 || el.n != 0)
            return -1;
        if (type == ad_type) {
            *out = data;
            return 1;
        }
        if (type == 1) {
            fk_buf inner;
            if (expect(&c, &data, 0x30, &inner, "") != 0 || data.n != 0)
                return -1;
            if (depth == 4)
                return -1;
            stack[depth++] = inner;
        }
    }
    return 0;
}

/* ---- framing ----------------------------------------------------------------------------------- */

static const uint8_t OID_KRB5[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02};
static const uint8_t OID_MS_KRB5[] = {0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02};
static const uint8_t OID_SPNEGO[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x02};
static const uint8_t OID_NTLM[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a};
static const uint8_t NTLMSSP[] = {'N', 'T', 'L', 'M', 'S', 'S', 'P', 0};

static int oid_is(fk_buf v, const uint8_t *oid, size_t n)
{
    return v.n == n && memcmp(v.p, oid, n) == 0;
}

static int krb5_mech(fk_buf oid)
{
    if (oid_is(oid, OID_KRB5, sizeof OID_KRB5))
        return FK_MECH_KRB5;
    if (oid_is(oid, OID_MS_KRB5, sizeof OID_MS_KRB5))
        return FK_MECH_MS_KRB5;
    return -1;
}

static int is_ntlm(fk_buf v)
{
    return v.n >= sizeof NTLMSSP && memcmp(v.p, NTLMSSP, sizeof NTLMSSP) == 0;
}

/* RFC 2743 §3.1 InitialContextToken with a krb5 mech and TOK_ID 01 00 (RFC 4121 §4.1). */
static int unwrap_gss_krb5(dctx *c, fk_buf in, fk_frame *f)
{
    fk_buf body, oid;
    if (expect(c, &in, 0x60, &body, "GSS InitialContextToken") != 0)
        return FK_UNFRAME_MALFORMED;
    if (in.n != 0) {
        fail(c, "trailing bytes after GSS token", in.p);
        return FK_UNFRAME_MALFORMED;
    }
    if (expect(c, &body, 0x06, &oid, "GSS mech OID") != 0)
        return FK_UNFRAME_MALFORMED;
    int mech = krb5_mech(oid);
    if (mech < 0) {
        fail(c, "GSS token is not for the Kerberos mechanism", oid.p);
        return FK_UNFRAME_NO_KRB5;
    }
    if (body.n < 2 || body.p[0] != 0x01 || body.p[1] != 0x00) {
        fail(c, "GSS krb5 token is not an AP-REQ (TOK_ID 01 00)", body.p);
        return FK_UNFRAME_MALFORMED;
    }
    f->gss_mech = mech;
    f->apreq.p = body.p + 2;
    f->apreq.n = body.n - 2;
    return FK_UNFRAME_OK;
}

/* RFC 4178 §4.2.1 NegTokenInit (the SEQUENCE inside [0]). */
static int unwrap_neg_init(dctx *c, fk_buf seq, fk_frame *f)
{
    fk_buf wrap, list, oid, tok;
    if (expect(c, &seq, 0xa0, &wrap, "SPNEGO mechTypes") != 0)
        return FK_UNFRAME_MALFORMED;
    if (expect(c, &wrap, 0x30, &list, "SPNEGO mechTypes") != 0 || wrap.n != 0)
        return FK_UNFRAME_MALFORMED;
    int first = -2, krb = -1, ntlm = 0, count = 0;
    while (list.n) {
        if (expect(c, &list, 0x06, &oid, "SPNEGO mechType") != 0)
            return FK_UNFRAME_MALFORMED;
        if (++count > 64) {
            fail(c, "SPNEGO offers too many mechanisms", oid.p);
            return FK_UNFRAME_MALFORMED;
        }
        int m = krb5_mech(oid);
        if (first == -2)
            first = m;
        if (m >= 0 && krb < 0)
            krb = m;
        if (oid_is(oid, OID_NTLM, sizeof OID_NTLM))
            ntlm = 1;
    }
    if (peek(&seq, 0xa1) && expect(c, &seq, 0xa1, &wrap, "SPNEGO reqFlags") != 0)
        return FK_UNFRAME_MALFORMED;
    int have_tok = 0;
    if (peek(&seq, 0xa2)) {
        if (field(c, &seq, 2, 0x04, &tok, "SPNEGO mechToken") != 0)
            return FK_UNFRAME_MALFORMED;
        have_tok = 1;
    }
    /* mechListMIC [3] (and NegTokenInit2 negHints) may follow; they are not needed to accept. */
    if (krb < 0) {
        fail(c, ntlm ? "SPNEGO offers only NTLM" : "SPNEGO offers no Kerberos mechanism", seq.p);
        return ntlm ? FK_UNFRAME_NTLM : FK_UNFRAME_NO_KRB5;
    }
    if (!have_tok) {
        fail(c, "SPNEGO NegTokenInit carries no mechToken", seq.p);
        return FK_UNFRAME_MALFORMED;
    }
    if (first < 0) {
        /* the optimistic token belongs to the first mech offered, which is not Kerberos */
        if (is_ntlm(tok)) {
            fail(c, "SPNEGO mechToken is NTLMSSP", tok.p);
            return FK_UNFRAME_NTLM;
        }
        fail(c, "SPNEGO mechToken is for a non-Kerberos mechanism", tok.p);
        return FK_UNFRAME_NO_KRB5;
    }
    f->kind = FK_FRAME_SPNEGO;
    f->spnego_mech = first;
    f->krb5_preferred = 1;
    return unwrap_gss_krb5(c, tok, f);
}

/* RFC 4178 §4.2.2 NegTokenResp (the SEQUENCE inside [1]) carrying a krb5 responseToken. */
static int unwrap_neg_resp(dctx *c, fk_buf seq, fk_frame *f)
{
    fk_buf wrap, oid, tok;
    int mech = FK_MECH_KRB5;
    if (peek(&seq, 0xa0) && expect(c, &seq, 0xa0, &wrap, "SPNEGO negState") != 0)
        return FK_UNFRAME_MALFORMED;
    if (peek(&seq, 0xa1)) {
        if (field(c, &seq, 1, 0x06, &oid, "SPNEGO supportedMech") != 0)
            return FK_UNFRAME_MALFORMED;
        mech = krb5_mech(oid);
        if (mech < 0) {
            fail(c, "SPNEGO supportedMech is not Kerberos", oid.p);
            return oid_is(oid, OID_NTLM, sizeof OID_NTLM) ? FK_UNFRAME_NTLM : FK_UNFRAME_NO_KRB5;
        }
    }
    if (!peek(&seq, 0xa2)) {
        fail(c, "SPNEGO NegTokenResp carries no responseToken", seq.p);
        return FK_UNFRAME_MALFORMED;
    }
    if (field(c, &seq, 2, 0x04, &tok, "SPNEGO responseToken") != 0)
        return FK_UNFRAME_MALFORMED;
    if (is_ntlm(tok)) {
        fail(c, "SPNEGO responseToken is NTLMSSP", tok.p);
        return FK_UNFRAME_NTLM;
    }
    f->kind = FK_FRAME_SPNEGO_RESP;
    f->spnego_mech = mech;
    return unwrap_gss_krb5(c, tok, f);
}

int fk_unframe(const uint8_t *tok, size_t n, fk_frame *f, fk_derr *e)
{
    dctx c = {tok, e};
    fk_buf in = {tok, n}, body, seq, oid;
    memset(f, 0, sizeof *f);
    if (is_ntlm(in)) {
        fail(&c, "token is NTLMSSP", tok);
        return FK_UNFRAME_NTLM;
    }
    if (n == 0) {
        fail(&c, "empty token", tok);
        return FK_UNFRAME_MALFORMED;
    }
    switch (tok[0]) {
    case 0x6e: /* bare AP-REQ */
        f->kind = FK_FRAME_RAW;
        f->apreq = in;
        return FK_UNFRAME_OK;
    case 0x60: { /* GSS InitialContextToken: krb5 or SPNEGO */
        fk_buf probe = in;
        if (expect(&c, &probe, 0x60, &body, "GSS InitialContextToken") != 0)
            return FK_UNFRAME_MALFORMED;
        if (probe.n != 0) {
            fail(&c, "trailing bytes after GSS token", probe.p);
            return FK_UNFRAME_MALFORMED;
        }
        if (expect(&c, &body, 0x06, &oid, "GSS mech OID") != 0)
            return FK_UNFRAME_MALFORMED;
        if (oid_is(oid, OID_SPNEGO, sizeof OID_SPNEGO)) {
            if (expect(&c, &body, 0xa0, &seq, "SPNEGO NegTokenInit") != 0 || body.n != 0)
                return FK_UNFRAME_MALFORMED;
            if (expect(&c, &seq, 0x30, &body, "SPNEGO NegTokenInit") != 0 || seq.n != 0)
                return FK_UNFRAME_MALFORMED;
            return unwrap_neg_init(&c, body, f);
        }
        if (oid_is(oid, OID_NTLM, sizeof OID_NTLM)) {
            fail(&c, "GSS token is NTLM", oid.p);
            return FK_UNFRAME_NTLM;
        }
        f->kind = FK_FRAME_GSS;
        return unwrap_gss_krb5(&c, in, f);
    }
    case 0xa0: /* NegTokenInit without the GSS wrapper */
    case 0xa1: /* NegTokenResp */
        if (expect(&c, &in, tok[0], &seq, "SPNEGO token") != 0 || in.n != 0)
            return FK_UNFRAME_MALFORMED;
        if (expect(&c, &seq, 0x30, &body, "SPNEGO token") != 0 || seq.n != 0)
            return FK_UNFRAME_MALFORMED;
        return tok[0] == 0xa0 ? unwrap_neg_init(&c, body, f) : unwrap_neg_resp(&c, body, f);
    default:
        fail(&c, "not a Kerberos, GSS or SPNEGO token", tok);
        return FK_UNFRAME_MALFORMED;
    }
}

/* ---- base64 (RFC 4648, for the RFC 4559 header) ------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Each byte's 6-bit value, BAD (0x80: a bit no value has) outside the alphabet. */
#define BAD 0x80
static const uint8_t B64D[256] = {
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,  62, BAD, BAD, BAD,  63,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, BAD, BAD, BAD, BAD, BAD,
    BAD,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
};
#undef BAD

#if defined(__x86_64__)
/* 16 characters -> 12 bytes with SSSE3, or -1 when one is outside the alphabet (nothing is written then).
 * Each class of the alphabet is one range of bytes, tested by a biased signed compare (c + (128 - lo) <
 * -128 + width): bytes >= 0x80 fall in none. The value is c plus an offset that the high nibble chooses
 * ('/' shares '+''s nibble and is corrected); pmaddubsw and pmaddwd then join four 6-bit values into 24
 * bits per 32-bit lane, and pshufb puts each lane's three bytes in big-endian order. */
__attribute__((target("ssse3"))) static int b64_block16(const uint8_t *in, uint8_t *out)
{
#define IN_RANGE(c, lo, hi) \
    _mm_cmplt_epi8(_mm_add_epi8((c), _mm_set1_epi8((char)(128 - (lo)))), _mm_set1_epi8((char)(-128 + (hi) - (lo) + 1)))
    const __m128i c = _mm_loadu_si128((const __m128i *)(const void *)in);
    __m128i ok = _mm_or_si128(_mm_or_si128(IN_RANGE(c, 'A', 'Z'), IN_RANGE(c, 'a', 'z')),
                              _mm_or_si128(IN_RANGE(c, '0', '9'),
                                           _mm_or_si128(_mm_cmpeq_epi8(c, _mm_set1_epi8('+')),
                                                        _mm_cmpeq_epi8(c, _mm_set1_epi8('/')))));
#undef IN_RANGE
    if (_mm_movemask_epi8(ok) != 0xffff)
        return -1;
    /* offsets by high nibble: 2 '+' (43 -> 62), 3 digits (+4), 4-5 upper (-65), 6-7 lower (-71) */
    const __m128i by_nibble = _mm_setr_epi8(0, 0, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(c, 4), _mm_set1_epi8(0x0f));
    __m128i off = _mm_shuffle_epi8(by_nibble, hi);
    off = _mm_add_epi8(off, _mm_and_si128(_mm_cmpeq_epi8(c, _mm_set1_epi8('/')), _mm_set1_epi8(-3)));
    __m128i v = _mm_add_epi8(c, off);
    /* [a b c d] per lane -> (a << 6 | b), (c << 6 | d) -> a << 18 | b << 12 | c << 6 | d */
    v = _mm_maddubs_epi16(v, _mm_set1_epi32(0x01400140));
    v = _mm_madd_epi16(v, _mm_set1_epi32(0x00011000));
    v = _mm_shuffle_epi8(v, _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
    _mm_storel_epi64((__m128i *)(void *)out, v);
    uint32_t last = (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(v, 8));
    memcpy(out + 8, &last, 4);
    return 0;
}

static int have_ssse3(void)
{
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k < 0) {
        __builtin_cpu_init();
        k = __builtin_cpu_supports("ssse3") ? 1 : 0;
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k;
}
#endif

int fk_b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t *outlen)
{
    /* Up to two '=' of padding, optional (some clients strip it); anything else outside the alphabet
     * is refused. 16 characters per step where the CPU has SSSE3, then four characters make three bytes
     * per step, their values ORed so that one test refuses a bad one among them. */
    for (int pad = 0; pad < 2 && n > 0 && in[n - 1] == '='; pad++)
        n--;
    if (n % 4 == 1)
        return -1;
    size_t o = 0, i = 0;
#if defined(__x86_64__)
    if (n >= 16 && have_ssse3()) {
        for (; i + 16 <= n; i += 16, o += 12)
            if (b64_block16(in + i, out + o) != 0)
                return -1;
    }
#endif
    uint32_t bad = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t a = B64D[in[i]], b = B64D[in[i + 1]], c = B64D[in[i + 2]], d = B64D[in[i + 3]];
        bad |= a | b | c | d;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        out[o + 2] = (uint8_t)v;
        o += 3;
    }
    /* 2 or 3 characters left: 1 or 2 bytes (their unused low bits are ignored, as by RFC 4648 decoders
     * that do not check them) */
    if (i < n) {
        uint32_t a = B64D[in[i]], b = B64D[in[i + 1]], c = i + 2 < n ? B64D[in[i + 2]] : 0;
        bad |= a | b | c;
        uint32_t v = a << 18 | b << 12 | c << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (i + 2 < n)
            out[o++] = (uint8_t)(v >> 8);
    }
    if (bad & 0x80)
        return -1;
    *outlen = o;
    return 0;
}

size_t fk_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/* ---- writer (backwards: the innermost field is written last-first, lengths are then known) ------ */

typedef struct wbuf {
    uint8_t *buf;
    size_t pos;   /* next byte is written at buf[pos - 1] */
    int err;
} wbuf;

static void w_bytes(wbuf *w, const uint8_t *p, size_t n)
{
    if (w->err || n > w->pos) {
        w->err = 1;
        return;
    }
    w->pos -= n;
    memcpy(w->buf + w->pos, p, n);
}

static void w_byte(wbuf *w, uint8_t b)
{
    w_bytes(w, &b, 1);
}

/* Prepend tag and length for content that ends at `end`. */
static void w_hdr(wbuf *w, uint8_t tag, size_t end)
{
    size_t len = end - w->pos;
    if (len < 0x80) {
        w_byte(w, (uint8_t)len);
    } else {
        uint8_t k = 0;
        for (size_t l = len; l; l >>= 8) {
            w_byte(w, (uint8_t)(l & 0xff));
            k++;
        }
        w_byte(w, (uint8_t)(0x80 | k));
    }
    w_byte(w, tag);
}

static void w_int(wbuf *w, int64_t v)
{
    size_t end = w->pos;
    uint8_t b[9];
    int n = 0;
    do {
        b[n++] = (uint8_t)(v & 0xff);
        v >>= 8;   /* arithmetic shift: two's complement */
    } while (!((v == 0 && !(b[n - 1] & 0x80)) || (v == -1 && (b[n - 1] & 0x80))));
    for (int i = 0; i < n; i++)
        w_byte(w, b[i]);
    w_hdr(w, 0x02, end);
}

/* [tag] INTEGER v: a context-tagged field. */
static void w_tagged_int(wbuf *w, uint8_t tag, int64_t v)
{
    size_t end = w->pos;
    w_int(w, v);
    w_hdr(w, tag, end);
}

static void w_time(wbuf *w, int64_t t)
{
    /* KerberosTime has four year digits: 0000-01-01T00:00:00Z .. 9999-12-31T23:59:59Z (and the
     * arithmetic below would overflow for times near the int64 limits). */
    if (t < -62167219200LL || t > 253402300799LL) {
        w->err = 1;
        return;
    }
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    int64_t secs = t - days * 86400;
    /* civil from days */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    int64_t f[6] = {y, m, d, secs / 3600, (secs / 60) % 60, secs % 60};
    uint8_t s[15];
    s[0] = (uint8_t)('0' + (f[0] / 1000) % 10);
    s[1] = (uint8_t)('0' + (f[0] / 100) % 10);
    s[2] = (uint8_t)('0' + (f[0] / 10) % 10);
    s[3] = (uint8_t)('0' + f[0] % 10);
    for (int i = 1; i < 6; i++) {
        s[2 + 2 * i] = (uint8_t)('0' + f[i] / 10);
        s[3 + 2 * i] = (uint8_t)('0' + f[i] % 10);
    }
    s[14] = 'Z';
    size_t end = w->pos;
    w_bytes(w, s, 15);
    w_hdr(w, 0x18, end);
}

static void w_octets(wbuf *w, const uint8_t *p, size_t n, uint8_t tag)
{
    size_t end = w->pos;
    w_bytes(w, p, n);
    w_hdr(w, tag, end);
}

static size_t finish(wbuf *w, uint8_t *out, size_t cap)
{
    if (w->err)
        return 0;
    size_t n = cap - w->pos;
    memmove(out, w->buf + w->pos, n);
    return n;
}

size_t fk_encode_enc_ap_rep_part(int64_t ctime, int32_t cusec, int32_t subkey_type, const uint8_t *subkey,
                                 size_t subkeylen, int has_seq, uint32_t seq, uint8_t *out, size_t cap)
{
    wbuf w = {out, cap, 0};
    size_t end = w.pos, e2, e3;
    if (has_seq)
        w_tagged_int(&w, 0xa3, (int64_t)seq);
    if (subkey_type >= 0) {
        e2 = w.pos;
        e3 = w.pos;
        w_octets(&w, subkey, subkeylen, 0x04);
        w_hdr(&w, 0xa1, e3);
        w_tagged_int(&w, 0xa0, subkey_type);
        w_hdr(&w, 0x30, e2);
        w_hdr(&w, 0xa2, e2);
    }
    w_tagged_int(&w, 0xa1, cusec);
    e2 = w.pos;
    w_time(&w, ctime);
    w_hdr(&w, 0xa0, e2);
    w_hdr(&w, 0x30, end);
    w_hdr(&w, 0x7b, end);   /* [APPLICATION 27] */
    return finish(&w, out, cap);
}

static const uint8_t *mech_oid(int mech, size_t *n)
{
    *n = sizeof OID_KRB5;
    return mech == FK_MECH_MS_KRB5 ? OID_MS_KRB5 : OID_KRB5;
}

size_t fk_encode_answer(int32_t etype, const uint8_t *cipher, size_t clen, int gss_mech, int spnego_mech,
                        uint8_t *out, size_t cap)
{
    uint8_t buf[1024];   /* written backwards, from the innermost field: each length is known when its header is */
    wbuf w = {buf, sizeof buf, 0};
    size_t end = w.pos, e2, e3, on;
    const uint8_t *oid;
    if (cipher) {
        /* AP-REP ::= [APPLICATION 15] SEQUENCE { pvno [0], msg-type [1], enc-part [2] EncryptedData } */
        e2 = w.pos;
        e3 = w.pos;
        w_octets(&w, cipher, clen, 0x04);
        w_hdr(&w, 0xa2, e3);
        w_tagged_int(&w, 0xa0, etype);
        w_hdr(&w, 0x30, e2);
        w_hdr(&w, 0xa2, e2);
        w_tagged_int(&w, 0xa1, 15);   /* msg-type KRB_AP_REP */
        w_tagged_int(&w, 0xa0, 5);    /* pvno */
        w_hdr(&w, 0x30, end);
        w_hdr(&w, 0x6f, end);
        if (gss_mech >= 0) {
            static const uint8_t tok_id[2] = {0x02, 0x00};
            oid = mech_oid(gss_mech, &on);
            w_bytes(&w, tok_id, 2);
            w_octets(&w, oid, on, 0x06);
            w_hdr(&w, 0x60, end);
        }
    }
    if (spnego_mech >= 0) {
        if (w.pos != end) {   /* responseToken [2] OCTET STRING: the token written above */
            w_hdr(&w, 0x04, end);
            w_hdr(&w, 0xa2, end);
        }
        oid = mech_oid(spnego_mech, &on);
        e2 = w.pos;
        w_octets(&w, oid, on, 0x06);
        w_hdr(&w, 0xa1, e2);
        static const uint8_t accept_completed[5] = {0xa0, 0x03, 0x0a, 0x01, 0x00};
        w_bytes(&w, accept_completed, 5);
        w_hdr(&w, 0x30, end);
        w_hdr(&w, 0xa1, end);
    }
    size_t n = end - w.pos;
    if (w.err || n > cap)
        return 0;
    memcpy(out, buf + w.pos, n);
    return n;
}
