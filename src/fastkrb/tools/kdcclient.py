"""Just enough of a Kerberos client to ask a KDC the questions `fastkrb doctor` needs answered.

The AS exchange (RFC 4120 §3.1) as ``kinit -k`` does it, with PA-ENC-TIMESTAMP when the KDC wants
pre-authentication (§5.2.7.2), and the TGS exchange (§3.3) for a service ticket, over TCP (length-prefixed,
§7.2.2) or UDP. Every reply is kept whole, so the caller can read the KDC's clock (KRB-ERROR stime/susec,
or the authtime of a reply it decrypted), the kvno and enctype of the key the KDC used, and its salt
(ETYPE-INFO2). Not a general client: no FAST, no referrals, no ccache.
"""

from __future__ import annotations

import base64
import errno
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fastkrb.errors import KerberosError, MalformedToken
from fastkrb.keytab import parse_principal
from fastkrb.krb import asn1, crypto, gss, kdc, transport
from fastkrb.krb.asn1 import ApReq, Authenticator, Checksum, EncryptedData, KrbError, PrincipalName, Ticket
from fastkrb.krb.gss import GssChecksum
from fastkrb.krb.kdc import EncKdcRepPart, EtypeInfo2Entry, KdcRep, KdcReq, KdcReqBody, PaData, PaEncTsEnc

__all__ = [
    "KdcAddress", "KdcUnreachable", "Exchange", "AsOutcome", "Credentials", "parse_kdc", "send",
    "as_exchange", "tgs_exchange", "ap_req_token", "kdc_time", "CKSUMTYPE_FOR_ENCTYPE",
]

Proto = Literal["tcp", "udp"]

# RFC 4120 §7.5.1 key usages
KU_PA_ENC_TIMESTAMP = 1
KU_AS_REP_ENC_PART = 3
KU_TGS_REQ_AUTH_CKSUM = 6
KU_TGS_REQ_AUTH = 7
KU_TGS_REP_ENC_PART_SESSION = 8
KU_AP_REQ_AUTH = 11

#: The mandatory checksum of each enctype (RFC 3962 §7, RFC 8009 §8, RFC 4757).
CKSUMTYPE_FOR_ENCTYPE = {17: 15, 18: 16, 19: 19, 20: 20, 23: -138}


class KdcUnreachable(KerberosError):
    """No answer from a KDC: ``details["kind"]`` is refused, timeout, unreachable, resolve, reset or garbage."""

    code = "kdc_unreachable"
    default_fix = "Check that the KDC runs, that this host may reach it on that port, and the address in krb5.conf."


@dataclass(frozen=True)
class KdcAddress:
    host: str
    port: int = 88

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_kdc(spec: str, default_port: int = 88) -> KdcAddress:
    """``host``, ``host:port``, ``[v6]:port`` (krb5.conf's ``kdc =`` syntax; a ``tcp/`` prefix is dropped)."""
    s = spec.strip()
    for prefix in ("tcp/", "udp/", "kkdcp/"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
    else:
        host, port = s, ""
    if not host:
        raise ValueError(f"KDC address {spec!r} has no host")
    try:
        p = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"KDC address {spec!r} has a bad port") from None
    if not 0 < p < 65536:
        raise ValueError(f"KDC address {spec!r} has a bad port")
    return KdcAddress(host, p)


@dataclass(frozen=True)
class Exchange:
    """One request and its reply: bytes, the local clock around it, and the decoded message."""

    addr: KdcAddress
    proto: Proto
    reply: bytes = field(repr=False)
    sent: float  # time.time() when the request left
    received: float
    message: KrbError | KdcRep

    @property
    def elapsed(self) -> float:
        return self.received - self.sent

    @property
    def midpoint(self) -> float:
        return (self.sent + self.received) / 2

    @property
    def error(self) -> KrbError | None:
        return self.message if isinstance(self.message, KrbError) else None


def _unreachable(addr: KdcAddress, proto: Proto, kind: str, text: str, elapsed: float) -> KdcUnreachable:
    return KdcUnreachable(f"KDC {addr}/{proto}: {text}.",
                          details={"kdc": str(addr), "proto": proto, "kind": kind, "elapsed": round(elapsed, 4)})


def parse_reply(data: bytes) -> KrbError | KdcRep:
    if not data:
        raise MalformedToken("empty reply from the KDC")
    if data[0] == 0x7E:
        return KrbError.from_der(data)
    return KdcRep.from_der(data)


