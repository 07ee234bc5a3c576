/* Shared-memory replay cache. See shm.h for the layout and the concurrency argument. */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kcrypto.h"

#define MAGIC 0x0143524252424b46ULL   /* "FKBRBRC\1" */
#define HEADER_SIZE 4096
#define SLOT_SIZE 16
#define BUCKET_SLOTS 4                /* one cache line */
#define NLANES 32
#define LANES_OFFSET 1024
#define CHECKED_BYTES 96              /* the header fields the checksum covers */
#define PHASE_BUSY 1u
#define PHASE_READY 2u
#define FP30(st) (((st) >> 2) & 0x3fffffffu)
#define EXP(st) ((st) >> 32)
#define SEEN_UNIT 65536.0             /* first-seen is stored as (expiry - seen) in 1/65536 s */
#define CLAIM_RETRIES 16
#define CHECK_INTERVAL_NS 1000000000LL

typedef struct slot {
    _Atomic uint64_t state;
    _Atomic uint64_t aux;             /* fingerprint (32) . (expiry - seen) * 65536 (32) */
} slot;

typedef struct header {
    uint64_t magic;
    uint32_t version, header_size;
    uint32_t slot_size, bucket_slots;
    uint64_t nbuckets;                /* power of two */
    uint64_t capacity;                /* live entries it was sized for */
    uint64_t file_size;
    uint64_t seed[2];
    double created;
    uint64_t reserved[3];
    uint64_t check;                   /* keyed hash of the CHECKED_BYTES above: a damaged header is seen */
} header;

typedef struct lane {                 /* one cache line per lane, so processes do not share counters */
    _Atomic uint64_t inserts, hits, evictions, full, errors, busy;
    uint64_t pad[2];
} lane;

_Static_assert(sizeof(slot) == SLOT_SIZE, "slot size");
_Static_assert(sizeof(header) == CHECKED_BYTES + 8, "header layout");
_Static_assert(sizeof(lane) == 64, "lane size");
_Static_assert(LANES_OFFSET + NLANES * sizeof(lane) <= HEADER_SIZE, "lanes fit the header");

typedef struct map {
    uint8_t *base;
    size_t size;
    header *hdr;
    slot *slots;
    uint64_t bmask;
    uint64_t seed[2];
    double created;
    dev_t dev;
    ino_t ino;
    int cold;                         /* mapped after a replacement: apply the cold-start rule here */
    struct map *older;                /* retired mappings, unmapped only by fk_shm_free */
} map;

struct fk_shm {
    _Atomic(map *) cur;
    pthread_mutex_t remap_mu;
    _Atomic int64_t next_check_ns;
    atomic_int closed;
    atomic_uint_fast64_t remaps;
    char *path;
    size_t capacity;
    double skew;
    int cold_start;
    int created;
    unsigned lane;
};

static const uint64_t CHECK_KEY[2] = {0x6661737466726b62ULL, 0x73686d2d68656164ULL};

static uint64_t header_check(const header *h)
{
    const uint8_t *p = (const uint8_t *)h;
    uint64_t seed[2] = {CHECK_KEY[0], CHECK_KEY[1]}, v = 0;
    for (size_t i = 0; i < CHECKED_BYTES; i += 16) {
        v = fk_sip16(seed, p + i);
        seed[0] ^= v;
    }
    return v;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t file_size_for(uint64_t nbuckets)
{
    return HEADER_SIZE + (size_t)nbuckets * BUCKET_SLOTS * SLOT_SIZE;
}

static lane *lanes(const map *m)
{
    return (lane *)(m->base + LANES_OFFSET);
}

enum { MAP_OK = 0, MAP_INVALID = 1, MAP_SYSERR = 2 };

/* Maps fd and checks that it is a table of our version, whole and undamaged. */
static int try_map(int fd, map **out, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "fstat: %s", strerror(errno));
        return MAP_SYSERR;
    }
    if ((size_t)st.st_size < HEADER_SIZE)
        return MAP_INVALID;
    header h;
    if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        return MAP_INVALID;
    if (h.magic != MAGIC || h.version != FK_SHM_VERSION || h.header_size != HEADER_SIZE ||
        h.slot_size != SLOT_SIZE || h.bucket_slots != BUCKET_SLOTS || h.nbuckets < 2 ||
        (h.nbuckets & (h.nbuckets - 1)) != 0 || h.nbuckets > ((uint64_t)1 << 32) ||
        h.file_size != file_size_for(h.nbuckets) || (uint64_t)st.st_size != h.file_size ||
        !(h.created > 0) || header_check(&h) != h.check)
        return MAP_INVALID;
    uint8_t *base = mmap(NULL, h.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return MAP_SYSERR;
    }
