/* Shared-memory replay cache: one table in a memory-mapped file, shared by every process on the host
 * that opens the same path (the workers of a sidecar), surviving the restart of all of them.
 *
 * Layout: a 4 KiB header (magic, version, geometry, hash seed, creation time, a checksum of those, and
 * per-process statistics lanes), then buckets of 4 slots of 16 bytes (64 bytes, one cache line). A key
 * has two candidate buckets (keyed SipHash); lookups read both, an insert takes a free or expired slot in
 * the emptier one ("two choices" keeps buckets balanced, so the probe length is bounded by 8 slots and
 * an insert that finds no room fails closed with FK_RC_FULL).
 *
 * No lock on the hot path. A slot's state word (C11 atomics, shared across processes) is
 *     0 = EMPTY | expiry seconds (32) . fingerprint (30) . phase (2: BUSY = 1, READY = 2)
 * and is claimed by one compare-and-swap (EMPTY or expired -> BUSY, with the expiry and fingerprint),
 * then the second word (a further 32-bit fingerprint and the first-seen time) is written and the state
 * published READY. Readers count a live BUSY slot with the same fingerprint as present. After its claim an
 * insert re-reads both buckets: of two concurrent inserts of one key, the later claim always sees the
 * earlier (seq_cst), so at most one is answered "fresh". A process killed between claim and publish
 * leaves a BUSY slot that carries its expiry: present until then, reusable after. Slots are never
 * emptied, only overwritten once expired, so no scan is ever needed.
 *
 * A slot holds a fingerprint, not the key: two candidate buckets (keyed hash), 30 + 32 bits of the key.
 * A collision can only make a fresh authenticator look like a replay (fail closed), never the reverse;
 * its odds are ~2^-58 per insert.
 *
 * The file is created (or, when missing, of another version, or damaged, re-created) under an flock
 * on "<path>.lock", written to a temporary name and renamed into place, so no process ever maps a
 * half-made file. Every process re-checks about once a second that the path still names the file it
 * mapped; when it was replaced it maps the new one, and, the new table being empty, applies the
 * cold-start rule itself (FK_RC_COLD) for clock_skew seconds.
 */
#ifndef FASTKRB_SHM_H
#define FASTKRB_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "rcache.h"

#define FK_SHM_VERSION 1

typedef struct fk_shm fk_shm;

typedef struct fk_shm_stats {
    uint64_t inserts, hits, evictions, full, errors, busy;   /* since the file was created, all processes */
    uint64_t entries;                                         /* live slots now (a scan) */
    uint64_t capacity, slots, remaps;
} fk_shm_stats;

/* Opens (or creates) the table at `path` sized for `capacity` live entries; an existing valid file keeps
 * its own geometry. `skew`/`cold_start` are the validator's, for the cold-start rule after a re-map.
 * On failure returns NULL and writes a reason (never a secret) into err. */
fk_shm *fk_shm_open(const char *path, size_t capacity, double skew, int cold_start, char *err, size_t errlen);
/* Inserts after close fail closed; the mapping is released by fk_shm_free. */
void fk_shm_close(fk_shm *s);
void fk_shm_free(fk_shm *s);
int fk_shm_insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen);
int fk_shm_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen);
/* Tests only: claim a slot for `key` (BUSY) and stop, as a process killed between claim and publish. */
int fk_shm_claim_only(fk_shm *s, const uint8_t key[16], double expiry, double now);
/* Tests only: insert while "another process" puts the same key into another free slot between this
 * insert's scan and its claim. Must answer FK_RC_REPLAY. */
int fk_shm_insert_raced(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen);
double fk_shm_started(fk_shm *s);     /* creation time of the mapped file */
uint64_t fk_shm_capacity(fk_shm *s);  /* live entries the mapped file was sized for */
int fk_shm_created(fk_shm *s);        /* 1 when this open created or re-created the file */
void fk_shm_stats_get(fk_shm *s, double now, fk_shm_stats *out);

#endif
