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
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "kcrypto.h"
#include "rtab.h"

#define MAGIC 0x0143524252424b46ULL   /* "FKBRBRC\1" */
#define HEADER_SIZE 4096
#define PAGE 4096
#define CHECKED_BYTES 96              /* the header fields the checksum covers */
#define SHARED_OFFSET 256
#define SHARD_BLOCK 512               /* per shard, after the header: its lock word and control block */
#define MAX_SHARDS 64
#define SHARD_MIN 65536               /* live entries a shard is made for, at least (but for one shard) */
#define CHECK_INTERVAL_NS 1000000000LL
#define LOCK_TIMEOUT_NS 2000000000LL  /* a lock is held for ~100 ns; a preempted owner runs again within ms */
#define OWNER_CHECK_NS 1000000LL      /* how often a waiter asks whether the owner still lives */

typedef struct header {
    uint64_t magic;
    uint32_t version, header_size;
    uint32_t rec_size, bucket_slots;
    uint64_t nbuckets;                /* per shard */
    uint64_t capacity;                /* live entries it was sized for */
    uint64_t file_size;
    uint64_t seed[2];
    double created;
    uint64_t pidns;                   /* the creator's pid namespace (lock owners are judged by pid) */
    uint64_t shards;                  /* tables, one lock each, a key's shard picked by its hash */
    uint64_t shard_capacity;          /* each shard's ring */
    uint64_t check;                   /* keyed hash of the CHECKED_BYTES above: a damaged header is seen */
} header;

typedef struct shared {               /* at SHARED_OFFSET: one cache line */
    _Atomic uint64_t foreign;         /* set once a process of another pid namespace opened the file */
    _Atomic uint64_t errors, recoveries;
} shared;

typedef struct shard_blk {
    _Atomic uint64_t lock;            /* 0, or the owner: pid | start time << 32 */
    uint64_t pad[7];                  /* the lock word alone on its cache line */
    fk_tab_ctl ctl;
} shard_blk;

_Static_assert(sizeof(header) == CHECKED_BYTES + 8, "header layout");
_Static_assert(SHARED_OFFSET >= sizeof(header) && SHARED_OFFSET + sizeof(shared) <= HEADER_SIZE, "header areas");
_Static_assert(sizeof(shard_blk) <= SHARD_BLOCK, "a shard's block");

typedef struct geometry {
    size_t tags, recs, ring, size;    /* offsets and the file size */
} geometry;

typedef struct map {
    uint8_t *base;
    size_t size;
    header *hdr;
    shared *sh;
    uint64_t shards;
    unsigned shard_shift;             /* 64 - log2(shards) */
    fk_tab *tabs;                     /* one per shard */
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

static size_t page_up(size_t n)
{
    return (n + PAGE - 1) & ~(size_t)(PAGE - 1);
}

/* Shards: as many as keep SHARD_MIN live entries each, up to MAX_SHARDS, so that a process holds one
 * of many locks; each is made 5% (+64) larger than its share, as keys spread over shards unevenly. */
static uint64_t shards_for(uint64_t capacity)
{
    uint64_t n = 1;
    while (n < MAX_SHARDS && capacity / (2 * n) >= SHARD_MIN)
        n *= 2;
    return n;
}

static uint64_t shard_capacity_for(uint64_t capacity, uint64_t shards)
{
    return shards == 1 ? capacity : (capacity + shards - 1) / shards * 21 / 20 + 64;
}

static geometry geometry_of(uint64_t shards, uint64_t nbuckets, uint64_t shard_capacity)
{
    geometry g;
    uint64_t slots = shards * nbuckets * FK_TAB_BUCKET;
    g.tags = page_up(HEADER_SIZE + (size_t)shards * SHARD_BLOCK);
    g.recs = g.tags + page_up((size_t)slots * sizeof(uint16_t));
    g.ring = g.recs + page_up((size_t)slots * sizeof(fk_tab_rec));
    g.size = g.ring + page_up((size_t)(shards * shard_capacity) * sizeof(fk_tab_ring));
    return g;
}

static shard_blk *block(const map *m, uint64_t i)
{
    return (shard_blk *)(m->base + HEADER_SIZE + i * SHARD_BLOCK);
}

/* -- the lock ---------------------------------------------------------------------------------------- */

static _Atomic uint64_t self_id;      /* pid | start time << 32; 0 = not known yet (and after fork) */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_self(void)
{
    atomic_store(&self_id, 0);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_self);
}

