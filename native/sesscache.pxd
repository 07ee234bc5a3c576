# sesscache.h declared once: the sidecar's native answers to session-cookie requests (sesscache.pxi).

from libc.stdint cimport uint8_t, uint64_t

from der cimport fk_buf
from front cimport fk_front

cdef extern from "sesscache.h" nogil:
    ctypedef struct fk_sess:
        size_t count
        size_t max
        uint64_t hits

    int fk_sess_init(fk_sess *s, const uint8_t *name, size_t name_n, size_t max)
    void fk_sess_free(fk_sess *s)
    void fk_sess_clear(fk_sess *s)
    int fk_sess_put(fk_sess *s, const uint8_t *value, size_t value_n, const uint8_t *head, size_t head_n,
                    const uint8_t *mid, size_t mid_n, const uint8_t *tail, size_t tail_n, double end)
    int fk_sess_drop(fk_sess *s, const uint8_t *value, size_t value_n)
    double fk_sess_end(const fk_sess *s, const uint8_t *value, size_t value_n)
    int fk_sess_http(fk_sess *s, fk_front *f, const uint8_t *p, size_t n, int close, double now, fk_buf peer)
