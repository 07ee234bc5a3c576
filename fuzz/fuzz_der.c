/* libFuzzer target: framing, SPNEGO and DER (native/der.c), no keys involved.
 *
 * The input is offered to every decoder: as a token (header / base64 / GSS / SPNEGO / bare AP-REQ:
 * fk_token_bytes -> fk_unframe -> fk_decode_apreq), and directly as the plaintext of a ticket and of
 * an authenticator and as AuthorizationData, which an attacker only reaches with a key but a bug in
 * would still be fatal. Invariants: every slice a decoder returns lies inside its input; base64
 * round-trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"

static int inside(fk_buf s, const uint8_t *p, size_t n)
{
    return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

static void check_name(const fk_name *nm, const uint8_t *p, size_t n)
{
    FZ_CHECK(nm->ncomp >= 0 && nm->ncomp <= FK_MAX_COMPONENTS);
    for (int i = 0; i < nm->ncomp; i++)
        FZ_CHECK(inside(nm->comp[i], p, n));
}

static void plaintexts(const uint8_t *data, size_t size)
{
    fk_buf in = {data, size};
    fk_derr e = {NULL, 0};
    fk_enc_ticket t;
    if (fk_decode_enc_ticket(in, &t, &e) == 0) {
        FZ_CHECK(inside(t.key, data, size) && inside(t.crealm, data, size));
        FZ_CHECK(inside(t.transited, data, size) && inside(t.authdata, data, size));
        FZ_CHECK(inside(t.caddr, data, size));
        check_name(&t.cname, data, size);
        fk_buf pac;
        if (fk_find_authdata(t.authdata, 128, &pac) == 1)
            FZ_CHECK(inside(pac, data, size));
    } else {
        FZ_CHECK(e.what != NULL && e.offset <= size);
    }
    fk_authenticator a;
    e = (fk_derr){NULL, 0};
    if (fk_decode_authenticator(in, &a, &e) == 0) {
        FZ_CHECK(inside(a.crealm, data, size) && inside(a.cksum, data, size));
        FZ_CHECK(inside(a.subkey, data, size) && inside(a.authdata, data, size));
        check_name(&a.cname, data, size);
        fk_buf ap;
        if (fk_find_authdata(a.authdata, 143, &ap) == 1)
            FZ_CHECK(inside(ap, data, size));
    } else {
        FZ_CHECK(e.what != NULL && e.offset <= size);
    }
    /* the bare input as the contents of an AuthorizationData SEQUENCE */
    fk_buf out;
    int32_t types[] = {1, 128, 143, 0, -1};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int f = fk_find_authdata(in, types[i], &out);
        FZ_CHECK(f >= -1 && f <= 1);
        if (f == 1)
            FZ_CHECK(inside(out, data, size));
    }
    int64_t ts;
    (void)fk_parse_time(in, &ts);
}

static void token(const uint8_t *data, size_t size)
{
    uint8_t *dec = malloc(size + 1);
    if (!dec)
        return;
    fk_buf raw;
    if (fk_token_bytes(data, size, dec, &raw) == 0) {
        FZ_CHECK(raw.n <= size);
        fk_frame f;
        fk_derr e = {NULL, 0};
        int u = fk_unframe(raw.p, raw.n, &f, &e);
        FZ_CHECK(u >= FK_UNFRAME_OK && u <= FK_UNFRAME_NO_KRB5);
        if (u == FK_UNFRAME_OK) {
            FZ_CHECK(inside(f.apreq, raw.p, raw.n));
            FZ_CHECK(f.kind >= FK_FRAME_RAW && f.kind <= FK_FRAME_SPNEGO_RESP);
            fk_apreq q;
            e = (fk_derr){NULL, 0};
            if (fk_decode_apreq(f.apreq, &q, &e) == 0) {
                FZ_CHECK(inside(q.ticket, f.apreq.p, f.apreq.n) && inside(q.realm, f.apreq.p, f.apreq.n));
                FZ_CHECK(inside(q.tkt_cipher, f.apreq.p, f.apreq.n));
                FZ_CHECK(inside(q.auth_cipher, f.apreq.p, f.apreq.n));
                check_name(&q.sname, f.apreq.p, f.apreq.n);
            } else {
                FZ_CHECK(e.what != NULL && e.offset <= f.apreq.n);
            }
        }
    }
    free(dec);
}

static void base64(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return;
    char *enc = malloc((size + 2) / 3 * 4 + 1);
    uint8_t *back = malloc(size + 3);
    if (enc && back) {
        size_t m = fk_b64_encode(data, size, enc);
        FZ_CHECK(m == (size + 2) / 3 * 4);
        size_t outlen = 0;
        FZ_CHECK(fk_b64_decode((const uint8_t *)enc, m, back, &outlen) == 0);
        FZ_CHECK(outlen == size && memcmp(back, data, size) == 0);
        /* and the input itself as base64 text, into a buffer of exactly the bound der.h states
         * (3n/4 bytes: unpadded input decodes past (n/4)*3, the bound this header used to state) */
        size_t bound = size * 3 / 4;
        uint8_t *raw = malloc(bound ? bound : 1);
        if (raw) {
            if (fk_b64_decode(data, size, raw, &outlen) == 0)
                FZ_CHECK(outlen <= bound);
            free(raw);
        }
    }
    free(enc);
    free(back);
}

/* The encoders see only values the validator computed, but their bounds must hold for any value. */
static void encoders(const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    int64_t ctime;
    int32_t cusec;
    uint32_t seq;
    memcpy(&ctime, data, 8);
    memcpy(&cusec, data + 8, 4);
    memcpy(&seq, data + 12, 4);
    uint8_t part[96], small[8];
    size_t n = fk_encode_enc_ap_rep_part(ctime, cusec, -1, NULL, 0, 1, seq, part, sizeof part);
    FZ_CHECK(n <= sizeof part);
    /* KerberosTime holds years 0000..9999: inside, ctime round-trips through fk_parse_time; outside,
     * the encoder refuses (returns 0) */
    int representable = ctime >= -62167219200LL && ctime <= 253402300799LL;
    FZ_CHECK(representable ? n > 0 : n == 0);
    for (size_t i = 0; representable && i + 17 <= n; i++)
        if (part[i] == 0x18 && part[i + 1] == 0x0f) {
            int64_t back;
            FZ_CHECK(fk_parse_time((fk_buf){part + i + 2, 15}, &back) == 0 && back == ctime);
            break;
        }
    n = fk_encode_enc_ap_rep_part(ctime, cusec, -1, NULL, 0, 1, seq, small, sizeof small);
    FZ_CHECK(n == 0);
    size_t rest = size - 16 > 300 ? 300 : size - 16;
    uint8_t ans[700];
    /* every framing of the answer: a bare AP-REP, GSS-framed, in SPNEGO, and SPNEGO without a token */
    int gss[4] = {-1, data[0] & 1, data[0] & 1, -1}, spn[4] = {-1, -1, data[1] & 1, data[1] & 1};
    for (int k = 0; k < 4; k++) {
        size_t a = fk_encode_answer(18, k < 3 ? data + 16 : NULL, k < 3 ? rest : 0, gss[k], spn[k], ans, sizeof ans);
        FZ_CHECK(a <= sizeof ans);
        FZ_CHECK(k < 3 || a > 0);
        if (a && k > 0) {   /* what we encode, we decode */
            fk_frame f;
            fk_derr e = {NULL, 0};
            (void)fk_unframe(ans, a, &f, &e);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    token(data, size);
    plaintexts(data, size);
    base64(data, size);
    encoders(data, size);
    return 0;
}
