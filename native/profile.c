/* Stage-by-stage cost of one validation, measured in C so that no Python call overhead hides a
 * stage's real cost. Used by benches/ and `fastkrb bench`; never on the validation path. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "validate.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Keep the optimiser from deleting loops whose results are unused. */
static volatile size_t sink;

int fk_profile_stages(const fk_validator *v, const uint8_t *tok, size_t toklen, double now, long iters,
                      fk_rc_backend rc, double *out)
{
    size_t need = fk_scratch_size(toklen);
    uint8_t *scratch = malloc(need);
    uint8_t *plain = malloc(toklen + 16);
    fk_result r;
    int code = FK_V_INTERNAL;
    if (!scratch || !plain)
        goto end;
    fk_validator nv = *v;
    nv.rc.insert = NULL;
    nv.rc.prefetch = NULL;   /* the full run must not fill the cache: replay is measured on its own */
    nv.cold_start = 0;
    code = fk_validate(&nv, tok, toklen, now, NULL, 0, scratch, need, &r);
    if (code != FK_V_OK)
        goto end;
    const fk_kt_entry *key = r.key;
    fk_buf raw;
    fk_frame fr;
    fk_apreq q;
    fk_enc_ticket t;
    fk_authenticator a;
    fk_ekey sk;
    fk_derr e;
    size_t n = 0;
    double t0;

    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_token_bytes(tok, toklen, scratch, &raw);
        fk_unframe(raw.p, raw.n, &fr, &e);
        n += fr.apreq.n;
    }
    out[FK_STAGE_FRAMING] = (now_ns() - t0) / (double)iters;

    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_decode_apreq(fr.apreq, &q, &e);
        n += q.tkt_cipher.n;
    }
    out[FK_STAGE_DER_APREQ] = (now_ns() - t0) / (double)iters;

    size_t plen = 0, alen = 0;
    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_decrypt(&key->tkt, q.tkt_cipher.p, q.tkt_cipher.n, plain, &plen);
        n += plen;
    }
    out[FK_STAGE_TICKET_DECRYPT] = (now_ns() - t0) / (double)iters;

    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_decode_enc_ticket((fk_buf){plain, plen}, &t, &e);
        n += t.key.n;
    }
    out[FK_STAGE_DER_TICKET] = (now_ns() - t0) / (double)iters;

    uint8_t skey[32];
    size_t sklen = t.key.n < sizeof skey ? t.key.n : sizeof skey;
    memcpy(skey, t.key.p, sklen);
    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_ekey_init_flags(&sk, t.keytype, skey, sklen, 11, FK_EKEY_NO_CHECKSUM);
        n += sk.kelen;
    }
    out[FK_STAGE_SESSION_KEY] = (now_ns() - t0) / (double)iters;

    uint8_t *aplain = scratch + toklen;
    t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        fk_decrypt(&sk, q.auth_cipher.p, q.auth_cipher.n, aplain, &alen);
        fk_decode_authenticator((fk_buf){aplain, alen}, &a, &e);
        n += (size_t)a.cusec;
    }
    out[FK_STAGE_AUTHENTICATOR] = (now_ns() - t0) / (double)iters;

    out[FK_STAGE_PAC] = 0;
    fk_buf pac;
    if (t.authdata.n && fk_find_authdata(t.authdata, 128, &pac) == 1 && v->verify_pac) {
        t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            fk_find_authdata(t.authdata, 128, &pac);
            n += (size_t)fk_check_pac(key, pac, scratch + 2 * toklen, &t, q.realm, &r);
        }
        out[FK_STAGE_PAC] = (now_ns() - t0) / (double)iters;
    }

    out[FK_STAGE_REPLAY_INSERT] = 0;
    if (rc.insert) {
        uint8_t k[16];
        double first;
        memcpy(k, r.replay_key, 16);
        /* fresh in every call too: a second profile() on the same cache must not time replays */
        uint64_t salt = 0;
        fk_random((uint8_t *)&salt, sizeof salt);
        memcpy(k + 8, &salt, sizeof salt);
        t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            memcpy(k, &i, sizeof i);   /* a fresh identity per insert, as in real traffic */
            n += (size_t)rc.insert(rc.ctx, k, now + 600.0, now, &first);
        }
        out[FK_STAGE_REPLAY_INSERT] = (now_ns() - t0) / (double)iters;
    }

    t0 = now_ns();
    for (long i = 0; i < iters; i++)
        n += (size_t)fk_validate(&nv, tok, toklen, now, NULL, 0, scratch, need, &r);
    out[FK_STAGE_FULL_VALIDATE] = (now_ns() - t0) / (double)iters;
    sink = n;
    code = FK_V_OK;
end:
    if (scratch)
        OPENSSL_cleanse(scratch, need);
    free(scratch);
    free(plain);
    return code;
}

#define FK_STAGE_NAME_(name) #name,
static const char *const stage_names[FK_NSTAGES] = { FK_STAGES(FK_STAGE_NAME_) };

const char *fk_stage_name(int stage)
{
    return stage >= 0 && stage < FK_NSTAGES ? stage_names[stage] : NULL;
}
