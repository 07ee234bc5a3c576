/* RFC 3961 enctype profiles on OpenSSL libcrypto (see kcrypto.h for the contract).
 *
 * Speed notes, since this is the validator's hot path:
 *  - ciphers are fetched once (pthread_once); each thread keeps one EVP_CIPHER_CTX per cipher and
 *    re-keys it with cipher == NULL, which keeps the provider context (no allocation per call);
 *  - HMAC keys hold the hash states after the ipad/opad block, so a MAC costs the message blocks
 *    plus one outer block; the low-level SHA/MD5 routines use the CPU's SHA extensions when present;
 *  - AES-CBC-CTS decryption is ECB over all whole blocks in one call, then XOR (CBC = ECB + XOR).
 */
#include "kcrypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/md4.h>
#include <openssl/md5.h>
#include <openssl/rand.h>
#include <openssl/rc4.h>
#include <openssl/sha.h>

_Static_assert(sizeof(SHA_CTX) <= sizeof(((fk_hmac_key *)0)->inner), "SHA_CTX does not fit fk_hmac_key");
_Static_assert(sizeof(SHA256_CTX) <= sizeof(((fk_hmac_key *)0)->inner), "SHA256_CTX does not fit fk_hmac_key");
_Static_assert(sizeof(SHA512_CTX) <= sizeof(((fk_hmac_key *)0)->inner), "SHA512_CTX does not fit fk_hmac_key");
_Static_assert(sizeof(MD5_CTX) <= sizeof(((fk_hmac_key *)0)->inner), "MD5_CTX does not fit fk_hmac_key");

#define AES_BLOCK 16
#define MAX_CHUNK (INT_MAX / 2)  /* EVP takes int lengths */

static const uint8_t ZERO_IV[AES_BLOCK];

/* Zero secrets the compiler may not elide (glibc's explicit_bzero: memset speed, unlike the byte
 * loop of OPENSSL_cleanse, which showed up in profiles of key setup). */
static inline void wipe(void *p, size_t n)
{
    explicit_bzero(p, n);
}

static inline void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---------------------------------------------------------------------------------------------- */
/* Hashes and HMAC with precomputed states                                                          */

typedef union {
    SHA_CTX s1;
    SHA256_CTX s256;
    SHA512_CTX s512;
    MD5_CTX m5;
} md_ctx;

static size_t md_size(int md)
{
    switch (md) {
    case FK_MD_SHA1: return SHA_DIGEST_LENGTH;
    case FK_MD_SHA256: return SHA256_DIGEST_LENGTH;
    case FK_MD_SHA384: return SHA384_DIGEST_LENGTH;
    case FK_MD_MD5: return MD5_DIGEST_LENGTH;
    default: return 0;
    }
}

static size_t md_block(int md)
{
    switch (md) {
    case FK_MD_SHA1: return SHA_CBLOCK;
    case FK_MD_SHA256: return SHA256_CBLOCK;
    case FK_MD_SHA384: return SHA512_CBLOCK;
    case FK_MD_MD5: return MD5_CBLOCK;
    default: return 0;
    }
}

static size_t md_ctx_size(int md)
{
    switch (md) {
    case FK_MD_SHA1: return sizeof(SHA_CTX);
    case FK_MD_SHA256: return sizeof(SHA256_CTX);
    case FK_MD_SHA384: return sizeof(SHA512_CTX);
    case FK_MD_MD5: return sizeof(MD5_CTX);
    default: return 0;
    }
}

static void md_init(int md, md_ctx *c)
{
    switch (md) {
    case FK_MD_SHA1: SHA1_Init(&c->s1); break;
    case FK_MD_SHA256: SHA256_Init(&c->s256); break;
    case FK_MD_SHA384: SHA384_Init(&c->s512); break;
    case FK_MD_MD5: MD5_Init(&c->m5); break;
    default: break;
    }
}

static inline void md_update(int md, md_ctx *c, const void *d, size_t n)
{
    if (n == 0)
        return;
    switch (md) {
    case FK_MD_SHA1: SHA1_Update(&c->s1, d, n); break;
    case FK_MD_SHA256: SHA256_Update(&c->s256, d, n); break;
    case FK_MD_SHA384: SHA384_Update(&c->s512, d, n); break;
    case FK_MD_MD5: MD5_Update(&c->m5, d, n); break;
    default: break;
    }
}

static inline void md_final(int md, md_ctx *c, uint8_t *out)
{
    switch (md) {
    case FK_MD_SHA1: SHA1_Final(out, &c->s1); break;
    case FK_MD_SHA256: SHA256_Final(out, &c->s256); break;
    case FK_MD_SHA384: SHA384_Final(out, &c->s512); break;
    case FK_MD_MD5: MD5_Final(out, &c->m5); break;
    default: break;
    }
}

int fk_hmac_init(fk_hmac_key *h, int md, const uint8_t *key, size_t keylen)
{
    size_t bs = md_block(md), i;
    uint8_t kb[SHA512_CBLOCK], pad[SHA512_CBLOCK];
    md_ctx c;

    if (bs == 0)
        return FK_ERR_ENCTYPE;
    h->md = md;
    if (keylen > bs) {  /* RFC 2104: a long key is hashed first */
        md_init(md, &c);
        md_update(md, &c, key, keylen);
        md_final(md, &c, kb);
        keylen = md_size(md);
    } else if (keylen > 0) {
        memcpy(kb, key, keylen);
    }
    memset(kb + keylen, 0, bs - keylen);
    for (i = 0; i < bs; i++)
        pad[i] = kb[i] ^ 0x36;
    md_init(md, &c);  /* the *_Init functions set every field of the state */
    md_update(md, &c, pad, bs);
    memcpy(h->inner, &c, md_ctx_size(md));
    for (i = 0; i < bs; i++)
        pad[i] = kb[i] ^ 0x5c;
    md_init(md, &c);
    md_update(md, &c, pad, bs);
    memcpy(h->outer, &c, md_ctx_size(md));
    wipe(kb, sizeof(kb));
    wipe(pad, sizeof(pad));
    wipe(&c, sizeof(c));
    return FK_OK;
}

