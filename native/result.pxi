# An accepted AP-REQ as Python sees it (AuthResult), and the facts of a rejected one: both read once
# from the fk_result that validate.c filled, after the C work is done.

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free

from der cimport fk_buf, fk_name, fk_b64_encode, fk_b64_decode, FK_FRAME_RAW
from validate cimport fk_result, fk_validator, fk_kt_entry

cdef object _FRAMES = ("raw", "krb5", "spnego", "spnego")
cdef object _CB_STATES = ("none", "matched", "matched_java", "client_none", "ignored")
cdef object _OID_NAMES = ("1.2.840.113554.1.2.2", "1.2.840.48018.1.2.2")


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


cdef str _kt_name(const fk_kt_entry *e):
    """A keytab entry's principal, unparsed like the ticket's names."""
    cdef fk_name nm
    cdef int i
    nm.name_type = 0
    nm.ncomp = e.ncomp
    for i in range(e.ncomp):
        nm.comp[i] = e.comp[i]
    return _name(&nm, e.realm)


cdef str _realm(fk_buf realm):
    return PyUnicode_DecodeUTF8(<const char *>realm.p, realm.n, "surrogateescape")


cdef str _b64(bytes data):
    cdef size_t n = PyBytes_GET_SIZE(data)
    cdef bytearray out = bytearray((n + 2) // 3 * 4)
    cdef size_t m = fk_b64_encode(<const uint8_t *>PyBytes_AS_STRING(data), n, <char *>out)
    return out[:m].decode("ascii")


def b64encode(bytes data):
    """Standard base64 of data (the encoder the C core uses for Negotiate headers)."""
    return _b64(data)


def b64decode(bytes data):
    """The decoder the C core reads Negotiate headers with (strict alphabet, up to two optional '='):
    the bytes, or None where it refuses the text. For tests that hold it to Python's base64."""
    cdef size_t n = PyBytes_GET_SIZE(data)
    cdef bytearray out = bytearray(n)
    cdef size_t m = 0
    if fk_b64_decode(<const uint8_t *>PyBytes_AS_STRING(data), n, <uint8_t *>out, &m) != 0:
        return None
    return bytes(out[:m])


cdef object _pac_decoder = None


def set_pac_decoder(decoder):
    """Register the callable that AuthResult.pac applies to the raw PAC (fastkrb.krb.pac.Pac)."""
    global _pac_decoder
    _pac_decoder = decoder


@cython.auto_pickle(True)
cdef class AuthResult:
    """A validated AP-REQ: who the client is, for which service, and what to answer."""

    cdef readonly str client
    cdef readonly str server               # the principal whose key decrypted the ticket
    cdef str _requested_server
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
    cdef Py_ssize_t _logon_off, _logon_len, _upn_off, _upn_len   # in _pac_bytes; _logon_off -1: no identity
    cdef object _identity

    @property
    def www_authenticate(self):
        """The RFC 4559 header value to send back, or None when there is nothing to send."""
        if self.response_token is None:
            return None
        return "Negotiate " + _b64(self.response_token)

    @property
    def pac_bytes(self):
        """The raw PAC (MS-PAC §2.3) from the ticket's authorization data, or None."""
        return self._pac_bytes

    @property
    def pac(self):
        """The decoded PAC (fastkrb.krb.pac.Pac), parsed on first access; None when the ticket has none.

        The decoder is registered from above (set_pac_decoder, by fastkrb.validator) so that the native
        core never imports the Python layers built on it."""
        if self._pac is None and self._pac_bytes is not None:
            if _pac_decoder is None:
                raise RuntimeError("no PAC decoder registered: import fastkrb.validator")
            self._pac = _pac_decoder(self._pac_bytes)
        return self._pac

    @property
    def requested_server(self):
        """The service principal the client asked for: the ticket's clear-text sname.

        Unauthenticated (RFC 4120 §5.3: the sname travels outside the encrypted part, anyone can rewrite it),
        so for logs only, never for policy: ``server`` is who the ticket is for. The two differ when the
        keytab names the account (``svc-api@CORP``) and the client asked for one of its SPNs.
        """
        return self._requested_server

    @property
    def identity(self):
        """The client's Identity (SIDs, names, domains) from the PAC's LOGON_INFO, decoded on first access.

        None when the ticket has no PAC with a LOGON_INFO (MIT's and Heimdal's minimal PACs) or its PAC was not
        verified (verify_pac=False). A LOGON_INFO that does not decode raises fastkrb.errors.MalformedToken
        here, not in validate(): MIT and Heimdal never read it, so neither does acceptance.
        """
        if self._identity is None and self._logon_off >= 0:
            self._identity = _identity(self._pac_bytes, self._logon_off, self._logon_len, self._upn_off,
                                       self._upn_len)
        return self._identity

    @property
    def short_name(self):
        """The client's name without the realm (the REMOTE_USER convention)."""
        return self.client.rsplit("@", 1)[0]

    def __repr__(self):
        alias = f", requested_server={self.requested_server!r}" if self.requested_server != self.server else ""
        return (f"AuthResult(client={self.client!r}, server={self.server!r}{alias}, enctype={self.enctype}, "
                f"kvno={self.kvno}, mutual={self.mutual})")

    def to_dict(self):
        """JSON-safe facts, never key bytes."""
        return {
            "client": self.client, "server": self.server, "requested_server": self.requested_server,
            "client_realm": self.client_realm,
            "enctype": self.enctype, "session_enctype": self.session_enctype, "kvno": self.kvno,
            "auth_time": self.auth_time, "start_time": self.start_time, "end_time": self.end_time,
            "renew_till": self.renew_till, "flags": self.flags, "mutual": self.mutual,
            "framing": self.framing, "mech": self.mech, "gss_flags": self.gss_flags,
            "delegated": self.delegated is not None, "channel_bindings": self.channel_bindings,
            "ctime": self.ctime, "cusec": self.cusec, "skew": self.skew,
            "pac": self._pac_bytes is not None, "pac_verified": self.pac_verified,
            "transited": self.transited,
        }


cdef AuthResult _result(fk_result *r, double now):
    cdef AuthResult res = AuthResult.__new__(AuthResult)
    res.client = _name(&r.tkt.cname, r.tkt.crealm)
    if r.alias == 1:
        # the clear-text sname is an alias (an SPN of the account): the server is who decrypted the ticket
        res.server = _kt_name(r.key)
        res._requested_server = _name(&r.req.sname, r.req.realm)
    else:
        res.server = _name(&r.req.sname, r.req.realm)
        res._requested_server = res.server
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
    res._logon_off = -1
    res._upn_off = -1
    if r.pac_verified and r.pac_logon.p != NULL:
        res._logon_off = r.pac_logon.p - r.pac.p
        res._logon_len = r.pac_logon.n
        if r.pac_upn.p != NULL:
            res._upn_off = r.pac_upn.p - r.pac.p
            res._upn_len = r.pac_upn.n
    return res


cdef str _utf16_lossy(const uint8_t *p, size_t n):
    return (<bytes>PyBytes_FromStringAndSize(<const char *>p, n & ~(<size_t>1))).decode("utf-16-le", "replace")


cdef dict _facts(fk_result *r, double now, const fk_validator *v):
    """The facts of a rejection, for the error's cause, fix and details."""
    cdef dict f = {"now": now, "clock_skew": v.skew}
    cdef size_t i
    cdef const fk_kt_entry *e
    cdef const uint8_t *c
    cdef size_t nlen
    if r.what != NULL:
        f["what"] = r.what.decode("utf-8", "replace")
        f["offset"] = r.offset
    if r.tok_announced:
        f["token_bytes"] = r.tok_have
        f["announced_bytes"] = r.tok_announced
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
        if r.alias == 1:
            f["keytab_principal_used"] = _kt_name(r.key)
    elif r.alias == 2:
        # the sname is not in the keytab and no accepted key of its enctype decrypts it (tried as an alias)
        tried = []
        for i in range(v.nkeys):
            e = &v.keys[i]
            if e.accepted and e.enctype == r.req.tkt_etype:
                tried.append((_kt_name(e), e.kvno))
        f["alias_keys_tried"] = tried
    if r.pac.n and not r.pac_verified:
        _sig_facts(r.pac, f)
    if r.pac_client.p != NULL and r.pac_client.n >= 10:
        c = r.pac_client.p
        nlen = c[8] | (c[9] << 8)
        f["pac_client_name"] = _utf16_lossy(c + 10, min(nlen, r.pac_client.n - 10))
        f["pac_auth_time"] = (int.from_bytes(_bytes(fk_buf(c, 8)), "little") // 10000000) - 11644473600
    if r.pac_upn.p != NULL:
        _upn_facts(r.pac_upn, f)
        f["ticket_realm"] = _realm(r.req.realm)
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


cdef int _upn_facts(fk_buf b, dict f) except -1:
    cdef fk_upn u
    cdef const char *what = NULL
    if fk_upn_decode(b, &u, &what) == FK_PAC_OK:
        f["pac_upn"] = _utf16_lossy(u.upn.p, u.upn.n)
        f["pac_dns_domain"] = _utf16_lossy(u.dns.p, u.dns.n)
    return 0


cdef int _sig_facts(fk_buf pac, dict f) except -1:
    """The server signature's type, for a PAC that failed its signature check."""
    cdef fk_pac px
    cdef const char *what = NULL
    if fk_pac_parse(pac, &px, &what) == FK_PAC_OK and px.present & (1u << FK_PAC_SERVER_CHECKSUM) \
            and px.buf[FK_PAC_SERVER_CHECKSUM].n >= 4:
        f["pac_signature_type"] = int.from_bytes(_bytes(fk_buf(px.buf[FK_PAC_SERVER_CHECKSUM].p, 4)), "little",
                                                 signed=True)
    return 0