def send(addr: KdcAddress, request: bytes, proto: Proto = "tcp", timeout: float = 3.0) -> Exchange:
    """One request/reply with a KDC. Raises KdcUnreachable saying how it failed (refused = closed port;
    timeout = dropped by a firewall or nothing answering; unreachable = no route)."""
    start = time.monotonic()
    try:
        infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM if proto == "tcp"
                                   else socket.SOCK_DGRAM)
    except OSError as exc:
        raise _unreachable(addr, proto, "resolve", f"cannot resolve the host ({exc})", 0.0) from None
    family, stype, sproto, _c, sockaddr = infos[0]
    sock = socket.socket(family, stype, sproto)
    sock.settimeout(timeout)
    sent = time.time()
    try:
        if proto == "tcp":
            try:
                sock.connect(sockaddr)
            except TimeoutError:
                raise _unreachable(addr, proto, "timeout",
                                   f"no answer to the TCP connection within {timeout:g} s (filtered: a firewall "
                                   "drops the packets, or the host is down)", time.monotonic() - start) from None
        else:
            sock.connect(sockaddr)
        sent = time.time()
        reply = transport.exchange(sock, request, proto)
        received = time.time()
    except transport.BadRecord:
        raise _unreachable(addr, proto, "garbage", "the reply is not a Kerberos TCP record",
                           time.monotonic() - start) from None
    except TimeoutError:
        raise _unreachable(addr, proto, "timeout", f"no reply within {timeout:g} s (filtered, or no KDC "
                           f"listening on {proto.upper()})", time.monotonic() - start) from None
    except ConnectionRefusedError:
        raise _unreachable(addr, proto, "refused", "connection refused (nothing listens on that port: "
                           "closed)", time.monotonic() - start) from None
    except (ConnectionResetError, BrokenPipeError, EOFError):
        raise _unreachable(addr, proto, "reset", "the connection was closed without a reply",
                           time.monotonic() - start) from None
    except OSError as exc:
        kind = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        raise _unreachable(addr, proto, kind, f"{exc.strerror or exc}", time.monotonic() - start) from None
    finally:
        sock.close()
    try:
        message = parse_reply(reply)
    except MalformedToken as exc:
        raise _unreachable(addr, proto, "garbage", f"the reply is not Kerberos ({exc.cause})",
                           time.monotonic() - start) from None
    return Exchange(addr, proto, reply, sent, received, message)


def kdc_time(ex: Exchange) -> float | None:
    """The KDC's clock as its KRB-ERROR states it (stime + susec), else None."""
    err = ex.error
    if err is None:
        return None
    return err.stime + err.susec / 1e6


def _principal_name(principal: str) -> tuple[PrincipalName, str]:
    comps, realm = parse_principal(principal)
    return PrincipalName(asn1.NT_SRV_INST if len(comps) > 1 else asn1.NT_PRINCIPAL, comps), realm


def _nonce() -> int:
    return secrets.randbelow(0x7FFFFFFF)


@dataclass(frozen=True)
class Credentials:
    """A ticket and its session key, as a reply the caller decrypted gave it."""

    client: str
    server: str
    ticket: Ticket
    session_enctype: int
    session_key: bytes = field(repr=False)
    enc: EncKdcRepPart
    kvno: int | None  # the kvno of the key the reply was encrypted in (AS: the client's key)
    reply_enctype: int


@dataclass
class AsOutcome:
    """What an AS exchange for ``client`` showed: every exchange, the salts, and how it ended."""

    client: str
    exchanges: list[Exchange] = field(default_factory=list)
    etype_info2: tuple[EtypeInfo2Entry, ...] = ()
    preauth_required: bool = False
    error: KrbError | None = None      # the KDC's final KRB-ERROR, if it refused
    reply: KdcRep | None = None
    credentials: Credentials | None = None
    decrypt_error: str | None = None   # the reply came but the key did not decrypt it

    @property
    def kdc_time(self) -> tuple[float, float] | None:
        """(KDC time, local midpoint) from the most precise exchange: a KRB-ERROR's stime.susec, else the
        authtime of the decrypted reply (1 s resolution)."""
        for ex in self.exchanges:
            t = kdc_time(ex)
            if t is not None:
                return t, ex.midpoint
        if self.credentials is not None and self.exchanges:
            return float(self.credentials.enc.authtime), self.exchanges[-1].midpoint
        return None


def _etype_info_from(padata: Sequence[PaData]) -> tuple[EtypeInfo2Entry, ...]:
    for p in padata:
        if p.padata_type == kdc.PA_ETYPE_INFO2:
            try:
                return kdc.decode_etype_info2(p.value)
            except MalformedToken:
                return ()
    return ()