#ifdef MADV_HUGEPAGE
    /* huge pages where the file system offers them (tmpfs with shmem_enabled=advise): fewer TLB misses */
    madvise(base, h.file_size, MADV_HUGEPAGE);
#endif
    /* slots are written only as whole 64-bit words: phase 3, or an EMPTY state with a second word, is
     * something we never write: the file was damaged */
    slot *slots = (slot *)(base + HEADER_SIZE);
    size_t n = (size_t)h.nbuckets * BUCKET_SLOTS;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = atomic_load_explicit(&slots[i].state, memory_order_acquire);
        /* EMPTY with a second word is damage only if the slot is still EMPTY after reading that word:
         * a writer in another process claims (state 0 -> BUSY) before it stores aux, and a slot never
         * returns to EMPTY, so a concurrent claim between our two loads shows as a non-zero state here.
         * Without the re-read, a live table being written to was taken for damaged and replaced. */
        int empty_with_aux = s == 0 && atomic_load_explicit(&slots[i].aux, memory_order_acquire) != 0 &&
                             atomic_load_explicit(&slots[i].state, memory_order_acquire) == 0;
        if ((s & 3u) == 3u || empty_with_aux || (s != 0 && (s & 3u) == 0)) {
            munmap(base, h.file_size);
            return MAP_INVALID;
        }
    }
    map *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(base, h.file_size);
        snprintf(err, errlen, "out of memory");
        return MAP_SYSERR;
    }
    m->base = base;
    m->size = h.file_size;
    m->hdr = (header *)base;
    m->slots = slots;
    m->bmask = h.nbuckets - 1;
    m->seed[0] = h.seed[0];
    m->seed[1] = h.seed[1];
    m->created = h.created;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    *out = m;
    return MAP_OK;
}

/* Writes a fresh table under a temporary name and renames it over `path` (the caller holds the lock). */
static int create_file(const char *path, size_t capacity, char *err, size_t errlen)
{
    uint64_t nbuckets = 64;
    /* 4 slots per live entry: at capacity a bucket holds one live entry on average, and with two
     * choices a full bucket pair is rare (none in 2*10^7 simulated inserts at 10^6 live) */
    while (nbuckets * BUCKET_SLOTS < 4 * (uint64_t)capacity && nbuckets < ((uint64_t)1 << 32))
        nbuckets <<= 1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    header h;
    memset(&h, 0, sizeof h);
    h.magic = MAGIC;
    h.version = FK_SHM_VERSION;
    h.header_size = HEADER_SIZE;
    h.slot_size = SLOT_SIZE;
    h.bucket_slots = BUCKET_SLOTS;
    h.nbuckets = nbuckets;
    h.capacity = capacity;
    h.file_size = file_size_for(nbuckets);
    h.created = wall();
    int rc = -1;
    if (fk_random((uint8_t *)h.seed, sizeof h.seed) != FK_OK) {
        snprintf(err, errlen, "no random seed");
        goto out;
    }
    h.check = header_check(&h);
    if (ftruncate(fd, (off_t)h.file_size) != 0) {
        snprintf(err, errlen, "ftruncate %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(err, errlen, "write %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename to %s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        unlink(tmp);
    close(fd);
    free(tmp);
    return rc;
}

/* Maps the valid table at path, creating or replacing it (under the creation lock) when needed. */
static map *map_open(const char *path, size_t capacity, int *created, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        map *m = NULL;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            int r = try_map(fd, &m, err, errlen);
            close(fd);
            if (r == MAP_OK)
                return m;
            if (r == MAP_SYSERR)
                return NULL;
        } else if (errno != ENOENT) {
            snprintf(err, errlen, "open %s: %s", path, strerror(errno));
            return NULL;
        }
        /* missing, other version or damaged: (re)create it, once, under the lock */
        size_t plen = strlen(path);
        char *lpath = malloc(plen + 6);
        if (!lpath) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(lpath, path, plen);
        memcpy(lpath + plen, ".lock", 6);
        int lfd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        free(lpath);
        if (lfd < 0) {
            snprintf(err, errlen, "open %s.lock: %s", path, strerror(errno));
            return NULL;
        }
        while (flock(lfd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                snprintf(err, errlen, "flock %s.lock: %s", path, strerror(errno));
                close(lfd);
                return NULL;
            }
        }
        /* another process may have made it while we waited */
        int valid = 0;
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            int r = try_map(fd, &m, err, errlen);
            close(fd);
            if (r == MAP_OK)
                valid = 1;
        }
        int rc = valid ? 0 : create_file(path, capacity, err, errlen);
        flock(lfd, LOCK_UN);
        close(lfd);
        if (valid)
            return m;
        if (rc != 0)
            return NULL;
        *created = 1;
    }
    snprintf(err, errlen, "%s keeps changing under us", path);
    return NULL;
}

