# The native request path with a network replay cache (Redis): a chunk's requests in two calls around one
# round trip, for both front doors (wire_batch/wire_batch_finish, http_batch/http_batch_finish).
#
# wire_batch() frames every request of a chunk and runs every check of each in C (the validator's "deferred"
# twin: no replay insert), keeping each validated request's result and scratch in a ReplayBatch; it hands the
# batch's replay keys to the front door (binary.py: handler._replay_batch), which inserts them all with one
# Redis round trip. wire_batch_finish() then applies the cache's answers (fresh: the acceptance, encoded as
# NativeFront.wire encodes it; seen: the replay verdict; a failed round trip: replay_cache_unavailable for every
# request of the batch) and answers every request of the batch in frame order. A result's plaintexts, session
# keys and answer stay in its scratch only for the round trip, and are wiped on every path: finished, failed,
# or dropped with its connection (__dealloc__).
#
# http_batch() does the same for the /auth heads of an HTTP chunk. HTTP answers go out in request order
# (http.py's pending queue): a batch takes its place in that queue when it is handed over, so a head Python
# answers (any head the native path does not read alone) first hands over the batch of the heads before it.

from libc.stdlib cimport realloc

from validate cimport FK_V_REPLAY

cdef size_t _ABSENT = <size_t>-1   # an offset in the chunk: no such field (tok_at, xff_at)

cdef enum:
    _B_PENDING = 0    # validated, its replay key awaits the cache's answer
    _B_REJECTED = 1   # refused before the cache: the typed error is in errors[i]
    _B_DONE = 2       # answered, scratch wiped and freed


