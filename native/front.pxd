# front.h declared once: the sidecar's native request path (HTTP head reader, answer encoders, counters,
# log lines). front.pxi holds the loops over a received chunk.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from der cimport fk_buf
from validate cimport fk_result

cdef extern from "front.h" nogil:
    ctypedef struct fk_out:
        uint8_t *p
        size_t n
        size_t cap

    int fk_out_reserve(fk_out *o, size_t more)
    void fk_out_free(fk_out *o)

    enum:
        FK_FRONT_MAX_BOUNDS
        FK_HEAD_PARTIAL
        FK_HEAD_FAST
        FK_HEAD_SLOW_ONE
        FK_HEAD_SLOW_CONN

    ctypedef struct fk_front_stats:
        uint64_t accepted
        uint64_t lat[FK_FRONT_MAX_BOUNDS + 1]
        double lat_sum
        uint64_t skew[FK_FRONT_MAX_BOUNDS + 1]
        double skew_sum

    ctypedef struct fk_front:
        fk_out out
        fk_out log
        size_t log_lines
        int log_decisions
        int worker
        double lat_bounds[FK_FRONT_MAX_BOUNDS]
        int nlat
        double skew_bounds[FK_FRONT_MAX_BOUNDS]
        int nskew
        fk_front_stats st
        fk_out names
        fk_out mid
        fk_out mid_key

    ctypedef struct fk_http_head:
        size_t len
        int keep_alive
        fk_buf token
        fk_buf xff

    int fk_http_read_head(const uint8_t *p, size_t n, size_t max_head, fk_http_head *h)
    int fk_front_names(fk_front *f, const fk_result *r)
    int fk_front_has_identity(const fk_result *r)
    int fk_front_wire_accepted(fk_front *f, const fk_result *r, uint32_t rid, int ex)
    int fk_front_http_accepted(fk_front *f, const fk_result *r, int close)
    void fk_front_observe(fk_front *f, const fk_result *r, double latency)
    int fk_front_log_accepted(fk_front *f, const fk_result *r, int http, double latency, double now, fk_buf peer,
                              fk_buf xff)
