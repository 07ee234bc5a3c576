/* libFuzzer target: PAC server-signature verification (fk_verify_pac in native/validate.c), and on the
 * same input the rest of native/pac.c: the ticket-binding checks (fk_pac_check_client / _upn against a
 * fixed client) and the KERB_VALIDATION_INFO decoder with SID formatting and set membership (the identity).
 *
 * Input: [key selector][PAC bytes]. The selector picks one of the fixed keys (each enctype's usage-17
 * key), so PACs the seed builder signed with those keys verify and mutations explore both the buffer
 * walk and the signature check. Invariants: the original PAC is never written to; a PAC that verifies
 * still verifies when its two signature fields are changed in the copy only (they are zeroed before
 * hashing); a flipped byte outside the signature fields breaks the server signature. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"
#include "pac.h"

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Is byte i inside the signature value of a type 6/7 buffer (what the signature zeroes)? */
static int in_signature(const uint8_t *p, size_t n, size_t i)
{
    uint32_t cnt = le32(p);
    for (uint32_t b = 0; b < cnt; b++) {
        const uint8_t *h = p + 8 + 16 * b;
        uint32_t type = le32(h), sz = le32(h + 4);
        uint64_t off = (uint64_t)le32(h + 8) | ((uint64_t)le32(h + 12) << 32);
        if (type != 6 && type != 7)
            continue;
        if (i >= off + 4 && i < off + sz)
            return 1;
    }
    (void)n;
    return 0;
}

static int inside(const uint8_t *p, size_t n, const uint8_t *q, size_t k)
{
    return q >= p && (size_t)(q - p) <= n && k <= n - (size_t)(q - p);
}

/* The identity of a PAC: every slice the decoder hands out lies inside its buffer; every SID formats. */
static void identity(const uint8_t *pac, size_t n)
{
    fk_pac px;
    const char *what = NULL;
    if (fk_pac_parse((fk_buf){pac, n}, &px, &what) != FK_PAC_OK) {
        FZ_CHECK(what != NULL);
        return;
    }
    static const fk_buf alice = {(const uint8_t *)"alice", 5};
    fk_name cname = {1, 1, {alice}};
    int rc = fk_pac_check_client(&px, &cname, 1700000000, &what);
    FZ_CHECK(rc == FK_PAC_OK || rc == FK_PAC_BAD || rc == FK_PAC_MISMATCH);
    rc = fk_pac_check_upn(&px, (fk_buf){(const uint8_t *)"EXAMPLE.TEST", 12}, alice, &what);
    FZ_CHECK(rc == FK_PAC_OK || rc == FK_PAC_BAD || rc == FK_PAC_MISMATCH);
    if (!(px.present & (1u << FK_PAC_LOGON_INFO)))
        return;
    fk_buf b = px.buf[FK_PAC_LOGON_INFO];
    fk_logon l;
    fk_derr e = {NULL, 0};
    if (fk_logon_decode(b.p, b.n, &l, &e) != 0) {
        FZ_CHECK(e.what != NULL && e.offset <= b.n + 3);
        return;
    }
    char text[FK_SID_TEXT_MAX];
    FZ_CHECK(inside(b.p, b.n, l.name.p, l.name.n) && inside(b.p, b.n, l.domain.p, l.domain.n));
    FZ_CHECK(fk_utf16_valid(l.name) && fk_utf16_valid(l.domain));
    if (l.dom_sid) {
        FZ_CHECK(inside(b.p, b.n, l.dom_sid, 8 + 4 * (size_t)l.dom_sid[1]) && l.dom_sid[1] <= 15);
        FZ_CHECK(fk_sid_format_rid(l.dom_sid, l.user_rid, text) < sizeof text);
    }
    FZ_CHECK(l.ngroups == 0 || inside(b.p, b.n, l.groups, 8 * (size_t)l.ngroups));
    FZ_CHECK(l.nres == 0 || inside(b.p, b.n, l.res_groups, 8 * (size_t)l.nres));
    const uint8_t *x = l.nextra ? l.extra + 4 : NULL;
    for (uint32_t i = 0; i < l.nextra; i++, x = fk_logon_next_extra(x)) {
        FZ_CHECK(inside(b.p, b.n, x, 8) && inside(b.p, b.n, x, 8 + 4 * (size_t)x[1]) && x[1] <= 15);
        size_t m = fk_sid_format(x, text);
        FZ_CHECK(m < sizeof text);
        /* text -> binary -> the same SID */
        uint8_t raw[FK_SID_MAX];
        size_t rawlen;
        FZ_CHECK(fk_sid_parse(text, m, raw, &rawlen) == 0 && rawlen == 8 + 4 * (size_t)x[1] &&
                 memcmp(raw, x, rawlen) == 0);
    }
    /* a set that holds the user (when it can be named) and the last ExtraSid: membership must say so */
    fk_sid_slot slots[8];
    uint64_t prefixes[4];
    memset(slots, 0, sizeof slots);
    fk_sidset set = {slots, 7, 0, prefixes, 0};
    uint8_t user[FK_SID_MAX];
    if (l.dom_sid && l.dom_sid[1] < 15) {
        memcpy(user, l.dom_sid, 8 + 4 * (size_t)l.dom_sid[1]);
        user[1]++;
        memcpy(user + 8 + 4 * (size_t)l.dom_sid[1], &l.user_rid, 4);   /* little-endian hosts only */
        fk_sidset_add(&set, user);
        FZ_CHECK(fk_sidset_has(&set, user));
    }
    int member = fk_logon_member(&l, &set);
    FZ_CHECK(member == (set.count > 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const fk_kt_entry *keys = fz_keytab();
    const fk_kt_entry *key = &keys[data[0] % FZ_NKEYS];
    size_t n = size - 1;
    uint8_t *pac = malloc(n ? n : 1), *orig = malloc(n ? n : 1), *copy = malloc(n ? n : 1);
    FZ_CHECK(pac && orig && copy);
    memcpy(pac, data + 1, n);
    memcpy(orig, pac, n);
    fk_result r;
    memset(&r, 0, sizeof r);
    int rc = fk_verify_pac(key, (fk_buf){pac, n}, copy, &r);
    FZ_CHECK(rc == FK_V_OK || rc == FK_V_PAC_INTEGRITY || rc == FK_V_PAC_MALFORMED || rc == FK_V_PAC_SIGNATURE_TYPE);
    FZ_CHECK(memcmp(pac, orig, n) == 0);
    FZ_CHECK(r.pac_verified == (rc == FK_V_OK));
    if (rc == FK_V_OK) {
        /* flip one byte outside every signature value: the server signature must break */
        size_t i = n ? (size_t)data[0] * 7919 % n : 0;
        if (n && !in_signature(pac, n, i)) {
            pac[i] ^= 0x01;
            memset(&r, 0, sizeof r);
            int rc2 = fk_verify_pac(key, (fk_buf){pac, n}, copy, &r);
            FZ_CHECK(rc2 != FK_V_OK);
        }
    }
    identity(data + 1, n);
    free(pac);
    free(orig);
    free(copy);
    return 0;
}
