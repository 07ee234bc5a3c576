# The Python boundary of the validator: keys in once, token in, one AuthResult (or one error) out.
# The work happens in validate.c without the GIL; this file only converts at the edges.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free

cdef extern from "der.h":
    ctypedef struct fk_buf:
        const uint8_t *p
        size_t n
    ctypedef struct fk_name:
        int32_t name_type
        int ncomp
        fk_buf comp[8]
    ctypedef struct fk_frame:
        int kind
        int gss_mech
        int spnego_mech
        fk_buf apreq
    ctypedef struct fk_apreq:
        uint32_t ap_options
        fk_buf realm
        fk_name sname
        int32_t tkt_etype
        int has_kvno
        uint32_t tkt_kvno
        int32_t auth_etype
    ctypedef struct fk_enc_ticket:
        uint32_t flags
        int32_t keytype
        fk_buf key
        fk_buf crealm
        fk_name cname
        int32_t tr_type
        fk_buf transited
        int64_t authtime
        int has_starttime
        int64_t starttime
        int64_t endtime
        int has_renew_till
        int64_t renew_till
        fk_buf caddr
        fk_buf authdata
    ctypedef struct fk_authenticator:
        fk_buf crealm
        fk_name cname
        int has_cksum
        int32_t cksumtype
        int32_t cusec
        int64_t ctime
        int has_subkey
        int32_t subkey_type
        fk_buf subkey
        int has_seq
        uint32_t seq
    int FK_FRAME_RAW, FK_FRAME_GSS, FK_FRAME_SPNEGO, FK_FRAME_SPNEGO_RESP
    size_t fk_b64_encode(const uint8_t *inp, size_t n, char *out) nogil

cdef extern from "rcache.h":
    ctypedef struct fk_rcache:
        pass
    ctypedef int (*fk_rc_insert_fn)(void *ctx, const uint8_t *key, double expiry, double now,
                                    double *first_seen) nogil
    ctypedef struct fk_rc_backend:
        fk_rc_insert_fn insert
        void *ctx
    int fk_rcache_insert_cb(void *ctx, const uint8_t *key, double expiry, double now, double *first_seen) nogil
    ctypedef struct fk_rcache_stats:
        uint64_t entries, inserts, hits, evictions, full, capacity
    fk_rcache *fk_rcache_new(size_t capacity)
    void fk_rcache_free(fk_rcache *rc)
    int fk_rcache_insert(fk_rcache *rc, const uint8_t *key, double expiry, double now, double *first_seen) nogil
    void fk_rcache_stats_get(fk_rcache *rc, fk_rcache_stats *out) nogil
    int FK_RC_OK, FK_RC_REPLAY, FK_RC_FULL

cdef extern from "validate.h":
    ctypedef struct fk_kt_entry:
        fk_buf realm
        int ncomp
        fk_buf comp[8]
        uint32_t kvno
        int32_t enctype
        int accepted
        int princ
        uint32_t princ_hash
        fk_ekey tkt
        fk_ekey pac
    ctypedef struct fk_validator:
        fk_kt_entry *keys
        size_t nkeys
        uint64_t permitted
        double skew
        size_t max_token
        fk_buf *realms
        size_t nrealms
        int verify_pac
        fk_rc_backend rc
        int cold_start
        double rc_started
    ctypedef struct fk_result:
        int code
        const char *what
        size_t offset
        fk_frame frame
        fk_apreq req
        fk_enc_ticket tkt
        fk_authenticator auth
        int have_tkt, have_auth
        const fk_kt_entry *key
        int key_tried
        int64_t tkt_start
        double skew_seconds
        int has_gss_cksum
        uint32_t gss_flags
        fk_buf deleg
        int cb_state
        int cbt_required
        int mutual
        fk_buf pac
        int pac_verified
        uint8_t replay_key[16]
        double replay_expiry
        double first_seen
        fk_buf reply
        fk_buf transited_bad
    int FK_V_OK, FK_V_MALFORMED, FK_V_TOO_LARGE, FK_V_NTLM, FK_V_NO_KRB5, FK_V_USER_TO_USER, FK_V_ENCTYPE_NOT_PERMITTED, FK_V_SESSION_ENCTYPE_NOT_PERMITTED, FK_V_WRONG_PRINCIPAL, FK_V_PRINCIPAL_NOT_ACCEPTED, FK_V_KVNO, FK_V_ENCTYPE_NOT_IN_KEYTAB, FK_V_TICKET_INTEGRITY, FK_V_TICKET_INTEGRITY_NO_KVNO, FK_V_AUTH_INTEGRITY, FK_V_AUTH_ENCTYPE_MISMATCH, FK_V_CKSUM_INTEGRITY, FK_V_PAC_INTEGRITY, FK_V_PAC_MALFORMED, FK_V_NAME_MISMATCH, FK_V_REALM, FK_V_TRANSITED, FK_V_TICKET_INVALID, FK_V_CLOCK_SKEW, FK_V_NOT_YET_VALID, FK_V_EXPIRED, FK_V_CB_MISMATCH, FK_V_CB_MISSING, FK_V_REPLAY, FK_V_RC_COLD, FK_V_RC_FULL, FK_V_RC_UNAVAILABLE, FK_V_INTERNAL
    size_t fk_scratch_size(size_t toklen) nogil
    void fk_scratch_wipe(const fk_result *r, uint8_t *scratch, size_t toklen) nogil
    int fk_validate(const fk_validator *v, const uint8_t *tok, size_t toklen, double now,
                    const uint8_t *cb, size_t cblen, uint8_t *scratch, size_t scratchlen, fk_result *r) nogil
    uint32_t fk_princ_hash(const fk_kt_entry *e)
    int fk_token_bytes(const uint8_t *tok, size_t n, uint8_t *out, fk_buf *res)

