/* libFuzzer target: the in-process replay cache (native/rcache.c, the table of rtab.c) against the
 * reference model of fz_rcmodel.h: every result, first-seen time and entry count must agree. */
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
    fk_rcache *rc = fk_rcache_new(FZ_CAP);
    FZ_CHECK(rc != NULL);
    fz_cache c = {rc, fk_rcache_insert_cb, close_cache, entries, capacity};
    fz_run_ops(&c, data, size);
    fk_rcache_free(rc);
    return 0;
}
