/* libFuzzer target: the crypto entry points of native/kcrypto.c with random keys and ciphertexts.
 *
 * Input: [op][enctype selector][usage 4][key ...][rest]. Operations:
 *   0 decrypt-and-verify `rest` (fk_decrypt): must fail with INTEGRITY/LENGTH, never crash, and on
 *     failure leave no plaintext in the output buffer;
 *   1 encrypt `rest` with a confounder from the input, then decrypt: the plaintext comes back; a flipped
 *     bit anywhere in the ciphertext is refused (integrity), a truncated one too;
 *   2 keyed checksum of `rest` and its verification, plus verification of a fuzzed MAC;
 *   3 AES-CTS encrypt/decrypt round trip (fk_aes_cts) on raw data;
 *   4 n-fold, PRF and key derivation with fuzzed lengths and constants.
 * The enctype selector covers the five supported enctypes and some unsupported ones. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"

static const int ENCTYPES[] = {17, 18, 19, 20, 23, 0, 1, 3, 16, 24, 25, 26, -1};
#define NENC (sizeof ENCTYPES / sizeof ENCTYPES[0])

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void op_decrypt(const fk_ekey *k, const uint8_t *ct, size_t n)
{
    uint8_t *out = malloc(n ? n : 1);
    if (!out)
        return;
    memset(out, 0, n);
    size_t outlen = 12345;
    int rc = fk_decrypt(k, ct, n, out, &outlen);
    FZ_CHECK(rc == FK_OK || rc == FK_ERR_INTEGRITY || rc == FK_ERR_LENGTH);
    if (rc == FK_OK) {
        /* a forgery from random bytes: only possible if the fuzzer found the MAC (it never should) */
        FZ_CHECK(outlen + k->conflen + k->hlen == n);
    } else {
        FZ_CHECK(outlen == 0);
        /* "On FK_ERR_INTEGRITY out holds nothing usable (zeroed)" (kcrypto.h) */
        FZ_CHECK(all_zero(out, n));
    }
    free(out);
}

static void op_roundtrip(const fk_ekey *k, const uint8_t *rest, size_t n)
{
    if (n < k->conflen + 1 || n > 8192)
        return;
    const uint8_t *conf = rest;
    uint8_t flip = rest[k->conflen];
    const uint8_t *pt = rest + k->conflen + 1;
    size_t ptlen = n - k->conflen - 1;
    size_t clen = fk_encrypt_len(k, ptlen), got;
    uint8_t *ct = malloc(clen), *back = malloc(clen);
    if (!ct || !back)
        goto end;
    FZ_CHECK(fk_encrypt(k, conf, pt, ptlen, ct, &got) == FK_OK && got == clen);
    size_t outlen;
    int rc = fk_decrypt(k, ct, clen, back, &outlen);
    /* AES-CTS needs one whole block; shorter plaintexts are padded by the confounder (16 bytes) */
    FZ_CHECK(rc == FK_OK);
    FZ_CHECK(outlen == ptlen && memcmp(back, pt, ptlen) == 0);
    /* one flipped bit anywhere: refused */
    size_t at = ((size_t)flip * 131) % clen;
    ct[at] ^= (uint8_t)(1u << (flip & 7));
    FZ_CHECK(fk_decrypt(k, ct, clen, back, &outlen) == FK_ERR_INTEGRITY);
    ct[at] ^= (uint8_t)(1u << (flip & 7));
    /* truncated: refused */
    if (clen > 1) {
        rc = fk_decrypt(k, ct, clen - 1, back, &outlen);
        FZ_CHECK(rc == FK_ERR_INTEGRITY || rc == FK_ERR_LENGTH);
    }
end:
    free(ct);
    free(back);
}

static void op_checksum(const fk_ekey *k, int cksumtype, const uint8_t *rest, size_t n)
{
    uint8_t mac[FK_MAX_DIGEST];
    size_t ml;
    int rc = fk_checksum(k, cksumtype, rest, n, mac, &ml);
    if (rc != FK_OK) {
        FZ_CHECK(rc == FK_ERR_ENCTYPE);
        FZ_CHECK(fk_checksum_verify(k, cksumtype, rest, n, rest, n) == FK_ERR_ENCTYPE);
        return;
    }
    FZ_CHECK(ml == k->cksumlen && ml <= FK_MAX_MAC);
    FZ_CHECK(fk_checksum_verify(k, cksumtype, rest, n, mac, ml) == FK_OK);
    if (ml > 1)
        FZ_CHECK(fk_checksum_verify(k, cksumtype, rest, n, mac, ml - 1) == FK_ERR_INTEGRITY);
    mac[n % ml] ^= 1;
    FZ_CHECK(fk_checksum_verify(k, cksumtype, rest, n, mac, ml) == FK_ERR_INTEGRITY);
    /* the input's own tail as a MAC: a forgery only if it happens to be right */
    if (n >= ml) {
        rc = fk_checksum_verify(k, cksumtype, rest, n - ml, rest + n - ml, ml);
        FZ_CHECK(rc == FK_OK || rc == FK_ERR_INTEGRITY);
    }
    int et;
    size_t len;
    if (fk_cksumtype_info(cksumtype, &et, &len) == FK_OK)
        FZ_CHECK(len == ml);
}

