/* The acceptance checks, in the order of the data: framing -> DER -> key -> ticket -> authenticator ->
 * policy -> GSS checksum -> replay -> answer. See validate.h. */
#include "validate.h"

#include <math.h>
#include <openssl/md5.h>
#include <string.h>

#define KU_TICKET 2            /* RFC 4120 §7.5.1 */
#define KU_AP_REQ_CKSUM 10
#define KU_AP_REQ_AUTH 11
#define KU_AP_REP 12

#define TKT_FLG_INVALID 7      /* RFC 4120 §5.3, bit numbers from the MSB */
#define TKT_FLG_TRANSIT_CHECKED 12
#define AP_OPT_USE_SESSION_KEY 1
#define AP_OPT_MUTUAL_REQUIRED 2

#define GSS_CKSUM_8003 0x8003  /* RFC 4121 §4.1.1 */
#define GSS_C_DELEG_FLAG 1
#define GSS_C_MUTUAL_FLAG 2
#define AD_IF_RELEVANT 1
#define AD_WIN2K_PAC 128
#define AD_AP_OPTIONS 143      /* MS-KILE: KERB_AP_OPTIONS_CBT in the authenticator */
#define KERB_AP_OPTIONS_CBT 0x4000

static int flag(uint32_t flags, int bit)
{
    return (int)((flags >> (31 - bit)) & 1);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int buf_eq(fk_buf a, fk_buf b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

static int name_eq(const fk_name *a, const fk_name *b)
{
    if (a->ncomp != b->ncomp)
        return 0;
    for (int i = 0; i < a->ncomp; i++)
        if (!buf_eq(a->comp[i], b->comp[i]))
            return 0;
    return 1;
}

static int entry_is(const fk_kt_entry *e, const fk_apreq *q)
{
    if (e->ncomp != q->sname.ncomp || !buf_eq(e->realm, q->realm))
        return 0;
    for (int i = 0; i < e->ncomp; i++)
        if (!buf_eq(e->comp[i], q->sname.comp[i]))
            return 0;
    return 1;
}

#define FK_V_NAME_(name) #name,
static const char *const verdict_names[FK_V_COUNT] = { FK_VERDICTS(FK_V_NAME_) };

const char *fk_verdict_name(int code)
{
    return code >= 0 && code < FK_V_COUNT ? verdict_names[code] : NULL;
}

uint32_t fk_princ_hash(const fk_kt_entry *e)
{
    /* FNV-1a over "comp\0comp\0...@realm": names the principal in replay keys, stable across reloads. */
    uint32_t h = 2166136261u;
    for (int i = 0; i < e->ncomp; i++) {
        for (size_t j = 0; j < e->comp[i].n; j++)
            h = (h ^ e->comp[i].p[j]) * 16777619u;
        h = (h ^ 0) * 16777619u;
    }
    h = (h ^ '@') * 16777619u;
    for (size_t j = 0; j < e->realm.n; j++)
        h = (h ^ e->realm.p[j]) * 16777619u;
    return h;
}

static int permitted(const fk_validator *v, int32_t etype)
{
    return etype > 0 && etype < 64 && ((v->permitted >> etype) & 1);
}

static int realm_allowed(const fk_validator *v, const uint8_t *p, size_t n)
{
    if (v->nrealms == 0)
        return 1;
    for (size_t i = 0; i < v->nrealms; i++)
        if (v->realms[i].n == n && memcmp(v->realms[i].p, p, n) == 0)
            return 1;
    return 0;
}

static int done(fk_result *r, int code)
{
    r->code = code;
    return code;
}

/* The scratch regions after the decoded token (which is no secret), each toklen bytes but the last: see the
 * layout in validate(). */
enum { SC_TKT, SC_AUTH, SC_PAC, SC_ANSWER };

void fk_scratch_wipe(const fk_result *r, uint8_t *scratch, size_t toklen)
{
    /* only the bytes written: a whole scratch is 4 KiB and more a request, its plaintexts a fraction of it.
     * explicit_bzero is a full-speed memset the compiler may not drop. */
    for (int i = SC_TKT; i <= SC_ANSWER; i++)
        if (r->scratch_used[i])
            explicit_bzero(scratch + (size_t)(i + 1) * toklen, r->scratch_used[i]);
}

/* Record that the first n bytes of scratch region `region` hold data (plaintexts, keys) to wipe. */
static void used(fk_result *r, int region, size_t n)
{
    if (n > r->scratch_used[region])
        r->scratch_used[region] = n;
}

static int malformed(fk_result *r, const fk_derr *e, size_t base_off)
{
    r->what = e->what ? e->what : "malformed";
    r->offset = base_off + e->offset;
    return done(r, FK_V_MALFORMED);
}

size_t fk_scratch_size(size_t toklen)
{
    /* decoded token + ticket plaintext + authenticator plaintext + PAC copy + answer */
    return 4 * toklen + 1024;
}

/* A token cut in transit (a proxy's header size limit cuts the tail) is a valid prefix of a real one: its first
 * byte is a token's tag and its outermost DER length announces more bytes than arrived. Recorded for the
 * diagnosis only; the verdict stays malformed. */
static void note_truncation(fk_result *r, const uint8_t *p, size_t n)
{
    if (n < 2 || !(p[0] == 0x60 || p[0] == 0x6e || p[0] == 0xa0 || p[0] == 0xa1))
        return;
    size_t pos = 2, len = p[1];
    if (len >= 0x80) {
        size_t k = len & 0x7f;
        if (k == 0 || k > 4 || n - pos < k)
            return;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = (len << 8) | p[pos++];
    }
    if (len > n - pos) {
        r->tok_have = n;
        r->tok_announced = pos + len;
    }
}

/* Decode "Negotiate <b64>", bare base64 or raw bytes into a byte view. */
int fk_token_bytes(const uint8_t *tok, size_t n, uint8_t *out, fk_buf *res)
{
    static const char scheme[] = "negotiate";
    size_t i = 0;
    if (n >= 9) {
        int is_scheme = 1;
        for (size_t k = 0; k < 9; k++) {
            uint8_t ch = tok[k];
            if (ch >= 'A' && ch <= 'Z')
                ch = (uint8_t)(ch + 32);
            if (ch != (uint8_t)scheme[k])
                is_scheme = 0;
        }
        if (is_scheme && (n == 9 || tok[9] == ' ')) {
            i = 9;
            while (i < n && tok[i] == ' ')
                i++;
            while (n > i && (tok[n - 1] == ' ' || tok[n - 1] == '\r' || tok[n - 1] == '\n'))
                n--;
            size_t outlen;
            if (i == n || fk_b64_decode(tok + i, n - i, out, &outlen) != 0)
                return -1;
            res->p = out;
            res->n = outlen;
            return 0;
        }
    }
    /* Binary tokens begin with a DER tag (0x60, 0xa0, 0xa1, 0x6e) or "NTLMSSP\0"; text is base64. */
    if (n > 0 && (tok[0] == 0x60 || tok[0] == 0xa0 || tok[0] == 0xa1 || tok[0] == 0x6e ||
                  (n >= 8 && memcmp(tok, "NTLMSSP", 8) == 0))) {
        res->p = tok;
        res->n = n;
        return 0;
    }
    size_t outlen;
    if (fk_b64_decode(tok, n, out, &outlen) != 0)
        return -1;
    res->p = out;
    res->n = outlen;
    return 0;
}

/* RFC 4121 §4.1.1.2: MD5 over the gss_channel_bindings_struct with no addresses. MIT writes the
 * null address type as 0; Java's ChannelBinding writes GSS_C_AF_NULLADDR (255). */
static void cb_hash(const uint8_t *cb, size_t cblen, uint32_t addrtype, uint8_t out[16])
{
    uint8_t hdr[20];
    memset(hdr, 0, sizeof hdr);
    hdr[0] = (uint8_t)addrtype;
    hdr[8] = (uint8_t)addrtype;
    hdr[16] = (uint8_t)cblen;
    hdr[17] = (uint8_t)(cblen >> 8);
    hdr[18] = (uint8_t)(cblen >> 16);
    hdr[19] = (uint8_t)(cblen >> 24);
    MD5_CTX c;
    MD5_Init(&c);
    MD5_Update(&c, hdr, sizeof hdr);
    MD5_Update(&c, cb, cblen);
    MD5_Final(out, &c);
}

/* The GSS checksum (RFC 4121 §4.1.1) with MIT's acceptance rules (accept_sec_context.c). */
static int check_gss_cksum(const fk_validator *v, const uint8_t *cb, size_t cblen, fk_result *r)
{
    const fk_authenticator *a = &r->auth;
    fk_buf ap;
    if (fk_find_authdata(a->authdata, AD_AP_OPTIONS, &ap) == 1 && ap.n >= 4 &&
        (le32(ap.p) & KERB_AP_OPTIONS_CBT))
        r->cbt_required = 1;
    if (!a->has_cksum || a->cksumtype != GSS_CKSUM_8003) {
        /* No 0x8003 checksum: no flags, no bindings (MS-KILE/Samba clients). */
        if (cb && r->cbt_required) {
            r->cb_state = FK_CB_NONE;
            return FK_V_CB_MISSING;
        }
        return FK_V_OK;
    }
    const uint8_t *c = a->cksum.p;
    size_t n = a->cksum.n;
    if (n < 24 || le32(c) != 16) {
        r->what = "GSS checksum 0x8003 has a bad length";
        return FK_V_MALFORMED;
    }
    r->has_gss_cksum = 1;
    const uint8_t *bnd = c + 4;
    r->gss_flags = le32(c + 20);
    if ((r->gss_flags & GSS_C_DELEG_FLAG) && n >= 28) {
        uint32_t dlgopt = (uint32_t)c[24] | ((uint32_t)c[25] << 8);
        uint32_t dlgth = (uint32_t)c[26] | ((uint32_t)c[27] << 8);
        if (dlgopt != 1 || n - 28 < dlgth) {
            r->what = "GSS checksum delegation field is malformed";
            return FK_V_MALFORMED;
        }
        r->deleg.p = c + 28;
        r->deleg.n = dlgth;
    }
    int zero = 1;
    for (int i = 0; i < 16; i++)
        zero &= bnd[i] == 0;
    if (!cb) {
        r->cb_state = zero ? FK_CB_NONE : FK_CB_IGNORED;
        return FK_V_OK;
    }
    if (zero) {
        r->cb_state = FK_CB_CLIENT_NONE;
        return r->cbt_required ? FK_V_CB_MISSING : FK_V_OK;
    }
    uint8_t h[16];
    cb_hash(cb, cblen, 0, h);
    if (fk_ct_memcmp(h, bnd, 16) == 0) {
        r->cb_state = FK_CB_MATCHED;
        return FK_V_OK;
    }
    cb_hash(cb, cblen, 255, h);
    if (fk_ct_memcmp(h, bnd, 16) == 0) {
        r->cb_state = FK_CB_MATCHED_JAVA;
        return FK_V_OK;
    }
    return FK_V_CB_MISMATCH;
}

/* MS-PAC §2.8.1: the server signature covers the PAC with both signature fields zeroed (the type and a
 * RODC identifier stay; the ticket and full-PAC checksums of §2.8.3-4 are covered as they are). */
static int verify_pac(const fk_kt_entry *key, fk_buf pac, uint8_t *copy, fk_pac *px, fk_result *r)
{
    if (fk_pac_parse(pac, px, &r->what) != FK_PAC_OK)
        return FK_V_PAC_MALFORMED;
    const uint32_t sigs = (1u << FK_PAC_SERVER_CHECKSUM) | (1u << FK_PAC_PRIVSVR_CHECKSUM);
    if ((px->present & sigs) != sigs) {
        r->what = "PAC lacks its server or KDC signature";
        return FK_V_PAC_MALFORMED;
    }
    memcpy(copy, pac.p, pac.n);
    int32_t srv_type = 0;
    size_t srv_len = 0;
    for (int t = FK_PAC_SERVER_CHECKSUM; t <= FK_PAC_PRIVSVR_CHECKSUM; t++) {
        fk_buf b = px->buf[t];
        if (b.n < 4) {
            r->what = "PAC signature buffer shorter than its SignatureType";
            return FK_V_PAC_MALFORMED;
        }
        int32_t sigtype = (int32_t)le32(b.p);
        size_t siglen;
        switch (sigtype) {
        case 15: case 16: siglen = 12; break;
        case 19: case -138: siglen = 16; break;
        case 20: siglen = 24; break;
        default:
            r->what = "PAC signature of an unknown SignatureType";
            return FK_V_PAC_MALFORMED;
        }
        if (b.n - 4 < siglen) {
            r->what = "PAC signature shorter than its SignatureType's checksum";
            return FK_V_PAC_MALFORMED;
        }
        if (t == FK_PAC_SERVER_CHECKSUM) {
            srv_type = sigtype;
            srv_len = siglen;
        }
        memset(copy + px->off[t] + 4, 0, siglen);
    }
    /* keyed with the service key: its enctype's checksum (RFC 3962 §7 HMAC-SHA1-96-AES for 17/18,
     * RFC 8009 for 19/20; RFC 4757 HMAC-MD5 only for an RC4 key) */
    if (srv_type != fk_enctype_cksumtype(key->enctype))
        return FK_V_PAC_SIGNATURE_TYPE;
    const uint8_t *mac = pac.p + px->off[FK_PAC_SERVER_CHECKSUM] + 4;
    if (fk_checksum_verify(&key->pac, srv_type, copy, pac.n, mac, srv_len) != FK_OK)
        return FK_V_PAC_INTEGRITY;
    r->pac_verified = 1;
    return FK_V_OK;
}

int fk_verify_pac(const fk_kt_entry *key, fk_buf pac, uint8_t *copy, fk_result *r)
{
    fk_pac px;
    return verify_pac(key, pac, copy, &px, r);
}

int fk_check_pac(const fk_kt_entry *key, fk_buf pac, uint8_t *copy, const fk_enc_ticket *t, fk_buf srealm,
                 fk_result *r)
{
    fk_pac px;
    int rc = verify_pac(key, pac, copy, &px, r);
    if (rc != FK_V_OK)
        return rc;
    if (px.present & (1u << FK_PAC_CLIENT_INFO))
        r->pac_client = px.buf[FK_PAC_CLIENT_INFO];
    /* MIT (k5_pac_validate_client) and Heimdal check CLIENT_INFO after the signature; so do we */
    rc = fk_pac_check_client(&px, &t->cname, t->authtime, &r->what);
    if (rc != FK_PAC_OK)
        return rc == FK_PAC_MISMATCH ? FK_V_PAC_CLIENT_MISMATCH : FK_V_PAC_MALFORMED;
    if (px.present & (1u << FK_PAC_UPN_DNS_INFO))
        r->pac_upn = px.buf[FK_PAC_UPN_DNS_INFO];
    rc = fk_pac_check_upn(&px, t->crealm, srealm, &r->what);
    if (rc != FK_PAC_OK)
        return rc == FK_PAC_MISMATCH ? FK_V_PAC_REALM_MISMATCH : FK_V_PAC_MALFORMED;
    if (px.present & (1u << FK_PAC_LOGON_INFO))
        r->pac_logon = px.buf[FK_PAC_LOGON_INFO];
    return FK_V_OK;
}

/* DOMAIN-X500-COMPRESS (RFC 4120 §3.3.3.2) with only plain realm names: every realm must be allowed.
 * Compressed forms (leading/trailing '.', '/') cannot be matched against an allow-list: refused. */
static int check_transited(const fk_validator *v, fk_result *r)
{
    const fk_enc_ticket *t = &r->tkt;
    if (t->transited.n == 0 || flag(t->flags, TKT_FLG_TRANSIT_CHECKED) || v->nrealms == 0)
        return FK_V_OK;
    const uint8_t *p = t->transited.p, *end = p + t->transited.n;
    while (p <= end) {
        const uint8_t *q = memchr(p, ',', (size_t)(end - p));
        if (!q)
            q = end;
        size_t len = (size_t)(q - p);
        r->transited_bad.p = p;
        r->transited_bad.n = len;
        if (len == 0 || p[0] == '.' || p[len - 1] == '.' || p[0] == '/' || !realm_allowed(v, p, len))
            return FK_V_TRANSITED;
        p = q + 1;
    }
    r->transited_bad.n = 0;
    return FK_V_OK;
}

/* Step 8's replay identity: 12 bytes of the authenticator's MAC (the tail for AES, the head for RC4) and
 * the hash of the principal whose key decrypted the ticket. The ciphertext holds at least 12 + hlen bytes
 * (the caller's check, or a decryption that succeeded). */
static void replay_key(const fk_ekey *sk, fk_buf cipher, uint32_t princ_hash, uint8_t out[16])
{
    const uint8_t *mac = sk->enctype == 23 ? cipher.p : cipher.p + cipher.n - sk->hlen;
    memcpy(out, mac, 12);
    memcpy(out + 12, &princ_hash, 4);
}

/* The answer token into out (0 / FK_V_INTERNAL): for mutual authentication EncAPRepPart encrypted in the
 * session key (usage 12, key sk) as an AP-REP framed like the request; SPNEGO always gets accept-completed.
 * out is written only once the token is whole (reply->n bytes). */
static int build_answer(const fk_result *r, const fk_ekey *sk, uint8_t *out, size_t cap, fk_buf *reply)
{
    uint8_t part[96], cipher[512];
    size_t clen = 0;
    if (r->mutual) {
        uint32_t seq;
        if (fk_random_nonce((uint8_t *)&seq, sizeof seq) != FK_OK)
            return FK_V_INTERNAL;
        seq &= 0x3fffffff;
        size_t plen = fk_encode_enc_ap_rep_part(r->auth.ctime, r->auth.cusec, -1, NULL, 0, 1, seq, part, sizeof part);
        clen = fk_encrypt_len(sk, plen);
        if (plen == 0 || clen > sizeof cipher || fk_encrypt(sk, NULL, part, plen, cipher, &clen) != FK_OK)
            return FK_V_INTERNAL;
    }
    int spnego = r->frame.kind == FK_FRAME_SPNEGO || r->frame.kind == FK_FRAME_SPNEGO_RESP;
    size_t n = fk_encode_answer(clen ? sk->enctype : 0, clen ? cipher : NULL, clen,
                                r->frame.kind != FK_FRAME_RAW ? r->frame.gss_mech : -1,
                                spnego ? r->frame.spnego_mech : -1, out, cap);
    if (n == 0)
        return FK_V_INTERNAL;
    reply->p = out;
    reply->n = n;
    return FK_V_OK;
}

/* Key selection with MIT's semantics (rd_req_dec.c): the ticket's kvno first, then every key of the
 * principal and enctype whatever its kvno; the verdict on failure says precisely which case it is.
 *
 * An sname that is not in the keytab may still be ours: Active Directory keytabs (samba-tool
 * exportkeytab --principal, msktutil, ktpass) name the account ("svc-api@CORP", "web1$@CORP") while
 * clients ask for one of its SPNs ("HTTP/api.corp.example"), and the KDC encrypts with the account's
 * key. Like MIT's acceptor with no acceptor name, such a ticket is tried with every accepted key of its
 * enctype; the one whose integrity check passes is the principal that accepted it (RFC 4120 §5.3: the
 * sname travels in clear text, so it never names the service; the decrypting key does). */
static int decrypt_ticket(const fk_validator *v, fk_result *r, uint8_t *plain, size_t *plen)
{
    const fk_apreq *q = &r->req;
    int any_princ = 0, any_accepted = 0, kvno_found = 0, kvno_etype_found = 0, etype_found = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < v->nkeys; i++) {
            const fk_kt_entry *e = &v->keys[i];
            if (!entry_is(e, q))
                continue;
            any_princ = 1;
            if (!e->accepted)
                continue;
            any_accepted = 1;
            int kvno_match = q->has_kvno && e->kvno == q->tkt_kvno;
            if (pass == 0) {
                kvno_found |= kvno_match;
                kvno_etype_found |= kvno_match && e->enctype == q->tkt_etype;
                etype_found |= e->enctype == q->tkt_etype;
            }
            if (e->enctype != q->tkt_etype)
                continue;
            /* pass 0: the ticket's kvno (or every key when it names none); pass 1: the other kvnos */
            if (pass == 0 ? (q->has_kvno && !kvno_match) : (!q->has_kvno || kvno_match))
                continue;
            r->key_tried++;
            if (fk_decrypt(&e->tkt, q->tkt_cipher.p, q->tkt_cipher.n, plain, plen) == FK_OK) {
                r->key = e;
                return FK_V_OK;
            }
        }
    }
    if (!any_princ) {
        /* an alias of one of the keytab's principals? Every accepted key of the ticket's enctype (principals=
         * still decides which keys count), the ticket's kvno first, then the others */
        r->alias = 2;
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < v->nkeys; i++) {
                const fk_kt_entry *e = &v->keys[i];
                if (!e->accepted || e->enctype != q->tkt_etype)
                    continue;
                int kvno_match = q->has_kvno && e->kvno == q->tkt_kvno;
                if (pass == 0 ? (q->has_kvno && !kvno_match) : (!q->has_kvno || kvno_match))
                    continue;
                r->key_tried++;
                if (fk_decrypt(&e->tkt, q->tkt_cipher.p, q->tkt_cipher.n, plain, plen) == FK_OK) {
                    r->key = e;
                    r->alias = 1;
                    return FK_V_OK;
                }
            }
        }
        return FK_V_WRONG_PRINCIPAL;
    }
    if (!any_accepted)
        return FK_V_PRINCIPAL_NOT_ACCEPTED;
    if (!q->has_kvno)
        return etype_found ? FK_V_TICKET_INTEGRITY_NO_KVNO : FK_V_ENCTYPE_NOT_IN_KEYTAB;
    if (kvno_etype_found)
        return FK_V_TICKET_INTEGRITY;
    if (kvno_found)
        return FK_V_ENCTYPE_NOT_IN_KEYTAB;
    return FK_V_KVNO;  /* the ticket's kvno is absent (whatever the enctypes): the kvno is what to fix */
}