static inline void hmac_begin(const fk_hmac_key *h, md_ctx *c)
{
    memcpy(c, h->inner, md_ctx_size(h->md));
}

static inline size_t hmac_end(const fk_hmac_key *h, md_ctx *c, uint8_t *out)
{
    uint8_t ih[FK_MAX_DIGEST];
    size_t n = md_size(h->md);

    md_final(h->md, c, ih);
    memcpy(c, h->outer, md_ctx_size(h->md));
    md_update(h->md, c, ih, n);
    md_final(h->md, c, out);
    return n;
}

size_t fk_hmac(const fk_hmac_key *h, const uint8_t *d1, size_t l1, const uint8_t *d2, size_t l2, uint8_t *out)
{
    md_ctx c;

    if (md_size(h->md) == 0)
        return 0;
    hmac_begin(h, &c);
    md_update(h->md, &c, d1, l1);
    md_update(h->md, &c, d2, l2);
    return hmac_end(h, &c, out);
}

/* One-shot HMAC of a single buffer with a raw key (cold paths only). */
static size_t hmac_once(int md, const uint8_t *key, size_t keylen, const uint8_t *d, size_t n, uint8_t *out)
{
    fk_hmac_key h;
    size_t r;

    if (fk_hmac_init(&h, md, key, keylen) != FK_OK)
        return 0;
    r = fk_hmac(&h, d, n, NULL, 0, out);
    wipe(&h, sizeof(h));
    return r;
}

int fk_ct_memcmp(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) != 0;
}

int fk_random(uint8_t *out, size_t n)
{
    if (n == 0)
        return FK_OK;
    if (n > (size_t)INT_MAX)
        return FK_ERR_LENGTH;
    return RAND_bytes(out, (int)n) == 1 ? FK_OK : FK_ERR_INTERNAL;
}

int fk_md4(const uint8_t *in, size_t len, uint8_t *out)
{
    MD4_CTX c;

    if (!MD4_Init(&c))
        return FK_ERR_INTERNAL;
    if (len > 0 && !MD4_Update(&c, in, len))
        return FK_ERR_INTERNAL;
    if (!MD4_Final(out, &c))
        return FK_ERR_INTERNAL;
    wipe(&c, sizeof(c));
    return FK_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Ciphers: fetched once; one context per cipher per thread                                         */

enum { C_ECB128, C_ECB256, C_CBC128, C_CBC256, C_COUNT };
static const char *const CIPHER_NAMES[C_COUNT] = {"AES-128-ECB", "AES-256-ECB", "AES-128-CBC", "AES-256-CBC"};

/* ECB-decryption contexts stay keyed: the service's long-term Ke decrypts every ticket, and
 * re-keying an EVP context costs more than the decryption itself (~170 ns, mostly OSSL_PARAM work).
 * Least recently used goes: every ticket also brings a session key seen once (its authenticator), and
 * a round-robin cache evicted the service key for one of those every DEC_CACHE tickets. */
#define DEC_CACHE 4
#define RND_BUF 4096

typedef struct {
    EVP_CIPHER_CTX *ctx;
    uint8_t key[FK_MAX_KEY];
    int valid;
    uint64_t used;                 /* dec_tick at the last use */
} dec_slot;

typedef struct {
    EVP_CIPHER_CTX *ctx[C_COUNT];  /* encryption, re-keyed when the key changes (CBC: on every use) */
    uint8_t ecb_key[2][FK_MAX_KEY]; /* the key ctx[C_ECB128 / C_ECB256] holds (a session key derives twice) */
    int ecb_valid[2];
    dec_slot dec[2][DEC_CACHE];    /* [0] AES-128, [1] AES-256 */
    uint64_t dec_tick[2];
    uint8_t rnd[RND_BUF];          /* confounders: one DRBG call per RND_BUF bytes */
    size_t rnd_left;
    unsigned rnd_gen;
} fk_tls;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;
static EVP_CIPHER *g_cipher[C_COUNT];
static int g_ready;
static volatile unsigned g_fork_gen;  /* bumped in a forked child: buffered randomness is void there */
static _Thread_local fk_tls *t_tls;

static void tls_free(void *p)
{
    fk_tls *t = p;
    int i, j;

    if (t == NULL)
        return;
    for (i = 0; i < C_COUNT; i++)
        EVP_CIPHER_CTX_free(t->ctx[i]);
    for (i = 0; i < 2; i++)
        for (j = 0; j < DEC_CACHE; j++)
            EVP_CIPHER_CTX_free(t->dec[i][j].ctx);
    wipe(t, sizeof(*t));
    free(t);
    t_tls = NULL;  /* a later destructor calling in gets a fresh state, not freed memory */
}

static void after_fork_child(void)
{
    g_fork_gen++;
}

static void global_init(void)
{
    int i;

    for (i = 0; i < C_COUNT; i++) {
        g_cipher[i] = EVP_CIPHER_fetch(NULL, CIPHER_NAMES[i], NULL);
        if (g_cipher[i] == NULL)
            return;
    }
    if (pthread_key_create(&g_key, tls_free) != 0)
        return;
    if (pthread_atfork(NULL, NULL, after_fork_child) != 0)
        return;
    g_ready = 1;
}

static fk_tls *tls_get(void)
{
    fk_tls *t = t_tls;

    if (t != NULL)
        return t;
    pthread_once(&g_once, global_init);
    if (!g_ready)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (pthread_setspecific(g_key, t) != 0) {
        free(t);
        return NULL;
    }
    t_tls = t;
    return t;
}

/* A new context for cipher `which`, keyed; NULL on failure. Only decryption turns padding off (it
 * would hold back the last block): with padding off, every later re-key pays a parameter call, and
 * encryption of whole blocks never pads before EVP_CipherFinal, which we never call. */
static EVP_CIPHER_CTX *new_ctx(int which, const uint8_t *key, const uint8_t *iv, int enc)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

    if (c == NULL)
        return NULL;
    if (!EVP_CipherInit_ex2(c, g_cipher[which], key, iv, enc, NULL)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    if (!enc)
        EVP_CIPHER_CTX_set_padding(c, 0);
    return c;
}

/* Constant-time equality of two 16- or 32-byte keys, a word at a time (CRYPTO_memcmp goes byte by byte). */
static inline int key_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint64_t x, y, acc = 0;
    size_t i;

    for (i = 0; i < n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        acc |= x ^ y;
    }
    return acc == 0;
}

