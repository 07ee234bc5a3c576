"""A test KDC in a function: mint AP-REQ tokens from a keytab, with every field under the caller's control.

For unit tests, fuzzing and benches, where a real KDC is too slow or too rigid. The ticket is built and
encrypted exactly as a KDC would (RFC 4120 §5.3, key usage 2 with the service key), the authenticator as
a GSS initiator would (RFC 4121 §4.1.1: a 0x8003 checksum carrying channel bindings, flags and
delegation; key usage 11 with the session key), then framed as SPNEGO, krb5 GSS, or a bare AP-REQ. MIT's
own acceptor accepts what this makes (tests/test_testing.py), so it is faithful, not just self-consistent.
Messages are encoded with fastkrb.krb.asn1 (pyasn1), never with the native code under test.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fastkrb.errors import IntegrityError, KerberosError, MalformedToken
from fastkrb.keytab import Keytab, KeytabEntry, parse_principal, unparse_principal
from fastkrb.krb import asn1, crypto, gss
from fastkrb.krb.asn1 import (
    ADEntry,
    ApRep,
    ApReq,
    Authenticator,
    Checksum,
    EncApRepPart,
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    HostAddress,
    PrincipalName,
    Ticket,
    TransitedEncoding,
)
from fastkrb.krb.gss import ChannelBindings, GssChecksum
from fastkrb.krb.negotiate import token_bytes

__all__ = ["Minted", "mint", "make_keytab", "ap_options_cbt", "pac_client_name", "Framing", "ENCTYPE_PREFERENCE"]

Framing = Literal["spnego", "krb5", "krb5-ms", "spnego-ms", "raw", "header"]

# The order an MIT KDC (default supported_enctypes) picks a ticket enctype in when the service has several.
ENCTYPE_PREFERENCE = (18, 17, 20, 19, 23)

KEY_USAGE_TICKET = 2           # RFC 4120 §7.5.1
KEY_USAGE_AUTHENTICATOR = 11
KEY_USAGE_AP_REP = 12
DEFAULT_LIFETIME = 10 * 3600

_CONFOUNDER = {23: 8, 24: 8}   # RFC 4757; every other enctype here uses one cipher block (16)


def ap_options_cbt() -> ADEntry:
    """KERB_AP_OPTIONS_CBT as Windows sends it in the authenticator: AD-IF-RELEVANT { 143: 0x4000 LE }."""
    inner = ADEntry(asn1.AD_AUTH_DATA_AP_OPTIONS, asn1.KERB_AP_OPTIONS_CBT.to_bytes(4, "little"))
    return ADEntry(asn1.AD_IF_RELEVANT, asn1.encode_authorization_data([inner]))


@dataclass(frozen=True)
class Minted:
    """A minted token and everything a test needs to check what a validator made of it."""

    token: bytes | str = field(repr=False)
    framing: str
    ap_req: bytes = field(repr=False)
    ticket: bytes = field(repr=False)
    enc_ticket_part: bytes = field(repr=False)    # plaintext DER of the ticket's encrypted part
    authenticator: bytes = field(repr=False)      # plaintext DER of the authenticator
    server: str
    client: str
    ticket_enctype: int
    kvno: int
    server_key: bytes = field(repr=False)
    session_enctype: int
    session_key: bytes = field(repr=False)
    authtime: int
    starttime: int | None
    endtime: int
    renew_till: int | None
    flags: int
    ctime: int
    cusec: int
    ap_options: int
    gss_flags: int | None
    checksum: bytes | None = field(repr=False)    # the authenticator's checksum value (0x8003 body)
    bindings_hash: bytes | None = field(repr=False)
    subkey: EncryptionKey | None = field(repr=False)
    seq_number: int | None
    pac: bytes | None = field(repr=False)
    delegated: bytes | None = field(repr=False)

    @property
    def header(self) -> str:
        """``Negotiate <base64>`` of this token (whatever its framing)."""
        if isinstance(self.token, str):
            return self.token
        return "Negotiate " + base64.b64encode(self.token).decode("ascii")

    @property
    def token_bytes(self) -> bytes:
        if isinstance(self.token, bytes):
            return self.token
        return token_bytes(self.token)

    def again(self, *, now: float | None = None, ctime: int | None = None, cusec: int | None = None,
              rng: random.Random | None = None) -> Minted:
        """A new authenticator for the same ticket, as a client with a cached ticket sends per request.

        Everything else (checksum, subkey, authorization data, framing) is kept; ctime/cusec default to now.
        Cheaper than :func:`mint` (no ticket to build), and realistic for replay-cache and throughput benches.
        """
        now_f = time.time() if now is None else float(now)
        c_time = int(now_f) if ctime is None else int(ctime)
        if cusec is None:
            cusec = rng.randrange(1_000_000) if rng is not None else int((now_f % 1) * 1_000_000)
        auth = dataclasses.replace(Authenticator.from_der(self.authenticator), ctime=c_time, cusec=cusec)
        auth_der = auth.to_der()
        enc = EncryptedData(self.session_enctype, _encrypt(rng, self.session_enctype, self.session_key,
                                                           KEY_USAGE_AUTHENTICATOR, auth_der))
        ap_der = ApReq(Ticket.from_der(self.ticket), enc, self.ap_options).to_der()
        return dataclasses.replace(self, token=_frame(ap_der, self.framing), ap_req=ap_der, authenticator=auth_der,
                                   ctime=c_time, cusec=cusec)

    def variants(self, n: int, *, now: float | None = None, offset: int = 0) -> list[bytes]:
        """``n`` distinct, valid tokens for the same ticket, fast (a few µs each): for load tests and benches.

        Each differs from this one only in the authenticator's cusec (and so its ciphertext and MAC): the
        authenticator is re-encrypted natively and spliced in place, framing and all. ctime is ``now``
        (default: this token's ctime). At most 900,000 variants per second of ctime; ``offset`` starts
        further into that range, so successive batches for one second stay distinct.
        """
        from fastkrb import _native

        if n + offset > 900_000:
            raise ValueError("at most 900,000 variants per ctime")
        base = self.again(now=now, cusec=500_000) if (now is not None or self.cusec != 500_000) else self
        auth = base.authenticator
        marker = bytes.fromhex("a40502030" + "7a120")  # cusec [4] INTEGER 500000, three content bytes
        at = auth.find(marker)
        if at < 0 or auth.find(marker, at + 1) >= 0:
            raise ValueError("cannot locate the authenticator's cusec")
        raw = base.token_bytes
        old = ApReq.from_der(base.ap_req).authenticator.cipher
        pos = raw.find(old)
        key = _native.CryptoKey(self.session_enctype, self.session_key, KEY_USAGE_AUTHENTICATOR,
                                with_checksum=False)
        out: list[bytes] = []
        plain = bytearray(auth)
        for i in range(n):
            plain[at + 4:at + 7] = (100_000 + offset + i).to_bytes(3, "big")
            ct = key.encrypt(bytes(plain))
            out.append(raw[:pos] + ct + raw[pos + len(ct):])
        if isinstance(self.token, str):
            return [("Negotiate " + base64.b64encode(t).decode("ascii")).encode("ascii") for t in out]
        return out

    def verify_ap_rep(self, response: bytes | str) -> EncApRepPart:
        """Check an acceptor's answer: decrypt its EncAPRepPart (usage 12) and match ctime/cusec.

        ``response`` may be a raw AP-REP, a krb5 GSS token, a SPNEGO NegTokenResp, base64, or a
        ``Negotiate <b64>`` header value.
        """
        data = token_bytes(response)
        if data[:1] == b"\xa1":
            resp = gss.decode_spnego(data)
            assert isinstance(resp, gss.NegTokenResp)
            if resp.neg_state == 2:
                raise KerberosError("The acceptor rejected the SPNEGO negotiation (negState reject).")
            if resp.response_token is None:
                raise MalformedToken("SPNEGO NegTokenResp carries no responseToken (no AP-REP).")
            data = resp.response_token
        if data[:1] == b"\x60":
            g = gss.gss_unwrap(data)
            if g.tok_id == asn1.TOK_ID_KRB_ERROR:
                err = asn1.KrbError.from_der(g.inner)
                raise KerberosError(f"The acceptor answered with KRB-ERROR {err.error_code} ({err.e_text}).",
                                    details={"error_code": err.error_code})
            if g.tok_id != asn1.TOK_ID_AP_REP:
                raise MalformedToken("GSS response token is not an AP-REP.",
                                     details={"tok_id": (g.tok_id or b"").hex()})
            data = g.inner
        rep = ApRep.from_der(data)
        if rep.enc_part.etype != self.session_enctype:
            raise IntegrityError(f"AP-REP is encrypted with enctype {rep.enc_part.etype}, the session key is "
                                 f"{self.session_enctype}.")
        try:
            plain = crypto.decrypt(self.session_enctype, self.session_key, KEY_USAGE_AP_REP, rep.enc_part.cipher)
        except KerberosError:
            raise
        except Exception as exc:
            raise IntegrityError("AP-REP does not decrypt with the session key.") from exc
        part = EncApRepPart.from_der(plain)
        if (part.ctime, part.cusec) != (self.ctime, self.cusec):
            raise IntegrityError("AP-REP answers another authenticator (ctime/cusec differ).",
                                 details={"ctime": part.ctime, "cusec": part.cusec,
                                          "expected_ctime": self.ctime, "expected_cusec": self.cusec})
        return part


def _random_bytes(rng: random.Random | None, n: int) -> bytes:
    return rng.randbytes(n) if rng is not None else os.urandom(n)


def _random_key(rng: random.Random | None, enctype: int) -> bytes:
    if rng is None:
        return crypto.random_key(enctype)
    return rng.randbytes(crypto.key_length(enctype))


def _encrypt(rng: random.Random | None, enctype: int, key: bytes, usage: int, plaintext: bytes) -> bytes:
    conf = None if rng is None else rng.randbytes(_CONFOUNDER.get(enctype, 16))
    return crypto.encrypt(enctype, key, usage, plaintext, confounder=conf)


def _ad_entries(items: Iterable[ADEntry | tuple[int, bytes]]) -> list[ADEntry]:
    return [i if isinstance(i, ADEntry) else ADEntry(int(i[0]), bytes(i[1])) for i in items]


def _pick_server_key(kt: Keytab | None, server: str, enctype: int | None, kvno: int | None,
                     key: bytes | None) -> tuple[int, int, bytes]:
    if key is not None:
        if enctype is None:
            raise ValueError("mint(key=...) needs ticket_enctype=")
        return enctype, (kvno if kvno is not None else 1), bytes(key)
    if kt is None:
        raise ValueError("mint() needs a keytab or key=")
    entries = kt.find(server, kvno=kvno, enctype=enctype)
    if not entries:
        raise ValueError(f"keytab has no key for {server} (kvno={kvno}, enctype={enctype})")
    if enctype is None:
        have = {e.enctype for e in entries}
        enctype = next((et for et in ENCTYPE_PREFERENCE if et in have), entries[0].enctype)
    best: KeytabEntry = max((e for e in entries if e.enctype == enctype), key=lambda e: e.kvno)
    return best.enctype, best.kvno, best.key


def pac_client_name(client_comps: tuple[str, ...], cname_type: int = asn1.NT_PRINCIPAL) -> str:
    """PAC_CLIENT_INFO's Name for a client (MS-PAC §2.7): the principal without its realm, quoted as MIT's
    unparser does; an NT-ENTERPRISE name ("user@upn.suffix") verbatim, as Active Directory writes it."""
    if cname_type == asn1.NT_ENTERPRISE and len(client_comps) == 1:
        return client_comps[0]
    return unparse_principal(client_comps, "")[:-1]


def _default_pac(pac: bool | Mapping[str, Any], client_comps: tuple[str, ...], crealm: str, authtime: int,
                 ticket_enctype: int, server_key: bytes, cname_type: int) -> bytes:
    from fastkrb.krb.pac import build_pac

    kwargs: dict[str, Any] = {
        "client_name": pac_client_name(client_comps, cname_type), "auth_time": authtime,
        "server_key": (ticket_enctype, server_key),
        "upn": "/".join(client_comps) + "@" + crealm.lower(), "dns_domain": crealm,
    }
    if isinstance(pac, Mapping):
        kwargs.update(pac)
    return bytes(build_pac(**kwargs))


def mint(
    keytab: Keytab | str | os.PathLike[str] | bytes | None = None,
    *,
    server: str | None = None,
    client: str | None = None,
    crealm: str | None = None,
    ticket_enctype: int | None = None,
    kvno: int | None = None,
    key: bytes | None = None,
    session_enctype: int | None = None,
    session_key: bytes | None = None,
    authtime: int | None = None,
    starttime: int | None = None,
    endtime: int | None = None,
    renew_till: int | None = None,
    flags: int | Iterable[str] = ("forwardable", "renewable", "pre-authent"),
    ctime: int | None = None,
    cusec: int | None = None,
    now: float | None = None,
    subkey: bytes | tuple[int, bytes] | bool | None = None,
    seq_number: int | None = None,
    gss_flags: int | Iterable[str] = ("mutual", "integ", "conf"),
    channel_bindings: bytes | ChannelBindings | None = None,
    java_style_bindings: bool = False,
    ap_options: int | Iterable[str] | None = None,
    delegated: bytes | None = None,
    transited: bytes = b"",
    addresses: Iterable[HostAddress | tuple[int, bytes]] | None = None,
    pac: bytes | bool | Mapping[str, Any] | None = None,
    authorization_data: Iterable[ADEntry | tuple[int, bytes]] = (),
    authenticator_authorization_data: Iterable[ADEntry | tuple[int, bytes]] = (),
    no_checksum: bool = False,
    cksum: bytes | tuple[int, bytes] | None = None,
    sname_type: int | None = None,
    cname_type: int | None = None,
    authenticator_client: str | None = None,
    framing: Framing = "spnego",
    rng: random.Random | None = None,
) -> Minted:
    """Mint an AP-REQ for ``server`` (default: the keytab's first principal) from ``client``.

    Defaults are what a current MIT client and KDC produce: authtime = now, endtime = now + 10 h, the
    server's newest key of the preferred enctype, a random session key of the same enctype, a GSS checksum
    with ``gss_flags`` and, when ``mutual`` is among them, the mutual-required AP option (``ap_options=None``;
    pass ``()`` for none). ``client`` defaults to ``alice@<server realm>``; a client without ``@`` gets the
    server's realm; ``crealm`` overrides the client's realm. ``channel_bindings`` bytes are the application
    data (addresses empty, or type 255 with ``java_style_bindings``). ``pac`` is PAC bytes (wrapped in
    AD-IF-RELEVANT / AD-WIN2K-PAC), or True / a dict of build_pac arguments for a signed default PAC.
    ``cksum`` replaces the checksum value (bytes: type 0x8003) or the whole checksum (type, bytes).
    ``rng`` (a seeded random.Random) makes keys, confounders and cusec deterministic; fix ``now`` too.
    ``authenticator_client`` names another client in the authenticator than in the ticket (an attack).
    ``cname_type`` is the client's name type (default NT-PRINCIPAL; 10 for an NT-ENTERPRISE "user@suffix").
    To mint for an SPN the keytab does not name (an Active Directory alias), pass ``server=`` and the
    account's ``key=``, ``ticket_enctype=`` and ``kvno=``.
    """
    kt = Keytab.load(keytab) if keytab is not None else None
    if server is None:
        if kt is None or not kt.principals():
            raise ValueError("mint() needs server= when there is no keytab principal to default to")
        server = kt.principals()[0]
    s_comps, s_realm = parse_principal(server)
    if client is None:
        client = f"alice@{s_realm}"
    elif "@" not in client.replace("\\@", ""):
        client = f"{client}@{s_realm}"
    c_comps, c_realm = parse_principal(client)
    if crealm is not None:
        c_realm = crealm
    client = "/".join(c_comps) + "@" + c_realm

    t_enctype, t_kvno, s_key = _pick_server_key(kt, server, ticket_enctype, kvno, key)
    if kvno is not None:
        t_kvno = kvno
    ses_enctype = session_enctype if session_enctype is not None else t_enctype
    ses_key = bytes(session_key) if session_key is not None else _random_key(rng, ses_enctype)

    now_f = time.time() if now is None else float(now)
    auth_t = int(now_f) if authtime is None else int(authtime)
    end_t = auth_t + DEFAULT_LIFETIME if endtime is None else int(endtime)
    c_time = int(now_f) if ctime is None else int(ctime)
    if cusec is None:
        cusec = rng.randrange(1_000_000) if rng is not None else int((now_f % 1) * 1_000_000)
    flag_v = asn1.flags_to_int(flags, asn1.TICKET_FLAGS)
    c_type = asn1.NT_PRINCIPAL if cname_type is None else int(cname_type)

    # --- the ticket (what the KDC makes) ---
    ad: list[ADEntry] = []
    pac_bytes: bytes | None = None
    if pac is not None and pac is not False:
        pac_bytes = bytes(pac) if isinstance(pac, (bytes, bytearray)) else _default_pac(
            pac, c_comps, c_realm, auth_t, t_enctype, s_key, c_type)
        win2k = asn1.encode_authorization_data([ADEntry(asn1.AD_WIN2K_PAC, pac_bytes)])
        ad.append(ADEntry(asn1.AD_IF_RELEVANT, win2k))
    ad.extend(_ad_entries(authorization_data))
    caddr = None
    if addresses is not None:
        caddr = tuple(a if isinstance(a, HostAddress) else HostAddress(int(a[0]), bytes(a[1])) for a in addresses)
    etp = EncTicketPart(
        flags=flag_v, key=EncryptionKey(ses_enctype, ses_key), crealm=c_realm,
        cname=PrincipalName(c_type, c_comps), authtime=auth_t, endtime=end_t,
        transited=TransitedEncoding(1, transited), starttime=starttime, renew_till=renew_till, caddr=caddr,
        authorization_data=tuple(ad) or None,
    )
    etp_der = etp.to_der()
    if sname_type is None:
        sname_type = asn1.NT_SRV_INST if len(s_comps) > 1 else asn1.NT_PRINCIPAL
    ticket = Ticket(s_realm, PrincipalName(sname_type, s_comps),
                    EncryptedData(t_enctype, _encrypt(rng, t_enctype, s_key, KEY_USAGE_TICKET, etp_der), t_kvno))

    # --- the authenticator (what the GSS initiator makes) ---
    g_flags = asn1.gss_flags_to_int(gss_flags)
    if delegated is not None:
        g_flags |= asn1.GSS_FLAGS["deleg"]
    bnd_hash: bytes | None = None
    checksum: Checksum | None = None
    if not no_checksum:
        if cksum is not None:
            checksum = (Checksum(asn1.CKSUMTYPE_GSSAPI, bytes(cksum)) if isinstance(cksum, (bytes, bytearray))
                        else Checksum(int(cksum[0]), bytes(cksum[1])))
        else:
            if channel_bindings is None:
                bnd_hash = bytes(16)
            else:
                cb = channel_bindings
                if isinstance(cb, (bytes, bytearray)):
                    at = asn1.GSS_C_AF_NULLADDR if java_style_bindings else 0
                    cb = ChannelBindings(bytes(cb), at, b"", at, b"")
                bnd_hash = gss.channel_bindings_hash(cb)
            checksum = Checksum(asn1.CKSUMTYPE_GSSAPI, GssChecksum(bnd_hash, g_flags, delegated).to_bytes())
    sub: EncryptionKey | None = None
    if subkey is True:
        sub = EncryptionKey(ses_enctype, _random_key(rng, ses_enctype))
    elif isinstance(subkey, (bytes, bytearray)):
        sub = EncryptionKey(ses_enctype, bytes(subkey))
    elif isinstance(subkey, tuple):
        sub = EncryptionKey(int(subkey[0]), bytes(subkey[1]))
    a_comps, a_realm = parse_principal(authenticator_client) if authenticator_client else (c_comps, c_realm)
    auth = Authenticator(
        crealm=a_realm, cname=PrincipalName(c_type if authenticator_client is None else asn1.NT_PRINCIPAL, a_comps),
        cusec=cusec, ctime=c_time,
        cksum=checksum, subkey=sub, seq_number=seq_number,
        authorization_data=tuple(_ad_entries(authenticator_authorization_data)) or None,
    )
    auth_der = auth.to_der()
    if ap_options is None:
        ap_opts = asn1.flags_to_int(("mutual-required",) if g_flags & asn1.GSS_FLAGS["mutual"] else (),
                                    asn1.AP_OPTIONS)
    else:
        ap_opts = asn1.flags_to_int(ap_options, asn1.AP_OPTIONS)
    ap_req = ApReq(ticket, EncryptedData(ses_enctype, _encrypt(rng, ses_enctype, ses_key,
                                                                KEY_USAGE_AUTHENTICATOR, auth_der)), ap_opts)
    ap_der = ap_req.to_der()

    token: bytes | str = _frame(ap_der, framing)
    return Minted(
        token=token, framing=framing, ap_req=ap_der, ticket=ticket.to_der(), enc_ticket_part=etp_der,
        authenticator=auth_der, server="/".join(s_comps) + "@" + s_realm, client=client,
        ticket_enctype=t_enctype, kvno=t_kvno, server_key=s_key, session_enctype=ses_enctype, session_key=ses_key,
        authtime=auth_t, starttime=starttime, endtime=end_t, renew_till=renew_till, flags=flag_v, ctime=c_time,
        cusec=cusec, ap_options=ap_opts, gss_flags=None if no_checksum or cksum is not None else g_flags,
        checksum=None if checksum is None else checksum.checksum, bindings_hash=bnd_hash, subkey=sub,
        seq_number=seq_number, pac=pac_bytes, delegated=delegated,
    )


def _frame(ap_der: bytes, framing: str) -> bytes | str:
    if framing == "raw":
        return ap_der
    krb5 = gss.gss_wrap(asn1.OID_KRB5, ap_der, asn1.TOK_ID_AP_REQ)
    if framing == "krb5":
        return krb5
    if framing == "krb5-ms":
        return gss.gss_wrap(asn1.OID_MS_KRB5, ap_der, asn1.TOK_ID_AP_REQ)
    if framing in ("spnego", "header"):
        tok = gss.spnego_init(krb5, (asn1.OID_KRB5,))
        return tok if framing == "spnego" else "Negotiate " + base64.b64encode(tok).decode("ascii")
    if framing == "spnego-ms":
        # What Windows sends: MS OID first, then krb5 and NTLM; the mechToken itself uses the krb5 OID.
        return gss.spnego_init(krb5, (asn1.OID_MS_KRB5, asn1.OID_KRB5, asn1.OID_NTLMSSP))
    raise ValueError(f"unknown framing {framing!r}")


def make_keytab(principals: Iterable[str] = ("HTTP/api.example.test@EXAMPLE.TEST",),
                enctypes: Iterable[int] = (18, 17, 20, 19), kvno: int = 1,
                rng: random.Random | None = None) -> Keytab:
    """A keytab of random keys for demos and benches (seed ``rng`` for the same keys every run)."""
    kt = Keytab()
    ets = tuple(enctypes)
    for p in principals:
        for et in ets:
            kt.add(p, _random_key(rng, et), enctype=et, kvno=kvno, timestamp=0 if rng is not None else None)
    return kt
