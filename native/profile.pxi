# Where the time goes, timed in C (profile.c, fk_rc_bench): for benches, `fastkrb bench` and capacity
# planning; never on the validation path.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t

from rcache cimport fk_rc_backend, fk_rc_bench
from validate cimport (fk_profile_stages, fk_stage_name, FK_NSTAGES, fk_result, fk_scratch_size, fk_scratch_wipe,
                      fk_validate)
from libc.stdlib cimport calloc, free
from libc.string cimport memset

# stage names in out[] order, read from validate.h's FK_STAGES list
STAGES = tuple(fk_stage_name(i).decode("ascii").lower() for i in range(FK_NSTAGES))


def profile_stages(NativeValidator nv, bytes token, double now, long iters=20000,
                   NativeReplayBackend rcache=None):
    """ns per operation for each stage of validating ``token`` (see profile.c)."""
    cdef double out[FK_NSTAGES]
    cdef int code
    cdef fk_rc_backend rc
    rc.insert = NULL
    rc.prefetch = NULL
    rc.ctx = NULL
    if rcache is not None:
        rc = rcache.backend()
    cdef const uint8_t *tok = <const uint8_t *>PyBytes_AS_STRING(token)
    cdef size_t toklen = PyBytes_GET_SIZE(token)
    with nogil:
        code = fk_profile_stages(&nv.v, tok, toklen, now, iters, rc, out)
    if code != 0:
        raise ValueError(f"token does not validate ({VERDICTS.get(code, code)})")
    return {STAGES[i]: out[i] for i in range(FK_NSTAGES)}


def rcache_bench(str kind, size_t live, size_t n=1000000, path=None, uint64_t seed=1):
    """Mean ns per insert measured in C (fk_rc_bench) with `live` entries alive: kind 'memory' or 'shm'."""
    cdef NativeReplayBackend cache
    cdef fk_rc_backend b
    cdef double ns
    if kind == "memory":
        cache = MemoryReplayCache(live + 16)
    elif kind == "shm":
        if path is None:
            raise ValueError("shm bench needs a path")
        cache = ShmReplayCache(path, live, 300.0, False)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    b = cache.backend()
    with nogil:
        ns = fk_rc_bench(b, live, n, seed)
    if ns < 0:
        raise RuntimeError(f"{kind} cache refused an insert during the benchmark")
    return ns


def scratch_residue(NativeValidator nv, bytes token, double now, bint wipe=True):
    """(verdict code, the scratch after the decoded token once fk_validate is done, and fk_scratch_wipe when
    ``wipe``): what a validation leaves behind in its working memory (tests/test_validator.py)."""
    cdef size_t toklen = PyBytes_GET_SIZE(token)
    cdef size_t need = fk_scratch_size(toklen)
    cdef uint8_t *s = <uint8_t *>calloc(need, 1)
    cdef fk_result r
    cdef int code
    if s == NULL:
        raise MemoryError()
    try:
        code = fk_validate(&nv.v, <const uint8_t *>PyBytes_AS_STRING(token), toklen, now, NULL, 0, s, need, &r)
        if wipe:
            fk_scratch_wipe(&r, s, toklen)
        return code, (<char *>s)[toklen:need]
    finally:
        memset(s, 0, need)
        free(s)
