/* libFuzzer target: the shared-memory replay cache (native/shm.c) against the properties it promises.
 *
 * Each input opens a fresh table (a file under /dev/shm, else $TMPDIR, capacity 16) and runs 4-byte operations
 * [key][dt][ttl][flags] as fuzz_rcache.c does: 80 identities with distinct fingerprints, lifetimes of
 * ttl/2 s plus (flags >> 3) ms; flags 0xff closes the table. The clock only moves forward here: a slot
 * is reused once expired by the clock of whoever inserts, so with clocks that disagree an entry near
 * its expiry may be gone for a process whose clock is behind (harmless: by then the authenticator is
 * past ctime + skew + 1 s for the process that reused it, and within a second of that for the other). Slots
 * keep whole-second expiries (rounded up) and the first-seen time in 1/65536 s (shm.h), so the model
 * tracks, for every identity, the expiry the table stores. Checked on every insert:
 *   - an identity the model holds live (stored expiry > floor(now)) is a replay, never fresh, and its
 *     first-seen time is the one the model recorded (to 2/65536 s);
 *   - an identity the model does not hold is never a replay (the fingerprints here are distinct);
 *   - FULL only when at least 8 identities are live (two candidate buckets of 4 slots), never ERROR
 *     before close, always ERROR after;
 *   - the statistics' live-entry count equals the model's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fz_common.h"
#include "shm.h"

#define NIDS 80

typedef struct model_entry {
    int used;
    uint64_t es;              /* stored expiry: whole seconds, rounded up */
    double seen;
} model_entry;

static uint64_t stored_expiry(double expiry)
{
    /* shm.c exp_seconds: rounded up, so an entry may live < 1 s longer, never shorter */
    if (!(expiry > 1.0))
        return 1;
    uint64_t e = (uint64_t)expiry;
    return (double)e < expiry ? e + 1 : e;
}

static int live(const model_entry *e, double now)
{
    return e->used && (double)e->es > now;
}

static void id_key(int id, uint8_t key[16])
{
    /* splitmix64 of the id: every byte differs between identities, so do the fingerprints */
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
    for (int i = 0; i < 2; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        memcpy(key + 8 * i, &z, 8);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[96], lock[112];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%.60s/fastkrb-fuzz-%d.shm", dir, (int)getpid());
        snprintf(lock, sizeof lock, "%s.lock", path);
    }
    unlink(path);
    char err[160];
    fk_shm *s = fk_shm_open(path, 16, 300.0, 0, err, sizeof err);
    if (!s) {
        fprintf(stderr, "fk_shm_open: %s\n", err);
        abort();
    }
    static model_entry m[NIDS];
    memset(m, 0, sizeof m);
    int closed = 0;
    double now = 1e9;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t flags = data[i + 3];
        if (flags == 0xff) {
            fk_shm_close(s);
            closed = 1;
            continue;
        }
        int id = data[i] % NIDS;
        double dt = (double)data[i + 1] / 4.0;
        now += dt;
        double expiry = now + (double)data[i + 2] / 2.0 + (double)(flags >> 3) * 1e-3;
        uint8_t key[16];
        id_key(id, key);
        int nlive = 0;
        for (int j = 0; j < NIDS; j++)
            nlive += live(&m[j], now);
        double first = -1;
        int got = fk_shm_insert(s, key, expiry, now, &first);
        if (closed) {
            FZ_CHECK(got == FK_RC_ERROR);
            continue;
        }
        FZ_CHECK(got != FK_RC_ERROR && got != FK_RC_COLD);
        if (live(&m[id], now)) {
            FZ_CHECK(got == FK_RC_REPLAY);
            FZ_CHECK(first > m[id].seen - 2.0 / 65536 && first < m[id].seen + 2.0 / 65536);
            continue;
        }
        FZ_CHECK(got != FK_RC_REPLAY);
        if (got == FK_RC_FULL) {
            FZ_CHECK(nlive >= 8);
            continue;
        }
        m[id].used = 1;
        m[id].es = stored_expiry(expiry);
        m[id].seen = now;
        fk_shm_stats st;
        fk_shm_stats_get(s, now, &st);
        uint64_t want = 0;
        for (int j = 0; j < NIDS; j++)
            want += live(&m[j], now);
        FZ_CHECK(st.entries == want);
    }
    fk_shm_free(s);
    unlink(path);
    unlink(lock);
    return 0;
}