/* This thread's encryption context for cipher `which`, keyed and ready; NULL on failure. */
static EVP_CIPHER_CTX *enc_ctx(int which, const uint8_t *key, const uint8_t *iv)
{
    fk_tls *t = tls_get();
    EVP_CIPHER_CTX *c;

    if (t == NULL)
        return NULL;
    c = t->ctx[which];
    if (which == C_ECB128 || which == C_ECB256) {
        /* ECB keeps no state between calls of whole blocks (all our calls): the same key needs no re-keying */
        size_t kl = which == C_ECB256 ? 32 : 16;
        if (c != NULL && t->ecb_valid[which] && key_eq(t->ecb_key[which], key, kl))
            return c;
        t->ecb_valid[which] = 0;
        if (c == NULL) {
            if ((c = t->ctx[which] = new_ctx(which, key, iv, 1)) == NULL)
                return NULL;
        } else if (!EVP_CipherInit_ex2(c, NULL, key, iv, 1, NULL)) {
            return NULL;
        }
        memcpy(t->ecb_key[which], key, kl);
        t->ecb_valid[which] = 1;
        return c;
    }
    if (c == NULL)
        return t->ctx[which] = new_ctx(which, key, iv, 1);
    /* cipher == NULL keeps the provider context: only the key schedule (and IV) is redone. */
    if (!EVP_CipherInit_ex2(c, NULL, key, iv, 1, NULL))
        return NULL;
    return c;
}

/* An ECB-decryption context keyed with key, from this thread's cache when it holds that key. */
static EVP_CIPHER_CTX *ecb_dec_ctx(const uint8_t *key, size_t keylen)
{
    fk_tls *t = tls_get();
    int sz = keylen == 32, i;
    dec_slot *d;

    if (t == NULL)
        return NULL;
    for (i = 0; i < DEC_CACHE; i++) {
        d = &t->dec[sz][i];
        if (d->valid && key_eq(d->key, key, keylen)) {
            d->used = ++t->dec_tick[sz];
            return d->ctx;
        }
    }
    d = &t->dec[sz][0];   /* the least recently used slot (an empty one first) */
    for (i = 1; i < DEC_CACHE && d->valid; i++)
        if (!t->dec[sz][i].valid || t->dec[sz][i].used < d->used)
            d = &t->dec[sz][i];
    d->valid = 0;
    d->used = ++t->dec_tick[sz];
    if (d->ctx == NULL) {
        if ((d->ctx = new_ctx(sz ? C_ECB256 : C_ECB128, key, NULL, 0)) == NULL)
            return NULL;
    } else if (!EVP_CipherInit_ex2(d->ctx, NULL, key, NULL, 0, NULL)) {
        return NULL;
    }
    memcpy(d->key, key, keylen);
    d->valid = 1;
    return d->ctx;
}

/* Confounder bytes (n <= 32): DRBG output drawn in RND_BUF chunks, discarded after fork(). */
static int confounder(uint8_t *out, size_t n)
{
    fk_tls *t = tls_get();

    if (t == NULL || n > 32)
        return fk_random(out, n);
    if (t->rnd_gen != g_fork_gen || t->rnd_left < n) {
        if (RAND_bytes(t->rnd, RND_BUF) != 1)
            return FK_ERR_INTERNAL;
        t->rnd_left = RND_BUF;
        t->rnd_gen = g_fork_gen;
    }
    t->rnd_left -= n;
    memcpy(out, t->rnd + t->rnd_left, n);
    wipe(t->rnd + t->rnd_left, n);
    return FK_OK;
}

int fk_random_nonce(uint8_t *out, size_t n)
{
    return confounder(out, n);
}

static inline int blocks(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in, size_t len)
{
    int ol;

    return EVP_CipherUpdate(c, out, &ol, in, (int)len) == 1 && (size_t)ol == len;
}

static inline void xor16(uint8_t *dst, const uint8_t *a, const uint8_t *b)
{
    uint64_t x[2], y[2];

    memcpy(x, a, 16);
    memcpy(y, b, 16);
    x[0] ^= y[0];
    x[1] ^= y[1];
    memcpy(dst, x, 16);
}

