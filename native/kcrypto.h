/* RFC 3961 enctype profiles on OpenSSL libcrypto: the only crypto the validator calls.
 *
 * A key is specialised once per key usage into an fk_ekey (Ke, Ki, Kc and keyed HMAC states
 * precomputed), so the hot path does no key derivation for long-term keys and no allocation.
 * Every function is thread-safe and may run without the GIL; fk_ekey is read-only after init.
 * Each thread keeps its own EVP contexts (allocated on first use, freed at thread exit), including a
 * few keyed AES decryption contexts so that a long-term key is not re-keyed for every ticket.
 *
 * Enctypes: 17 aes128-cts-hmac-sha1-96, 18 aes256-cts-hmac-sha1-96 (RFC 3962),
 * 19 aes128-cts-hmac-sha256-128, 20 aes256-cts-hmac-sha384-192 (RFC 8009), 23 arcfour-hmac (RFC 4757).
 */
#ifndef FASTKRB_KCRYPTO_H
#define FASTKRB_KCRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define FK_OK 0
#define FK_ERR_INTEGRITY 1   /* MAC does not verify */
#define FK_ERR_LENGTH 2      /* ciphertext/data of impossible length */
#define FK_ERR_ENCTYPE 3     /* enctype or checksum type not supported */
#define FK_ERR_KEYSIZE 4     /* key of the wrong length for the enctype */
#define FK_ERR_INTERNAL 5    /* OpenSSL failed (allocation, provider) */

#define FK_MAX_KEY 32
#define FK_MAX_MAC 24       /* longest truncated MAC: hmac-sha384-192 */
#define FK_MAX_DIGEST 64

/* A keyed HMAC with the inner and outer hash states precomputed (no allocation per use). */
typedef struct fk_hmac_key {
    int md;                       /* FK_MD_* */
    unsigned char inner[224];     /* opaque, holds a SHA_CTX/SHA256_CTX/SHA512_CTX/MD5_CTX */
    unsigned char outer[224];
} fk_hmac_key;

#define FK_MD_SHA1 1
#define FK_MD_SHA256 2
#define FK_MD_SHA384 3
#define FK_MD_MD5 4

int fk_hmac_init(fk_hmac_key *h, int md, const uint8_t *key, size_t keylen);
/* HMAC over the concatenation d1 | d2 (either may be empty); out gets the full digest length. */
size_t fk_hmac(const fk_hmac_key *h, const uint8_t *d1, size_t l1, const uint8_t *d2, size_t l2, uint8_t *out);

/* A key specialised for one key usage. */
typedef struct fk_ekey {
    int enctype;
    uint32_t usage;
    size_t keylen;               /* base key length */
    size_t hlen;                 /* truncated MAC length appended to ciphertexts */
    size_t conflen;              /* confounder length */
    uint8_t key[FK_MAX_KEY];     /* base key */
    uint8_t ke[FK_MAX_KEY];      /* encryption key (RC4: unused) */
    size_t kelen;
    fk_hmac_key ki;              /* integrity key (RC4: K1 = HMAC-MD5(K, T)) */
    fk_hmac_key kc;              /* checksum key for keyed checksums with this usage (RC4: Ksign) */
    int cksumtype;               /* the enctype's mandatory keyed checksum type */
    size_t cksumlen;
} fk_ekey;

/* Lengths for an enctype; FK_ERR_ENCTYPE when unsupported. */
int fk_enctype_info(int enctype, size_t *keylen, size_t *hlen, size_t *conflen);
/* The checksum type a key of this enctype makes (15, 16, 19, 20, -138); 0 when none. */
int fk_enctype_cksumtype(int enctype);

int fk_ekey_init(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage);
/* fk_ekey_init with options (extension). FK_EKEY_NO_CHECKSUM skips Kc, for keys that only encrypt
 * or decrypt (a session key for usage 11 / 12): fk_checksum on such a key gives FK_ERR_ENCTYPE. */
#define FK_EKEY_NO_CHECKSUM 1u
int fk_ekey_init_flags(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage,
                       unsigned flags);

/* Decrypt and verify (integrity checked in constant time before any plaintext is trusted).
 * out must hold ctlen bytes and must not overlap ct; *outlen gets the plaintext length (confounder
 * removed), the plaintext starts at out[0]. On FK_ERR_INTEGRITY out holds nothing usable (zeroed). */
int fk_decrypt(const fk_ekey *k, const uint8_t *ct, size_t ctlen, uint8_t *out, size_t *outlen);

/* Length of the ciphertext fk_encrypt makes from ptlen bytes. */
size_t fk_encrypt_len(const fk_ekey *k, size_t ptlen);
/* Encrypt; confounder may be NULL (random from RAND_bytes). out must hold fk_encrypt_len bytes. */
int fk_encrypt(const fk_ekey *k, const uint8_t *confounder, const uint8_t *pt, size_t ptlen,
               uint8_t *out, size_t *outlen);

/* Keyed checksum of cksumtype with k's Kc (usage of k); out holds FK_MAX_DIGEST. */
int fk_checksum(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len, uint8_t *out, size_t *outlen);
/* Constant-time verification; FK_OK or FK_ERR_INTEGRITY (FK_ERR_ENCTYPE if cksumtype does not fit k). */
int fk_checksum_verify(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len,
                       const uint8_t *mac, size_t maclen);

/* Wipe a specialised key (extension). */
void fk_ekey_clear(fk_ekey *k);
/* The enctype whose keys make cksumtype and the checksum length; FK_ERR_ENCTYPE when unsupported
 * (extension). */
int fk_cksumtype_info(int cksumtype, int *enctype, size_t *len);

/* Building blocks, exposed for the published vectors and for tools. */
#define FK_NFOLD_MAX 256    /* longest n-fold output in bytes; longer gives zeros */
void fk_nfold(const uint8_t *in, size_t inlen, uint8_t *out, size_t outlen);
/* RFC 3961 DK (17/18) or RFC 8009 KDF-HMAC-SHA2 (19/20) with an arbitrary constant/label;
 * outlen bytes (for 19/20 the caller picks 16/24/32 by key kind). */
int fk_derive(int enctype, const uint8_t *key, size_t keylen, const uint8_t *constant, size_t clen,
              uint8_t *out, size_t outlen);
/* RFC 3962 / RFC 8009 AES-CBC-CTS on raw data (IV given, 16 bytes, NULL = zeros); len >= 16.
 * Encryption may run in place (out == in); for decryption in and out must not overlap. */
int fk_aes_cts(int encrypt, const uint8_t *key, size_t keylen, const uint8_t *iv,
               const uint8_t *in, size_t len, uint8_t *out);
/* RFC 3961 PRF for the enctype (RFC 3962 §6 / RFC 8009 §5); out holds 64 bytes. */
int fk_prf(int enctype, const uint8_t *key, size_t keylen, const uint8_t *in, size_t len,
           uint8_t *out, size_t *outlen);
/* Constant-time compare: 0 when equal. */
int fk_ct_memcmp(const void *a, const void *b, size_t n);
/* Random bytes from OpenSSL's DRBG; FK_OK or FK_ERR_INTERNAL. */
int fk_random(uint8_t *out, size_t n);
/* MD4 (RFC 1320), for the RC4 string-to-key only; out holds 16 bytes (extension). */
int fk_md4(const uint8_t *in, size_t len, uint8_t *out);

#endif