static int validate(const fk_validator *v, const uint8_t *tok, size_t toklen, double now,
                    const uint8_t *cb, size_t cblen, uint8_t *scratch, size_t scratchlen, fk_result *r,
                    fk_ekey *ks)
{
    memset(r, 0, sizeof *r);
    fk_derr e = {NULL, 0};
    if (scratchlen < fk_scratch_size(toklen))
        return done(r, FK_V_INTERNAL);
    /* the decoded token never exceeds the raw length; base64 shrinks it */
    if (toklen > v->max_token * 4 / 3 + 64)
        return done(r, FK_V_TOO_LARGE);
    uint8_t *decoded = scratch;
    uint8_t *tkt_plain = scratch + toklen;
    uint8_t *auth_plain = tkt_plain + toklen;
    uint8_t *pac_copy = auth_plain + toklen;
    uint8_t *answer = pac_copy + toklen;
    size_t answer_cap = scratchlen - 4 * toklen;

    /* 1. framing: header / base64 / GSS / SPNEGO */
    fk_buf raw;
    if (fk_token_bytes(tok, toklen, decoded, &raw) != 0) {
        r->what = "token is neither binary nor base64";
        /* base64 cut at a length of 4k+1 characters: one dangling character, the rest may be a prefix */
        if (toklen > 1 && fk_token_bytes(tok, toklen - 1, decoded, &raw) == 0 && raw.p == decoded)
            note_truncation(r, raw.p, raw.n);
        return done(r, FK_V_MALFORMED);
    }
    if (raw.n > v->max_token)
        return done(r, FK_V_TOO_LARGE);
    int u = fk_unframe(raw.p, raw.n, &r->frame, &e);
    if (u != FK_UNFRAME_OK) {
        r->what = e.what;
        r->offset = e.offset;
        if (u == FK_UNFRAME_MALFORMED)
            note_truncation(r, raw.p, raw.n);
        return done(r, u == FK_UNFRAME_NTLM ? FK_V_NTLM : u == FK_UNFRAME_NO_KRB5 ? FK_V_NO_KRB5 : FK_V_MALFORMED);
    }
    size_t apreq_off = (size_t)(r->frame.apreq.p - raw.p);

    /* 2. AP-REQ */
    fk_apreq *q = &r->req;
    if (fk_decode_apreq(r->frame.apreq, q, &e) != 0) {
        note_truncation(r, raw.p, raw.n);
        return malformed(r, &e, apreq_off);
    }
    if (flag(q->ap_options, AP_OPT_USE_SESSION_KEY))
        return done(r, FK_V_USER_TO_USER);
    if (!permitted(v, q->tkt_etype))
        return done(r, FK_V_ENCTYPE_NOT_PERMITTED);

    /* 3. key selection and ticket decryption (usage 2) */
    size_t plen;
    int rc = decrypt_ticket(v, r, tkt_plain, &plen);
    used(r, SC_TKT, q->tkt_cipher.n);
    if (rc != FK_V_OK)
        return done(r, rc);
    fk_enc_ticket *t = &r->tkt;
    if (fk_decode_enc_ticket((fk_buf){tkt_plain, plen}, t, &e) != 0)
        return malformed(r, &e, 0);
    r->have_tkt = 1;
    r->tkt_start = t->has_starttime ? t->starttime : t->authtime;

    /* 4. authenticator (usage 11) in the session key */
    if (!permitted(v, t->keytype))
        return done(r, FK_V_SESSION_ENCTYPE_NOT_PERMITTED);
    if (q->auth_etype != t->keytype)
        return done(r, FK_V_AUTH_ENCTYPE_MISMATCH);
    fk_ekey *skp = &ks[0], *tmp = &ks[1];
#define sk (*skp)
    if (fk_ekey_init_flags(&sk, t->keytype, t->key.p, t->key.n, KU_AP_REQ_AUTH, FK_EKEY_NO_CHECKSUM) != FK_OK) {
        r->what = "session key has the wrong length for its enctype";
        return done(r, FK_V_MALFORMED);
    }
    /* step 8's replay key is known now, before the decryption: its table lines start on their way. A
     * ciphertext too short for it never decrypts, so step 8 always finds the key set. */
    if (q->auth_cipher.n >= 12 && q->auth_cipher.n >= sk.hlen) {
        replay_key(&sk, q->auth_cipher, r->key->princ_hash, r->replay_key);
        if (v->rc.prefetch)
            v->rc.prefetch(v->rc.ctx, r->replay_key);
    }
    size_t alen;
    rc = fk_decrypt(&sk, q->auth_cipher.p, q->auth_cipher.n, auth_plain, &alen);
    used(r, SC_AUTH, q->auth_cipher.n);
    if (rc != FK_OK)
        return done(r, rc == FK_ERR_INTEGRITY ? FK_V_AUTH_INTEGRITY : FK_V_MALFORMED);
    fk_authenticator *a = &r->auth;
    if (fk_decode_authenticator((fk_buf){auth_plain, alen}, a, &e) != 0)
        return malformed(r, &e, 0);
    r->have_auth = 1;

    /* 5. policy: names, realms, flags, times */
    if (!buf_eq(a->crealm, t->crealm) || !name_eq(&a->cname, &t->cname))
        return done(r, FK_V_NAME_MISMATCH);
    if (!realm_allowed(v, t->crealm.p, t->crealm.n))
        return done(r, FK_V_REALM);
    if ((rc = check_transited(v, r)) != FK_V_OK)
        return done(r, rc);
    if (flag(t->flags, TKT_FLG_INVALID))
        return done(r, FK_V_TICKET_INVALID);
    /* MIT's order: the ticket's window first, then the authenticator's time (the skew is measured
     * before either, so a rejection for the ticket still reports the clock offset). */
    double atime = (double)a->ctime + (double)a->cusec / 1e6;
    r->skew_seconds = atime - now;
    if (now < (double)r->tkt_start - v->skew)
        return done(r, FK_V_NOT_YET_VALID);
    if (now > (double)t->endtime + v->skew)
        return done(r, FK_V_EXPIRED);
    if (fabs(r->skew_seconds) > v->skew || isnan(r->skew_seconds))
        return done(r, FK_V_CLOCK_SKEW);

    /* 6. checksum: GSS 0x8003 flags and channel bindings, or a keyed checksum over nothing */
    if (r->frame.kind != FK_FRAME_RAW || (a->has_cksum && a->cksumtype == GSS_CKSUM_8003)) {
        if ((rc = check_gss_cksum(v, cb, cblen, r)) != FK_V_OK)
            return done(r, rc);
    } else if (a->has_cksum) {
        if (fk_ekey_init(tmp, t->keytype, t->key.p, t->key.n, KU_AP_REQ_CKSUM) != FK_OK ||
            fk_checksum_verify(tmp, a->cksumtype, NULL, 0, a->cksum.p, a->cksum.n) != FK_OK)
            return done(r, FK_V_CKSUM_INTEGRITY);
    }
    r->mutual = flag(q->ap_options, AP_OPT_MUTUAL_REQUIRED) || (r->gss_flags & GSS_C_MUTUAL_FLAG);

    /* 7. PAC server signature, when the ticket carries a PAC */
    if (t->authdata.n) {
        int f = fk_find_authdata(t->authdata, AD_WIN2K_PAC, &r->pac);
        if (f < 0) {
            r->what = "ticket authorization-data is malformed";
            return done(r, FK_V_MALFORMED);
        }
        if (f == 1 && v->verify_pac) {
            used(r, SC_PAC, r->pac.n);
            if ((rc = fk_check_pac(r->key, r->pac, pac_copy, t, q->realm, r)) != FK_V_OK)
                return done(r, rc);
        }
    }

    /* 8. replay: identity = MAC of the authenticator ciphertext + the principal whose key decrypted
     * the ticket (never the clear-text sname), set in step 4 (replay_key). */
    r->replay_expiry = atime + v->skew + 1.0;
    if (v->cold_start && now < v->rc_started + v->skew && atime < v->rc_started)
        return done(r, FK_V_RC_COLD);
    if (v->rc.insert) {
        int ins = v->rc.insert(v->rc.ctx, r->replay_key, r->replay_expiry, now, &r->first_seen);
        if (ins == FK_RC_REPLAY)
            return done(r, FK_V_REPLAY);
        if (ins == FK_RC_FULL)
            return done(r, FK_V_RC_FULL);
        if (ins == FK_RC_COLD)
            return done(r, FK_V_RC_COLD);
        if (ins != FK_RC_OK)
            return done(r, FK_V_RC_UNAVAILABLE);
    }

    /* 9. the answer: AP-REP for mutual authentication; SPNEGO always gets accept-completed */
    if (r->mutual || r->frame.kind == FK_FRAME_SPNEGO || r->frame.kind == FK_FRAME_SPNEGO_RESP) {
        if (r->mutual && fk_ekey_init_flags(tmp, t->keytype, t->key.p, t->key.n, KU_AP_REP,
                                            FK_EKEY_NO_CHECKSUM) != FK_OK)
            return done(r, FK_V_INTERNAL);
        if ((rc = build_answer(r, tmp, answer, answer_cap, &r->reply)) != FK_V_OK)
            return done(r, rc);
        used(r, SC_ANSWER, r->reply.n);
    }
    return done(r, FK_V_OK);
}
#undef sk

int fk_validate(const fk_validator *v, const uint8_t *tok, size_t toklen, double now,
                const uint8_t *cb, size_t cblen, uint8_t *scratch, size_t scratchlen, fk_result *r)
{
    /* session-key material lives here and is wiped whatever the verdict */
    fk_ekey ks[2];
    int rc = validate(v, tok, toklen, now, cb, cblen, scratch, scratchlen, r, ks);
    explicit_bzero(ks, sizeof ks);
    return rc;
}