static int aes_kind(size_t keylen, int cbc)
{
    if (keylen == 16)
        return cbc ? C_CBC128 : C_ECB128;
    if (keylen == 32)
        return cbc ? C_CBC256 : C_ECB256;
    return -1;
}

/* RFC 3962 §5 CBC with ciphertext stealing, last two blocks swapped (CS3). In-place (out == in) is fine. */
static int cts_encrypt(const uint8_t *key, size_t keylen, const uint8_t *iv, const uint8_t *in, size_t len,
                       uint8_t *out)
{
    int kind = aes_kind(keylen, 1);
    EVP_CIPHER_CTX *c;
    size_t nb, r;
    uint8_t last[AES_BLOCK], t[AES_BLOCK];

    if (kind < 0)
        return FK_ERR_KEYSIZE;
    if (len < AES_BLOCK || len > MAX_CHUNK)
        return FK_ERR_LENGTH;
    c = enc_ctx(kind, key, iv);
    if (c == NULL)
        return FK_ERR_INTERNAL;
    if (len == AES_BLOCK)
        return blocks(c, out, in, AES_BLOCK) ? FK_OK : FK_ERR_INTERNAL;
    nb = (len + AES_BLOCK - 1) / AES_BLOCK;
    r = len - (nb - 1) * AES_BLOCK;  /* 1..16 bytes in the final block */
    memset(last, 0, sizeof(last));
    memcpy(last, in + (nb - 1) * AES_BLOCK, r);
    if (!blocks(c, out, in, (nb - 1) * AES_BLOCK))  /* C1 .. C(n-1) */
        return FK_ERR_INTERNAL;
    memcpy(t, out + (nb - 2) * AES_BLOCK, AES_BLOCK);
    /* The context's chaining value is C(n-1): this is Cn = E(Pn|0.. ^ C(n-1)), sent before C(n-1). */
    if (!blocks(c, out + (nb - 2) * AES_BLOCK, last, AES_BLOCK))
        return FK_ERR_INTERNAL;
    memcpy(out + (nb - 1) * AES_BLOCK, t, r);
    return FK_OK;
}

/* Inverse of cts_encrypt. in and out must not overlap. */
static int cts_decrypt(const uint8_t *key, size_t keylen, const uint8_t *iv, const uint8_t *in, size_t len,
                       uint8_t *out)
{
    EVP_CIPHER_CTX *c;
    size_t nb, r, i, j;
    uint8_t dn[AES_BLOCK], cn1[AES_BLOCK];
    uint8_t *pn1;

    if (aes_kind(keylen, 0) < 0)
        return FK_ERR_KEYSIZE;
    if (len < AES_BLOCK || len > MAX_CHUNK)
        return FK_ERR_LENGTH;
    c = ecb_dec_ctx(key, keylen);
    if (c == NULL)
        return FK_ERR_INTERNAL;
    if (len == AES_BLOCK) {
        if (!blocks(c, out, in, AES_BLOCK))
            return FK_ERR_INTERNAL;
        xor16(out, out, iv);
        return FK_OK;
    }
    nb = (len + AES_BLOCK - 1) / AES_BLOCK;
    r = len - (nb - 1) * AES_BLOCK;
    /* Every whole block in one call: D(C1) .. D(C(n-2)), then D(Cn) (sent in position n-1). */
    if (!blocks(c, out, in, (nb - 1) * AES_BLOCK))
        return FK_ERR_INTERNAL;
    pn1 = out + (nb - 2) * AES_BLOCK;
    memcpy(dn, pn1, AES_BLOCK);
    /* C(n-1) = its sent r bytes | the tail of D(Cn) (Pn was padded with zeros before XOR). */
    memcpy(cn1, in + (nb - 1) * AES_BLOCK, r);
    memcpy(cn1 + r, dn + r, AES_BLOCK - r);
    for (i = 0; i < r; i++)
        out[(nb - 1) * AES_BLOCK + i] = dn[i] ^ cn1[i];
    if (!blocks(c, pn1, cn1, AES_BLOCK))
        return FK_ERR_INTERNAL;
    xor16(pn1, pn1, nb >= 3 ? in + (nb - 3) * AES_BLOCK : iv);
    for (j = 0; j + 2 < nb; j++)
        xor16(out + j * AES_BLOCK, out + j * AES_BLOCK, j ? in + (j - 1) * AES_BLOCK : iv);
    wipe(dn, sizeof(dn));
    return FK_OK;
}

int fk_aes_cts(int encrypt, const uint8_t *key, size_t keylen, const uint8_t *iv,
               const uint8_t *in, size_t len, uint8_t *out)
{
    if (iv == NULL)
        iv = ZERO_IV;
    return encrypt ? cts_encrypt(key, keylen, iv, in, len, out) : cts_decrypt(key, keylen, iv, in, len, out);
}

/* ---------------------------------------------------------------------------------------------- */
/* n-fold (RFC 3961 §5.1)                                                                           */

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

