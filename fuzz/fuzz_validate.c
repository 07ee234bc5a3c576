/* libFuzzer target: the whole of fk_validate (native/validate.c and everything it calls) against the
 * fixed keytab of keys.h, so that mutations of real tokens get past decryption and reach the checks.
 *
 * Input: [now: 4 bytes big-endian unix seconds][options: 1 byte, FZ_OPT_* in fz_common.h][token...].
 * The seeds (fuzz/build_seeds.py) are tokens from a real MIT KDC and minted ones, each with `now` set
 * to its authenticator time, so they validate. Invariants checked on every input:
 *   - the verdict is a known code; an accepted token names the key that decrypted it, and that key is
 *     an accepted principal's;
 *   - with a replay cache, the same token a second time is a replay (never accepted twice);
 *   - after fk_scratch_wipe nothing past the decoded token is left in the scratch, and the session key
 *     slice lies in the wiped part (secrets do not outlive the call);
 *   - the reply (AP-REP / SPNEGO) lies in the scratch, and the verdict does not depend on the scratch's
 *     previous contents (the scratch is filled with a junk pattern first);
 *   - the reply sent back as a request (AP-REP reflection) is refused as malformed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_common.h"

static int inside(fk_buf s, const uint8_t *p, size_t n)
{
    return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

static void check_result(const fk_validator *v, const fk_result *r, int code, const uint8_t *tok, size_t toklen,
                         const uint8_t *scratch, size_t need)
{
    FZ_CHECK(code == r->code && code >= FK_V_OK && code <= FK_V_INTERNAL);
    FZ_CHECK(code != FK_V_INTERNAL);
    for (int i = 0; i < 4; i++)   /* ticket, authenticator, PAC copy: toklen each; the answer: the rest */
        FZ_CHECK(r->scratch_used[i] <= (i < 3 ? toklen : need - 4 * toklen));
    if (code == FK_V_OK) {
        FZ_CHECK(r->key != NULL && r->key >= v->keys && r->key < v->keys + v->nkeys);
        FZ_CHECK(r->key->accepted);
        FZ_CHECK(r->have_tkt && r->have_auth);
        FZ_CHECK(r->tkt.key.n > 0 && inside(r->tkt.key, scratch + toklen, r->scratch_used[0]));
        FZ_CHECK(inside(r->reply, scratch + 4 * toklen, r->scratch_used[3]));
        /* the ticket's enctype and the session key's are both permitted */
        FZ_CHECK((v->permitted >> r->req.tkt_etype) & 1);
        FZ_CHECK((v->permitted >> r->tkt.keytype) & 1);
        FZ_CHECK(r->mutual ? r->reply.n > 0 : 1);
    }
    if (r->what)
        FZ_CHECK(strlen(r->what) < 200);
    (void)tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    double now = (double)(((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3]);
    unsigned opts = data[4];
    const uint8_t *tok = data + 5;
    size_t toklen = size - 5;

    fk_validator v;
    fz_validator(&v, opts, now);
    fk_rcache *rc = NULL;
    if (opts & FZ_OPT_RCACHE) {
        rc = fk_rcache_new(16);
        FZ_CHECK(rc != NULL);
        v.rc.insert = fk_rcache_insert_cb;
        v.rc.prefetch = fk_rcache_prefetch_cb;
        v.rc.ctx = rc;
    }
    const uint8_t *cb = (opts & FZ_OPT_CB) ? FZ_CB : NULL;
    size_t cblen = cb ? sizeof FZ_CB : 0;

    /* the token in a buffer of its exact size, the scratch exactly as large as fk_scratch_size says */
    uint8_t *t = malloc(toklen ? toklen : 1);
    size_t need = fk_scratch_size(toklen);
    uint8_t *scratch = malloc(need);
    FZ_CHECK(t && scratch);
    memcpy(t, tok, toklen);
    memset(scratch, 0xa5, need);
    fk_result r;
    int code = fk_validate(&v, t, toklen, now, cb, cblen, scratch, need, &r);
    check_result(&v, &r, code, t, toklen, scratch, need);

    /* reflection: the acceptor's own answer (AP-REP, SPNEGO accept-completed) is never a request */
    if (code == FK_V_OK && r.reply.n) {
        uint8_t *echo = malloc(r.reply.n);
        size_t eneed = fk_scratch_size(r.reply.n);
        uint8_t *escratch = malloc(eneed);
        FZ_CHECK(echo && escratch);
        memcpy(echo, r.reply.p, r.reply.n);
        fk_result er;
        FZ_CHECK(fk_validate(&v, echo, r.reply.n, now, cb, cblen, escratch, eneed, &er) == FK_V_MALFORMED);
        fk_scratch_wipe(&er, escratch, r.reply.n);
        free(escratch);
        free(echo);
    }

    /* secrets: after the wipe, everything the call wrote past the decoded token is zero, and what it did not
     * mark as written still holds the 0xa5 it was filled with (nothing was written outside the marks) */
    fk_scratch_wipe(&r, scratch, toklen);
    for (size_t i = toklen; i < need; i++) {
        size_t region = toklen && i / toklen - 1 < 3 ? i / toklen - 1 : 3, off = i - (region + 1) * toklen;
        FZ_CHECK(scratch[i] == (off < r.scratch_used[region] ? 0 : 0xa5));
    }

    /* the same token on a scratch of other junk: the same verdict */
    memset(scratch, 0x5a, need);
    fk_result r2;
    fk_validator v2 = v;
    v2.rc.insert = NULL;   /* no second insert: this run only checks determinism */
    v2.rc.prefetch = NULL;
    int code2 = fk_validate(&v2, t, toklen, now, cb, cblen, scratch, need, &r2);
    FZ_CHECK(code2 == code || (code == FK_V_REPLAY && code2 == FK_V_OK));
    fk_scratch_wipe(&r2, scratch, toklen);

    if (rc) {
        /* the replay cache: accepted once, a replay the second time */
        if (code == FK_V_OK) {
            int again = fk_validate(&v, t, toklen, now, cb, cblen, scratch, need, &r2);
            FZ_CHECK(again == FK_V_REPLAY);
            FZ_CHECK(memcmp(r2.replay_key, r.replay_key, 16) == 0);
            fk_scratch_wipe(&r2, scratch, toklen);
        }
        fk_rcache_free(rc);
    }
    free(scratch);
    free(t);
    return 0;
}
