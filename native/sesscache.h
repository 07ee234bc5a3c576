/* The sidecar's native answers to session-cookie requests (docs/sessions.md, src/fastkrb/sidecar/sessions.py).
 *
 * Python opens a session cookie once (AES-GCM: the tag is what makes the value trustworthy) and registers
 * its exact value with the encoded 200 answer for a plain /auth (the identity headers, through the
 * Cache-Control line), the session's end (Unix seconds) and the constant parts of its decision log line.
 * A later GET/HEAD /auth head with no Authorization and exactly one Cookie header whose named cookie holds
 * a registered, unended value is answered here with those bytes. Everything else (a policy, a Negotiate or
 * bearer token, two Cookie headers, an unknown or ended value) is Python's, which opens the cookie in full.
 * Python empties the table when the key set or the group-name map changes.
 *
 * The table: open addressing with linear probing at a load of at most 1/2, backward-shift deletion, and a
 * CLOCK hand (a used bit per entry) that evicts an entry not used since the hand last passed, once the
 * table holds its maximum. Only values that opened are ever inserted, so a client cannot choose where they
 * land; a lookup compares the full value after a 64-bit hash match.
 */
#ifndef FASTKRB_SESSCACHE_H
#define FASTKRB_SESSCACHE_H

#include "front.h"

typedef struct fk_sess_entry {
    uint64_t hash;           /* 0: an empty slot */
    double end;              /* not served at or after this time (Unix seconds) */
    uint8_t *blob;           /* value | answer head | log middle | log tail, one allocation */
    uint32_t value_n, head_n, mid_n, tail_n;
    int used;                /* the CLOCK bit: served since the hand last passed */
} fk_sess_entry;

#define FK_SESS_NAME_MAX 256

typedef struct fk_sess {
    fk_sess_entry *slots;
    size_t mask;             /* slots - 1; slots a power of two, at least twice max */
    size_t count, max, hand;
    uint8_t name[FK_SESS_NAME_MAX];
    size_t name_n;
    uint64_t hits;           /* answers given, taken by Python's metrics */
} fk_sess;

/* 0, or -1 (memory, or a name longer than FK_SESS_NAME_MAX, or max 0). */
int fk_sess_init(fk_sess *s, const uint8_t *name, size_t name_n, size_t max);
void fk_sess_free(fk_sess *s);
void fk_sess_clear(fk_sess *s);
/* Register (or replace) a value. 0, or -1 when memory is short (then the table is as before). */
int fk_sess_put(fk_sess *s, const uint8_t *value, size_t value_n, const uint8_t *head, size_t head_n,
                const uint8_t *mid, size_t mid_n, const uint8_t *tail, size_t tail_n, double end);
/* 1 when the value was registered (and now is not), else 0. */
int fk_sess_drop(fk_sess *s, const uint8_t *value, size_t value_n);
/* The registered value's end, or -1 when it is not registered. */
double fk_sess_end(const fk_sess *s, const uint8_t *value, size_t value_n);

/* One complete, well-formed request head (fk_http_read_head: FK_HEAD_SLOW_ONE) p[0..n): 1 when it was
 * answered into f->out (and its decision line written into f->log when f->log_decisions), 0 when it is
 * Python's, -1 when memory is short. now: the clock (Unix seconds); peer: the connection's peer,
 * JSON-escaped without quotes. */
int fk_sess_http(fk_sess *s, fk_front *f, const uint8_t *p, size_t n, int close, double now, fk_buf peer);

#endif