void fk_nfold(const uint8_t *in, size_t inlen, uint8_t *out, size_t outlen)
{
    /* lcm(inlen, outlen) bytes: copies of the input, copy i rotated right by 13*i bits, added in
     * outlen-byte chunks with one's-complement (end-around carry) addition. Per-byte sums first,
     * carries once at the end (one's-complement addition is associative). */
    uint64_t acc[FK_NFOLD_MAX];
    size_t nbits, copies, i, k, pos, s, b, sh;
    uint64_t carry;

    if (outlen == 0)
        return;
    if (inlen == 0 || outlen > FK_NFOLD_MAX) {
        memset(out, 0, outlen);
        return;
    }
    nbits = inlen * 8;
    copies = outlen / gcd(inlen, outlen);  /* lcm / inlen */
    memset(acc, 0, outlen * sizeof(acc[0]));
    pos = 0;
    for (i = 0; i < copies; i++) {
        /* Byte k of the copy starts at source bit (8k - 13i) mod nbits, bits numbered MSB first. */
        s = (nbits - (13 * i) % nbits) % nbits;
        for (k = 0; k < inlen; k++) {
            b = s >> 3;
            sh = s & 7;
            acc[pos] += sh ? (uint8_t)((in[b] << sh) | (in[b + 1 == inlen ? 0 : b + 1] >> (8 - sh))) : in[b];
            if (++pos == outlen)
                pos = 0;
            s += 8;
            if (s >= nbits)
                s -= nbits;
        }
    }
    carry = 0;
    do {
        for (k = outlen; k-- > 0;) {
            uint64_t v = acc[k] + carry;
            acc[k] = v & 0xff;
            carry = v >> 8;
        }
    } while (carry);
    for (k = 0; k < outlen; k++)
        out[k] = (uint8_t)acc[k];
}

/* n-fold(usage | 0x99/0xAA/0x55, 128) for the usages Kerberos defines, computed once. */
#define FOLD_CACHE 64
static uint8_t g_fold[FOLD_CACHE][3][AES_BLOCK];
static pthread_once_t g_fold_once = PTHREAD_ONCE_INIT;
static const uint8_t DK_TAG[3] = {0x99, 0xAA, 0x55};  /* Kc, Ke, Ki (RFC 3961 §5.3) */

static void fold_init(void)
{
    uint8_t cst[5];
    uint32_t u;
    int t;

    for (u = 0; u < FOLD_CACHE; u++)
        for (t = 0; t < 3; t++) {
            be32(cst, u);
            cst[4] = DK_TAG[t];
            fk_nfold(cst, sizeof(cst), g_fold[u][t], AES_BLOCK);
        }
}

