# The sidecar's native answers to session-cookie requests (sesscache.c): the table Python fills after it
# opened a cookie (sidecar/sessions.py), and the one call front.pxi's HTTP loop makes for a head it would
# otherwise hand to Python.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.string cimport memset

from der cimport fk_buf
from front cimport fk_front
from sesscache cimport (fk_sess, fk_sess_init, fk_sess_free, fk_sess_clear, fk_sess_put, fk_sess_drop, fk_sess_end,
                        fk_sess_http)


cdef class NativeSessions:
    """Opened session cookies by exact value -> the encoded 200 answer of a plain /auth, until the session
    ends; at most ``max_entries`` (the least recently served go first, CLOCK)."""

    cdef fk_sess s

    def __cinit__(self):
        memset(&self.s, 0, sizeof(self.s))

    def __init__(self, bytes name, size_t max_entries):
        fk_sess_free(&self.s)
        if fk_sess_init(&self.s, <const uint8_t *>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), max_entries) != 0:
            raise ValueError(f"session answer table: cookie name of {len(name)} bytes (1-256) and a size of "
                             f"{max_entries} entries (1-2^28)")

    def __dealloc__(self):
        fk_sess_free(&self.s)

    def __len__(self):
        return self.s.count

    @property
    def max_entries(self):
        return self.s.max

    def put(self, bytes value, bytes head, double end, bytes log_mid, bytes log_tail):
        """Answer ``value`` with ``head`` (the 200 through its Cache-Control line) until ``end`` (Unix s)."""
        if fk_sess_put(&self.s, <const uint8_t *>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                       <const uint8_t *>PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head),
                       <const uint8_t *>PyBytes_AS_STRING(log_mid), PyBytes_GET_SIZE(log_mid),
                       <const uint8_t *>PyBytes_AS_STRING(log_tail), PyBytes_GET_SIZE(log_tail), end) != 0:
            raise MemoryError()

    def drop(self, bytes value):
        """Forget one value; True when it was there."""
        return fk_sess_drop(&self.s, <const uint8_t *>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)) == 1

    def end_of(self, bytes value):
        """The registered value's end (Unix s), or None."""
        cdef double e = fk_sess_end(&self.s, <const uint8_t *>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
        return None if e < 0 else e

    def clear(self):
        fk_sess_clear(&self.s)

    def take_hits(self):
        """Answers given since the last call."""
        n = self.s.hits
        self.s.hits = 0
        return n

    cdef int answer(self, fk_front *f, const uint8_t *p, size_t n, bint close, double now, fk_buf peer) except -1:
        """1: the head (fk_http_read_head's FK_HEAD_SLOW_ONE) was answered into f.out; 0: it is Python's."""
        cdef int rc = fk_sess_http(&self.s, f, p, n, close, now, peer)
        if rc < 0:
            raise MemoryError()
        return rc
