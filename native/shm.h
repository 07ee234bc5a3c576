/* Shared-memory replay cache: one table in a memory-mapped file, shared by every process on the host
 * that opens the same path (the workers of a sidecar), surviving the restart of all of them.
 *
 * Layout: a 4 KiB header (magic, version, geometry, hash seed, creation time and a checksum of those;
 * then shared counters), one 512-byte block per shard (its lock word and its table's control block),
 * then the three arrays of the replay table (rtab.h: tags, records, ring), each page-aligned and cut
 * into shards. A key's shard is picked by its keyed hash; the insert is the in-process cache's
 * (rtab.c) under that shard's lock. Shards keep at least 65,536 live entries each, up to 64 of them
 * (at 10^6 entries: 8 locks), so no lock is global and processes rarely meet on one; each is sized 5%
 * (+64) over its share of the capacity, as keys spread unevenly (so a sharded table holds at least
 * `capacity`, and refuses at a little more).
 *
 * A lock is a word holding its owner's identity (pid and start time, so a reused pid is told apart).
 * A process killed inside the lock leaves it held: a waiter that finds the owner gone (no such process,
 * a zombie, or another process under that pid) takes it over and re-derives the tags from the ring and
 * the records (fk_tab_rebuild), which a crash at any point leaves consistent: the insert the dead
 * process was making is kept whole if it had committed (its answer may have been given) and dropped
 * otherwise. A lock that one owner holds for 2 s (stopped, or dead in another pid namespace, where that
 * cannot be told) wedges the table: the waiter fails closed and replaces the file, as for damage (the
 * cold-start rule makes the loss of its entries safe).
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

#define FK_SHM_VERSION 2

typedef struct fk_shm fk_shm;

typedef struct fk_shm_stats {
    uint64_t inserts, hits, evictions, full, errors, recoveries;   /* since the file was created, all processes */
    uint64_t entries;                                               /* held now (live or not yet popped) */
    uint64_t capacity, slots, shards, remaps;
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
/* rcache.h's prefetch hint: the key's two buckets' tag lines, no lock, no state changed. */
void fk_shm_prefetch_cb(void *ctx, const uint8_t key[16]);
/* Tests only: take the lock and run the insert of `key` up to `stage` (fk_tab_insert's stop: 1..5),
 * then return holding the lock, as a process killed there would leave it. */
int fk_shm_die_in_insert(fk_shm *s, const uint8_t key[16], double expiry, double now, int stage);
double fk_shm_started(fk_shm *s);     /* creation time of the mapped file */
uint64_t fk_shm_capacity(fk_shm *s);  /* live entries the mapped file was sized for */
int fk_shm_created(fk_shm *s);        /* 1 when this open created or re-created the file */
void fk_shm_stats_get(fk_shm *s, fk_shm_stats *out);

#endif
