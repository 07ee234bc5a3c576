/* MS-PAC in C: the PACTYPE header and buffer table (MS-PAC §2.3-2.4), the checks that bind a PAC to its
 * ticket (PAC_CLIENT_INFO §2.7, UPN_DNS_INFO §2.10), the KERB_VALIDATION_INFO decoder (§2.5; NDR type
 * serialization v1, MS-RPCE §2.2.6, C706 ch. 14) and compiled SID sets (SIDs: MS-DTYP §2.4.2.2).
 *
 * Same rules as the DER reader: every read is bounds-checked against the slice it is in, every count and
 * length is checked before it is used (64-bit arithmetic, no overflow), the grammar is a fixed walk (no
 * recursion), nothing is allocated here and nothing is written to the input. The decoders only record
 * slices into the caller's buffer.
 *
 * The Python decoder (fastkrb.krb.pac) is the independent reference: fk_logon_decode accepts exactly the
 * KERB_VALIDATION_INFO encodings that fastkrb.krb.pac's decoder accepts (tests/test_identity.py checks it
 * differentially).
 */
#ifndef FASTKRB_PAC_H
#define FASTKRB_PAC_H

#include <stddef.h>
#include <stdint.h>

#include "der.h"

/* PAC_INFO_BUFFER.ulType (MS-PAC §2.4) */
#define FK_PAC_LOGON_INFO 1
#define FK_PAC_SERVER_CHECKSUM 6
#define FK_PAC_PRIVSVR_CHECKSUM 7
#define FK_PAC_CLIENT_INFO 10
#define FK_PAC_UPN_DNS_INFO 12
#define FK_PAC_TICKET_CHECKSUM 16
#define FK_PAC_FULL_CHECKSUM 19
#define FK_PAC_NTYPES 20              /* known types are 1..19 */
#define FK_PAC_MAX_BUFFERS 256        /* a real AD PAC has about a dozen; fastkrb.krb.pac.MAX_BUFFERS */

/* A parsed PACTYPE: the buffer of each known type (each appears at most once). */
typedef struct fk_pac {
    uint32_t count;
    uint32_t present;                 /* bit t set: a buffer of known type t */
    fk_buf buf[FK_PAC_NTYPES];        /* slices of the PAC (set for the types present only) */
    size_t off[FK_PAC_NTYPES];        /* their offsets in the PAC */
} fk_pac;

/* Results of the checks below */
#define FK_PAC_OK 0
#define FK_PAC_BAD 1                  /* malformed */
#define FK_PAC_MISMATCH 2             /* well-formed, but not about this ticket's client */

/* Header and buffer table (MS-PAC §2.3-2.4): Version 0; 1..256 buffers; each buffer 8-byte aligned,
 * after the table and inside the PAC; no two non-empty buffers overlap; no known type (1..19) twice.
 * FK_PAC_OK, or FK_PAC_BAD with *what. */
int fk_pac_parse(fk_buf pac, fk_pac *out, const char **what);

/* PAC_CLIENT_INFO (MS-PAC §2.7) against the ticket: ClientId (a FILETIME) in whole seconds equals the
 * ticket's authtime, and Name, parsed as a principal without realm (RFC 1964 §2.1.1 quoting: '\' escapes,
 * '/' separates components; an unescaped '@' cannot appear), equals cname component by component, case
 * included. An NT-ENTERPRISE cname (RFC 6806 §5) is one component that contains '@': then Name is that
 * component verbatim (as AD writes it) or quoted. The buffer must be present (as MIT and Heimdal insist). FK_PAC_OK / FK_PAC_BAD / FK_PAC_MISMATCH, *what set. */
int fk_pac_check_client(const fk_pac *p, const fk_name *cname, int64_t authtime, const char **what);

/* UPN_DNS_INFO (MS-PAC §2.10), when present: well-formed, and DnsDomainName equals the client's realm or
 * the ticket's (service) realm, ASCII case-insensitively. FK_PAC_OK / FK_PAC_BAD / FK_PAC_MISMATCH. */
typedef struct fk_upn {
    fk_buf upn;                       /* UTF-16LE */
    fk_buf dns;                       /* UTF-16LE */
    uint32_t flags;                   /* bit 0: the UPN was constructed (no userPrincipalName) */
} fk_upn;
int fk_upn_decode(fk_buf b, fk_upn *u, const char **what);
int fk_pac_check_upn(const fk_pac *p, fk_buf crealm, fk_buf srealm, const char **what);

