# The validator at the Python boundary: keys in once, token in, one AuthResult (or one error) out.
# The work happens in validate.c without the GIL; this file only converts at the edges.

import time as _time

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from der cimport fk_buf
from kcrypto cimport fk_ekey_init, OPENSSL_cleanse
from validate cimport (fk_kt_entry, fk_validator, fk_result, fk_validate, fk_scratch_size, fk_scratch_wipe,
                       fk_princ_hash, fk_verdict_name, FK_V_OK, FK_V_TOO_LARGE, FK_V_REPLAY, FK_V_COUNT)

cdef enum:
    STACK_SCRATCH = 16384   # stack bytes for the scratch of a typical token; larger ones use the heap

# verdict number <-> name, read from validate.h's list (lower-cased); fastkrb.diagnose turns a name and
# its facts into a typed error
VERDICTS = {code: fk_verdict_name(code).decode("ascii").lower() for code in range(FK_V_COUNT)}
VERDICT_CODES = {name: code for code, name in VERDICTS.items()}


cdef class NativeValidator:
    """Keys prepared once; validate() runs the C core without the GIL."""

    cdef fk_validator v
    cdef object _keep          # bytes objects the C key table points into
    cdef object _on_error      # callable(code, facts) -> raises the typed KerberosError
    cdef object _replay_hook   # callable(key, expiry, now, ctime) for Python replay backends, or None
    cdef NativeReplayBackend _rcache

    def __cinit__(self):
        memset(&self.v, 0, sizeof(self.v))

    def __init__(self, list entries, uint64_t permitted, double skew, size_t max_token, list realms,
                 bint verify_pac, NativeReplayBackend rcache, bint cold_start, double rc_started,
                 object on_error, object replay_hook=None):
        """entries: (components: tuple[bytes], realm: bytes, kvno, enctype, key: bytes, accepted: bool)."""
        cdef size_t i
        cdef int j, rc
        cdef fk_kt_entry *e
        cdef bytes b
        self._keep = []
        self._on_error = on_error
        self._replay_hook = replay_hook
        self.v.keys = <fk_kt_entry *>PyMem_Malloc(max(1, len(entries)) * sizeof(fk_kt_entry))
        if self.v.keys == NULL:
            raise MemoryError()
        memset(self.v.keys, 0, max(1, len(entries)) * sizeof(fk_kt_entry))
        princs = {}
        for i, (comps, realm, kvno, enctype, key, accepted) in enumerate(entries):
            e = &self.v.keys[i]
            if len(comps) == 0 or len(comps) > 8:
                raise ValueError(f"principal with {len(comps)} components is not supported")
            for j, comp in enumerate(comps):
                b = bytes(comp)
                self._keep.append(b)
                e.comp[j].p = <const uint8_t *>PyBytes_AS_STRING(b)
                e.comp[j].n = PyBytes_GET_SIZE(b)
            e.ncomp = len(comps)
            b = bytes(realm)
            self._keep.append(b)
            e.realm.p = <const uint8_t *>PyBytes_AS_STRING(b)
            e.realm.n = PyBytes_GET_SIZE(b)
            e.kvno = kvno
            e.enctype = enctype
            e.accepted = accepted
            e.princ = princs.setdefault((tuple(comps), realm), len(princs))
            e.princ_hash = fk_princ_hash(e)
            b = bytes(key)
            rc = fk_ekey_init(&e.tkt, enctype, <const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 2)
            if rc == 0:
                rc = fk_ekey_init(&e.pac, enctype, <const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 17)
            if rc != 0:
                raise ValueError(f"keytab key {i} (enctype {enctype}) cannot be used: error {rc}")
            self.v.nkeys = i + 1
        self.v.permitted = permitted
        self.v.skew = skew
        self.v.max_token = max_token
        self.v.verify_pac = verify_pac
        self.v.cold_start = cold_start
        self.v.rc_started = rc_started
        if realms:
            self.v.realms = <fk_buf *>PyMem_Malloc(len(realms) * sizeof(fk_buf))
            if self.v.realms == NULL:
                raise MemoryError()
            for i, r in enumerate(realms):
                b = bytes(r)
                self._keep.append(b)
                self.v.realms[i].p = <const uint8_t *>PyBytes_AS_STRING(b)
                self.v.realms[i].n = PyBytes_GET_SIZE(b)
            self.v.nrealms = len(realms)
        if rcache is not None:
            self._rcache = rcache
            self.v.rc = rcache.backend()

    def __dealloc__(self):
        cdef size_t i
        if self.v.keys != NULL:
            # service keys are secrets: wipe the prepared key material before freeing it
            for i in range(self.v.nkeys):
                OPENSSL_cleanse(&self.v.keys[i], sizeof(fk_kt_entry))
            PyMem_Free(self.v.keys)
        if self.v.realms != NULL:
            PyMem_Free(self.v.realms)

    def validate(self, token, now=None, channel_bindings=None):
        cdef const uint8_t *tok
        cdef Py_ssize_t toklen
        cdef const uint8_t *cb = NULL
        cdef size_t cblen = 0
        cdef double t
        cdef fk_result r
        cdef uint8_t stackbuf[STACK_SCRATCH]
        cdef uint8_t *scratch
        cdef size_t need
        cdef int code
        cdef const char *s
        if isinstance(token, str):
            s = PyUnicode_AsUTF8AndSize(token, &toklen)
            tok = <const uint8_t *>s
        elif isinstance(token, bytes):
            tok = <const uint8_t *>PyBytes_AS_STRING(token)
            toklen = PyBytes_GET_SIZE(token)
        else:
            token = bytes(token)
            tok = <const uint8_t *>PyBytes_AS_STRING(token)
            toklen = PyBytes_GET_SIZE(token)
        if channel_bindings is not None:
            if not isinstance(channel_bindings, bytes):
                channel_bindings = bytes(channel_bindings)
            cb = <const uint8_t *>PyBytes_AS_STRING(channel_bindings)
            cblen = PyBytes_GET_SIZE(channel_bindings)
        t = _time.time() if now is None else float(now)
        need = fk_scratch_size(toklen)
        if need <= STACK_SCRATCH:
            scratch = stackbuf
        else:
            if <size_t>toklen > self.v.max_token * 2 + 64:
                # refuse before allocating for absurd sizes
                return self._on_error(FK_V_TOO_LARGE, {"size": toklen, "max_token": self.v.max_token})
            scratch = <uint8_t *>malloc(need)
            if scratch == NULL:
                raise MemoryError()
        try:
            with nogil:
                code = fk_validate(&self.v, tok, toklen, t, cb, cblen, scratch, need, &r)
            if code == FK_V_OK and self._replay_hook is not None:
                # a Python backend (Redis): (fresh, first_seen); it raises when it cannot answer
                fresh, first = self._replay_hook(PyBytes_FromStringAndSize(<const char *>r.replay_key, 16),
                                                 r.replay_expiry, t)
                if not fresh:
                    r.first_seen = first if first is not None else 0.0
                    code = FK_V_REPLAY
            if code != FK_V_OK:
                return self._on_error(code, _facts(&r, t, &self.v))
            return _result(&r, t)
        finally:
            # plaintexts and session keys must not linger: wipe what the call wrote
            fk_scratch_wipe(&r, scratch, toklen)
            if scratch != stackbuf:
                free(scratch)
