/* Token in, verdict out: every acceptance check of RFC 4120 §3.2.3 and RFC 4121 §4.1.1 in C.
 *
 * fk_validate runs without the GIL and allocates nothing: the caller provides a scratch buffer
 * (fk_scratch_size) that receives the decoded token, both plaintexts and the AP-REP. The result
 * struct holds slices into the token and the scratch, plus the facts an error needs.
 */
#ifndef FASTKRB_VALIDATE_H
#define FASTKRB_VALIDATE_H

#include "der.h"
#include "kcrypto.h"
#include "pac.h"
#include "rcache.h"

/* Verdicts: this list is their single source. The enum below, the name table in validate.c
 * (fk_verdict_name) and the Python tables (_native.VERDICTS, built from fk_verdict_name at import) all
 * come from it. Python maps each name, lower-cased, to a KerberosError subclass with cause, fix and
 * details (fastkrb.diagnose). Add a verdict here and it reaches Python by itself. */
#define FK_VERDICTS(X) \
    X(OK) \
    X(MALFORMED) \
    X(TOO_LARGE) \
    X(NTLM) \
    X(NO_KRB5) \
    X(USER_TO_USER) \
    X(ENCTYPE_NOT_PERMITTED)          /* ticket enctype */ \
    X(SESSION_ENCTYPE_NOT_PERMITTED) \
    X(WRONG_PRINCIPAL)                /* not in keytab, and no accepted key of its enctype decrypts it */ \
    X(PRINCIPAL_NOT_ACCEPTED)         /* in keytab, excluded by principals= */ \
    X(KVNO)                           /* no key of the ticket's kvno decrypts; kvno absent from keytab */ \
    X(ENCTYPE_NOT_IN_KEYTAB) \
    X(TICKET_INTEGRITY)               /* a key of the right kvno and enctype does not decrypt */ \
    X(TICKET_INTEGRITY_NO_KVNO)       /* ticket has no kvno; no key of its enctype decrypts */ \
    X(AUTH_INTEGRITY) \
    X(AUTH_ENCTYPE_MISMATCH)          /* authenticator enctype differs from the session key's */ \
    X(CKSUM_INTEGRITY)                /* non-GSS authenticator checksum does not verify */ \
    X(PAC_INTEGRITY) \
    X(PAC_MALFORMED)                  /* r->what says which MS-PAC rule */ \
    X(PAC_SIGNATURE_TYPE)             /* server signature not of the ticket key's checksum type */ \
    X(PAC_CLIENT_MISMATCH)            /* PAC_CLIENT_INFO name or time is not the ticket's */ \
    X(PAC_REALM_MISMATCH)             /* UPN_DNS_INFO DnsDomainName is not the ticket's realm */ \
    X(NAME_MISMATCH) \
    X(REALM) \
    X(TRANSITED) \
    X(TICKET_INVALID) \
    X(CLOCK_SKEW) \
    X(NOT_YET_VALID) \
    X(EXPIRED) \
    X(CB_MISMATCH) \
    X(CB_MISSING) \
    X(REPLAY) \
    X(RC_COLD) \
    X(RC_FULL) \
    X(RC_UNAVAILABLE) \
    X(INTERNAL)

#define FK_V_ENUM_(name) FK_V_##name,
enum fk_verdict { FK_VERDICTS(FK_V_ENUM_) FK_V_COUNT };

/* "MALFORMED" for FK_V_MALFORMED; NULL outside 0..FK_V_COUNT-1. */
const char *fk_verdict_name(int code);

/* One keytab key, prepared once when the keytab is loaded. */
typedef struct fk_kt_entry {
    fk_buf realm;                    /* points into memory owned by the Python Validator */
    int ncomp;
    fk_buf comp[FK_MAX_COMPONENTS];
    uint32_t kvno;
    int32_t enctype;
    int accepted;                    /* principal is in principals= (or all are accepted) */
    int princ;                       /* index of the distinct principal */
    uint32_t princ_hash;             /* names the principal in replay-cache keys */
    fk_ekey tkt;                     /* usage 2: ticket enc-part (RFC 4120 §7.5.1) */
    fk_ekey pac;                     /* usage 17: PAC server signature (MS-PAC §2.8.1) */
} fk_kt_entry;

typedef struct fk_validator {
    fk_kt_entry *keys;               /* grouped by principal, newest kvno first */
    size_t nkeys;
    uint64_t permitted;              /* bit e set: enctype e permitted (e < 64) */
    double skew;
    size_t max_token;
    fk_buf *realms;                  /* allowed client/transited realms; nrealms 0 = any */
    size_t nrealms;
    int verify_pac;
    fk_rc_backend rc;                /* insert NULL: the caller checks the replay key itself */
    int cold_start;
    double rc_started;               /* when the replay cache started empty */
} fk_validator;

#define FK_CB_NONE 0        /* no bindings involved */
#define FK_CB_MATCHED 1
#define FK_CB_MATCHED_JAVA 2
#define FK_CB_CLIENT_NONE 3 /* acceptor had bindings, client sent none (allowed) */
#define FK_CB_IGNORED 4     /* client sent bindings, acceptor had none */

