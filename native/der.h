/* Bounds-checked, zero-copy DER for the Kerberos messages an acceptor reads (RFC 4120 App. A,
 * EXPLICIT TAGS), the GSS/SPNEGO framing around them (RFC 2743 §3.1, RFC 4121 §4.1, RFC 4178 §4.2),
 * and the encoder for the AP-REP an acceptor answers with.
 *
 * Every decoded field is a slice (fk_buf) into the caller's buffer: nothing is copied or allocated.
 * The message grammars are fixed, so decoding is a loop over known fields, never recursion; the one
 * nesting that can repeat (AD-IF-RELEVANT inside AuthorizationData) is walked with an explicit bound.
 */
#ifndef FASTKRB_DER_H
#define FASTKRB_DER_H

#include <stddef.h>
#include <stdint.h>

typedef struct fk_buf {
    const uint8_t *p;
    size_t n;
} fk_buf;

#define FK_MAX_COMPONENTS 8

typedef struct fk_name {
    int32_t name_type;
    int ncomp;
    fk_buf comp[FK_MAX_COMPONENTS];
} fk_name;

/* Where a decode failed, for the error's facts. */
typedef struct fk_derr {
    const char *what;      /* static string naming the field or rule */
    size_t offset;         /* byte offset into the decoded buffer */
} fk_derr;

/* Framing of the token (decides how the AP-REP is framed back). */
#define FK_FRAME_RAW 0          /* bare AP-REQ */
#define FK_FRAME_GSS 1          /* RFC 2743 InitialContextToken, krb5 mech */
#define FK_FRAME_SPNEGO 2       /* SPNEGO NegTokenInit carrying a GSS krb5 token */
#define FK_FRAME_SPNEGO_RESP 3  /* SPNEGO NegTokenResp carrying a GSS krb5 token */

#define FK_MECH_KRB5 0      /* 1.2.840.113554.1.2.2 */
#define FK_MECH_MS_KRB5 1   /* 1.2.840.48018.1.2.2 */

/* Results of unframing besides success. */
#define FK_UNFRAME_OK 0
#define FK_UNFRAME_MALFORMED 1
#define FK_UNFRAME_NTLM 2       /* NTLMSSP raw or offered alone in SPNEGO */
#define FK_UNFRAME_NO_KRB5 3    /* SPNEGO without a Kerberos mech (NegoEx, other) */

typedef struct fk_frame {
    int kind;            /* FK_FRAME_* */
    int gss_mech;        /* mech OID of the GSS token (FK_MECH_*) */
    int spnego_mech;     /* first Kerberos OID in the SPNEGO mechTypes list (FK_MECH_*) */
    int krb5_preferred;  /* SPNEGO: Kerberos is the first mech offered (an optimistic token is usable) */
    fk_buf apreq;        /* the AP-REQ DER */
} fk_frame;

typedef struct fk_apreq {
    uint32_t ap_options;      /* first 32 bits of APOptions, bit 0 = MSB */
    fk_buf ticket;            /* the whole Ticket TLV */
    fk_buf realm;
    fk_name sname;
    int32_t tkt_etype;
    int has_kvno;
    uint32_t tkt_kvno;
    fk_buf tkt_cipher;
    int32_t auth_etype;
    fk_buf auth_cipher;
} fk_apreq;

typedef struct fk_enc_ticket {
    uint32_t flags;
    int32_t keytype;
    fk_buf key;
    fk_buf crealm;
    fk_name cname;
    int32_t tr_type;
    fk_buf transited;
    int64_t authtime;
    int has_starttime;
    int64_t starttime;
    int64_t endtime;
    int has_renew_till;
    int64_t renew_till;
    fk_buf caddr;             /* contents of HostAddresses, or empty */
    fk_buf authdata;          /* contents of AuthorizationData (SEQUENCE OF), or empty */
} fk_enc_ticket;

typedef struct fk_authenticator {
    fk_buf crealm;
    fk_name cname;
    int has_cksum;
    int32_t cksumtype;
    fk_buf cksum;
    int32_t cusec;
    int64_t ctime;
    int has_subkey;
    int32_t subkey_type;
    fk_buf subkey;
    int has_seq;
    uint32_t seq;
    fk_buf authdata;
} fk_authenticator;

/* Decoders: 0 on success, -1 with *e set. */
int fk_unframe(const uint8_t *tok, size_t n, fk_frame *f, fk_derr *e);
int fk_decode_apreq(fk_buf in, fk_apreq *r, fk_derr *e);
int fk_decode_enc_ticket(fk_buf in, fk_enc_ticket *t, fk_derr *e);
int fk_decode_authenticator(fk_buf in, fk_authenticator *a, fk_derr *e);

/* Find the first authorization element of ad_type, looking inside AD-IF-RELEVANT (type 1) containers
 * up to a fixed depth. authdata is the contents of an AuthorizationData SEQUENCE. 1 found, 0 not, -1 bad. */
int fk_find_authdata(fk_buf authdata, int32_t ad_type, fk_buf *out);

/* RFC 4120 KerberosTime "YYYYMMDDHHMMSSZ" -> unix seconds; -1 if malformed. */
int fk_parse_time(fk_buf v, int64_t *out);

/* HTTP "Negotiate <base64>" / bare base64 -> bytes. out must hold 3*n/4 bytes (padding is optional, so
 * unpadded input decodes past (n/4)*3; n bytes always suffice). -1 if not base64. */
int fk_b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t *outlen);
size_t fk_b64_encode(const uint8_t *in, size_t n, char *out);

/* Encoders for the acceptor's answer. Each writes at most the returned size bound. */
/* EncAPRepPart (RFC 4120 §5.5.2) with ctime, cusec, optional subkey (subkey_type < 0: none), seq. */
size_t fk_encode_enc_ap_rep_part(int64_t ctime, int32_t cusec, int32_t subkey_type, const uint8_t *subkey,
                                 size_t subkeylen, int has_seq, uint32_t seq, uint8_t *out, size_t cap);
/* The acceptor's whole answer token in one pass, nested from the inside out: when cipher is not NULL an AP-REP
 * around EncryptedData (etype, no kvno, cipher; RFC 4120 §5.5.2), in the GSS InitialContextToken framing
 * (RFC 4121 §4.1: mech OID, TOK_ID 02 00) when gss_mech >= 0; then, when spnego_mech >= 0, SPNEGO's
 * NegTokenResp accept-completed with supportedMech and that token as responseToken (RFC 4178 §4.2.2).
 * 0 when it does not fit in cap. */
size_t fk_encode_answer(int32_t etype, const uint8_t *cipher, size_t clen, int gss_mech, int spnego_mech,
                        uint8_t *out, size_t cap);

#endif