cdef extern from "der.h":
    ctypedef struct fk_derr:
        const char *what
        size_t offset
    int fk_unframe(const uint8_t *tok, size_t n, fk_frame *f, fk_derr *e)
    int fk_decode_apreq(fk_buf inp, fk_apreq *r, fk_derr *e)
    int FK_UNFRAME_OK, FK_UNFRAME_NTLM, FK_UNFRAME_NO_KRB5

import time as _time

cdef object _FRAMES = ("raw", "krb5", "spnego", "spnego")
cdef object _CB_STATES = ("none", "matched", "matched_java", "client_none", "ignored")
cdef object _OID_NAMES = ("1.2.840.113554.1.2.2", "1.2.840.48018.1.2.2")
DEF STACK_SCRATCH = 16384

# verdict number <-> name; fastkrb.diagnose turns a name and its facts into a typed error
VERDICTS = {FK_V_OK: "ok", FK_V_MALFORMED: "malformed", FK_V_TOO_LARGE: "too_large", FK_V_NTLM: "ntlm", FK_V_NO_KRB5: "no_krb5", FK_V_USER_TO_USER: "user_to_user", FK_V_ENCTYPE_NOT_PERMITTED: "enctype_not_permitted", FK_V_SESSION_ENCTYPE_NOT_PERMITTED: "session_enctype_not_permitted", FK_V_WRONG_PRINCIPAL: "wrong_principal", FK_V_PRINCIPAL_NOT_ACCEPTED: "principal_not_accepted", FK_V_KVNO: "kvno", FK_V_ENCTYPE_NOT_IN_KEYTAB: "enctype_not_in_keytab", FK_V_TICKET_INTEGRITY: "ticket_integrity", FK_V_TICKET_INTEGRITY_NO_KVNO: "ticket_integrity_no_kvno", FK_V_AUTH_INTEGRITY: "auth_integrity", FK_V_AUTH_ENCTYPE_MISMATCH: "auth_enctype_mismatch", FK_V_CKSUM_INTEGRITY: "cksum_integrity", FK_V_PAC_INTEGRITY: "pac_integrity", FK_V_PAC_MALFORMED: "pac_malformed", FK_V_NAME_MISMATCH: "name_mismatch", FK_V_REALM: "realm", FK_V_TRANSITED: "transited", FK_V_TICKET_INVALID: "ticket_invalid", FK_V_CLOCK_SKEW: "clock_skew", FK_V_NOT_YET_VALID: "not_yet_valid", FK_V_EXPIRED: "expired", FK_V_CB_MISMATCH: "cb_mismatch", FK_V_CB_MISSING: "cb_missing", FK_V_REPLAY: "replay", FK_V_RC_COLD: "rc_cold", FK_V_RC_FULL: "rc_full", FK_V_RC_UNAVAILABLE: "rc_unavailable", FK_V_INTERNAL: "internal"}
VERDICT_CODES = {name: code for code, name in VERDICTS.items()}


cdef inline bytes _bytes(fk_buf b):
    return PyBytes_FromStringAndSize(<const char *>b.p, b.n)


