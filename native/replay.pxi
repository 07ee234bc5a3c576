# What every native replay cache shares at the Python boundary: the base class the validator takes
# (its insert is a C function pointer, so the hot path calls it without Python), the 16-byte key check,
# the answer tuple, and the fail-closed error (worded once, in fastkrb.errors.replay_unavailable).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t

from rcache cimport fk_rc_backend, FK_RC_OK, FK_RC_REPLAY, FK_RC_FULL, FK_RC_COLD


cdef class NativeReplayBackend:
    """A replay cache the C validator calls directly (no Python on the hot path); not made on its own."""

    def __cinit__(self, *args, **kwargs):
        # a bare base would hand the validator a NULL insert, which means "no replay check": refuse it
        if type(self) is NativeReplayBackend:
            raise TypeError("NativeReplayBackend is abstract: use MemoryReplayCache or ShmReplayCache")

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = NULL
        b.prefetch = NULL
        b.ctx = NULL
        return b


cdef object _unavailable(str backend, int rc, str why, double started=0.0, double ctime=0.0,
                         double clock_skew=0.0):
    """The typed fail-closed error for a native cache that cannot take an insert (an FK_RC_* code)."""
    from fastkrb.errors import replay_unavailable
    if rc == FK_RC_FULL:
        return replay_unavailable("full", backend=backend)
    if rc == FK_RC_COLD:
        return replay_unavailable("cold_start", backend=backend, started=started, ctime=ctime,
                                  clock_skew=clock_skew)
    return replay_unavailable(why, backend=backend)


cdef const uint8_t *_key16(object key) except NULL:
    if not isinstance(key, bytes) or PyBytes_GET_SIZE(key) != 16:
        raise ValueError("replay key must be 16 bytes")
    return <const uint8_t *>PyBytes_AS_STRING(key)


cdef inline object _answer(int rc, double first):
    """(True, None) for a first presentation, (False, first_seen) for a replay, None when refused."""
    if rc == FK_RC_OK:
        return (True, None)
    if rc == FK_RC_REPLAY:
        return (False, first if first != 0 else None)
    return None


# -- Redis (src/fastkrb/replay/redis.py): a batch's commands formatted in C ---------------------------------

from libc.math cimport ceil
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM

cdef const char *_HEX = b"0123456789abcdef"


def redis_set_payload(bytes prefix, bytes tag, list entries, long long seq0, bytes tail):
    """RedisReplayCache._payload's wire bytes for ``entries`` ((16-byte key, expiry, now) each): one RESP
    ``SET <prefix><hex key> "<now %.6f> <tag> <seq>" PX <ttl ms, at least 1> NX GET`` per entry, sequence numbers
    from seq0, then ``tail`` (the marker's GET). Returns (payload, the values set, in order): formatted in Python
    they cost more than the rest of a request's round trip."""
    cdef Py_ssize_t n = len(entries), i, k
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix), tlen = PyBytes_GET_SIZE(tag), taillen = PyBytes_GET_SIZE(tail)
    cdef size_t cap
    cdef char *o
    cdef char *w
    cdef char num[32]
    cdef char val[128]
    cdef int vn, tn
    cdef double expiry, now, ms
    cdef long long ttl
    cdef const uint8_t *key
    cdef list values = []
    cdef object e, kb
    if tlen > 32 or plen > 4096:
        raise ValueError("prefix or tag too long")
    cap = <size_t>n * <size_t>(plen + 32 + sizeof(val) + 128) + <size_t>taillen + 1
    o = <char *>malloc(cap)
    if o == NULL:
        raise MemoryError()
    w = o
    try:
        for i in range(n):
            e = entries[i]
            if not isinstance(e, tuple) or PyTuple_GET_SIZE(e) != 3:
                raise TypeError("entries are (key, expiry, now) tuples")
            kb = <object>PyTuple_GET_ITEM(e, 0)
            if not isinstance(kb, bytes) or PyBytes_GET_SIZE(kb) != 16:
                raise ValueError("replay key must be 16 bytes")
            expiry = <object>PyTuple_GET_ITEM(e, 1)
            now = <object>PyTuple_GET_ITEM(e, 2)
            # "%.6f %s %d" % (now, tag, seq) as Python writes it (both round the exact binary value)
            vn = snprintf(val, sizeof(val), "%.6f %.*s %lld", now, <int>tlen, PyBytes_AS_STRING(tag), seq0 + i)
            if vn <= 0 or vn >= <int>sizeof(val):
                raise ValueError("time stamp out of range")
            values.append(PyBytes_FromStringAndSize(val, vn))
            ms = ceil((expiry - now) * 1000.0)   # max(1, math.ceil(...)), an integer number of ms
            if not (ms < 1e18):
                raise ValueError("expiry out of range")
            ttl = <long long>ms if ms >= 1.0 else 1
            tn = snprintf(num, sizeof(num), "%lld", ttl)
            w += snprintf(w, 40, "*7\r\n$3\r\nSET\r\n$%d\r\n", <int>(plen + 32))
            memcpy(w, PyBytes_AS_STRING(prefix), plen)
            w += plen
            key = <const uint8_t *>PyBytes_AS_STRING(kb)
            for k in range(16):
                w[0] = _HEX[key[k] >> 4]
                w[1] = _HEX[key[k] & 15]
                w += 2
            w += snprintf(w, 24, "\r\n$%d\r\n", vn)
            memcpy(w, val, vn)
            w += vn
            w += snprintf(w, 96, "\r\n$2\r\nPX\r\n$%d\r\n%s\r\n$2\r\nNX\r\n$3\r\nGET\r\n", tn, num)
        memcpy(w, PyBytes_AS_STRING(tail), taillen)
        w += taillen
        return PyBytes_FromStringAndSize(o, w - o), values
    finally:
        free(o)