def as_exchange(addr: KdcAddress, client: str, etypes: Sequence[int], keys: dict[int, bytes] | None = None, *,
                server: str | None = None, proto: Proto = "tcp", timeout: float = 3.0, clock_offset: float = 0.0,
                preauth: bool | None = None, lifetime: int = 3600, kdc_options: Sequence[str] = ("canonicalize",),
                start: int | None = None, pac: bool = False) -> AsOutcome:
    """AS-REQ for ``client`` (like ``kinit -k``): first without pre-authentication; if the KDC asks for it,
    again with PA-ENC-TIMESTAMP made with ``keys[etype]`` for the etype the KDC's ETYPE-INFO2 names.

    ``keys`` maps enctype -> long-term key (from a keytab, or string-to-key of a password). Without keys
    the exchange stops at the KDC's first answer (a probe). ``clock_offset`` (KDC minus local, seconds)
    is added to the timestamps we send, so a skewed local clock does not hide the key check. ``preauth``
    True sends the timestamp straight away (needs the salt-free keys of a keytab). ``start`` asks for a
    postdated ticket (with ``kdc_options`` allow-postdate and postdated). ``pac`` asks for a PAC in the ticket
    (PA-PAC-REQUEST; Samba's and AD's kpasswd need one in the kadmin/changepw ticket).
    """
    cname, crealm = _principal_name(client)
    sname, _ = _principal_name(server or f"krbtgt/{crealm}@{crealm}")
    out = AsOutcome(client)
    etypes = tuple(etypes)
    padata: list[PaData] = []
    for attempt in range(2):
        now = time.time() + clock_offset
        body = KdcReqBody(realm=crealm, till=int(start or now) + lifetime, nonce=_nonce(), etypes=etypes,
                          cname=cname, sname=sname, options=asn1.flags_to_int(kdc_options, kdc.KDC_OPTIONS),
                          from_time=start)
        if attempt == 0 and preauth and keys:
            et = next((e for e in etypes if e in keys), None)
            if et is not None:
                padata = [_pa_enc_timestamp(et, keys[et], clock_offset)]
        req = KdcReq(body, (*padata, kdc.pa_pac_request(pac)), msg_type=10).to_der()
        ex = send(addr, req, proto, timeout)
        out.exchanges.append(ex)
        msg = ex.message
        if isinstance(msg, KrbError):
            out.error = msg
            if msg.error_code == 25 and attempt == 0:  # KDC_ERR_PREAUTH_REQUIRED
                out.preauth_required = True
                try:
                    out.etype_info2 = _etype_info_from(kdc.decode_method_data(msg.e_data or b""))
                except MalformedToken:
                    out.etype_info2 = ()
                if not keys:
                    return out
                pick = next((i.etype for i in out.etype_info2 if i.etype in keys), None)
                if pick is None:
                    pick = next((e for e in etypes if e in keys), None)
                if pick is None:
                    return out
                padata = [_pa_enc_timestamp(pick, keys[pick], clock_offset)]
                continue
            return out
        out.error = None
        out.reply = msg
        out.etype_info2 = _etype_info_from(msg.padata) or out.etype_info2
        if keys:
            et = msg.enc_part.etype
            key = keys.get(et)
            if key is None:
                out.decrypt_error = f"the reply is encrypted with enctype {et}, which we have no key for"
                return out
            try:
                plain = crypto.decrypt(et, key, KU_AS_REP_ENC_PART, msg.enc_part.cipher)
                enc = EncKdcRepPart.from_der(plain)
            except KerberosError as exc:
                out.decrypt_error = exc.cause
                return out
            if enc.nonce != body.nonce:
                out.decrypt_error = "the reply's nonce is not ours"
                return out
            out.credentials = Credentials(
                client=msg.cname.with_realm(msg.crealm), server=enc.sname.with_realm(enc.srealm),
                ticket=msg.ticket, session_enctype=enc.key.keytype, session_key=enc.key.keyvalue, enc=enc,
                kvno=msg.enc_part.kvno, reply_enctype=et)
        return out
    return out


def _pa_enc_timestamp(etype: int, key: bytes, clock_offset: float) -> PaData:
    t = time.time() + clock_offset
    ts = PaEncTsEnc(int(t), int((t % 1) * 1_000_000)).to_der()
    enc = EncryptedData(etype, crypto.encrypt(etype, key, KU_PA_ENC_TIMESTAMP, ts))
    return PaData(kdc.PA_ENC_TIMESTAMP, _encrypted_data_der(enc))


def _encrypted_data_der(enc: EncryptedData) -> bytes:
    node = asn1.EncryptedDataAsn1()
    enc._fill(node)
    return asn1.der_encode(node)


