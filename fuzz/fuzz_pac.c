/* libFuzzer target: PAC server-signature verification (fk_verify_pac in native/validate.c).
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
    FZ_CHECK(rc == FK_V_OK || rc == FK_V_PAC_INTEGRITY || rc == FK_V_PAC_MALFORMED);
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
    free(pac);
    free(orig);
    free(copy);
    return 0;
}