static void unmap(map *m)
{
    while (m) {
        map *o = m->older;
        munmap(m->base, m->size);
        free(m);
        m = o;
    }
}

fk_shm *fk_shm_open(const char *path, size_t capacity, double skew, int cold_start, char *err, size_t errlen)
{
    if (capacity < 16)
        capacity = 16;
    fk_shm *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->path = strdup(path);
    if (!s->path || pthread_mutex_init(&s->remap_mu, NULL) != 0) {
        free(s->path);
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->capacity = capacity;
    s->skew = skew;
    s->cold_start = cold_start;
    s->lane = (unsigned)getpid() % NLANES;
    map *m = map_open(path, capacity, &s->created, err, errlen);
    if (!m) {
        pthread_mutex_destroy(&s->remap_mu);
        free(s->path);
        free(s);
        return NULL;
    }
    atomic_init(&s->cur, m);
    atomic_init(&s->next_check_ns, mono_ns() + CHECK_INTERVAL_NS);
    return s;
}

void fk_shm_close(fk_shm *s)
{
    atomic_store(&s->closed, 1);
}

void fk_shm_free(fk_shm *s)
{
    if (!s)
        return;
    unmap(atomic_load(&s->cur));
    pthread_mutex_destroy(&s->remap_mu);
    free(s->path);
    free(s);
}

double fk_shm_started(fk_shm *s)
{
    return atomic_load_explicit(&s->cur, memory_order_acquire)->created;
}

uint64_t fk_shm_capacity(fk_shm *s)
{
    return atomic_load_explicit(&s->cur, memory_order_acquire)->hdr->capacity;
}

int fk_shm_created(fk_shm *s)
{
    return s->created;
}

/* About once a second: does the path still name the file we mapped? If it was replaced (re-created by
 * a process that found it damaged) or removed, map the current one, so that all processes share one
 * table again. */
static map *current(fk_shm *s)
{
    map *m = atomic_load_explicit(&s->cur, memory_order_acquire);
    int64_t t = mono_ns(), due = atomic_load_explicit(&s->next_check_ns, memory_order_relaxed);
    if (t < due || !atomic_compare_exchange_strong(&s->next_check_ns, &due, t + CHECK_INTERVAL_NS))
        return m;
    struct stat st;
    if (stat(s->path, &st) == 0 && st.st_dev == m->dev && st.st_ino == m->ino)
        return m;
    pthread_mutex_lock(&s->remap_mu);
    m = atomic_load(&s->cur);
    char err[160];
    int created = 0;
    map *n = map_open(s->path, s->capacity, &created, err, sizeof err);
    if (n) {
        if (n->dev == m->dev && n->ino == m->ino) {
            unmap(n);
        } else {
            n->cold = 1;
            n->older = m;
            atomic_store_explicit(&s->cur, n, memory_order_release);
            atomic_fetch_add(&s->remaps, 1);
            m = n;
        }
    }
    pthread_mutex_unlock(&s->remap_mu);
    return m;
}

static inline uint64_t exp_seconds(double expiry)
{
    if (!(expiry > 1.0))
        return 1;
    if (expiry >= 4294967295.0)
        return 4294967295ULL;
    uint64_t e = (uint64_t)expiry;
    return (double)e < expiry ? e + 1 : e;   /* rounded up: an entry may live < 1 s longer, never shorter */
}

static inline double seen_of(uint64_t st, uint64_t aux)
{
    return (double)EXP(st) - (double)(uint32_t)aux / SEEN_UNIT;
}

/* Does this slot hold `fp30/fp32` live (expiry > nows = floor(now))? 1 = yes (a READY slot sets *seen;
 * a BUSY one sets 0: present, time unknown). */
static inline int holds(slot *sl, uint64_t fp30, uint64_t fp32, uint64_t nows, double *seen)
{
    for (;;) {
        uint64_t st = atomic_load(&sl->state);
        if (FP30(st) != fp30 || st == 0 || EXP(st) <= nows)
            return 0;
        if ((st & 3u) == PHASE_BUSY) {
            *seen = 0;
            return 1;
        }
        uint64_t aux = atomic_load(&sl->aux);
        if (atomic_load(&sl->state) != st)
            continue;   /* overwritten while we read it: look again */
        if ((aux >> 32) != fp32)
            return 0;
        *seen = (uint32_t)aux == 0xffffffffu ? 0 : seen_of(st, aux);
        return 1;
    }
}

static int insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen, int die);

