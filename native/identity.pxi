# Who the client is in Active Directory terms: Identity (the user's SIDs, names and domains from a verified
# PAC's KERB_VALIDATION_INFO and UPN_DNS_INFO, MS-PAC §2.5 and §2.10) and SidSet (SIDs compiled once for
# membership tests). The NDR is decoded in C (pac.c, fk_logon_decode: bounds-checked, no recursion); this
# file only turns what it found into Python objects, and only the ones asked for.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF16, PyUnicode_DecodeLatin1
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from der cimport fk_buf, fk_derr
from pac cimport (fk_pac, fk_upn, fk_logon, fk_sidset, fk_sid_slot, fk_pac_parse, fk_upn_decode, fk_logon_decode,
                  fk_logon_next_extra, fk_sid_format, fk_sid_format_rid, fk_sid_parse, fk_sidset_add,
                  fk_sidset_has, fk_logon_member, FK_PAC_LOGON_INFO, FK_PAC_SERVER_CHECKSUM, FK_PAC_UPN_DNS_INFO,
                  FK_PAC_OK, FK_SID_MAX,
                  FK_SID_TEXT_MAX)

cdef enum:
    UPN_FLAG_CONSTRUCTED = 1    # UPN_DNS_INFO Flags bit 0 (U): no userPrincipalName, the UPN was made up


cdef inline str _utf16(fk_buf b):
    """UTF-16LE the C decoder has checked (even length, surrogates paired)."""
    cdef int order = -1
    return PyUnicode_DecodeUTF16(<const char *>b.p, b.n, NULL, &order)


cdef inline str _sid_text(const uint8_t *sid):
    cdef char out[FK_SID_TEXT_MAX]
    return PyUnicode_DecodeLatin1(out, fk_sid_format(sid, out), NULL)


cdef inline str _rid_text(const uint8_t *dom, uint32_t rid):
    cdef char out[FK_SID_TEXT_MAX]
    return PyUnicode_DecodeLatin1(out, fk_sid_format_rid(dom, rid, out), NULL)


cdef inline uint32_t _le32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef Py_ssize_t _rid_texts(tuple out, Py_ssize_t k, const uint8_t *dom, const uint8_t *groups, uint32_t count):
    """out[k:k+count] = the SIDs dom-RID of a GROUP_MEMBERSHIP array: the domain's text is made once."""
    cdef char buf[FK_SID_TEXT_MAX]
    cdef char digits[10]
    cdef size_t head = fk_sid_format(dom, buf), m
    cdef uint32_t i, rid
    cdef int d
    buf[head] = b'-'
    head += 1
    for i in range(count):
        rid = _le32(groups + 8 * i)
        d = 0
        while True:
            digits[d] = <char>(48 + rid % 10)
            d += 1
            rid //= 10
            if rid == 0:
                break
        m = head
        while d:
            d -= 1
            buf[m] = digits[d]
            m += 1
        s = PyUnicode_DecodeLatin1(buf, m, NULL)
        Py_INCREF(s)
        PyTuple_SET_ITEM(out, k, s)
        k += 1
    return k


cdef object _pac_error(str where, size_t offset, str what):
    """The typed error of a PAC that does not decode: MalformedToken, worded like fastkrb.krb.pac's."""
    from fastkrb.errors import MalformedToken
    return MalformedToken(f"PAC {where} at offset {offset}: {what}",
                          details={"pac_part": where, "offset": offset, "what": what})


