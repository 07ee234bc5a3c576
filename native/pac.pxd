# pac.h declared once: the PAC table, the KERB_VALIDATION_INFO decoder and SID sets that identity.pxi and
# result.pxi read. Only what the boundary touches is listed; pac.h stays the source of truth.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from der cimport fk_buf, fk_derr

cdef extern from "pac.h" nogil:
    enum:
        FK_PAC_LOGON_INFO
        FK_PAC_SERVER_CHECKSUM
        FK_PAC_CLIENT_INFO
        FK_PAC_UPN_DNS_INFO
        FK_PAC_OK
        FK_SID_MAX
        FK_SID_TEXT_MAX

    ctypedef struct fk_pac:
        uint32_t count
        uint32_t present
        fk_buf buf[20]
        size_t off[20]

    ctypedef struct fk_upn:
        fk_buf upn
        fk_buf dns
        uint32_t flags

    ctypedef struct fk_logon:
        fk_buf name
        fk_buf domain
        uint32_t user_rid
        uint32_t primary_rid
        const uint8_t *dom_sid
        uint32_t ngroups
        const uint8_t *groups
        uint32_t nextra
        const uint8_t *extra
        const uint8_t *res_sid
        uint32_t nres
        const uint8_t *res_groups

    ctypedef struct fk_sid_slot:
        uint64_t h
        uint8_t used
        uint8_t sid[68]

    ctypedef struct fk_sidset:
        fk_sid_slot *slots
        size_t mask
        size_t count
        uint64_t *prefixes
        size_t nprefixes

    int fk_pac_parse(fk_buf pac, fk_pac *out, const char **what)
    int fk_upn_decode(fk_buf b, fk_upn *u, const char **what)
    int fk_logon_decode(const uint8_t *p, size_t n, fk_logon *out, fk_derr *e)
    const uint8_t *fk_logon_next_extra(const uint8_t *sid)
    size_t fk_sid_format(const uint8_t *sid, char *out)
    size_t fk_sid_format_rid(const uint8_t *dom, uint32_t rid, char *out)
    int fk_sid_parse(const char *s, size_t n, uint8_t *out, size_t *outlen)
    int fk_sidset_add(fk_sidset *s, const uint8_t *sid)
    int fk_sidset_has(const fk_sidset *s, const uint8_t *sid)
    int fk_logon_member(const fk_logon *l, const fk_sidset *s)