static void usage_folds(uint32_t usage, uint8_t *out /* 3 blocks */)
{
    uint8_t cst[5];
    int t;

    if (usage < FOLD_CACHE) {
        pthread_once(&g_fold_once, fold_init);
        memcpy(out, g_fold[usage], 3 * AES_BLOCK);
        return;
    }
    for (t = 0; t < 3; t++) {
        be32(cst, usage);
        cst[4] = DK_TAG[t];
        fk_nfold(cst, sizeof(cst), out + t * AES_BLOCK, AES_BLOCK);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Key derivation                                                                                   */

/* RFC 3961 §5.1 DK for AES (random-to-key is the identity): for each of n constants, already
 * n-folded to one block, out[i] = E(c) | E(E(c)) ... truncated to outlen. One ECB call per round. */
static int aes_dk_blocks(const uint8_t *key, size_t keylen, const uint8_t *folded, size_t n, uint8_t *out,
                         size_t outlen)
{
    int kind = aes_kind(keylen, 0);
    EVP_CIPHER_CTX *c;
    uint8_t cur[4 * AES_BLOCK], nxt[4 * AES_BLOCK];
    size_t done = 0, i, take;

    if (kind < 0)
        return FK_ERR_KEYSIZE;
    if (n == 0 || n > 4)
        return FK_ERR_INTERNAL;
    c = enc_ctx(kind, key, NULL);
    if (c == NULL)
        return FK_ERR_INTERNAL;
    memcpy(cur, folded, n * AES_BLOCK);
    while (done < outlen) {
        if (!blocks(c, nxt, cur, n * AES_BLOCK))
            return FK_ERR_INTERNAL;
        take = outlen - done < AES_BLOCK ? outlen - done : AES_BLOCK;
        for (i = 0; i < n; i++)
            memcpy(out + i * outlen + done, nxt + i * AES_BLOCK, take);
        memcpy(cur, nxt, n * AES_BLOCK);
        done += take;
    }
    wipe(cur, sizeof(cur));
    wipe(nxt, sizeof(nxt));
    return FK_OK;
}

static int sha2_md(int enctype)
{
    return enctype == 19 ? FK_MD_SHA256 : enctype == 20 ? FK_MD_SHA384 : 0;
}

/* RFC 8009 §3 KDF-HMAC-SHA2 (SP 800-108 counter mode): K(i) = HMAC(key, i | label | 0 | context | k),
 * k the output length in bits; out = first outlen bytes of K(1) | K(2) ... */
static int kdf_sha2(const fk_hmac_key *base, const uint8_t *label, size_t llen, const uint8_t *ctx, size_t clen,
                    uint8_t *out, size_t outlen)
{
    uint8_t ib[4], kb[4], blk[FK_MAX_DIGEST];
    const uint8_t zero = 0;
    size_t dl = md_size(base->md), done = 0, take;
    uint32_t i = 1;
    md_ctx c;

    if (dl == 0)
        return FK_ERR_ENCTYPE;
    if (outlen > UINT32_MAX / 8)
        return FK_ERR_LENGTH;
    be32(kb, (uint32_t)(outlen * 8));
    while (done < outlen) {
        be32(ib, i++);
        hmac_begin(base, &c);
        md_update(base->md, &c, ib, 4);
        md_update(base->md, &c, label, llen);
        md_update(base->md, &c, &zero, 1);
        md_update(base->md, &c, ctx, clen);
        md_update(base->md, &c, kb, 4);
        hmac_end(base, &c, blk);
        take = outlen - done < dl ? outlen - done : dl;
        memcpy(out + done, blk, take);
        done += take;
    }
    wipe(blk, sizeof(blk));
    wipe(&c, sizeof(c));
    return FK_OK;
}

static int key_ok(int enctype, size_t keylen)
{
    size_t want, h, cf;

    if (fk_enctype_info(enctype, &want, &h, &cf) != FK_OK)
        return FK_ERR_ENCTYPE;
    return keylen == want ? FK_OK : FK_ERR_KEYSIZE;
}

int fk_derive(int enctype, const uint8_t *key, size_t keylen, const uint8_t *constant, size_t clen,
              uint8_t *out, size_t outlen)
{
    int rc;

    if (enctype != 17 && enctype != 18 && enctype != 19 && enctype != 20)
        return FK_ERR_ENCTYPE;
    if ((rc = key_ok(enctype, keylen)) != FK_OK)
        return rc;
    if (enctype == 17 || enctype == 18) {
        uint8_t folded[AES_BLOCK];

        if (clen == 0)
            return FK_ERR_LENGTH;
        fk_nfold(constant, clen, folded, AES_BLOCK);
        return aes_dk_blocks(key, keylen, folded, 1, out, outlen);
    } else {
        fk_hmac_key base;

        fk_hmac_init(&base, sha2_md(enctype), key, keylen);
        rc = kdf_sha2(&base, constant, clen, NULL, 0, out, outlen);
        wipe(&base, sizeof(base));
        return rc;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Enctype table                                                                                    */

int fk_enctype_info(int enctype, size_t *keylen, size_t *hlen, size_t *conflen)
{
    size_t k, h, c;

    switch (enctype) {
    case 17: k = 16; h = 12; c = 16; break;
    case 18: k = 32; h = 12; c = 16; break;
    case 19: k = 16; h = 16; c = 16; break;
    case 20: k = 32; h = 24; c = 16; break;
    case 23: k = 16; h = 16; c = 8; break;
    default: return FK_ERR_ENCTYPE;
    }
    if (keylen) *keylen = k;
    if (hlen) *hlen = h;
    if (conflen) *conflen = c;
    return FK_OK;
}

int fk_enctype_cksumtype(int enctype)
{
    switch (enctype) {
    case 17: return 15;
    case 18: return 16;
    case 19: return 19;
    case 20: return 20;
    case 23: return -138;
    default: return 0;
    }
}

int fk_cksumtype_info(int cksumtype, int *enctype, size_t *len)
{
    int e;
    size_t n;

    switch (cksumtype) {
    case 15: e = 17; n = 12; break;
    case 16: e = 18; n = 12; break;
    case 19: e = 19; n = 16; break;
    case 20: e = 20; n = 24; break;
    case -138: e = 23; n = 16; break;
    default: return FK_ERR_ENCTYPE;
    }
    if (enctype) *enctype = e;
    if (len) *len = n;
    return FK_OK;
}

/* RFC 4757 §3 key usage numbers as Microsoft uses them. RFC 4757 lists 9 -> 8, but Windows, MIT
 * (since 1.7) and Heimdal all keep 9: TGS-REP parts under a subkey are never seen by an acceptor. */
static uint32_t rc4_usage(uint32_t usage)
{
    switch (usage) {
    case 3: return 8;
    case 23: return 13;
    default: return usage;
    }
}

static inline void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int fk_ekey_init(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage)
{
    return fk_ekey_init_flags(k, enctype, key, keylen, usage, 0);
}

int fk_ekey_init_flags(fk_ekey *k, int enctype, const uint8_t *key, size_t keylen, uint32_t usage,
                       unsigned flags)
{
    size_t want, hlen, conflen;
    int with_kc = !(flags & FK_EKEY_NO_CHECKSUM);
    int rc;

    /* no memset of the whole struct (1 KiB, most of this function's own time on every request): every field
     * a caller reads is set below on success, the HMAC states by fk_hmac_init; kc.md 0 means no checksum key */
    k->ki.md = 0;
    k->kc.md = 0;
    k->kelen = 0;
    if (fk_enctype_info(enctype, &want, &hlen, &conflen) != FK_OK)
        return FK_ERR_ENCTYPE;
    if (keylen != want)
        return FK_ERR_KEYSIZE;
    k->enctype = enctype;
    k->usage = usage;
    k->keylen = keylen;
    k->hlen = hlen;
    k->conflen = conflen;
    k->cksumtype = fk_enctype_cksumtype(enctype);
    k->cksumlen = hlen;
    memcpy(k->key, key, keylen);

    if (enctype == 17 || enctype == 18) {
        /* RFC 3961 §5.3: Kc, Ke, Ki = DK(base, usage | 0x99 / 0xAA / 0x55), all three in one pass. */
        uint8_t folded[3 * AES_BLOCK], dk[3 * FK_MAX_KEY];

        usage_folds(usage, folded);
        /* folded = Kc | Ke | Ki constants; without Kc derive only the last two. */
        rc = aes_dk_blocks(key, keylen, folded + (with_kc ? 0 : AES_BLOCK), with_kc ? 3 : 2, dk, keylen);
        if (rc == FK_OK) {
            const uint8_t *ke = with_kc ? dk + keylen : dk;

            memcpy(k->ke, ke, keylen);
            k->kelen = keylen;
            fk_hmac_init(&k->ki, FK_MD_SHA1, ke + keylen, keylen);
            if (with_kc)
                fk_hmac_init(&k->kc, FK_MD_SHA1, dk, keylen);
        }
        wipe(dk, sizeof(dk));
    } else if (enctype == 19 || enctype == 20) {
        /* RFC 8009 §5: Ke = KDF(base, usage|0xAA, keylen), Ki/Kc = KDF(base, usage|0x55/0x99, MAC len). */
        fk_hmac_key base;
        uint8_t cst[5], d[FK_MAX_KEY];
        int md = sha2_md(enctype);

        be32(cst, usage);
        fk_hmac_init(&base, md, key, keylen);
        cst[4] = 0xAA;
        rc = kdf_sha2(&base, cst, 5, NULL, 0, k->ke, keylen);
        k->kelen = keylen;
        cst[4] = 0x55;
        if (rc == FK_OK && (rc = kdf_sha2(&base, cst, 5, NULL, 0, d, hlen)) == FK_OK)
            fk_hmac_init(&k->ki, md, d, hlen);
        cst[4] = 0x99;
        if (with_kc && rc == FK_OK && (rc = kdf_sha2(&base, cst, 5, NULL, 0, d, hlen)) == FK_OK)
            fk_hmac_init(&k->kc, md, d, hlen);
        wipe(&base, sizeof(base));
        wipe(d, sizeof(d));
    } else {
        /* RFC 4757: K1 = HMAC-MD5(K, T) keys the message MAC; Ksign = HMAC-MD5(K, "signaturekey\0"). */
        static const uint8_t sigkey[] = "signaturekey";  /* the NUL terminator is part of the constant */
        uint8_t t[4], d[MD5_DIGEST_LENGTH];

        le32(t, rc4_usage(usage));
        hmac_once(FK_MD_MD5, key, keylen, t, 4, d);
        fk_hmac_init(&k->ki, FK_MD_MD5, d, sizeof(d));
        if (with_kc) {
            hmac_once(FK_MD_MD5, key, keylen, sigkey, sizeof(sigkey), d);
            fk_hmac_init(&k->kc, FK_MD_MD5, d, sizeof(d));
        }
        wipe(d, sizeof(d));
        rc = FK_OK;
    }
    if (rc != FK_OK)
        fk_ekey_clear(k);
    return rc;
}

void fk_ekey_clear(fk_ekey *k)
{
    wipe(k, sizeof(*k));
}

/* ---------------------------------------------------------------------------------------------- */
/* Encryption                                                                                       */

size_t fk_encrypt_len(const fk_ekey *k, size_t ptlen)
{
    return k->conflen + ptlen + k->hlen;
}

int fk_decrypt(const fk_ekey *k, const uint8_t *ct, size_t ctlen, uint8_t *out, size_t *outlen)
{
    uint8_t mac[FK_MAX_DIGEST];
    size_t n;
    int rc;

    *outlen = 0;
    if (ctlen < k->conflen + k->hlen || ctlen > MAX_CHUNK)
        return FK_ERR_LENGTH;
    n = ctlen - k->hlen;  /* AES: confounder | plaintext, encrypted */

    switch (k->enctype) {
    case 17:
    case 18:
        /* RFC 3962: the MAC covers the plaintext, so decrypt first; nothing leaves before it verifies. */
        if ((rc = cts_decrypt(k->ke, k->kelen, ZERO_IV, ct, n, out)) != FK_OK)
            return rc;
        fk_hmac(&k->ki, out, n, NULL, 0, mac);
        if (CRYPTO_memcmp(mac, ct + n, k->hlen) != 0) {
            wipe(out, n);
            return FK_ERR_INTEGRITY;
        }
        break;
    case 19:
    case 20:
        /* RFC 8009 §5: encrypt-then-MAC over IV | C; verify before decrypting anything. */
        fk_hmac(&k->ki, ZERO_IV, AES_BLOCK, ct, n, mac);
        if (CRYPTO_memcmp(mac, ct + n, k->hlen) != 0)
            return FK_ERR_INTEGRITY;
        if ((rc = cts_decrypt(k->ke, k->kelen, ZERO_IV, ct, n, out)) != FK_OK)
            return rc;
        break;
    case 23: {
        /* RFC 4757: ct = HMAC(K1, conf | pt) | RC4(K3, conf | pt), K3 = HMAC(K1, that checksum). */
        RC4_KEY rc4;
        uint8_t k3[MD5_DIGEST_LENGTH];

        n = ctlen - MD5_DIGEST_LENGTH;
        fk_hmac(&k->ki, ct, MD5_DIGEST_LENGTH, NULL, 0, k3);
        RC4_set_key(&rc4, (int)sizeof(k3), k3);
        RC4(&rc4, n, ct + MD5_DIGEST_LENGTH, out);
        wipe(&rc4, sizeof(rc4));
        wipe(k3, sizeof(k3));
        fk_hmac(&k->ki, out, n, NULL, 0, mac);
        if (CRYPTO_memcmp(mac, ct, MD5_DIGEST_LENGTH) != 0) {
            wipe(out, n);
            return FK_ERR_INTEGRITY;
        }
        break;
    }
    default:
        return FK_ERR_ENCTYPE;
    }
    memmove(out, out + k->conflen, n - k->conflen);
    *outlen = n - k->conflen;
    return FK_OK;
}

int fk_encrypt(const fk_ekey *k, const uint8_t *conf, const uint8_t *pt, size_t ptlen,
               uint8_t *out, size_t *outlen)
{
    uint8_t mac[FK_MAX_DIGEST];
    size_t n = k->conflen + ptlen;
    int rc;

    *outlen = 0;
    if (ptlen > MAX_CHUNK - 64)
        return FK_ERR_LENGTH;
    switch (k->enctype) {
    case 17:
    case 18:
    case 19:
    case 20:
        if (conf)
            memcpy(out, conf, k->conflen);
        else if (confounder(out, k->conflen) != FK_OK)
            return FK_ERR_INTERNAL;
        if (ptlen)
            memmove(out + k->conflen, pt, ptlen);
        if (k->enctype <= 18)  /* RFC 3962: MAC the plaintext */
            fk_hmac(&k->ki, out, n, NULL, 0, mac);
        if ((rc = cts_encrypt(k->ke, k->kelen, ZERO_IV, out, n, out)) != FK_OK)
            return rc;
        if (k->enctype >= 19)  /* RFC 8009: MAC IV | ciphertext */
            fk_hmac(&k->ki, ZERO_IV, AES_BLOCK, out, n, mac);
        memcpy(out + n, mac, k->hlen);
        break;
    case 23: {
        RC4_KEY rc4;
        uint8_t k3[MD5_DIGEST_LENGTH];
        uint8_t *body = out + MD5_DIGEST_LENGTH;

        if (conf)
            memcpy(body, conf, k->conflen);
        else if (confounder(body, k->conflen) != FK_OK)
            return FK_ERR_INTERNAL;
        if (ptlen)
            memmove(body + k->conflen, pt, ptlen);
        fk_hmac(&k->ki, body, n, NULL, 0, out);  /* the checksum leads the message */
        fk_hmac(&k->ki, out, MD5_DIGEST_LENGTH, NULL, 0, k3);
        RC4_set_key(&rc4, (int)sizeof(k3), k3);
        RC4(&rc4, n, body, body);
        wipe(&rc4, sizeof(rc4));
        wipe(k3, sizeof(k3));
        break;
    }
    default:
        return FK_ERR_ENCTYPE;
    }
    *outlen = n + k->hlen;
    return FK_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Keyed checksums                                                                                  */

int fk_checksum(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len, uint8_t *out, size_t *outlen)
{
    uint8_t full[FK_MAX_DIGEST];

    *outlen = 0;
    if (cksumtype != k->cksumtype || cksumtype == 0 || k->kc.md == 0)  /* kc.md 0: FK_EKEY_NO_CHECKSUM */
        return FK_ERR_ENCTYPE;
    if (cksumtype == -138) {
        /* RFC 4757 §4: HMAC-MD5(Ksign, MD5(T | data)), T the translated usage, little-endian. */
        MD5_CTX c;
        uint8_t t[4], h[MD5_DIGEST_LENGTH];

        le32(t, rc4_usage(k->usage));
        MD5_Init(&c);
        MD5_Update(&c, t, 4);
        if (len)
            MD5_Update(&c, data, len);
        MD5_Final(h, &c);
        fk_hmac(&k->kc, h, sizeof(h), NULL, 0, full);
    } else {
        /* RFC 3962 §7 / RFC 8009 §5: HMAC(Kc, data) truncated. */
        fk_hmac(&k->kc, data, len, NULL, 0, full);
    }
    memcpy(out, full, k->cksumlen);
    *outlen = k->cksumlen;
    return FK_OK;
}

int fk_checksum_verify(const fk_ekey *k, int cksumtype, const uint8_t *data, size_t len,
                       const uint8_t *mac, size_t maclen)
{
    uint8_t want[FK_MAX_DIGEST];
    size_t wl;
    int rc = fk_checksum(k, cksumtype, data, len, want, &wl);

    if (rc != FK_OK)
        return rc;
    if (maclen != wl)
        return FK_ERR_INTEGRITY;
    return CRYPTO_memcmp(want, mac, wl) == 0 ? FK_OK : FK_ERR_INTEGRITY;
}

/* ---------------------------------------------------------------------------------------------- */
/* PRF                                                                                              */

int fk_prf(int enctype, const uint8_t *key, size_t keylen, const uint8_t *in, size_t len,
           uint8_t *out, size_t *outlen)
{
    static const uint8_t prf[3] = {'p', 'r', 'f'};
    int rc;

    *outlen = 0;
    if ((rc = key_ok(enctype, keylen)) != FK_OK)
        return rc;
    if (enctype == 17 || enctype == 18) {
        /* RFC 3962 §6: E(DK(key, "prf"), truncate16(SHA-1(in))) with a zero IV: one AES block. */
        uint8_t h[SHA_DIGEST_LENGTH], kp[FK_MAX_KEY];
        EVP_CIPHER_CTX *c;
        SHA_CTX s;

        SHA1_Init(&s);
        if (len)
            SHA1_Update(&s, in, len);
        SHA1_Final(h, &s);
        if ((rc = fk_derive(enctype, key, keylen, prf, sizeof(prf), kp, keylen)) != FK_OK)
            return rc;
        c = enc_ctx(aes_kind(keylen, 0), kp, NULL);
        wipe(kp, sizeof(kp));
        if (c == NULL || !blocks(c, out, h, AES_BLOCK))
            return FK_ERR_INTERNAL;
        *outlen = AES_BLOCK;
        return FK_OK;
    }
    if (enctype == 19 || enctype == 20) {
        /* RFC 8009 §5: KDF-HMAC-SHA2(key, "prf", in, 256 or 384 bits). */
        fk_hmac_key base;
        size_t n = enctype == 19 ? 32 : 48;

        fk_hmac_init(&base, sha2_md(enctype), key, keylen);
        rc = kdf_sha2(&base, prf, sizeof(prf), in, len, out, n);
        wipe(&base, sizeof(base));
        if (rc == FK_OK)
            *outlen = n;
        return rc;
    }
    return FK_ERR_ENCTYPE;
}
