/* libFuzzer target: the shared-memory replay cache (native/shm.c: the table of rtab.c in a mapped file,
 * under the file's lock) against the reference model of fz_rcmodel.h, exactly as fuzz_rcache.c checks
 * the in-process cache. Each input opens a fresh table (a file under /dev/shm, else $TMPDIR, capacity
 * 16); the crash paths (a writer killed inside the lock) are tested with real processes in
 * tests/test_replay_shm.py. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fz_rcmodel.h"
#include "shm.h"

static uint64_t entries(void *ctx)
{
    fk_shm_stats st;
    fk_shm_stats_get(ctx, &st);
    FZ_CHECK(st.errors == 0 && st.recoveries == 0);
    return st.entries;
}

static uint64_t capacity(void *ctx)
{
    return fk_shm_capacity(ctx);
}

static void close_cache(void *ctx)
{
    fk_shm_close(ctx);
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
    fk_shm *s = fk_shm_open(path, FZ_CAP, 300.0, 0, err, sizeof err);
    if (!s) {
        fprintf(stderr, "fk_shm_open: %s\n", err);
        abort();
    }
    fz_cache c = {s, fk_shm_insert_cb, close_cache, entries, capacity};
    fz_run_ops(&c, data, size);
    fk_shm_free(s);
    unlink(path);
    unlink(lock);
    return 0;
}