int fk_shm_insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return insert(s, key, expiry, now, first_seen, 0);
}

int fk_shm_claim_only(fk_shm *s, const uint8_t key[16], double expiry, double now)
{
    double first = 0;
    return insert(s, key, expiry, now, &first, 1);
}

int fk_shm_insert_raced(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return insert(s, key, expiry, now, first_seen, 2);
}

static int insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen, int die)
{
    if (atomic_load_explicit(&s->closed, memory_order_relaxed))
        return FK_RC_ERROR;
    map *m = current(s);
    lane *ln = &lanes(m)[s->lane];
    if (m->cold && s->cold_start) {
        double ctime = expiry - s->skew - 1.0;
        if (now < m->created + s->skew && ctime < m->created)
            return FK_RC_COLD;
    }
    uint64_t h = fk_sip16(m->seed, key);
    uint64_t b1 = h & m->bmask, b2 = (h >> 32) & m->bmask;
    if (b2 == b1)
        b2 = b1 ^ 1;
    slot *bk[2] = {m->slots + b1 * BUCKET_SLOTS, m->slots + b2 * BUCKET_SLOTS};
    __builtin_prefetch(bk[0], 1);
    __builtin_prefetch(bk[1], 1);
    uint64_t k0, k1;
    memcpy(&k0, key, 8);
    memcpy(&k1, key + 8, 8);
    uint64_t fp30 = (k0 >> 34) & 0x3fffffffu;
    uint64_t fp32 = (uint32_t)k1 ^ (uint32_t)(k1 >> 32);
    uint64_t es = exp_seconds(expiry);
    /* expiries are whole seconds: expiry > now  <=>  expiry > floor(now) */
    uint64_t nows = !(now > 0) ? 0 : now >= 4294967295.0 ? 4294967295ULL : (uint64_t)now;
    double back = ((double)es - now) * SEEN_UNIT;
    uint64_t aux = (fp32 << 32) | (back <= 0 ? 0 : back >= 4294967295.0 ? 0xffffffffu : (uint64_t)back);
    uint64_t busy = (es << 32) | (fp30 << 2) | PHASE_BUSY;
    uint64_t ready = (es << 32) | (fp30 << 2) | PHASE_READY;

    for (int attempt = 0; attempt < CLAIM_RETRIES; attempt++) {
        slot *cand[2] = {NULL, NULL};
        uint64_t cstate[2] = {0, 0};
        int nlive[2] = {0, 0};
        for (int b = 0; b < 2; b++) {
            for (int j = 0; j < BUCKET_SLOTS; j++) {
                slot *sl = &bk[b][j];
                uint64_t st = atomic_load_explicit(&sl->state, memory_order_acquire);
                if (st == 0 || EXP(st) <= nows) {
                    if (!cand[b]) {
                        cand[b] = sl;
                        cstate[b] = st;
                    }
                    continue;
                }
                nlive[b]++;
                if (FP30(st) == fp30 && holds(sl, fp30, fp32, nows, first_seen)) {
                    if (*first_seen == 0)
                        atomic_fetch_add_explicit(&ln->busy, 1, memory_order_relaxed);
                    atomic_fetch_add_explicit(&ln->hits, 1, memory_order_relaxed);
                    return FK_RC_REPLAY;
                }
            }
        }
        int pick = !cand[0] ? 1 : !cand[1] ? 0 : nlive[1] < nlive[0];
        slot *mine = cand[pick];
        if (!mine) {
            atomic_fetch_add_explicit(&ln->full, 1, memory_order_relaxed);
            return FK_RC_FULL;
        }
        if (die == 2) {
            /* tests only: another process inserts the same key into a different free slot between
             * our scan and our claim (the interleaving the re-read after the claim exists for) */
            die = 0;
            for (int b = 0; b < 2; b++)
                for (int j = 0; j < BUCKET_SLOTS; j++) {
                    slot *sl = &bk[b][j];
                    uint64_t st = atomic_load(&sl->state);
                    if (sl != mine && (st == 0 || EXP(st) <= nows) && atomic_compare_exchange_strong(&sl->state, &st, busy)) {
                        atomic_store(&sl->aux, aux);
                        atomic_store(&sl->state, ready);
                        goto raced;
                    }
                }
        }
    raced:;
        uint64_t old = cstate[pick];
        if (!atomic_compare_exchange_strong(&mine->state, &old, busy))
            continue;   /* another process took it first: look again */
        if (cstate[pick])
            atomic_fetch_add_explicit(&ln->evictions, 1, memory_order_relaxed);
        if (die)
            return FK_RC_OK;
        atomic_store_explicit(&mine->aux, aux, memory_order_release);   /* ordered after the claim */
        atomic_store_explicit(&mine->state, ready, memory_order_release);
        /* a concurrent insert of the same key that claimed before us is visible now */
        for (int b = 0; b < 2; b++) {
            for (int j = 0; j < BUCKET_SLOTS; j++) {
                slot *sl = &bk[b][j];
                if (sl != mine && holds(sl, fp30, fp32, nows, first_seen)) {
                    atomic_fetch_add_explicit(&ln->hits, 1, memory_order_relaxed);
                    return FK_RC_REPLAY;
                }
            }
        }
        atomic_fetch_add_explicit(&ln->inserts, 1, memory_order_relaxed);
        return FK_RC_OK;
    }
    atomic_fetch_add_explicit(&ln->errors, 1, memory_order_relaxed);
    return FK_RC_ERROR;
}