/* Field 22 of /proc/<pid>/stat (start time in clock ticks since boot) and field 3 (the state letter).
 * 1 = read, 0 = no such process, -1 = cannot tell (no /proc). */
static int proc_start(long pid, uint64_t *start, char *state)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');   /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ')
        return -1;
    *state = p[2];
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 1;
}

static uint64_t my_id(void)
{
    uint64_t id = atomic_load_explicit(&self_id, memory_order_relaxed);
    if (id)
        return id;
    pthread_once(&atfork_once, register_atfork);
    long pid = (long)getpid();
    uint64_t start = 0;
    char state = 0;
    if (proc_start(pid, &start, &state) != 1)
        start = 0;
    id = (uint64_t)(uint32_t)pid | (uint64_t)(uint32_t)start << 32;
    atomic_store(&self_id, id);
    return id;
}

static uint64_t pidns(void)
{
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Is the process that holds the lock gone? Only when that can be known: same pid namespace, and /proc
 * (or kill) answers. A process under the same pid with another start time is another process. */
static int owner_gone(const map *m, uint64_t owner)
{
    if (atomic_load(&m->sh->foreign))
        return 0;
    long pid = (long)(uint32_t)owner;
    if (pid == (long)(uint32_t)my_id())
        return 0;   /* another thread of ours */
    uint64_t start = 0;
    char state = 0;
    int r = proc_start(pid, &start, &state);
    if (r == 0)
        return 1;
    if (r < 0)
        return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    return state == 'Z' || state == 'X' || (uint32_t)start != (uint32_t)(owner >> 32);
}

enum { LOCKED = 0, LOCKED_AFTER_DEATH = 1, LOCK_WEDGED = 2 };

/* Spins briefly, then yields; every millisecond asks whether the owner is gone and takes the lock over
 * if so. One owner holding it for LOCK_TIMEOUT_NS (stopped, or dead where that cannot be told) wedges
 * the table: the caller replaces it. */
static int lock_table(const map *m, uint64_t shard)
{
    _Atomic uint64_t *lk = &block(m, shard)->lock;
    uint64_t id = my_id(), cur = 0;
    if (atomic_compare_exchange_strong(lk, &cur, id))
        return LOCKED;
    uint64_t holder = 0;
    int64_t since = 0, next_check = 0;
    for (unsigned spins = 0;; spins++) {
        cur = atomic_load_explicit(lk, memory_order_relaxed);
        if (cur == 0 && atomic_compare_exchange_strong(lk, &cur, id))
            return LOCKED;
        if (spins < 100) {
            fk_cpu_relax();
            continue;
        }
        sched_yield();
        if (spins % 16 || !cur)
            continue;
        int64_t t = mono_ns();
        if (cur != holder) {   /* someone else now: the lock moves, the clock starts again */
            holder = cur;
            since = t;
            next_check = t + OWNER_CHECK_NS;
        }
        if (t >= next_check) {
            next_check = t + OWNER_CHECK_NS;
            if (owner_gone(m, cur) && atomic_compare_exchange_strong(lk, &cur, id))
                return LOCKED_AFTER_DEATH;
        }
        if (t - since > LOCK_TIMEOUT_NS)
            return LOCK_WEDGED;
    }
}

static void unlock_table(const map *m, uint64_t shard)
{
    atomic_store_explicit(&block(m, shard)->lock, 0, memory_order_release);
}

/* Locks the table; after a dead owner, first makes it consistent again. 0, or FK_RC_ERROR with
 * *damaged set: wedged, or contradicting itself (then unlocked): the caller must replace the file. */
static int lock_consistent(const map *m, uint64_t shard, int *damaged)
{
    *damaged = 0;
    int r = lock_table(m, shard);
    if (r == LOCK_WEDGED) {
        atomic_fetch_add_explicit(&m->sh->errors, 1, memory_order_relaxed);
        *damaged = 1;
        return FK_RC_ERROR;
    }
    if (r == LOCKED_AFTER_DEATH) {
        atomic_fetch_add_explicit(&m->sh->recoveries, 1, memory_order_relaxed);
        if (fk_tab_rebuild(&m->tabs[shard]) != 0) {
            unlock_table(m, shard);
            *damaged = 1;
            return FK_RC_ERROR;
        }
    }
    return 0;
}

/* On a memory file system the file's pages already exist (create_file writes them), but each process
 * that maps them still takes one minor fault per 4 KiB page at its first store there: with a table of
 * hundreds of MiB that is one fault every few inserts for the first minutes after a worker starts
 * (~0.5 us a request measured, a third of the daemon's cost above the core). Mapping them writable now
 * moves that to the start (tens of ms per 100 MiB). Not on a disk file system: there it would dirty the
 * whole file for writeback, and `fastkrb serve --check` already warns that the file belongs on tmpfs.
 * Best effort: a kernel without MADV_POPULATE_WRITE (before 5.14) faults the pages in as before. */
static void prefault(int fd, void *base, size_t size)
{
#ifdef MADV_POPULATE_WRITE
    struct statfs fs;
    if (fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC))
        (void)madvise(base, size, MADV_POPULATE_WRITE);
#else
    (void)fd; (void)base; (void)size;
#endif
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
        h.rec_size != sizeof(fk_tab_rec) || h.bucket_slots != FK_TAB_BUCKET || h.capacity < 1 ||
        h.capacity > FK_TAB_MAX_CAPACITY || h.shards != shards_for(h.capacity) ||
        h.shard_capacity != shard_capacity_for(h.capacity, h.shards) ||
        h.nbuckets != fk_tab_buckets(h.shard_capacity) ||
        h.file_size != geometry_of(h.shards, h.nbuckets, h.shard_capacity).size || (uint64_t)st.st_size != h.file_size ||
        !(h.created > 0) || header_check(&h) != h.check)
        return MAP_INVALID;
    uint8_t *base = mmap(NULL, h.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return MAP_SYSERR;
    }