cdef str _name(const fk_name *nm, fk_buf realm):
    """MIT's unparse: components joined by '/', then '@realm'; '/', '@' and '\\' escaped."""
    cdef char stack[512]
    cdef char *out = stack
    cdef size_t cap = 2 * realm.n + 2
    cdef size_t o = 0, j
    cdef int i
    cdef uint8_t ch
    for i in range(nm.ncomp):
        cap += 2 * nm.comp[i].n + 1
    if cap > sizeof(stack):
        out = <char *>malloc(cap)
        if out == NULL:
            raise MemoryError()
    try:
        for i in range(nm.ncomp):
            if i:
                out[o] = b'/'
                o += 1
            for j in range(nm.comp[i].n):
                ch = nm.comp[i].p[j]
                if ch == 0x2f or ch == 0x40 or ch == 0x5c:
                    out[o] = b'\\'
                    o += 1
                out[o] = <char>ch
                o += 1
        out[o] = b'@'
        o += 1
        for j in range(realm.n):
            ch = realm.p[j]
            if ch == 0x40 or ch == 0x5c:
                out[o] = b'\\'
                o += 1
            out[o] = <char>ch
            o += 1
        return PyUnicode_DecodeUTF8(out, o, "surrogateescape")
    finally:
        if out != stack:
            free(out)


cdef str _realm(fk_buf realm):
    return PyUnicode_DecodeUTF8(<const char *>realm.p, realm.n, "surrogateescape")


cdef class AuthResult:
    """A validated AP-REQ: who the client is, for which service, and what to answer."""

    cdef readonly str client
    cdef readonly str server
    cdef readonly str client_realm
    cdef readonly int enctype
    cdef readonly int session_enctype
    cdef readonly int kvno
    cdef readonly double auth_time
    cdef readonly double start_time
    cdef readonly double end_time
    cdef readonly object renew_till
    cdef readonly int flags
    cdef readonly bytes session_key
    cdef readonly object subkey
    cdef readonly object subkey_enctype
    cdef readonly object seq_number
    cdef readonly bint mutual
    cdef readonly object response_token
    cdef readonly str framing
    cdef readonly object mech
    cdef readonly int gss_flags
    cdef readonly object delegated
    cdef readonly str channel_bindings
    cdef readonly double ctime
    cdef readonly int cusec
    cdef readonly double skew
    cdef readonly bytes replay_key
    cdef readonly double replay_expiry
    cdef readonly object transited
    cdef readonly bint pac_verified
    cdef object _pac_bytes
    cdef object _pac

    @property
    def www_authenticate(self):
        """The RFC 4559 header value to send back, or None when there is nothing to send."""
        if self.response_token is None:
            return None
        return "Negotiate " + _b64(self.response_token)

    @property
    def pac_bytes(self):
        return self._pac_bytes

    @property
    def pac(self):
        """The decoded PAC (fastkrb.krb.pac.Pac), parsed on first access; None when the ticket has none."""
        if self._pac is None and self._pac_bytes is not None:
            from fastkrb.krb.pac import Pac
            self._pac = Pac(self._pac_bytes)
        return self._pac

    @property
    def short_name(self):
        """The client's name without the realm (the REMOTE_USER convention)."""
        return self.client.rsplit("@", 1)[0]

    def __repr__(self):
        return (f"AuthResult(client={self.client!r}, server={self.server!r}, enctype={self.enctype}, "
                f"kvno={self.kvno}, mutual={self.mutual})")

    def to_dict(self):
        """JSON-safe facts, never key bytes."""
        return {
            "client": self.client, "server": self.server, "client_realm": self.client_realm,
            "enctype": self.enctype, "session_enctype": self.session_enctype, "kvno": self.kvno,
            "auth_time": self.auth_time, "start_time": self.start_time, "end_time": self.end_time,
            "renew_till": self.renew_till, "flags": self.flags, "mutual": self.mutual,
            "framing": self.framing, "mech": self.mech, "gss_flags": self.gss_flags,
            "delegated": self.delegated is not None, "channel_bindings": self.channel_bindings,
            "ctime": self.ctime, "cusec": self.cusec, "skew": self.skew,
            "pac": self._pac_bytes is not None, "pac_verified": self.pac_verified,
            "transited": self.transited,
        }


