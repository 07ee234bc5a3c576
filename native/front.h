/* The sidecar's native request path: the two front doors' common case in C, around fk_validate.
 *
 * One call per received chunk (front.pxi) frames the requests, validates each with fk_validate and
 * encodes each answer with the same bytes as the Python front doors (src/fastkrb/sidecar/binary.py and
 * http.py), counts the decision (metrics) and formats its JSON log line (log.py). Everything this file
 * does not fully understand is left to Python: the HTTP head reader answers FK_HEAD_SLOW_* (strict
 * parsing: when in doubt, Python's httptools path decides), and an outcome that needs Python (a
 * rejection's typed error, a PAC identity to report, a name that is not UTF-8) is returned as such.
 */
#ifndef FASTKRB_FRONT_H
#define FASTKRB_FRONT_H

#include "validate.h"

/* A growable byte buffer (malloc). */
typedef struct fk_out {
    uint8_t *p;
    size_t n, cap;
} fk_out;

/* Room for `more` bytes after p[n]: 0, or -1 when memory is short. */
int fk_out_reserve(fk_out *o, size_t more);
void fk_out_free(fk_out *o);
/* Append n bytes (0, or -1 when memory is short); FK_OUT_APPENDS a string literal. */
int fk_out_append(fk_out *o, const void *p, size_t n);
#define FK_OUT_APPENDS(o, s) fk_out_append((o), (s), sizeof(s) - 1)
/* Case-insensitive ASCII equality of p[0..n) and the lower-case literal lit (header names, RFC 9110 §5.1). */
int fk_ascii_ieq(const uint8_t *p, size_t n, const char *lit);
/* s[0..n) as the inside of a JSON string, as Python's json.dumps(ensure_ascii=False) writes it; latin1: each
 * byte from 0x80 on is a character (its UTF-8 pair), as bytes.decode("latin-1") makes it. */
int fk_json_str(fk_out *o, const uint8_t *s, size_t n, int latin1);

#define FK_FRONT_MAX_BOUNDS 32

/* What the front counts natively, folded into the Python Stats at scrape time (metrics.py). */
typedef struct fk_front_stats {
    uint64_t accepted;                          /* decisions "accepted|ok" */
    uint64_t lat[FK_FRONT_MAX_BOUNDS + 1];      /* latency histogram: bisect_left over lat_bounds, +Inf last */
    double lat_sum;
    uint64_t skew[FK_FRONT_MAX_BOUNDS + 1];     /* |skew| histogram */
    double skew_sum;
} fk_front_stats;

typedef struct fk_front {
    fk_out out;              /* the answers of the current chunk */
    fk_out log;              /* decision lines not yet taken by the Python log */
    size_t log_lines;
    int log_decisions;       /* log.py's JsonLog.decisions */
    int worker;              /* the "worker" field of a log line; -1: null */
    double lat_bounds[FK_FRONT_MAX_BOUNDS];
    int nlat;
    double skew_bounds[FK_FRONT_MAX_BOUNDS];
    int nskew;
    fk_front_stats st;
    fk_out names;            /* client | server of the current answer (unparsed, RFC 1964 §2.1.1 style) */
    size_t client_n, server_n, short_n;
    long long stamp_sec;     /* the log time stamp's second, cached */
    char stamp[32];
    /* the constant middle of an accepted line ("event" .. the "worker" value) for the last names, enctype,
     * kvno and front door (log.py's _static): a sidecar mostly sees few principals */
    fk_out mid, mid_key;
} fk_front;

/* -- HTTP/1.1 request heads (RFC 9112) -------------------------------------------------------------- */

#define FK_HEAD_PARTIAL 0    /* no complete head yet, and what there is may become a fast one */
#define FK_HEAD_FAST 1       /* a GET/HEAD /auth with one Negotiate token and nothing the fast path skips */
#define FK_HEAD_SLOW_ONE 2   /* a complete, well-formed, bodiless head for Python (other path, policy, ...) */
#define FK_HEAD_SLOW_CONN 3  /* anything else: Python's parser takes the rest of the connection */

/* Heads longer than this, still incomplete, go to Python's incremental parser (a slow sender would make
 * the re-scan of every chunk quadratic). */
#define FK_HEAD_PARTIAL_MAX 8192

typedef struct fk_http_head {
    size_t len;              /* bytes of the head, through its empty line */
    int keep_alive;
    fk_buf token;            /* FAST: the base64 text after "Negotiate " */
    fk_buf xff;              /* X-Forwarded-For's value, p NULL when absent */
} fk_http_head;

/* Read one request head from p[0..n). max_head: the sidecar's max_request_size. */
int fk_http_read_head(const uint8_t *p, size_t n, size_t max_head, fk_http_head *h);

/* -- answers ------------------------------------------------------------------------------------------- */

/* Unparse the client and server names of an accepted result into f->names (validate.c's naming, as
 * result.pxi's _name). 0: done; 1: a name or the realm is not valid UTF-8 (Python answers); -1: memory. */
int fk_front_names(fk_front *f, const fk_result *r);
/* 1 when the result carries a PAC identity (a verified PAC with a LOGON_INFO): AuthResult.identity. */
int fk_front_has_identity(const fk_result *r);

/* ACCEPTED (ex 0) or ACCEPTED_EX without policy and identity (ex 1), protocol.py's encoders. 0 / -1. */
int fk_front_wire_accepted(fk_front *f, const fk_result *r, uint32_t rid, int ex);
/* HTTP 200 of http.py's _answer without policy or PAC identity. 0 / -1. */
int fk_front_http_accepted(fk_front *f, const fk_result *r, int close);

/* Count an accepted decision and its latency and |skew| (engine.py's _accepted). */
void fk_front_observe(fk_front *f, const fk_result *r, double latency);
/* A decision line's opening, `{"time":"<UTC second>.<ms>Z",` as log.py's _time writes it, into f->log (the
 * second's text cached); the session lines (sesscache.c) open with it too. 0 / -1. */
int fk_front_log_time(fk_front *f, double now);
/* log.py's JsonLog.accepted line. peer: the connection's peer, JSON-escaped without quotes; xff (p may
 * be NULL): X-Forwarded-For, appended as " for=<first 200 bytes, Latin-1>". 0 / -1. */
int fk_front_log_accepted(fk_front *f, const fk_result *r, int http, double latency, double now, fk_buf peer,
                          fk_buf xff);

#endif
