# der.h declared once for every .pxi of _native: the zero-copy slices and decoded messages that the
# validator's results and the token inspector read. Only what the boundary touches is listed; the C
# header stays the source of truth for layout (Cython reads fields by name, never by offset).

from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t

cdef extern from "der.h" nogil:
    ctypedef struct fk_buf:
        const uint8_t *p
        size_t n

    enum:
        FK_MAX_COMPONENTS

    ctypedef struct fk_name:
        int32_t name_type
        int ncomp
        fk_buf comp[FK_MAX_COMPONENTS]

    ctypedef struct fk_derr:
        const char *what
        size_t offset

    enum:
        FK_FRAME_RAW
        FK_FRAME_GSS
        FK_FRAME_SPNEGO
        FK_FRAME_SPNEGO_RESP
        FK_UNFRAME_OK
        FK_UNFRAME_MALFORMED
        FK_UNFRAME_NTLM
        FK_UNFRAME_NO_KRB5

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
        fk_buf transited
        int64_t authtime
        int64_t endtime
        int has_renew_till
        int64_t renew_till

    ctypedef struct fk_authenticator:
        fk_buf crealm
        fk_name cname
        int32_t cusec
        int64_t ctime
        int has_subkey
        int32_t subkey_type
        fk_buf subkey
        int has_seq
        uint32_t seq

    int fk_unframe(const uint8_t *tok, size_t n, fk_frame *f, fk_derr *e)
    int fk_decode_apreq(fk_buf inp, fk_apreq *r, fk_derr *e)
    int fk_parse_time(fk_buf v, int64_t *out)
    size_t fk_b64_encode(const uint8_t *inp, size_t n, char *out)
    int fk_b64_decode(const uint8_t *inp, size_t n, uint8_t *out, size_t *outlen)