@cython.final
cdef class SidSet:
    """An immutable set of SIDs, parsed once ("S-1-5-21-...", MS-DTYP §2.4.2.1) for Identity.member_of."""

    cdef fk_sidset s
    cdef tuple _texts

    def __cinit__(self, sids=()):
        cdef uint8_t raw[FK_SID_MAX]
        cdef size_t rawlen
        cdef Py_ssize_t n, size = 2
        cdef const char *txt
        if isinstance(sids, str):
            raise TypeError("SidSet takes an iterable of SID strings, not one string")
        parsed = []
        for item in sids:
            if not isinstance(item, str):
                raise TypeError(f"SidSet takes SID strings, not {type(item).__name__}")
            txt = PyUnicode_AsUTF8AndSize(item, &n)
            if fk_sid_parse(txt, n, raw, &rawlen) != 0:
                raise ValueError(f"not a SID: {item!r}")
            parsed.append((<char *>raw)[:rawlen])
        while size < 2 * len(parsed):
            size *= 2
        self.s.slots = <fk_sid_slot *>PyMem_Calloc(size, sizeof(fk_sid_slot))
        self.s.prefixes = <uint64_t *>PyMem_Calloc(max(1, len(parsed)), sizeof(uint64_t))
        if self.s.slots == NULL or self.s.prefixes == NULL:
            raise MemoryError()
        self.s.mask = size - 1
        texts = []
        for b in parsed:
            if fk_sidset_add(&self.s, <const uint8_t *>PyBytes_AS_STRING(b)):
                texts.append(_sid_text(<const uint8_t *>PyBytes_AS_STRING(b)))
        self._texts = tuple(texts)

    def __dealloc__(self):
        PyMem_Free(self.s.slots)
        PyMem_Free(self.s.prefixes)

    def __len__(self):
        return self.s.count

    def __contains__(self, sid):
        cdef uint8_t raw[FK_SID_MAX]
        cdef size_t rawlen
        cdef Py_ssize_t n
        cdef const char *txt
        if not isinstance(sid, str):
            raise TypeError(f"SidSet holds SID strings, not {type(sid).__name__}")
        txt = PyUnicode_AsUTF8AndSize(sid, &n)
        if fk_sid_parse(txt, n, raw, &rawlen) != 0:
            return False
        return fk_sidset_has(&self.s, raw) == 1

    def __repr__(self):
        return f"SidSet({list(self._texts)!r})"

    def __reduce__(self):
        return (SidSet, (self._texts,))


@cython.final
cdef class Identity:
    """The client as Active Directory describes it: SIDs, names and domains from the ticket's verified PAC.

    Every string is built when first read; ``member_of`` compares binary SIDs and builds none.
    """

    cdef bytes _pac
    cdef Py_ssize_t _logon_off, _logon_len, _upn_off, _upn_len
    cdef fk_logon l
    cdef fk_upn u
    cdef bint _has_upn
    cdef object _user_sid, _primary, _groups, _name, _domain

    def __init__(self):
        raise TypeError("Identity objects come from AuthResult.identity or Identity.from_pac")

    cdef int _check(self) except -1:
        if self._pac is None:
            raise ValueError("an empty Identity (Identity objects come from AuthResult.identity or Identity.from_pac)")
        return 0

    @property
    def user_sid(self):
        """The user's SID: LogonDomainId + UserId."""
        self._check()
        if self._user_sid is None:
            self._user_sid = _rid_text(self.l.dom_sid, self.l.user_rid)
        return self._user_sid

    @property
    def primary_group_sid(self):
        """LogonDomainId + PrimaryGroupId."""
        self._check()
        if self._primary is None:
            self._primary = _rid_text(self.l.dom_sid, self.l.primary_rid)
        return self._primary

    @property
    def group_sids(self):
        """Every SID the PAC grants, in PAC order: GroupIds (under LogonDomainId), ExtraSids, then
        ResourceGroupIds (under ResourceGroupDomainSid). The user's own SID is not among them."""
        self._check()
        if self._groups is None:
            self._groups = self._build_groups()
        return self._groups

    cdef tuple _build_groups(self):
        cdef tuple out = PyTuple_New(self.group_count)
        cdef Py_ssize_t k = 0
        cdef uint32_t i
        cdef const uint8_t *x
        if self.l.ngroups:
            k = _rid_texts(out, k, self.l.dom_sid, self.l.groups, self.l.ngroups)
        x = self.l.extra + 4 if self.l.nextra else NULL
        for i in range(self.l.nextra):
            s = _sid_text(x)
            Py_INCREF(s)
            PyTuple_SET_ITEM(out, k, s)
            k += 1
            x = fk_logon_next_extra(x)
        if self.l.res_sid != NULL and self.l.nres:
            k = _rid_texts(out, k, self.l.res_sid, self.l.res_groups, self.l.nres)
        return out

    @property
    def group_count(self):
        """len(group_sids), without building them."""
        return self.l.ngroups + self.l.nextra + (self.l.nres if self.l.res_sid != NULL else 0)

    @property
    def logon_name(self):
        """KERB_VALIDATION_INFO EffectiveName (the sAMAccountName)."""
        if self._name is None:
            self._name = _utf16(self.l.name)
        return self._name

    @property
    def logon_domain(self):
        """LogonDomainName: the NetBIOS name of the user's domain."""
        if self._domain is None:
            self._domain = _utf16(self.l.domain)
        return self._domain

    @property
    def dns_domain(self):
        """UPN_DNS_INFO DnsDomainName, or None when the PAC has no UPN_DNS_INFO."""
        return _utf16(self.u.dns) if self._has_upn else None

    @property
    def upn(self):
        """UPN_DNS_INFO Upn, or None when the PAC has no UPN_DNS_INFO."""
        return _utf16(self.u.upn) if self._has_upn else None

    @property
    def upn_implicit(self):
        """True when the account has no userPrincipalName and the UPN was constructed (UPN_DNS_INFO flag U)."""
        return self._has_upn and (self.u.flags & UPN_FLAG_CONSTRUCTED) != 0

    def member_of(self, SidSet sids not None):
        """True when the user SID, the primary group SID or any SID of group_sids is in ``sids``."""
        return fk_logon_member(&self.l, &sids.s) == 1

    def to_dict(self):
        """JSON-safe: every attribute."""
        return {"user_sid": self.user_sid, "primary_group_sid": self.primary_group_sid,
                "group_sids": list(self.group_sids), "group_count": self.group_count,
                "logon_name": self.logon_name, "logon_domain": self.logon_domain, "dns_domain": self.dns_domain,
                "upn": self.upn, "upn_implicit": self.upn_implicit}

    def __repr__(self):
        return (f"Identity(user_sid={self.user_sid!r}, logon_name={self.logon_name!r}, "
                f"logon_domain={self.logon_domain!r}, group_count={self.group_count})")

    def __reduce__(self):
        return (_identity_from, (self._pac, self._logon_off, self._logon_len, self._upn_off, self._upn_len))

    @staticmethod
    def from_pac(pac):
        """The identity in PAC bytes (MS-PAC §2.3), or None without a LOGON_INFO buffer.

        Decodes only: no signature is checked, so use it on PACs a validator verified (AuthResult.identity
        does this for you). A PAC that does not decode raises fastkrb.errors.MalformedToken.
        """
        cdef bytes data = bytes(pac)
        cdef fk_pac px
        cdef const char *what = NULL
        if fk_pac_parse(fk_buf(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)), &px,
                        &what) != FK_PAC_OK:
            raise _pac_error("header", 0, what.decode("ascii"))
        if not (px.present & (1u << FK_PAC_LOGON_INFO)):
            return None
        if px.present & (1u << FK_PAC_UPN_DNS_INFO):
            return _identity_from(data, px.off[FK_PAC_LOGON_INFO], px.buf[FK_PAC_LOGON_INFO].n,
                                  px.off[FK_PAC_UPN_DNS_INFO], px.buf[FK_PAC_UPN_DNS_INFO].n)
        return _identity_from(data, px.off[FK_PAC_LOGON_INFO], px.buf[FK_PAC_LOGON_INFO].n, -1, -1)


