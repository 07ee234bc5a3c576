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
