# The sidecar's native request path (front.c): one call per received chunk for each front door.
#
# NativeFront.wire / .http frame every request of a chunk, validate each with fk_validate (no AuthResult),
# encode the answer, count it and format its log line in C. What needs Python goes back to the front
# door's handler (sidecar/binary.py, sidecar/http.py), in request order, with the outcome already decided:
# a rejection (its typed error comes from the validator's on_error), an acceptance whose answer needs the
# AuthResult (a PAC identity, a name that is not UTF-8), or a request this path does not read at all (then
# the handler's own parser answers it, exactly as without the native path).

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.errno cimport errno, EINTR
from posix.unistd cimport write
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC

from der cimport fk_buf
from front cimport (fk_front, fk_out, fk_http_head, fk_out_reserve, fk_out_free, fk_http_read_head, fk_front_names,
                    fk_front_has_identity, fk_front_wire_accepted, fk_front_http_accepted, fk_front_observe,
                    fk_front_log_accepted, FK_FRONT_MAX_BOUNDS, FK_HEAD_PARTIAL, FK_HEAD_FAST, FK_HEAD_SLOW_ONE,
                    FK_HEAD_SLOW_CONN)
from validate cimport fk_result, fk_scratch_size, fk_scratch_wipe, fk_validate, FK_V_OK

cdef enum:
    _SLOW = -1          # _check: Python validates this request itself
    _WANT_IDENTITY = 1  # VALIDATE_EX flag (protocol.py)


