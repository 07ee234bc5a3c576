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
# the fixed parts of `SET <name> <value> PX <ttl> NX GET` in RESP, their lengths taken from them
cdef bytes _SET_NAME = b"*7\r\n$3\r\nSET\r\n$"
cdef bytes _CRLF = b"\r\n"
cdef bytes _CRLF_LEN = b"\r\n$"
cdef bytes _PX_LEN = b"\r\n$2\r\nPX\r\n$"
cdef bytes _NX_GET = b"\r\n$2\r\nNX\r\n$3\r\nGET\r\n"


cdef inline char *_put(char *w, const char *s, size_t n) noexcept:
    memcpy(w, s, n)
    return w + n


cdef inline char *_put_bytes(char *w, bytes b) noexcept:
    return _put(w, PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b))


cdef inline char *_dec(char *w, unsigned long long v) noexcept:
    """v in decimal (printf's %llu without printf: vfprintf was the payload's largest cost)."""
    cdef char tmp[24]
    cdef int k = 0
    while True:
        tmp[k] = <char>(48 + v % 10)
        k += 1
        v //= 10
        if v == 0:
            break
    while k:
        k -= 1
        w[0] = tmp[k]
        w += 1
    return w


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
    cdef char *v
    cdef char val[128]
    cdef char num[24]
    cdef char stamp[64]
    cdef int sn = -1, vn, tn
    cdef double expiry, now, ms, last = 0.0
    cdef long long ttl
    cdef const uint8_t *key
    cdef list values = []
    cdef object e, kb
    if tlen > 32 or plen > 4096 or seq0 < 0:
        raise ValueError("prefix or tag too long, or a negative sequence number")
    cap = <size_t>n * <size_t>(plen + 32 + sizeof(val) + 96) + <size_t>taillen + 1
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
            # "%.6f %s %d" % (now, tag, seq) as Python writes it (both round the exact binary value); a batch's
            # entries mostly share their clock: one float format per batch
            if sn < 0 or now != last:
                sn = snprintf(stamp, sizeof(stamp), "%.6f ", now)
                if sn <= 0 or sn >= <int>sizeof(stamp) - 1:
                    raise ValueError("time stamp out of range")
                last = now
            v = _put(val, stamp, sn)
            v = _put(v, PyBytes_AS_STRING(tag), tlen)
            v[0] = 32
            v = _dec(v + 1, <unsigned long long>(seq0 + i))
            vn = <int>(v - val)
            values.append(PyBytes_FromStringAndSize(val, vn))
            ms = ceil((expiry - now) * 1000.0)   # max(1, math.ceil(...)), an integer number of ms
            if not (ms < 1e18):
                raise ValueError("expiry out of range")
            ttl = <long long>ms if ms >= 1.0 else 1
            tn = <int>(_dec(num, <unsigned long long>ttl) - num)
            w = _put_bytes(w, _SET_NAME)
            w = _dec(w, <unsigned long long>(plen + 32))
            w = _put_bytes(w, _CRLF)
            w = _put(w, PyBytes_AS_STRING(prefix), plen)
            key = <const uint8_t *>PyBytes_AS_STRING(kb)
            for k in range(16):
                w[0] = _HEX[key[k] >> 4]
                w[1] = _HEX[key[k] & 15]
                w += 2
            w = _put_bytes(w, _CRLF_LEN)
            w = _dec(w, <unsigned long long>vn)
            w = _put_bytes(w, _CRLF)
            w = _put(w, val, vn)
            w = _put_bytes(w, _PX_LEN)
            w = _dec(w, <unsigned long long>tn)
            w = _put_bytes(w, _CRLF)
            w = _put(w, num, tn)
            w = _put_bytes(w, _NX_GET)
        w = _put(w, PyBytes_AS_STRING(tail), taillen)
        return PyBytes_FromStringAndSize(o, w - o), values
    finally:
        free(o)