/* 1 when b is valid UTF-16LE (even length, surrogates paired), else 0. */
int fk_utf16_valid(fk_buf b);

/* KERB_VALIDATION_INFO (MS-PAC §2.5) in its type serialization (MS-RPCE §2.2.6), decoded to what the
 * identity needs. Every field of the structure is walked and checked; SIDs are binary (MS-DTYP §2.4.2.2:
 * Revision 1, SubAuthorityCount <= 15, then 6 bytes of authority and 4 bytes per sub-authority). */
typedef struct fk_logon {
    fk_buf name;                      /* EffectiveName, UTF-16LE */
    fk_buf domain;                    /* LogonDomainName (NetBIOS), UTF-16LE */
    uint32_t user_rid, primary_rid;
    const uint8_t *dom_sid;           /* LogonDomainId, or NULL */
    uint32_t ngroups;
    const uint8_t *groups;            /* GROUP_MEMBERSHIP[ngroups]: RelativeId, Attributes (LE u32 each) */
    uint32_t nextra;
    const uint8_t *extra;             /* the nextra deferred ExtraSids, back to back: u32 count, then SID */
    const uint8_t *res_sid;           /* ResourceGroupDomainSid, or NULL */
    uint32_t nres;
    const uint8_t *res_groups;        /* GROUP_MEMBERSHIP[nres] */
} fk_logon;
int fk_logon_decode(const uint8_t *p, size_t n, fk_logon *out, fk_derr *e);

/* The next ExtraSid after sid (a pointer to a binary SID inside fk_logon.extra); the first is extra + 4. */
static inline const uint8_t *fk_logon_next_extra(const uint8_t *sid)
{
    return sid + 8 + 4 * (size_t)sid[1] + 4;
}

/* SIDs as text, MS-DTYP §2.4.2.1: "S-1-<authority>-<sub>..." (authority in decimal below 2^32, else
 * 0x + 12 hex digits, as fastkrb.krb.pac.sid_to_str). FK_SID_TEXT_MAX bytes always suffice. */
#define FK_SID_MAX 68                 /* 8 + 4 * 15 */
#define FK_SID_TEXT_MAX 200
size_t fk_sid_format(const uint8_t *sid, char *out);
/* The SID dom-rid as text (a domain SID and one more sub-authority: 16 when dom has 15, text only). */
size_t fk_sid_format_rid(const uint8_t *dom, uint32_t rid, char *out);
/* Text to binary: "S-1-" (S in either case), the authority (decimal, or 0x and hex, below 2^48), then 0 to
 * 15 "-<decimal below 2^32>". 0 with out/outlen set, -1 when the text is not such a SID. */
int fk_sid_parse(const char *s, size_t n, uint8_t out[FK_SID_MAX], size_t *outlen);

/* A compiled SID set: open addressing over a hash that splits a SID into its domain part (all but the
 * last sub-authority) and its RID, so that a domain's groups (GroupIds: RIDs under one domain SID) are
 * probed without building their SIDs. The caller allocates slots (a power of two, at least twice the
 * SIDs) and prefixes (one per SID) zeroed, and fills them with fk_sidset_add. */
typedef struct fk_sid_slot {
    uint64_t h;
    uint8_t used;
    uint8_t sid[FK_SID_MAX];
} fk_sid_slot;

typedef struct fk_sidset {
    fk_sid_slot *slots;
    size_t mask;                      /* slots - 1 */
    size_t count;
    uint64_t *prefixes;               /* distinct domain-part hashes, to skip a whole domain at once */
    size_t nprefixes;
} fk_sidset;

/* 1 added, 0 already there. sid is a valid binary SID (fk_sid_parse's output). */
int fk_sidset_add(fk_sidset *s, const uint8_t *sid);
/* 1 when the binary SID is in the set. */
int fk_sidset_has(const fk_sidset *s, const uint8_t *sid);
/* 1 when the user SID, the primary group SID or any SID the PAC grants (GroupIds under LogonDomainId,
 * ExtraSids, ResourceGroupIds under ResourceGroupDomainSid) is in the set. Binary comparisons only. */
int fk_logon_member(const fk_logon *l, const fk_sidset *s);

#endif