#ifdef MADV_HUGEPAGE
    /* huge pages where the file system offers them (tmpfs mounted with huge=advise): fewer TLB misses */
    madvise(base, h.file_size, MADV_HUGEPAGE);
#endif
    prefault(fd, base, h.file_size);
    map *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(base, h.file_size);
        snprintf(err, errlen, "out of memory");
        return MAP_SYSERR;
    }
    geometry g = geometry_of(h.shards, h.nbuckets, h.shard_capacity);
    m->tabs = calloc(h.shards, sizeof *m->tabs);
    if (!m->tabs) {
        munmap(base, h.file_size);
        free(m);
        snprintf(err, errlen, "out of memory");
        return MAP_SYSERR;
    }
    m->base = base;
    m->size = h.file_size;
    m->hdr = (header *)base;
    m->sh = (shared *)(base + SHARED_OFFSET);
    m->shards = h.shards;
    m->shard_shift = 64;
    for (uint64_t n = h.shards; n > 1; n >>= 1)
        m->shard_shift--;
    uint64_t shard_slots = h.nbuckets * FK_TAB_BUCKET;
    for (uint64_t i = 0; i < h.shards; i++) {
        fk_tab *t = &m->tabs[i];
        t->tags = (uint16_t *)(base + g.tags) + i * shard_slots;
        t->recs = (fk_tab_rec *)(base + g.recs) + i * shard_slots;
        t->ring = (fk_tab_ring *)(base + g.ring) + i * h.shard_capacity;
        t->ctl = &block(m, i)->ctl;
        t->nb = h.nbuckets;
        t->capacity = h.shard_capacity;
        t->seed[0] = h.seed[0];
        t->seed[1] = h.seed[1];
    }
    m->created = h.created;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    /* a process of another pid namespace cannot judge lock owners by pid, nor be judged: from now on
     * nobody takes over a lock; one held for LOCK_TIMEOUT_NS wedges the table (it is replaced) */
    if (h.pidns != pidns())
        atomic_store(&m->sh->foreign, 1);
    /* the table must agree with itself (a damaged file is replaced); each shard under its lock, since
     * other processes may be inserting */
    int damaged = 0, r = 0;
    for (uint64_t i = 0; i < m->shards && !r && !damaged; i++) {
        r = lock_consistent(m, i, &damaged);
        if (r == 0) {
            damaged = fk_tab_verify(&m->tabs[i]) != 0;
            unlock_table(m, i);
        }
    }
    if (r != 0 || damaged) {
        munmap(base, h.file_size);
        free(m->tabs);
        free(m);
        return MAP_INVALID;   /* wedged or damaged: replaced */
    }
    *out = m;
    return MAP_OK;
}

