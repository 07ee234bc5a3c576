# kcrypto.h declared once: the RFC 3961 profiles the validator's C calls, and that crypto.pxi exposes to
# Python (fastkrb.krb.crypto) with the GIL released around every call.

from libc.stdint cimport uint8_t, uint32_t

cdef extern from "kcrypto.h" nogil:
    enum:
        FK_OK
        FK_ERR_INTEGRITY
        FK_ERR_LENGTH
        FK_ERR_ENCTYPE
        FK_ERR_KEYSIZE
        FK_ERR_INTERNAL
        FK_MAX_KEY
        FK_MAX_MAC
        FK_MAX_DIGEST
        FK_MD_SHA1
        FK_MD_SHA256
        FK_MD_SHA384
        FK_MD_MD5
        FK_NFOLD_MAX
        FK_EKEY_NO_CHECKSUM

    ctypedef struct fk_hmac_key:
        int md
        unsigned char inner[224]
        unsigned char outer[224]

    ctypedef struct fk_ekey:
        int enctype
        uint32_t usage
        size_t keylen
        size_t hlen
        size_t conflen
        uint8_t key[FK_MAX_KEY]
        uint8_t ke[FK_MAX_KEY]
        size_t kelen
        fk_hmac_key ki
        fk_hmac_key kc
        int cksumtype
        size_t cksumlen

    int fk_hmac_init(fk_hmac_key *h, int md, const uint8_t *key, size_t keylen)
    size_t fk_hmac(const fk_hmac_key *h, const uint8_t *d1, size_t l1, const uint8_t *d2, size_t l2,
                   uint8_t *out)

    int fk_enctype_info(int enctype, size_t *keylen, size_t *hlen, size_t *conflen)
    int fk_enctype_cksumtype(int enctype)
    int fk_cksumtype_info(int cksumtype, int *enctype, size_t *len)

    int fk_ekey_init(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage)
    int fk_ekey_init_flags(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage,
                           unsigned flags)
    void fk_ekey_clear(fk_ekey *k)
    int fk_decrypt(const fk_ekey *k, const uint8_t *ct, size_t ctlen, uint8_t *out, size_t *outlen)
    size_t fk_encrypt_len(const fk_ekey *k, size_t ptlen)
    int fk_encrypt(const fk_ekey *k, const uint8_t *confounder, const uint8_t *pt, size_t ptlen,
                   uint8_t *out, size_t *outlen)
    int fk_checksum(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len, uint8_t *out,
                    size_t *outlen)
    int fk_checksum_verify(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len,
                           const uint8_t *mac, size_t maclen)

    void fk_nfold(const uint8_t *inp, size_t inlen, uint8_t *out, size_t outlen)
    int fk_derive(int enctype, const uint8_t *key, size_t keylen, const uint8_t *constant, size_t clen,
                  uint8_t *out, size_t outlen)
    int fk_aes_cts(int encrypt, const uint8_t *key, size_t keylen, const uint8_t *iv,
                   const uint8_t *inp, size_t len, uint8_t *out)
    int fk_prf(int enctype, const uint8_t *key, size_t keylen, const uint8_t *inp, size_t len,
               uint8_t *out, size_t *outlen)
    int fk_ct_memcmp(const void *a, const void *b, size_t n)
    int fk_random(uint8_t *out, size_t n)
    int fk_md4(const uint8_t *inp, size_t len, uint8_t *out)


# The one libcrypto call the boundary makes itself: wiping prepared service keys before they are freed.
cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)