def _authenticator(creds: Credentials, clock_offset: float, cksum: Checksum | None) -> tuple[bytes, int, int]:
    cname, crealm = _principal_name(creds.client)
    t = time.time() + clock_offset
    ctime, cusec = int(t), int((t % 1) * 1_000_000)
    auth = Authenticator(crealm=crealm, cname=PrincipalName(asn1.NT_PRINCIPAL, cname.components), cusec=cusec,
                         ctime=ctime, cksum=cksum, seq_number=secrets.randbelow(0x7FFFFFFF))
    return auth.to_der(), ctime, cusec


def tgs_exchange(addr: KdcAddress, tgt: Credentials, server: str, etypes: Sequence[int], *, proto: Proto = "tcp",
                 timeout: float = 3.0, clock_offset: float = 0.0, lifetime: int = 3600) -> tuple[Exchange,
                                                                                              Credentials | None]:
    """TGS-REQ for ``server`` with ``tgt``; returns the exchange and, on success, the service ticket."""
    sname, srealm = _principal_name(server)
    body = KdcReqBody(realm=srealm, till=int(time.time() + clock_offset) + lifetime, nonce=_nonce(),
                      etypes=tuple(etypes), sname=sname,
                      options=asn1.flags_to_int(("canonicalize",), kdc.KDC_OPTIONS))
    body_der = body.to_der()
    ctype = CKSUMTYPE_FOR_ENCTYPE[tgt.session_enctype]
    mac = crypto.checksum(ctype, tgt.session_key, KU_TGS_REQ_AUTH_CKSUM, body_der)
    auth_der, _, _ = _authenticator(tgt, clock_offset, Checksum(ctype, mac))
    ap = ApReq(tgt.ticket, EncryptedData(tgt.session_enctype, crypto.encrypt(
        tgt.session_enctype, tgt.session_key, KU_TGS_REQ_AUTH, auth_der)), 0).to_der()
    req = KdcReq(body, (PaData(kdc.PA_TGS_REQ, ap),), msg_type=12).to_der()
    ex = send(addr, req, proto, timeout)
    msg = ex.message
    if isinstance(msg, KrbError):
        return ex, None
    plain = crypto.decrypt(tgt.session_enctype, tgt.session_key, KU_TGS_REP_ENC_PART_SESSION, msg.enc_part.cipher)
    enc = EncKdcRepPart.from_der(plain)
    if enc.nonce != body.nonce:
        raise MalformedToken("The TGS reply's nonce is not ours.")
    return ex, Credentials(client=msg.cname.with_realm(msg.crealm), server=enc.sname.with_realm(enc.srealm),
                           ticket=msg.ticket, session_enctype=enc.key.keytype, session_key=enc.key.keyvalue,
                           enc=enc, kvno=msg.ticket.enc_part.kvno, reply_enctype=msg.enc_part.etype)


def ap_req_token(creds: Credentials, *, clock_offset: float = 0.0, mutual: bool = True,
                 framing: Literal["spnego", "krb5"] = "spnego") -> str:
    """``Negotiate <b64>`` of an AP-REQ for ``creds`` as a GSS initiator makes it (RFC 4121 §4.1.1)."""
    gflags = asn1.gss_flags_to_int(("mutual", "integ", "conf") if mutual else ("integ", "conf"))
    cksum = Checksum(asn1.CKSUMTYPE_GSSAPI, GssChecksum(bytes(16), gflags).to_bytes())
    auth_der, _, _ = _authenticator(creds, clock_offset, cksum)
    opts = asn1.flags_to_int(("mutual-required",) if mutual else (), asn1.AP_OPTIONS)
    ap = ApReq(creds.ticket, EncryptedData(creds.session_enctype, crypto.encrypt(
        creds.session_enctype, creds.session_key, KU_AP_REQ_AUTH, auth_der)), opts).to_der()
    tok = gss.gss_wrap(asn1.OID_KRB5, ap, asn1.TOK_ID_AP_REQ)
    if framing == "spnego":
        tok = gss.spnego_init(tok, (asn1.OID_KRB5,))
    return "Negotiate " + base64.b64encode(tok).decode("ascii")


def password_keys(principal: str, password: str, etypes: Sequence[int],
                  etype_info2: Sequence[EtypeInfo2Entry] = ()) -> dict[int, bytes]:
    """Long-term keys of a password, salted as the KDC says (ETYPE-INFO2) or by default (RFC 4120 §4)."""
    info = {i.etype: i for i in etype_info2}
    out: dict[int, bytes] = {}
    for et in etypes:
        if et not in crypto.ENCTYPES:
            continue
        i = info.get(et)
        salt = (i.salt if i is not None and i.salt is not None else crypto.default_salt(principal))
        out[et] = crypto.string_to_key(et, password, salt, i.s2kparams if i is not None else None)
    return out


def random_probe_name(realm: str) -> str:
    return f"fastkrb-doctor-probe-{os.getpid()}@{realm}"