typedef struct fk_result {
    int code;
    const char *what;                /* malformed: the rule that failed */
    size_t offset;
    size_t tok_have, tok_announced;  /* malformed: a token cut short (a valid prefix): the bytes that arrived and
                                      * the bytes its outermost DER header announces; 0 when not cut */
    fk_frame frame;
    fk_apreq req;
    fk_enc_ticket tkt;
    fk_authenticator auth;
    int have_tkt, have_auth;
    const fk_kt_entry *key;          /* the key that decrypted the ticket */
    int key_tried;                   /* how many keys were tried */
    int alias;                       /* the sname is not in the keytab, so every accepted key of the ticket's
                                      * enctype was tried: 1 key (another principal's) decrypted it, 2 none */
    int64_t tkt_start;
    double skew_seconds;             /* authenticator time minus now (+: client ahead) */
    int has_gss_cksum;
    uint32_t gss_flags;
    fk_buf deleg;                    /* KRB-CRED from the 0x8003 checksum, if delegated */
    int cb_state;
    int cbt_required;
    int mutual;
    fk_buf pac;
    int pac_verified;
    fk_buf pac_client;               /* PAC_CLIENT_INFO, UPN_DNS_INFO, LOGON_INFO of a verified PAC */
    fk_buf pac_upn;
    fk_buf pac_logon;
    uint8_t replay_key[16];          /* the replay identity (when rc is NULL the caller checks it) */
    double replay_expiry;
    double first_seen;               /* replay: when the authenticator was first accepted */
    fk_buf reply;                    /* the response token (framed like the request), if any */
    fk_buf transited_bad;            /* the transited realm that is not allowed */
    size_t scratch_used[4];          /* bytes written in each scratch region after the decoded token (ticket
                                      * plaintext, authenticator plaintext, PAC copy, answer): fk_scratch_wipe's */
} fk_result;

size_t fk_scratch_size(size_t toklen);
/* Wipe what fk_validate wrote to the scratch that may be secret (plaintexts, keys, the answer). */
void fk_scratch_wipe(const fk_result *r, uint8_t *scratch, size_t toklen);

/* tok: raw bytes, base64, or "Negotiate <base64>". cb/cblen: acceptor channel-binding application
 * data (NULL: none). scratch: fk_scratch_size(toklen) bytes. Returns r->code. */
int fk_validate(const fk_validator *v, const uint8_t *tok, size_t toklen, double now,
                const uint8_t *cb, size_t cblen, uint8_t *scratch, size_t scratchlen, fk_result *r);

uint32_t fk_princ_hash(const fk_kt_entry *e);
/* The PAC's header and buffer table (pac.h) and its MS-PAC §2.8.1 server signature, which must be the
 * checksum type of the key that decrypted the ticket; copy holds pac.n bytes. FK_V_OK, FK_V_PAC_MALFORMED
 * (r->what), FK_V_PAC_SIGNATURE_TYPE or FK_V_PAC_INTEGRITY. */
int fk_verify_pac(const fk_kt_entry *key, fk_buf pac, uint8_t *copy, fk_result *r);
/* fk_verify_pac, then the PAC bound to its ticket t (issued in realm srealm): PAC_CLIENT_INFO and
 * UPN_DNS_INFO (pac.h). Records r->pac_client, pac_upn and pac_logon. Adds FK_V_PAC_CLIENT_MISMATCH and
 * FK_V_PAC_REALM_MISMATCH to fk_verify_pac's verdicts. */
int fk_check_pac(const fk_kt_entry *key, fk_buf pac, uint8_t *copy, const fk_enc_ticket *t, fk_buf srealm,
                 fk_result *r);

/* Where the time goes: ns per operation of each stage of one token, each looped `iters` times in C.
 * out[]: FK_STAGE_* order (FK_NSTAGES entries). Returns 0, or the verdict code when the token does not
 * validate. The stage list is the single source of the enum and of fk_stage_name (Python's STAGES). */
#define FK_STAGES(X) \
    X(FRAMING) X(DER_APREQ) X(TICKET_DECRYPT) X(DER_TICKET) X(SESSION_KEY) X(AUTHENTICATOR) X(PAC) \
    X(REPLAY_INSERT) X(FULL_VALIDATE)

#define FK_STAGE_ENUM_(name) FK_STAGE_##name,
enum fk_stage { FK_STAGES(FK_STAGE_ENUM_) FK_NSTAGES };

int fk_profile_stages(const fk_validator *v, const uint8_t *tok, size_t toklen, double now, long iters,
                      fk_rc_backend rc, double *out);
/* "FRAMING" for FK_STAGE_FRAMING; NULL outside 0..FK_NSTAGES-1. */
const char *fk_stage_name(int stage);

/* "Negotiate <b64>", bare base64 or raw bytes -> the token bytes (out holds n bytes). 0 or -1. */
int fk_token_bytes(const uint8_t *tok, size_t n, uint8_t *out, fk_buf *res);

#endif