def _identity_from(bytes pac, Py_ssize_t logon_off, Py_ssize_t logon_len, Py_ssize_t upn_off, Py_ssize_t upn_len):
    """The Identity of the LOGON_INFO (and UPN_DNS_INFO, upn_off >= 0) at these offsets of a PAC."""
    return _identity(pac, logon_off, logon_len, upn_off, upn_len)


cdef Identity _identity(bytes pac, Py_ssize_t logon_off, Py_ssize_t logon_len, Py_ssize_t upn_off,
                        Py_ssize_t upn_len):
    cdef Identity ident = Identity.__new__(Identity)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(pac)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(pac)
    cdef fk_derr e
    cdef const char *what = NULL
    cdef int rc
    if logon_off < 0 or logon_len < 0 or logon_off > n or logon_len > n - logon_off:
        raise ValueError("LOGON_INFO lies outside the PAC")
    if upn_off >= 0 and (upn_len < 0 or upn_off > n or upn_len > n - upn_off):
        raise ValueError("UPN_DNS_INFO lies outside the PAC")
    e.what = NULL
    e.offset = 0
    with nogil:
        rc = fk_logon_decode(p + logon_off, logon_len, &ident.l, &e)
    if rc != 0:
        raise _pac_error("LOGON_INFO (type 1)", logon_off + e.offset, e.what.decode("ascii"))
    # the rules an identity adds to the NDR's: every SID it grants must be nameable
    if ident.l.dom_sid == NULL:
        raise _pac_error("LOGON_INFO (type 1)", logon_off, "no LogonDomainId: the user's SIDs cannot be formed")
    if ident.l.nres and ident.l.res_sid == NULL:
        raise _pac_error("LOGON_INFO (type 1)", logon_off, "ResourceGroupIds without a ResourceGroupDomainSid")
    if upn_off >= 0:
        if fk_upn_decode(fk_buf(p + upn_off, upn_len), &ident.u, &what) != FK_PAC_OK:
            raise _pac_error("UPN_DNS_INFO (type 12)", upn_off, what.decode("ascii"))
        ident._has_upn = True
    ident._pac = pac
    ident._logon_off = logon_off
    ident._logon_len = logon_len
    ident._upn_off = upn_off
    ident._upn_len = upn_len
    return ident