cdef inline double _clock(int which) noexcept nogil:
    cdef timespec ts
    clock_gettime(which, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef class NativeFront:
    """One worker's native request path: its answer buffer, scratch, counters and pending log lines."""

    cdef fk_front f
    cdef uint8_t *scratch
    cdef size_t scratch_cap
    cdef public double fixed_now     # > 0: the clock of every validation (tests compare answers byte for byte)
    cdef object validator            # the Python Validator: its _native is swapped on reload
    cdef object log                  # flushed when max_batch lines are pending
    cdef size_t max_frame, max_head, max_batch
    # session cookies on (sidecar/sessions.py): Negotiate heads go to Python (for the Set-Cookie), and a head
    # carrying a registered cookie is answered from this table (sesscache.pxi)
    cdef public NativeSessions sessions
    # the clocks: CLOCK_REALTIME read once per chunk (a request's `now` is that plus the monotonic time since), and
    # one CLOCK_MONOTONIC read per request: the end of one natively answered request starts the next (chain)
    cdef double base_real, base_mono, t_end
    cdef bint chain

    def __cinit__(self):
        memset(&self.f, 0, sizeof(self.f))
        self.scratch = NULL
        self.scratch_cap = 0

    def __init__(self, validator, lat_bounds, skew_bounds, worker, bint log_decisions, size_t max_frame,
                 size_t max_head, log=None, size_t max_batch=512):
        if len(lat_bounds) > FK_FRONT_MAX_BOUNDS or len(skew_bounds) > FK_FRONT_MAX_BOUNDS:
            raise ValueError(f"at most {FK_FRONT_MAX_BOUNDS} histogram bounds")
        for i, b in enumerate(lat_bounds):
            self.f.lat_bounds[i] = b
        self.f.nlat = len(lat_bounds)
        for i, b in enumerate(skew_bounds):
            self.f.skew_bounds[i] = b
        self.f.nskew = len(skew_bounds)
        self.f.worker = -1 if worker is None else worker
        self.f.log_decisions = log_decisions
        self.validator = validator
        self.log = log
        self.max_frame = max_frame
        self.max_head = max_head
        self.max_batch = max_batch
        self.fixed_now = 0.0

    def __dealloc__(self):
        fk_out_free(&self.f.out)
        fk_out_free(&self.f.log)
        fk_out_free(&self.f.names)
        fk_out_free(&self.f.mid)
        fk_out_free(&self.f.mid_key)
        free(self.scratch)   # wiped after every validation (fk_scratch_wipe)

    cdef NativeValidator _nv(self):
        """The validator in service, when this path can run it: a native or no replay cache (a Python
        backend's replay check is a Python call, Redis an await)."""
        nv = getattr(self.validator, "_native", None)
        if type(nv) is not NativeValidator or (<NativeValidator>nv)._replay_hook is not None:
            return None
        return <NativeValidator>nv

    @property
    def usable(self):
        return self._nv() is not None

    @property
    def log_lines(self):
        return self.f.log_lines

    def take_log(self):
        """The decision lines formatted since the last call (UTF-8, one per line)."""
        out = PyBytes_FromStringAndSize(<const char *>self.f.log.p, self.f.log.n)
        self.f.log.n = 0
        self.f.log_lines = 0
        return out

    def write_log(self, int fd):
        """Writes the decision lines formatted since the last take straight from the native buffer to fd (no
        copy into Python objects: at 200,000 decisions/s the copies cost more than the formatting). Like
        JsonLog.flush, a file descriptor that will not take more (a full non-blocking pipe) or fails drops
        the rest rather than stall the event loop. Returns the bytes written."""
        cdef size_t off = 0
        cdef ssize_t w
        cdef const char *p = <const char *>self.f.log.p
        cdef size_t n = self.f.log.n
        with nogil:
            while off < n:
                w = write(fd, p + off, n - off)
                if w < 0:
                    if errno == EINTR:
                        continue
                    break
                off += <size_t>w
        self.f.log.n = 0
        self.f.log_lines = 0
        return off

    def take_stats(self):
        """(accepted, latency counts, latency sum, |skew| counts, |skew| sum) since the last call."""
        st = self.f.st
        memset(&self.f.st, 0, sizeof(self.f.st))
        return (st.accepted, [st.lat[i] for i in range(self.f.nlat + 1)], st.lat_sum,
                [st.skew[i] for i in range(self.f.nskew + 1)], st.skew_sum)

    # -- the work -------------------------------------------------------------------------------------

    cdef int _check(self, NativeValidator nv, const uint8_t *tok, size_t toklen, const uint8_t *cb, size_t cblen,
                    fk_result *r, double *now, double *t0) except -2:
        """fk_validate with the front's scratch (as NativeValidator.validate; the worker's event loop is its only
        thread, so the GIL stays held). _SLOW: a size NativeValidator refuses before validating."""
        cdef size_t need = fk_scratch_size(toklen)
        cdef uint8_t *s
        if need > 16384 and toklen > nv.v.max_token * 2 + 64:
            return _SLOW
        if need > self.scratch_cap:
            s = <uint8_t *>malloc(need)
            if s == NULL:
                raise MemoryError()
            free(self.scratch)
            self.scratch = s
            self.scratch_cap = need
        t0[0] = self.t_end if self.chain else _clock(CLOCK_MONOTONIC)
        now[0] = self.fixed_now if self.fixed_now > 0 else self.base_real + (t0[0] - self.base_mono)
        return fk_validate(&nv.v, tok, toklen, now[0], cb, cblen, self.scratch, need, r)

    cdef object _error(self, NativeValidator nv, int code, fk_result *r, double now):
        """The typed error of a rejection, from the validator's on_error (which raises it)."""
        facts = _facts(r, now, &nv.v)
        try:
            return nv._on_error(code, facts)
        except Exception as exc:
            return exc

    cdef inline void _begin(self) noexcept:
        """A chunk starts: read both clocks."""
        self.base_real = _clock(CLOCK_REALTIME)
        self.base_mono = self.t_end = _clock(CLOCK_MONOTONIC)
        self.chain = True

    cdef inline double _lap(self, double t0) noexcept:
        """The latency of a request answered here; its end is the next request's start."""
        self.t_end = _clock(CLOCK_MONOTONIC)
        self.chain = True
        return self.t_end - t0

    cdef int _flush(self, list wbuf) except -1:
        if self.f.out.n:
            wbuf.append(PyBytes_FromStringAndSize(<const char *>self.f.out.p, self.f.out.n))
            self.f.out.n = 0
        return 0

    cdef int _settle(self, list wbuf, conn, bint acc) except -1:
        """Before Python answers (or at the end of the chunk): our answers first, and an acceptance resets the
        connection's run of malformed tokens (conn.verdict, as the Python path does per answer)."""
        self.chain = False   # Python runs next: the next request reads its own start
        self._flush(wbuf)
        if acc and conn.bad:
            conn.verdict(False)
        return 0

    cdef int _log_check(self) except -1:
        if self.f.log_lines >= self.max_batch and self.log is not None:
            self.log.flush()
        return 0

    def wire(self, handler, bytes data, list wbuf, conn, bytes peer):
        """Answer every complete frame of data (binary.py's WireHandler). Returns the bytes used (the rest is a
        partial frame), -1 when a frame error handed the rest to handler._feed (which answers and closes) or the
        connection closed, -2 when this path cannot run the validator in service (the caller's path does)."""
        cdef NativeValidator nv = self._nv()
        if nv is None:
            return -2
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef size_t n = PyBytes_GET_SIZE(data)
        cdef size_t pos = 0, length, a, b, ncb, npol, toklen
        cdef const uint8_t *cb
        cdef const uint8_t *tok
        cdef uint32_t rid
        cdef int kind, ex, code, rc
        cdef bint acc = False
        cdef fk_result r
        cdef double now = 0, t0 = 0, lat
        cdef fk_buf pj = fk_buf(<const uint8_t *>PyBytes_AS_STRING(peer), PyBytes_GET_SIZE(peer))
        cdef fk_buf noxff = fk_buf(NULL, 0)
        self.f.out.n = 0
        self._begin()
        while n - pos >= 4:
            length = _be32(p + pos)
            if length < 5 or length > self.max_frame:   # protocol.split_frames' refusal, and its answer
                self._settle(wbuf, conn, acc)
                handler._feed(data[pos:])
                return -1
            if n - pos - 4 < length:
                break
            kind = p[pos + 4]
            rid = _be32(p + pos + 5)
            a = pos + 9
            b = pos + 4 + length
            code = _SLOW
            if kind == 0x01 and b - a >= 2:             # VALIDATE: cb length, bindings, token
                ex = -1
                ncb = (<size_t>p[a] << 8) | p[a + 1]
                if a + 2 + ncb <= b:
                    cb = p + a + 2 if ncb else NULL
                    tok = p + a + 2 + ncb
                    toklen = b - (a + 2 + ncb)
                    code = self._check(nv, tok, toklen, cb, ncb, &r, &now, &t0)
            elif kind == 0x03 and b - a >= 5:           # VALIDATE_EX without a policy
                ex = p[a]
                ncb = (<size_t>p[a + 1] << 8) | p[a + 2]
                npol = (<size_t>p[a + 3] << 8) | p[a + 4]
                if npol == 0 and a + 5 + ncb <= b:
                    cb = p + a + 5 if ncb else NULL
                    tok = p + a + 5 + ncb
                    toklen = b - (a + 5 + ncb)
                    code = self._check(nv, tok, toklen, cb, ncb, &r, &now, &t0)
            if code == _SLOW:   # PING, a policy, an unknown kind, a bad payload: binary.py's own path
                self._settle(wbuf, conn, acc)
                acc = False
                handler._feed(data[pos:b])
                if conn.closing:
                    return -1
                pos = b
                continue
            try:
                if code == FK_V_OK:
                    rc = fk_front_names(&self.f, &r)
                    if rc == 0 and ex >= 0 and ex & _WANT_IDENTITY and fk_front_has_identity(&r):
                        rc = 1   # the identity block: protocol.encode_identity
                    if rc == 0:
                        rc = fk_front_wire_accepted(&self.f, &r, rid, ex >= 0)
                    if rc < 0:
                        raise MemoryError()
                    if rc == 0:
                        lat = self._lap(t0)
                        fk_front_observe(&self.f, &r, lat)
                        if self.f.log_decisions and fk_front_log_accepted(&self.f, &r, 0, lat, now + lat, pj,
                                                                          noxff) < 0:
                            raise MemoryError()
                        acc = True
                    else:
                        res = _result(&r, now)
                        lat = _clock(CLOCK_MONOTONIC) - t0
                        self._settle(wbuf, conn, acc)
                        acc = False
                        handler._native_accepted(rid, res, lat, ex)
                else:
                    err = self._error(nv, code, &r, now)
                    lat = _clock(CLOCK_MONOTONIC) - t0
                    self._settle(wbuf, conn, acc)
                    acc = False
                    handler._native_rejected(rid, err, lat, ex)
            finally:
                fk_scratch_wipe(&r, self.scratch, toklen)
            pos = b
        self._settle(wbuf, conn, acc)
        self._log_check()
        return pos

    def http(self, handler, bytes data, list wbuf, conn, bytes peer, bint draining):
        """Answer every complete request head of data (http.py's HttpHandler). Returns the bytes used (the rest
        is a partial head), -1 when the connection closed or its rest went to handler._slow_rest (Python's
        parser from then on), -2 when this path cannot run the validator in service."""
        cdef NativeValidator nv = self._nv()
        if nv is None:
            return -2
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef size_t n = PyBytes_GET_SIZE(data)
        cdef size_t pos = 0, end
        cdef int st, code, rc
        cdef bint acc = False, close
        cdef fk_http_head h
        cdef fk_result r
        cdef double now = 0, t0 = 0, lat
        cdef fk_buf pj = fk_buf(<const uint8_t *>PyBytes_AS_STRING(peer), PyBytes_GET_SIZE(peer))
        self.f.out.n = 0
        self._begin()
        while pos < n:
            st = fk_http_read_head(p + pos, n - pos, self.max_head, &h)
            if st == FK_HEAD_PARTIAL:
                break
            if st == FK_HEAD_SLOW_CONN:
                self._settle(wbuf, conn, acc)
                handler._slow_rest(data[pos:])
                return -1
            end = pos + h.len
            if not h.keep_alive and end < n:
                # llhttp answers what follows a closing request with 400 ("Data after Connection: close"):
                # httptools' path reads both, so the bytes are its
                self._settle(wbuf, conn, acc)
                handler._slow_rest(data[pos:])
                return -1
            code = _SLOW
            if st == FK_HEAD_FAST and self.sessions is None:
                code = self._check(nv, h.token.p, h.token.n, NULL, 0, &r, &now, &t0)
            elif st == FK_HEAD_SLOW_ONE and self.sessions is not None and self.sessions.answer(
                    &self.f, p + pos, h.len, not h.keep_alive or draining,
                    self.fixed_now if self.fixed_now > 0 else _clock(CLOCK_REALTIME), pj):
                if not h.keep_alive or draining:
                    self._settle(wbuf, conn, acc)
                    conn.close()
                    return -1
                pos = end
                continue
            if code == _SLOW:
                self._settle(wbuf, conn, acc)
                acc = False
                handler._slow_head(data[pos:end])
                if conn.closing:
                    return -1
                pos = end
                continue
            close = not h.keep_alive or draining
            try:
                if code == FK_V_OK:
                    rc = fk_front_names(&self.f, &r)
                    if rc < 0:
                        raise MemoryError()
                    if rc == 0 and not fk_front_has_identity(&r):
                        if fk_front_http_accepted(&self.f, &r, close) < 0:
                            raise MemoryError()
                        lat = self._lap(t0)
                        fk_front_observe(&self.f, &r, lat)
                        if self.f.log_decisions and fk_front_log_accepted(&self.f, &r, 1, lat, now + lat, pj,
                                                                          h.xff) < 0:
                            raise MemoryError()
                        acc = True
                        if close:
                            self._settle(wbuf, conn, acc)
                            conn.close()
                            return -1
                    else:
                        res = _result(&r, now)
                        lat = _clock(CLOCK_MONOTONIC) - t0
                        self._settle(wbuf, conn, acc)
                        acc = False
                        handler._native_accepted(res, lat, close, _bytes(h.xff) if h.xff.p != NULL else None)
                else:
                    err = self._error(nv, code, &r, now)
                    lat = _clock(CLOCK_MONOTONIC) - t0
                    self._settle(wbuf, conn, acc)
                    acc = False
                    handler._native_rejected(err, lat, close, _bytes(h.xff) if h.xff.p != NULL else None,
                                             _bytes(h.token))   # the refused token: its KRB-ERROR answer
            finally:
                fk_scratch_wipe(&r, self.scratch, h.token.n)
            if conn.closing:
                return -1
            pos = end
        self._settle(wbuf, conn, acc)
        self._log_check()
        return pos
