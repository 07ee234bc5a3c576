/* libFuzzer target: the in-process replay cache (native/rcache.c, the growing table of rtab.c) against
 * the reference model of fz_rcmodel.h: every result, first-seen time and entry count must agree. Each
 * input runs twice: on a cache whose first table already holds the capacity, and on one whose first
 * table holds 2 entries, so it grows (2, 4, 8, 16) and shrinks while the operations go on and replays
 * are looked up in a table being emptied. */
#include "fz_rcmodel.h"

static uint64_t entries(void *ctx)
{
    fk_rcache_stats st;
    fk_rcache_stats_get(ctx, &st);
    FZ_CHECK(st.inserts + st.hits + st.full >= st.entries);
    return st.entries;
}

static uint64_t capacity(void *ctx)
{
    fk_rcache_stats st;
    fk_rcache_stats_get(ctx, &st);
    return st.capacity;
}

static void close_cache(void *ctx)
{
    fk_rcache_close(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t first = FZ_CAP; first; first = first == FZ_CAP ? 2 : 0) {
        fk_rcache *rc = fk_rcache_new_sized(FZ_CAP, first);
        FZ_CHECK(rc != NULL);
        fz_cache c = {rc, fk_rcache_insert_cb, close_cache, entries, capacity};
        fz_run_ops(&c, data, size);
        fk_rcache_free(rc);
    }
    return 0;
}