/* Writes a fresh table under a temporary name and renames it over `path` (the caller holds the lock). */
static int create_file(const char *path, size_t capacity, char *err, size_t errlen)
{
    if (capacity > FK_TAB_MAX_CAPACITY) {
        snprintf(err, errlen, "capacity %zu is over the limit", capacity);
        return -1;
    }
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
    h.rec_size = sizeof(fk_tab_rec);
    h.bucket_slots = FK_TAB_BUCKET;
    h.capacity = capacity;
    h.shards = shards_for(capacity);
    h.shard_capacity = shard_capacity_for(capacity, h.shards);
    h.nbuckets = fk_tab_buckets(h.shard_capacity);
    h.file_size = geometry_of(h.shards, h.nbuckets, h.shard_capacity).size;
    h.created = wall();
    h.pidns = pidns();
    int rc = -1;
    if (fk_random((uint8_t *)h.seed, sizeof h.seed) != FK_OK) {
        snprintf(err, errlen, "no random seed");
        goto out;
    }
    h.check = header_check(&h);
    /* the rest is zero: every tag free, the ring and the deferred writes empty, the lock open. Written,
     * not left sparse: on a disk file system the first store to a hole page faults into block
     * allocation (~1 ms each on ext4), inside the lock */
    {
        static const uint8_t zeros[65536];
        for (size_t off = 0; off < h.file_size;) {
            size_t n = h.file_size - off < sizeof zeros ? h.file_size - off : sizeof zeros;
            ssize_t w = pwrite(fd, zeros, n, (off_t)off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                snprintf(err, errlen, "write %s: %s", tmp, w < 0 ? strerror(errno) : "short write");
                goto out;
            }
            off += (size_t)w;
        }
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

/* Takes the flock on "<path>.lock" that serialises creating and replacing the file; its fd, or -1. */
static int creation_lock(const char *path, char *err, size_t errlen)
{
    size_t plen = strlen(path);
    char *lpath = malloc(plen + 6);
    if (!lpath) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(lpath, path, plen);
    memcpy(lpath + plen, ".lock", 6);
    int lfd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    free(lpath);
    if (lfd < 0) {
        snprintf(err, errlen, "open %s.lock: %s", path, strerror(errno));
        return -1;
    }
    while (flock(lfd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "flock %s.lock: %s", path, strerror(errno));
            close(lfd);
            return -1;
        }
    }
    return lfd;
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
        int lfd = creation_lock(path, err, errlen);
        if (lfd < 0)
            return NULL;
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
        free(m->tabs);
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

/* A table wedged (its lock held by one owner for 2 s) or contradicting itself after a crash: a fresh
 * file replaces it; every process maps that within a second (ours at once) and applies the cold-start
 * rule, which is what makes dropping the old entries safe. */
static void replace_damaged(fk_shm *s, const map *m)
{
    char err[160];
    int lfd = creation_lock(s->path, err, sizeof err);
    if (lfd < 0)
        return;
    struct stat st;
    /* unless someone replaced it already */
    if (stat(s->path, &st) != 0 || (st.st_dev == m->dev && st.st_ino == m->ino))
        create_file(s->path, m->hdr->capacity, err, sizeof err);
    flock(lfd, LOCK_UN);
    close(lfd);
    atomic_store(&s->next_check_ns, 0);
}

/* The key's shard, and its probe there (which prefetches the two buckets' tag lines). */
static uint64_t probe(const map *m, const uint8_t key[16], fk_tab_probe *p)
{
    uint64_t h = fk_sip16(m->tabs[0].seed, key);
    /* the shard from a mix of all 64 bits (the buckets inside it take each half's high bits) */
    uint64_t shard = m->shards == 1 ? 0 : (h * 0xd6e8feb86659fd93ULL) >> m->shard_shift;
    fk_tab_probe_hashed(&m->tabs[shard], h, key, p);
    return shard;
}

void fk_shm_prefetch_cb(void *ctx, const uint8_t key[16])
{
    fk_shm *s = ctx;
    if (atomic_load_explicit(&s->closed, memory_order_relaxed))
        return;
    fk_tab_probe p;   /* the map in use, without current()'s clock read: a replaced one is a wasted hint */
    const map *m = atomic_load_explicit(&s->cur, memory_order_acquire);
    fk_tab_prefetch_records(&m->tabs[probe(m, key, &p)], &p);
}

static int insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen, int stop)
{
    if (atomic_load_explicit(&s->closed, memory_order_relaxed))
        return FK_RC_ERROR;
    map *m = current(s);
    if (m->cold && s->cold_start) {
        double ctime = expiry - s->skew - 1.0;
        if (now < m->created + s->skew && ctime < m->created)
            return FK_RC_COLD;
    }
    fk_tab_probe p;
    uint64_t shard = probe(m, key, &p);
    int damaged = 0;
    if (lock_consistent(m, shard, &damaged) != 0) {
        if (damaged)
            replace_damaged(s, m);
        return FK_RC_ERROR;
    }
    int ret = stop ? fk_tab_insert_until(&m->tabs[shard], &p, expiry, now, first_seen, stop)
                   : fk_tab_insert(&m->tabs[shard], &p, expiry, now, first_seen);
    if (!stop)
        unlock_table(m, shard);
    return ret;
}

int fk_shm_insert(fk_shm *s, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return insert(s, key, expiry, now, first_seen, 0);
}

int fk_shm_die_in_insert(fk_shm *s, const uint8_t key[16], double expiry, double now, int stage)
{
    double first = 0;
    return insert(s, key, expiry, now, &first, stage < 1 ? 1 : stage > 5 ? 5 : stage);
}

int fk_shm_insert_cb(void *ctx, const uint8_t key[16], double expiry, double now, double *first_seen)
{
    return fk_shm_insert((fk_shm *)ctx, key, expiry, now, first_seen);
}

void fk_shm_stats_get(fk_shm *s, fk_shm_stats *out)
{
    memset(out, 0, sizeof *out);
    map *m = atomic_load_explicit(&s->cur, memory_order_acquire);
    for (uint64_t i = 0; i < m->shards; i++) {
        const fk_tab_ctl *c = m->tabs[i].ctl;
        out->inserts += __atomic_load_n(&c->inserts, __ATOMIC_RELAXED);
        out->hits += __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
        out->evictions += __atomic_load_n(&c->evictions, __ATOMIC_RELAXED);
        out->full += __atomic_load_n(&c->full, __ATOMIC_RELAXED);
        out->entries += __atomic_load_n(&c->ring_pos, __ATOMIC_RELAXED) >> 32;
    }
    out->errors = atomic_load_explicit(&m->sh->errors, memory_order_relaxed);
    out->recoveries = atomic_load_explicit(&m->sh->recoveries, memory_order_relaxed);
    out->capacity = m->hdr->capacity;
    out->slots = m->shards * m->tabs[0].nb * FK_TAB_BUCKET;
    out->shards = m->shards;
    out->remaps = atomic_load(&s->remaps);
}
