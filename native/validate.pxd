# validate.h declared once: the prepared keytab, the validator's configuration, one call's result, and
# the verdict and stage lists. The verdict and stage names are not repeated here: validate.h's
# FK_VERDICTS / FK_STAGES lists are their single source, and Python's VERDICTS / STAGES tables are read
# from fk_verdict_name / fk_stage_name at import. Only the verdicts Cython code tests by name appear.

from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

from der cimport fk_buf, fk_name, fk_frame, fk_apreq, fk_enc_ticket, fk_authenticator, FK_MAX_COMPONENTS
from kcrypto cimport fk_ekey
from rcache cimport fk_rc_backend

cdef extern from "validate.h" nogil:
    enum:   # enum fk_verdict: only the verdicts Cython code names
        FK_V_OK
        FK_V_TOO_LARGE
        FK_V_REPLAY
        FK_V_COUNT

    enum:   # enum fk_stage
        FK_NSTAGES

    ctypedef struct fk_kt_entry:
        fk_buf realm
        int ncomp
        fk_buf comp[FK_MAX_COMPONENTS]
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
        size_t tok_have
        size_t tok_announced
        fk_frame frame
        fk_apreq req
        fk_enc_ticket tkt
        fk_authenticator auth
        int have_tkt, have_auth
        const fk_kt_entry *key
        int key_tried
        int alias
        int64_t tkt_start
        double skew_seconds
        uint32_t gss_flags
        fk_buf deleg
        int cb_state
        int cbt_required
        int mutual
        fk_buf pac
        int pac_verified
        fk_buf pac_client
        fk_buf pac_upn
        fk_buf pac_logon
        uint8_t replay_key[16]
        double replay_expiry
        double first_seen
        fk_buf reply
        fk_buf transited_bad

    const char *fk_verdict_name(int code)
    const char *fk_stage_name(int stage)

    size_t fk_scratch_size(size_t toklen)
    void fk_scratch_wipe(const fk_result *r, uint8_t *scratch, size_t toklen)
    int fk_validate(const fk_validator *v, const uint8_t *tok, size_t toklen, double now,
                    const uint8_t *cb, size_t cblen, uint8_t *scratch, size_t scratchlen, fk_result *r)
    uint32_t fk_princ_hash(const fk_kt_entry *e)
    int fk_token_bytes(const uint8_t *tok, size_t n, uint8_t *out, fk_buf *res)
    int fk_profile_stages(const fk_validator *v, const uint8_t *tok, size_t toklen, double now, long iters,
                          fk_rc_backend rc, double *out)