static void op_cts(const uint8_t *key, size_t keylen, const uint8_t *rest, size_t n)
{
    if (n < 16 || n > 4096)
        return;
    uint8_t *ct = malloc(n), *back = malloc(n);
    if (ct && back) {
        int rc = fk_aes_cts(1, key, keylen, rest, rest, n, ct);
        if (keylen == 16 || keylen == 32) {
            FZ_CHECK(rc == FK_OK);
            FZ_CHECK(fk_aes_cts(0, key, keylen, rest, ct, n, back) == FK_OK);
            FZ_CHECK(memcmp(back, rest, n) == 0);
            /* encryption in place (allowed by kcrypto.h) gives the same ciphertext */
            memcpy(back, rest, n);
            FZ_CHECK(fk_aes_cts(1, key, keylen, NULL, back, n, back) == FK_OK);
            FZ_CHECK(fk_aes_cts(1, key, keylen, NULL, rest, n, ct) == FK_OK);
            FZ_CHECK(memcmp(back, ct, n) == 0);
        } else {
            FZ_CHECK(rc != FK_OK);
        }
    }
    free(ct);
    free(back);
}

static void op_misc(int enctype, const uint8_t *key, size_t keylen, const uint8_t *rest, size_t n)
{
    uint8_t out[FK_NFOLD_MAX + 64];
    size_t outlen = n ? rest[0] : 0;
    if (outlen > FK_NFOLD_MAX)
        outlen = FK_NFOLD_MAX;
    fk_nfold(rest, n, out, outlen);
    uint8_t prf[64];
    size_t pl;
    int rc = fk_prf(enctype, key, keylen, rest, n, prf, &pl);
    if (rc == FK_OK)
        FZ_CHECK(pl <= sizeof prf);
    size_t dl = n ? (size_t)(rest[n - 1] % 33) : 16;
    rc = fk_derive(enctype, key, keylen, rest, n > 64 ? 64 : n, out, dl);
    FZ_CHECK(rc >= FK_OK && rc <= FK_ERR_INTERNAL);
    uint8_t md4[16];
    FZ_CHECK(fk_md4(rest, n, md4) == FK_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    int op = data[0] % 5;
    int enctype = ENCTYPES[data[1] % NENC];
    uint32_t usage = be32(data + 2);
    data += 6;
    size -= 6;
    size_t keylen, hlen, conflen;
    int known = fk_enctype_info(enctype, &keylen, &hlen, &conflen) == FK_OK;
    if (!known)
        keylen = size < 16 ? size : 16;
    if (size < keylen)
        return 0;
    const uint8_t *key = data;
    const uint8_t *rest = data + keylen;
    size_t n = size - keylen;

    if (op == 3) {
        /* raw AES-CTS takes any key length: 16 and 32 work, others are refused */
        size_t kl = n ? (rest[0] & 1 ? 32 : 16) : 16;
        if (n && (rest[0] & 2))
            kl = rest[0] % 40;
        if (n < kl + 1)
            return 0;
        op_cts(rest + 1, kl, rest + 1 + kl, n - 1 - kl);
        return 0;
    }
    if (op == 4) {
        op_misc(enctype, key, keylen, rest, n);
        return 0;
    }
    fk_ekey k;
    unsigned flags = (usage >> 31) ? FK_EKEY_NO_CHECKSUM : 0;
    int rc = fk_ekey_init_flags(&k, enctype, key, keylen, usage, flags);
    if (!known) {
        FZ_CHECK(rc == FK_ERR_ENCTYPE);
        /* a key of the wrong size for a known enctype is refused too */
        fk_ekey k2;
        FZ_CHECK(fk_ekey_init(&k2, 18, key, keylen, usage) == FK_ERR_KEYSIZE);
        return 0;
    }
    FZ_CHECK(rc == FK_OK);
    switch (op) {
    case 0:
        op_decrypt(&k, rest, n);
        break;
    case 1:
        op_roundtrip(&k, rest, n);
        break;
    case 2: {
        int ct = n && (rest[0] & 1) ? fk_enctype_cksumtype(ENCTYPES[rest[0] % 5]) : k.cksumtype;
        op_checksum(&k, ct, rest, n);
        break;
    }
    }
    fk_ekey_clear(&k);
    FZ_CHECK(all_zero((const uint8_t *)&k, sizeof k));
    return 0;
}
