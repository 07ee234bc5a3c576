/* Shared by the libFuzzer targets: the fixed keytab (keys.h) turned into an fk_validator, the way
 * native/validator.pxi builds one from a Python Keytab, and a check that aborts (a finding) when an
 * invariant breaks. Targets link the native C files directly, so coverage and sanitizers see the real code. */
#ifndef FASTKRB_FUZZ_COMMON_H
#define FASTKRB_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "validate.h"

#define FZ_NKEYS (sizeof FZ_KEYS / sizeof FZ_KEYS[0])
#define FZ_NREALMS (sizeof FZ_REALMS / sizeof FZ_REALMS[0])

/* An invariant the code promises; breaking it is a finding like a sanitizer report. */
#define FZ_CHECK(cond)                                                                               \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)

static inline fk_buf fz_str(const char *s)
{
    return (fk_buf){(const uint8_t *)s, strlen(s)};
}

/* Every fixed key prepared for usages 2 (ticket) and 17 (PAC server signature). */
static inline fk_kt_entry *fz_keytab(void)
{
    static fk_kt_entry keys[FZ_NKEYS];
    static int ready;
    if (ready)
        return keys;
    for (size_t i = 0; i < FZ_NKEYS; i++) {
        const fz_key *k = &FZ_KEYS[i];
        fk_kt_entry *e = &keys[i];
        memset(e, 0, sizeof *e);
        e->realm = fz_str(k->realm);
        e->ncomp = 2;
        e->comp[0] = fz_str(k->c0);
        e->comp[1] = fz_str(k->c1);
        e->kvno = k->kvno;
        e->enctype = k->enctype;
        e->accepted = k->accepted;
        /* distinct principal index, as validator.pxi numbers them */
        e->princ = (int)i;
        for (size_t j = 0; j < i; j++)
            if (strcmp(FZ_KEYS[j].c1, k->c1) == 0) {
                e->princ = keys[j].princ;
                break;
            }
        e->princ_hash = fk_princ_hash(e);
        if (fk_ekey_init(&e->tkt, k->enctype, k->key, k->keylen, 2) != FK_OK ||
            fk_ekey_init(&e->pac, k->enctype, k->key, k->keylen, 17) != FK_OK) {
            fprintf(stderr, "fuzz keytab: key %zu does not initialise\n", i);
            abort();
        }
    }
    ready = 1;
    return keys;
}

static inline fk_buf *fz_realms(void)
{
    static fk_buf realms[FZ_NREALMS];
    for (size_t i = 0; i < FZ_NREALMS; i++)
        realms[i] = fz_str(FZ_REALMS[i]);
    return realms;
}

/* Input options byte of the validate target (fuzz_validate.c); the seed builder writes the same bits. */
#define FZ_OPT_CB 0x01          /* the acceptor has channel bindings (FZ_CB) */
#define FZ_OPT_REALMS 0x02      /* allow-list of client/transited realms on */
#define FZ_OPT_COLD 0x04        /* cold-start rule on, cache started at `now` - 10 s */
#define FZ_OPT_NO_PAC 0x08      /* verify_pac off */
#define FZ_OPT_RCACHE 0x10      /* a memory replay cache (validate twice: the second must be a replay) */
#define FZ_OPT_NO_RC4 0x20      /* enctype 23 not permitted */

static inline void fz_validator(fk_validator *v, unsigned opts, double now)
{
    memset(v, 0, sizeof *v);
    v->keys = fz_keytab();
    v->nkeys = FZ_NKEYS;
    v->permitted = (1ull << 17) | (1ull << 18) | (1ull << 19) | (1ull << 20);
    if (!(opts & FZ_OPT_NO_RC4))
        v->permitted |= 1ull << 23;
    v->skew = 300.0;
    v->max_token = 64 * 1024;
    if (opts & FZ_OPT_REALMS) {
        v->realms = fz_realms();
        v->nrealms = FZ_NREALMS;
    }
    v->verify_pac = !(opts & FZ_OPT_NO_PAC);
    v->cold_start = (opts & FZ_OPT_COLD) != 0;
    v->rc_started = now - 10.0;
}

#endif