cdef class ReplayBatch:
    """One chunk's requests between the checks and the replay cache's answer (wire_batch, wire_batch_finish)."""

    cdef fk_result *r
    cdef uint8_t **scratch
    cdef size_t *toklen
    cdef double *now
    cdef double *t0
    cdef double *lat       # rejected: the latency at the decision
    cdef uint32_t *rid     # wire: the request id; http: 1 when the answer closes the connection
    cdef int *ex
    cdef size_t *tok_at    # http: the token's (base64) offset in data, for the KRB-ERROR of a refusal
    cdef size_t *xff_at    # http: X-Forwarded-For's offset in data, or _ABSENT
    cdef size_t *xff_n
    cdef int *state
    cdef size_t n, cap
    cdef list errors
    cdef readonly list items        # (replay key, expiry) of the pending requests, in frame order
    cdef readonly double last_now   # the clock of the last validation (the cache's "now" for the batch)
    cdef object data                # the chunk: a result may point into its bytes
    cdef NativeValidator nv         # the validator that checked them (its keys outlive a reload)

    def __cinit__(self):
        self.r = NULL
        self.scratch = NULL
        self.tok_at = self.xff_at = self.xff_n = NULL
        self.n = self.cap = 0
        self.errors = []
        self.items = []
        self.last_now = 0.0

    def __dealloc__(self):
        self._release()
        free(self.r)
        free(self.scratch)
        free(self.toklen)
        free(self.now)
        free(self.t0)
        free(self.lat)
        free(self.rid)
        free(self.ex)
        free(self.state)
        free(self.tok_at)
        free(self.xff_at)
        free(self.xff_n)

    def __len__(self):
        return self.n

    def entries(self):
        """items as a Redis batch takes them: (replay key, expiry, last_now) each, the keys 16 bytes."""
        cdef object now = self.last_now
        return [(k, e, now) for k, e in self.items]

    cdef void _wipe(self, size_t i) noexcept:
        """Request i is answered (or dropped): its plaintexts and keys wiped, its scratch freed."""
        if self.scratch[i] != NULL:
            fk_scratch_wipe(&self.r[i], self.scratch[i], self.toklen[i])
            free(self.scratch[i])
            self.scratch[i] = NULL
        self.state[i] = _B_DONE

    cdef void _release(self) noexcept:
        """Wipe and free every scratch still held (results not answered)."""
        cdef size_t i
        for i in range(self.n):
            self._wipe(i)

    cdef object _verdict(self, NativeFront front, size_t i, answer):
        """The replay cache's answer for pending request i as a verdict: None (fresh: accepted), or the typed
        error (a replay, as NativeValidator.validate gives it with a Python replay backend; the cache's own
        ReplayCacheUnavailable, or the failed round trip's exception)."""
        if isinstance(answer, BaseException):
            return answer
        fresh, first = answer
        if fresh:
            return None
        self.r[i].first_seen = first if first is not None else 0.0
        return front._error(self.nv, FK_V_REPLAY, &self.r[i], self.now[i])

    cdef object _span(self, size_t at, size_t n):
        """Bytes of the chunk (http: the token, X-Forwarded-For) for an answer Python gives; None: absent."""
        if at == _ABSENT:
            return None
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self.data) + at, n)

    def discard(self):
        """The connection is gone: wipe every result now, answer none."""
        self._release()

    cdef int _grow(self) except -1:
        cdef size_t cap = self.cap * 2 if self.cap else 16
        cdef void *p
        p = realloc(self.r, cap * sizeof(fk_result))
        if p == NULL:
            raise MemoryError()
        self.r = <fk_result *>p
        p = realloc(self.scratch, cap * sizeof(uint8_t *))
        if p == NULL:
            raise MemoryError()
        self.scratch = <uint8_t **>p
        p = realloc(self.toklen, cap * sizeof(size_t))
        if p == NULL:
            raise MemoryError()
        self.toklen = <size_t *>p
        p = realloc(self.now, cap * sizeof(double))
        if p == NULL:
            raise MemoryError()
        self.now = <double *>p
        p = realloc(self.t0, cap * sizeof(double))
        if p == NULL:
            raise MemoryError()
        self.t0 = <double *>p
        p = realloc(self.lat, cap * sizeof(double))
        if p == NULL:
            raise MemoryError()
        self.lat = <double *>p
        p = realloc(self.rid, cap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self.rid = <uint32_t *>p
        p = realloc(self.ex, cap * sizeof(int))
        if p == NULL:
            raise MemoryError()
        self.ex = <int *>p
        p = realloc(self.state, cap * sizeof(int))
        if p == NULL:
            raise MemoryError()
        self.state = <int *>p
        p = realloc(self.tok_at, cap * sizeof(size_t))
        if p == NULL:
            raise MemoryError()
        self.tok_at = <size_t *>p
        p = realloc(self.xff_at, cap * sizeof(size_t))
        if p == NULL:
            raise MemoryError()
        self.xff_at = <size_t *>p
        p = realloc(self.xff_n, cap * sizeof(size_t))
        if p == NULL:
            raise MemoryError()
        self.xff_n = <size_t *>p
        self.cap = cap
        return 0

    cdef int _check(self, NativeFront front, const uint8_t *tok, size_t toklen, const uint8_t *cb, size_t cblen,
                    uint32_t rid, int ex) except -2:
        """Validate one request into a new slot (its own scratch). _SLOW: a size NativeValidator refuses first."""
        cdef size_t need = fk_scratch_size(toklen)
        cdef size_t i
        cdef uint8_t *s
        cdef int code
        if need > 16384 and toklen > self.nv.v.max_token * 2 + 64:
            return _SLOW
        if self.n == self.cap:
            self._grow()
        s = <uint8_t *>malloc(need)
        if s == NULL:
            raise MemoryError()
        i = self.n
        self.scratch[i] = s
        self.toklen[i] = toklen
        self.rid[i] = rid
        self.ex[i] = ex
        self.tok_at[i] = self.xff_at[i] = _ABSENT
        self.xff_n[i] = 0
        self.state[i] = _B_DONE
        memset(&self.r[i], 0, sizeof(fk_result))
        self.n += 1
        self.now[i] = front.fixed_now if front.fixed_now > 0 else _clock(CLOCK_REALTIME)
        self.t0[i] = _clock(CLOCK_MONOTONIC)
        code = fk_validate(&self.nv.v, tok, toklen, self.now[i], cb, cblen, s, need, &self.r[i])
        self.last_now = self.now[i]
        if code == FK_V_OK:
            self.state[i] = _B_PENDING
            self.items.append((PyBytes_FromStringAndSize(<const char *>self.r[i].replay_key, 16),
                               self.r[i].replay_expiry))
            return code
        # refused before the cache: the facts now, the scratch wiped now
        try:
            err = front._error(self.nv, code, &self.r[i], self.now[i])
        finally:
            self._wipe(i)
        self.lat[i] = _clock(CLOCK_MONOTONIC) - self.t0[i]
        self.errors.append(err)
        self.state[i] = _B_REJECTED
        return code


cdef NativeValidator _deferred(NativeFront front):
    """The validator in service's twin without a replay insert, when its replay cache is awaited (Redis) and no
    policy of its own needs Python."""
    v = front.validator
    nv = getattr(v, "_deferred", None)
    if type(nv) is not NativeValidator or getattr(v, "_areplay", None) is None or getattr(v, "policy", None) is not None:
        return None
    return <NativeValidator>nv


def wire_batch_usable(NativeFront front):
    """True when wire_batch can run the validator in service (a Redis replay cache, no policy of its own)."""
    return _deferred(front) is not None


cdef ReplayBatch _new_batch(NativeValidator nv, bytes data):
    cdef ReplayBatch batch = ReplayBatch()
    batch.nv = nv
    batch.data = data
    return batch


cdef int _hand_over(handler, ReplayBatch batch) except -1:
    if batch.n:
        handler._replay_batch(batch)
    return 0


def wire_batch(NativeFront front, handler, bytes data, conn):
    """NativeFront.wire for a validator whose replay cache is awaited: every complete frame of data is checked;
    what needs Python goes to the handler as NativeFront.wire sends it (handler._feed); the rest becomes one
    ReplayBatch, handed to handler._replay_batch(batch) when it holds a request (its answers follow in
    wire_batch_finish). Returns the bytes used, -1 (a frame error or a closed connection: handler._feed answered)
    or -2 (this path cannot run the validator in service)."""
    cdef NativeValidator nv = _deferred(front)
    if nv is None:
        return -2
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t n = PyBytes_GET_SIZE(data)
    cdef size_t pos = 0, length, a, b, ncb, npol
    cdef uint32_t rid
    cdef int kind, ex, code
    cdef ReplayBatch batch = _new_batch(nv, data)
    while n - pos >= 4:
        length = _be32(p + pos)
        if length < 5 or length > front.max_frame:   # protocol.split_frames' refusal, and its answer
            _hand_over(handler, batch)
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
                code = batch._check(front, p + a + 2 + ncb, b - (a + 2 + ncb), p + a + 2 if ncb else NULL, ncb,
                                    rid, ex)
        elif kind == 0x03 and b - a >= 5:           # VALIDATE_EX without a policy
            ex = p[a]
            ncb = (<size_t>p[a + 1] << 8) | p[a + 2]
            npol = (<size_t>p[a + 3] << 8) | p[a + 4]
            if npol == 0 and a + 5 + ncb <= b:
                code = batch._check(front, p + a + 5 + ncb, b - (a + 5 + ncb), p + a + 5 if ncb else NULL, ncb,
                                    rid, ex)
        if code == _SLOW:   # PING, a policy, an unknown kind, a bad payload: binary.py's own path
            handler._feed(data[pos:b])
            if conn.closing:
                batch._release()
                return -1
        pos = b
    _hand_over(handler, batch)
    return pos


def wire_batch_finish(NativeFront front, handler, ReplayBatch batch, answers, list wbuf, conn, bytes peer):
    """Answer every request of batch in frame order. answers: the cache's answer per pending request, in order
    ((fresh, first_seen), or a ReplayCacheUnavailable for one refused by the cold-start rule), or one exception
    for all of them (the round trip failed: fail closed)."""
    cdef size_t i, k = 0, e = 0
    cdef int rc
    cdef bint acc = False
    cdef fk_result *r
    cdef double lat, now
    cdef fk_buf pj = fk_buf(<const uint8_t *>PyBytes_AS_STRING(peer), PyBytes_GET_SIZE(peer))
    cdef fk_buf noxff = fk_buf(NULL, 0)
    cdef bint failed = isinstance(answers, BaseException)
    front.f.out.n = 0
    try:
        for i in range(batch.n):
            if batch.state[i] == _B_REJECTED:
                err = batch.errors[e]
                e += 1
                batch.state[i] = _B_DONE
                front._settle(wbuf, conn, acc)
                acc = False
                handler._native_rejected(batch.rid[i], err, batch.lat[i], batch.ex[i])
                continue
            if batch.state[i] != _B_PENDING:
                continue
            r = &batch.r[i]
            now = batch.now[i]
            try:
                err = batch._verdict(front, i, answers if failed else answers[k])
                k += 1
                if err is None:
                    rc = fk_front_names(&front.f, r)
                    if rc == 0 and batch.ex[i] >= 0 and batch.ex[i] & _WANT_IDENTITY and fk_front_has_identity(r):
                        rc = 1   # the identity block: protocol.encode_identity
                    if rc == 0:
                        rc = fk_front_wire_accepted(&front.f, r, batch.rid[i], batch.ex[i] >= 0)
                    if rc < 0:
                        raise MemoryError()
                    if rc == 0:
                        lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                        fk_front_observe(&front.f, r, lat)
                        if front.f.log_decisions and fk_front_log_accepted(&front.f, r, 0, lat, now + lat, pj,
                                                                           noxff) < 0:
                            raise MemoryError()
                        acc = True
                    else:
                        res = _result(r, now)
                        lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                        front._settle(wbuf, conn, acc)
                        acc = False
                        handler._native_accepted(batch.rid[i], res, lat, batch.ex[i])
                else:
                    lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                    front._settle(wbuf, conn, acc)
                    acc = False
                    handler._native_rejected(batch.rid[i], err, lat, batch.ex[i])
            finally:
                batch._wipe(i)
    finally:
        batch._release()
    front._settle(wbuf, conn, acc)
    front._log_check()
    return None


def http_batch(NativeFront front, handler, bytes data, conn, bint draining):
    """NativeFront.http for a validator whose replay cache is awaited: every complete /auth head of data the
    native path reads alone is checked into a ReplayBatch, handed to handler._replay_batch(batch) (its answers
    follow in http_batch_finish); any other head goes to Python as NativeFront.http sends it, after the batch
    of the heads before it was handed over (answers in request order). Returns the bytes used (the rest is a
    partial head), -1 (the connection closed, or its rest went to handler._slow_rest) or -2 (this path cannot
    run the validator in service: a policy of the validator's own, or session cookies, which need Python)."""
    cdef NativeValidator nv = _deferred(front)
    if nv is None or front.sessions is not None:
        return -2
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t n = PyBytes_GET_SIZE(data)
    cdef size_t pos = 0, end, i
    cdef int st, code
    cdef bint close
    cdef fk_http_head h
    cdef ReplayBatch batch = _new_batch(nv, data)
    while pos < n:
        st = fk_http_read_head(p + pos, n - pos, front.max_head, &h)
        if st == FK_HEAD_PARTIAL:
            break
        end = pos + h.len
        if st == FK_HEAD_SLOW_CONN or (not h.keep_alive and end < n):
            # the rest is httptools' (see NativeFront.http): after the batch before it
            _hand_over(handler, batch)
            handler._slow_rest(data[pos:])
            return -1
        close = not h.keep_alive or draining
        code = _SLOW
        if st == FK_HEAD_FAST:
            code = batch._check(front, h.token.p, h.token.n, NULL, 0, 1 if close else 0, -1)
        if code == _SLOW:
            _hand_over(handler, batch)
            batch = _new_batch(nv, data)
            handler._slow_head(data[pos:end])
            if conn.closing:
                return -1
            pos = end
            continue
        i = batch.n - 1
        batch.tok_at[i] = <size_t>(h.token.p - p)
        if h.xff.p != NULL:
            batch.xff_at[i] = <size_t>(h.xff.p - p)
            batch.xff_n[i] = h.xff.n
        pos = end
        if close:   # the last head of the connection (nothing follows it: checked above)
            break
    _hand_over(handler, batch)
    return pos


def http_batch_finish(NativeFront front, handler, ReplayBatch batch, answers, list wbuf, conn, bytes peer):
    """Answer every request of an http_batch in order into wbuf (handler's answers, which it emits, too: see
    http.py's _batch_finish), as NativeFront.http answers them; answers as for wire_batch_finish. Returns
    True when an answer closes the connection (the batch's last)."""
    cdef size_t i, k = 0, e = 0
    cdef int rc
    cdef bint acc = False, close, closed = False
    cdef fk_result *r
    cdef double lat, now
    cdef fk_buf pj = fk_buf(<const uint8_t *>PyBytes_AS_STRING(peer), PyBytes_GET_SIZE(peer))
    cdef fk_buf xff
    cdef bint failed = isinstance(answers, BaseException)
    front.f.out.n = 0
    try:
        for i in range(batch.n):
            close = batch.rid[i] != 0
            closed = closed or close
            if batch.state[i] == _B_REJECTED:
                err = batch.errors[e]
                e += 1
                batch.state[i] = _B_DONE
                front._settle(wbuf, conn, acc)
                acc = False
                handler._native_rejected(err, batch.lat[i], close, batch._span(batch.xff_at[i], batch.xff_n[i]),
                                         batch._span(batch.tok_at[i], batch.toklen[i]))
                continue
            if batch.state[i] != _B_PENDING:
                continue
            r = &batch.r[i]
            now = batch.now[i]
            try:
                err = batch._verdict(front, i, answers if failed else answers[k])
                k += 1
                if err is None:
                    rc = fk_front_names(&front.f, r)
                    if rc < 0:
                        raise MemoryError()
                    if rc == 0 and not fk_front_has_identity(r):
                        if fk_front_http_accepted(&front.f, r, close) < 0:
                            raise MemoryError()
                        lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                        fk_front_observe(&front.f, r, lat)
                        xff = fk_buf(NULL, 0)
                        if batch.xff_at[i] != _ABSENT:
                            xff = fk_buf(<const uint8_t *>PyBytes_AS_STRING(batch.data) + batch.xff_at[i],
                                         batch.xff_n[i])
                        if front.f.log_decisions and fk_front_log_accepted(&front.f, r, 1, lat, now + lat, pj,
                                                                           xff) < 0:
                            raise MemoryError()
                        acc = True
                    else:
                        res = _result(r, now)
                        lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                        front._settle(wbuf, conn, acc)
                        acc = False
                        handler._native_accepted(res, lat, close, batch._span(batch.xff_at[i], batch.xff_n[i]))
                else:
                    lat = _clock(CLOCK_MONOTONIC) - batch.t0[i]
                    front._settle(wbuf, conn, acc)
                    acc = False
                    handler._native_rejected(err, lat, close, batch._span(batch.xff_at[i], batch.xff_n[i]),
                                             batch._span(batch.tok_at[i], batch.toklen[i]))
            finally:
                batch._wipe(i)
    finally:
        batch._release()
    front._settle(wbuf, conn, acc)
    front._log_check()
    return closed