int fk_shm_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return fk_shm_insert((fk_shm *)ctx, key, expiry, now, first_seen);
}

void fk_shm_stats_get(fk_shm *s, double now, fk_shm_stats *out)
{
    memset(out, 0, sizeof *out);
    map *m = atomic_load_explicit(&s->cur, memory_order_acquire);
    for (int i = 0; i < NLANES; i++) {
        lane *l = &lanes(m)[i];
        out->inserts += atomic_load_explicit(&l->inserts, memory_order_relaxed);
        out->hits += atomic_load_explicit(&l->hits, memory_order_relaxed);
        out->evictions += atomic_load_explicit(&l->evictions, memory_order_relaxed);
        out->full += atomic_load_explicit(&l->full, memory_order_relaxed);
        out->errors += atomic_load_explicit(&l->errors, memory_order_relaxed);
        out->busy += atomic_load_explicit(&l->busy, memory_order_relaxed);
    }
    size_t n = (size_t)(m->bmask + 1) * BUCKET_SLOTS;
    for (size_t i = 0; i < n; i++) {
        uint64_t st = atomic_load_explicit(&m->slots[i].state, memory_order_relaxed);
        out->entries += st != 0 && (double)EXP(st) > now;
    }
    out->capacity = m->hdr->capacity;
    out->slots = n;
    out->remaps = atomic_load(&s->remaps);
}