cdef str _b64(bytes data):
    cdef size_t n = PyBytes_GET_SIZE(data)
    cdef bytearray out = bytearray((n + 2) // 3 * 4)
    cdef size_t m = fk_b64_encode(<const uint8_t *>PyBytes_AS_STRING(data), n, <char *>out)
    return out[:m].decode("ascii")


def b64encode(bytes data):
    return _b64(data)


cdef class NativeReplayBackend:
    """A replay cache the C validator calls directly (no Python on the hot path)."""

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = NULL
        b.ctx = NULL
        return b


cdef class MemoryReplayCache(NativeReplayBackend):
    """The in-process replay cache (rcache.c); outlives keytab reloads, shared by every validator given it."""

    cdef fk_rcache *rc

    cdef fk_rc_backend backend(self):
        cdef fk_rc_backend b
        b.insert = fk_rcache_insert_cb
        b.ctx = <void *>self.rc
        return b

    cdef readonly double started
    cdef readonly size_t capacity

    def __cinit__(self, size_t capacity=1 << 20, started=None):
        self.rc = fk_rcache_new(capacity)
        if self.rc == NULL:
            raise MemoryError("replay cache allocation failed")
        self.capacity = capacity
        self.started = _time.time() if started is None else float(started)

    def __dealloc__(self):
        if self.rc != NULL:
            fk_rcache_free(self.rc)

    def insert(self, bytes key, double expiry, double now):
        """Atomic insert-if-absent: (True, None) when new, (False, first_seen) for a replay;
        raises OverflowError when full of live entries (the caller fails closed)."""
        cdef double first = 0
        cdef int rc
        cdef const uint8_t *k
        if len(key) != 16:
            raise ValueError("replay key must be 16 bytes")
        k = <const uint8_t *>PyBytes_AS_STRING(key)
        with nogil:
            rc = fk_rcache_insert(self.rc, k, expiry, now, &first)
        if rc == FK_RC_OK:
            return True, None
        if rc == FK_RC_REPLAY:
            return False, first
        raise OverflowError("replay cache full")

    def stats(self):
        cdef fk_rcache_stats st
        fk_rcache_stats_get(self.rc, &st)
        return {"entries": st.entries, "inserts": st.inserts, "hits": st.hits,
                "evictions": st.evictions, "full": st.full, "capacity": st.capacity}


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
                return self._on_error(code, _facts(&r, t, self.v.skew))
            return _result(&r, t)
        finally:
            # plaintexts and session keys must not linger: wipe what the call wrote
            fk_scratch_wipe(&r, scratch, toklen)
            if scratch != stackbuf:
                free(scratch)


cdef extern from "openssl/crypto.h":
    void OPENSSL_cleanse(void *ptr, size_t len) nogil

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL


cdef AuthResult _result(fk_result *r, double now):
    cdef AuthResult res = AuthResult.__new__(AuthResult)
    res.client = _name(&r.tkt.cname, r.tkt.crealm)
    res.server = _name(&r.req.sname, r.req.realm)
    res.client_realm = _realm(r.tkt.crealm)
    res.enctype = r.req.tkt_etype
    res.session_enctype = r.tkt.keytype
    res.kvno = r.key.kvno
    res.auth_time = r.tkt.authtime
    res.start_time = r.tkt_start
    res.end_time = r.tkt.endtime
    res.renew_till = r.tkt.renew_till if r.tkt.has_renew_till else None
    res.flags = r.tkt.flags
    res.session_key = _bytes(r.tkt.key)
    res.subkey = _bytes(r.auth.subkey) if r.auth.has_subkey else None
    res.subkey_enctype = r.auth.subkey_type if r.auth.has_subkey else None
    res.seq_number = r.auth.seq if r.auth.has_seq else None
    res.mutual = r.mutual
    res.response_token = _bytes(r.reply) if r.reply.n else None
    res.framing = _FRAMES[r.frame.kind]
    res.mech = _OID_NAMES[r.frame.gss_mech] if r.frame.kind != FK_FRAME_RAW else None
    res.gss_flags = r.gss_flags
    res.delegated = _bytes(r.deleg) if r.deleg.n else None
    res.channel_bindings = _CB_STATES[r.cb_state]
    res.ctime = r.auth.ctime
    res.cusec = r.auth.cusec
    res.skew = r.skew_seconds
    res.replay_key = PyBytes_FromStringAndSize(<const char *>r.replay_key, 16)
    res.replay_expiry = r.replay_expiry
    res.transited = _bytes(r.tkt.transited).decode("utf-8", "surrogateescape") if r.tkt.transited.n else None
    res._pac_bytes = _bytes(r.pac) if r.pac.n else None
    res.pac_verified = r.pac_verified
    return res


cdef dict _facts(fk_result *r, double now, double skew):
    """The facts of a rejection, for the error's cause, fix and details."""
    cdef dict f = {"now": now, "clock_skew": skew}
    if r.what != NULL:
        f["what"] = r.what.decode("utf-8", "replace")
        f["offset"] = r.offset
    if r.frame.apreq.n:
        f["framing"] = _FRAMES[r.frame.kind]
    if r.req.sname.ncomp:
        f["server"] = _name(&r.req.sname, r.req.realm)
        f["ticket_enctype"] = r.req.tkt_etype
        f["ticket_kvno"] = r.req.tkt_kvno if r.req.has_kvno else None
        f["authenticator_enctype"] = r.req.auth_etype
        f["keys_tried"] = r.key_tried
    if r.key != NULL:
        f["keytab_kvno_used"] = r.key.kvno
    if r.have_tkt:
        f["client"] = _name(&r.tkt.cname, r.tkt.crealm)
        f["client_realm"] = _realm(r.tkt.crealm)
        f["session_enctype"] = r.tkt.keytype
        f["auth_time"] = r.tkt.authtime
        f["start_time"] = r.tkt_start
        f["end_time"] = r.tkt.endtime
        f["ticket_flags"] = r.tkt.flags
        if r.tkt.transited.n:
            f["transited"] = _bytes(r.tkt.transited).decode("utf-8", "replace")
        if r.transited_bad.n:
            f["transited_realm"] = _bytes(r.transited_bad).decode("utf-8", "replace")
    if r.have_auth:
        f["authenticator_client"] = _name(&r.auth.cname, r.auth.crealm)
        f["ctime"] = r.auth.ctime
        f["cusec"] = r.auth.cusec
        f["skew_seconds"] = r.skew_seconds
        f["cbt_required"] = bool(r.cbt_required)
        if r.first_seen:
            f["first_seen"] = r.first_seen
            f["first_seen_ago"] = now - r.first_seen
    return f


def decode_token(token):
    """What can be read without a key: framing, mech, realm, SPN, kvno, enctypes, AP options.

    Raises ValueError with the native decoder's reason when the token does not parse (tools only).
    """
    cdef bytes data = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    cdef bytearray buf = bytearray(len(data) + 1)
    cdef fk_buf raw
    cdef fk_frame fr
    cdef fk_apreq q
    cdef fk_derr e
    cdef int u
    e.what = NULL
    e.offset = 0
    if fk_token_bytes(<const uint8_t *>PyBytes_AS_STRING(data), len(data), <uint8_t *>(<char *>buf), &raw) != 0:
        raise ValueError("token is neither binary nor base64")
    u = fk_unframe(raw.p, raw.n, &fr, &e)
    out = {"size": raw.n, "bytes": _bytes(raw)}
    if u != FK_UNFRAME_OK:
        out["mechanism"] = "ntlm" if u == FK_UNFRAME_NTLM else ("other" if u == FK_UNFRAME_NO_KRB5 else None)
        raise ValueError((e.what or b"malformed").decode(), e.offset, out)
    out["framing"] = _FRAMES[fr.kind]
    out["mech"] = _OID_NAMES[fr.gss_mech] if fr.kind != FK_FRAME_RAW else None
    out["spnego_mech"] = _OID_NAMES[fr.spnego_mech] if fr.kind >= FK_FRAME_SPNEGO else None
    out["ap_req"] = _bytes(fr.apreq)
    if fk_decode_apreq(fr.apreq, &q, &e) != 0:
        raise ValueError((e.what or b"malformed").decode(), e.offset, out)
    out.update({
        "server": _name(&q.sname, q.realm), "realm": _realm(q.realm), "name_type": q.sname.name_type,
        "ticket_enctype": q.tkt_etype, "ticket_kvno": q.tkt_kvno if q.has_kvno else None,
        "authenticator_enctype": q.auth_etype, "ap_options": q.ap_options,
        "mutual_required": bool((q.ap_options >> 29) & 1), "use_session_key": bool((q.ap_options >> 30) & 1),
    })
    return out


cdef extern from "validate.h":
    int FK_NSTAGES
    int fk_profile_stages(const fk_validator *v, const uint8_t *tok, size_t toklen, double now, long iters,
                          fk_rc_backend rc, double *out) nogil

STAGES = ("framing", "der_apreq", "ticket_decrypt", "der_ticket", "session_key", "authenticator", "pac",
          "replay_insert", "full_validate")


def profile_stages(NativeValidator nv, bytes token, double now, long iters=20000,
                   NativeReplayBackend rcache=None):
    """ns per operation for each stage of validating ``token`` (see profile.c)."""
    cdef double out[16]
    cdef int code
    cdef fk_rc_backend rc
    rc.insert = NULL
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
