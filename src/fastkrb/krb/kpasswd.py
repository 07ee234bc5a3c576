"""The Kerberos change/set-password protocol (RFC 3244; its predecessor in RFC 3244 §1), for `keytab rotate`.

A request is ``length | version | AP-REQ length | AP-REQ | KRB-PRIV`` (RFC 3244 §2): the AP-REQ carries a
ticket for the password-changing service (``kadmin/changepw@REALM``, obtained in an AS exchange so it has the
INITIAL flag), and the KRB-PRIV (RFC 4120 §5.7.1) carries, encrypted in the session key with key usage 13,
the new password: for version 0xff80 a ChangePasswdData (the target name and realm are the client's own: MIT's
decoder insists on them), for version 1 the bare password. The reply is ``length | version | AP-REP length | AP-REP |
KRB-PRIV`` whose user data is a 2-byte result code and a result string (RFC 3244 §2), or, with an AP-REP
length of 0, a KRB-ERROR. Over TCP each message is prefixed by a 4-byte length, as for the KDC (RFC 3244 §2,
RFC 4120 §7.2.2); over UDP it is one datagram.

Messages only, plus one blocking request/reply: getting the ticket is the caller's (tools/kdcclient).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pyasn1.type import namedtype, univ

from fastkrb.errors import KerberosError, MalformedToken
from fastkrb.krb import asn1, crypto, transport
from fastkrb.krb.asn1 import (
    ApRep,
    ApReq,
    Authenticator,
    EncApRepPart,
    EncryptedData,
    EncryptedDataAsn1,
    HostAddress,
    HostAddressAsn1,
    KerberosStringAsn1,
    KerberosTimeAsn1,
    KrbError,
    MicrosecondsAsn1,
    PrincipalName,
    PrincipalNameAsn1,
    Ticket,
    UInt32Asn1,
    application,
    check_int,
    der_decode,
    der_encode,
    encode_time,
    explicit,
)

__all__ = [
    "VERSION_CHANGE", "VERSION_SET", "RESULT_NAMES", "KpasswdError", "KpasswdRequest", "KpasswdReply",
    "build_request", "parse_reply", "send", "change_password",
]

VERSION_CHANGE = 0x0001   # RFC 3244 §1: the original protocol, user data = the new password
VERSION_SET = 0xFF80      # RFC 3244 §2: user data = ChangePasswdData

KU_AP_REQ_AUTH = 11
KU_AP_REP_ENC_PART = 12
KU_KRB_PRIV_ENC_PART = 13   # RFC 4120 §7.5.1

#: RFC 3244 §2 result codes (and MS-KILE's 7, 8).
RESULT_NAMES = {
    0: "KRB5_KPASSWD_SUCCESS", 1: "KRB5_KPASSWD_MALFORMED", 2: "KRB5_KPASSWD_HARDERROR",
    3: "KRB5_KPASSWD_AUTHERROR", 4: "KRB5_KPASSWD_SOFTERROR", 5: "KRB5_KPASSWD_ACCESSDENIED",
    6: "KRB5_KPASSWD_BAD_VERSION", 7: "KRB5_KPASSWD_INITIAL_FLAG_NEEDED",
}

Proto = Literal["tcp", "udp"]


class KpasswdError(KerberosError):
    """The password server refused or could not be asked. ``details["result_code"]`` is RFC 3244's code when it
    answered (``details["krb_error"]`` for a KRB-ERROR); ``details["changed"]`` is False: the KDC's key did not
    move."""

    code = "kpasswd_failed"
    default_fix = ("Read the result string: a password policy (minimum age, history, complexity), an ACL, or the "
                   "kpasswd service (port 464, MIT kadmind) not running.")


# --- ASN.1 ------------------------------------------------------------------------------------------------------


class KrbPrivAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(21))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.NamedType("enc-part", explicit(3, EncryptedDataAsn1())),  # there is no [2] (RFC 4120 §5.7.1)
    )


class EncKrbPrivPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(28))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("user-data", explicit(0, univ.OctetString())),
        namedtype.OptionalNamedType("timestamp", explicit(1, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("usec", explicit(2, MicrosecondsAsn1())),
        namedtype.OptionalNamedType("seq-number", explicit(3, UInt32Asn1())),
        namedtype.OptionalNamedType("s-address", explicit(4, HostAddressAsn1())),  # required in 4120, omitted by some
        namedtype.OptionalNamedType("r-address", explicit(5, HostAddressAsn1())),
    )


class ChangePasswdDataAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newpasswd", explicit(0, univ.OctetString())),
        namedtype.OptionalNamedType("targname", explicit(1, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("targrealm", explicit(2, KerberosStringAsn1())),
    )


def _address(ip: str) -> HostAddress:
    a = ipaddress.ip_address(ip)
    return HostAddress(2 if a.version == 4 else 24, a.packed)


def encode_change_passwd_data(new_password: bytes, target: PrincipalName | None = None,
                              target_realm: str | None = None) -> bytes:
    node = ChangePasswdDataAsn1()
    node["newpasswd"] = new_password
    if target is not None:
        target._fill(node["targname"])
    if target_realm is not None:
        node["targrealm"] = target_realm
    return der_encode(node)


def _krb_priv(enctype: int, key: bytes, user_data: bytes, seq_number: int | None, s_address: HostAddress | None,
              now: float) -> bytes:
    part = EncKrbPrivPartAsn1()
    part["user-data"] = user_data
    part["timestamp"] = encode_time(int(now))
    part["usec"] = int((now % 1) * 1_000_000)
    if seq_number is not None:
        part["seq-number"] = seq_number
    if s_address is not None:
        s_address._fill(part["s-address"])
    enc = EncryptedData(enctype, crypto.encrypt(enctype, key, KU_KRB_PRIV_ENC_PART, der_encode(part)))
    node = KrbPrivAsn1()
    node["pvno"] = 5
    node["msg-type"] = 21
    enc._fill(node["enc-part"])
    return der_encode(node)


def _krb_priv_user_data(data: bytes, enctype_key: list[tuple[int, bytes]]) -> bytes:
    n = der_decode(data, KrbPrivAsn1(), "KRB-PRIV")
    check_int(n, "pvno", 5, "KRB-PRIV")
    check_int(n, "msg-type", 21, "KRB-PRIV")
    enc = EncryptedData._from(n["enc-part"])
    last: KerberosError | None = None
    for et, key in enctype_key:
        if et != enc.etype:
            continue
        try:
            plain = crypto.decrypt(et, key, KU_KRB_PRIV_ENC_PART, enc.cipher)
        except KerberosError as exc:
            last = exc
            continue
        part = der_decode(plain, EncKrbPrivPartAsn1(), "EncKrbPrivPart")
        return bytes(part["user-data"])
    raise last or MalformedToken(f"the KRB-PRIV is encrypted with enctype {enc.etype}, not our session key's",
                                 details={"message": "KRB-PRIV"})


# --- request and reply ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KpasswdRequest:
    """The request bytes and what reading its reply needs (the session key, our subkey, the AP-REQ's ctime)."""

    data: bytes = field(repr=False)
    version: int
    session_enctype: int
    session_key: bytes = field(repr=False)
    subkey: bytes = field(repr=False)
    ctime: int
    cusec: int


@dataclass(frozen=True)
class KpasswdReply:
    version: int
    result_code: int
    result_string: bytes
    krb_error: KrbError | None = None

    @property
    def ok(self) -> bool:
        return self.krb_error is None and self.result_code == 0

    @property
    def result_name(self) -> str:
        return RESULT_NAMES.get(self.result_code, f"result code {self.result_code}")

    @property
    def text(self) -> str:
        """The result string for people: UTF-8 text, or AD's 30-byte policy block (MS-KILE §3.1.5.13) summed up."""
        s = self.result_string
        if len(s) == 30 and s[:2] == b"\x00\x00":
            min_len, history, props = struct.unpack(">III", s[2:14])
            return (f"password policy: minimum length {min_len}, history {history}, "
                    f"complexity {'on' if props & 1 else 'off'}")
        return s.decode("utf-8", "replace").strip("\x00").strip()


def build_request(ticket: Ticket, session_enctype: int, session_key: bytes, client: PrincipalName, crealm: str,
                  new_password: str | bytes, *, local_address: str | None = None, version: int = VERSION_SET,
                  clock_offset: float = 0.0) -> KpasswdRequest:
    """An RFC 3244 request changing ``client``'s own password. ``local_address`` (our IP as the server sees it)
    becomes the KRB-PRIV's s-address; None leaves it out (Heimdal, Samba and AD accept that, MIT wants it)."""
    pw = new_password.encode("utf-8") if isinstance(new_password, str) else bytes(new_password)
    now = time.time() + clock_offset
    ctime, cusec = int(now), int((now % 1) * 1_000_000)
    seq = secrets.randbelow(0x3FFFFFFF)
    subkey = crypto.random_key(session_enctype)
    auth = Authenticator(crealm=crealm, cname=client, cusec=cusec, ctime=ctime,
                         subkey=asn1.EncryptionKey(session_enctype, subkey), seq_number=seq)
    ap = ApReq(ticket, EncryptedData(session_enctype, crypto.encrypt(
        session_enctype, session_key, KU_AP_REQ_AUTH, auth.to_der())),
        asn1.flags_to_int(("mutual-required",), asn1.AP_OPTIONS)).to_der()
    # MIT's decoder wants targname and targrealm although RFC 3244 makes them optional: name ourselves.
    user_data = encode_change_passwd_data(pw, client, crealm) if version == VERSION_SET else pw
    priv = _krb_priv(session_enctype, subkey, user_data, seq,
                     _address(local_address) if local_address else None, now)
    total = 6 + len(ap) + len(priv)
    data = struct.pack(">HHH", total, version, len(ap)) + ap + priv
    return KpasswdRequest(data, version, session_enctype, bytes(session_key), subkey, ctime, cusec)


def parse_reply(data: bytes, req: KpasswdRequest) -> KpasswdReply:
    """Decode a reply; the AP-REP must answer our AP-REQ (ctime/cusec) and decrypt with the session key."""
    data = bytes(data)
    if data[:1] == b"\x7e":  # a bare KRB-ERROR (some servers, e.g. a version they do not speak)
        err = KrbError.from_der(data)
        return KpasswdReply(0, -1, (err.e_text or "").encode(), err)
    if len(data) < 6:
        raise MalformedToken("kpasswd reply shorter than its header", details={"message": "kpasswd"})
    total, version, ap_len = struct.unpack(">HHH", data[:6])
    if total != len(data):
        raise MalformedToken(f"kpasswd reply says {total} bytes, has {len(data)}", details={"message": "kpasswd"})
    body = data[6:]
    if ap_len == 0:
        err = KrbError.from_der(body)
        code, text = _result_from_error(err)
        return KpasswdReply(version, code, text, err)
    if ap_len > len(body):
        raise MalformedToken("kpasswd reply's AP-REP overruns it", details={"message": "kpasswd"})
    ap = ApRep.from_der(body[:ap_len])
    enc = EncApRepPart.from_der(crypto.decrypt(req.session_enctype, req.session_key, KU_AP_REP_ENC_PART,
                                               ap.enc_part.cipher))
    if (enc.ctime, enc.cusec) != (req.ctime, req.cusec):
        raise MalformedToken("the kpasswd AP-REP does not answer our AP-REQ", details={"message": "kpasswd"})
    keys = [(enc.subkey.keytype, enc.subkey.keyvalue)] if enc.subkey is not None else []
    keys += [(req.session_enctype, req.subkey), (req.session_enctype, req.session_key)]
    user = _krb_priv_user_data(body[ap_len:], keys)
    if len(user) < 2:
        raise MalformedToken("kpasswd result shorter than its code", details={"message": "kpasswd"})
    return KpasswdReply(version, struct.unpack(">H", user[:2])[0], user[2:])


def _result_from_error(err: KrbError) -> tuple[int, bytes]:
    """A KRB-ERROR's e-data may hold the result code and string (RFC 3244 §2)."""
    e = err.e_data or b""
    if len(e) >= 2:
        return struct.unpack(">H", e[:2])[0], e[2:]
    return -1, (err.e_text or "").encode()


# --- transport --------------------------------------------------------------------------------------------------


def send(host: str, port: int, request: bytes, proto: Proto = "tcp", timeout: float = 5.0) -> tuple[bytes, str]:
    """One request/reply with a kpasswd server; returns the reply and our local IP address on that connection.
    Socket errors are raised as KpasswdError (kind refused/timeout/reset/error)."""
    where = f"kpasswd {host}:{port}/{proto}"
    try:
        family, stype, sproto, _c, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)[0]
    except OSError as exc:
        raise _net_error(where, "resolve", f"cannot resolve the host ({exc})") from None
    sock = socket.socket(family, stype, sproto)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
        local = str(sock.getsockname()[0])
        return transport.exchange(sock, request, proto), local
    except transport.BadRecord:
        raise _net_error(where, "garbage", "the reply is not a length-prefixed record") from None
    except TimeoutError:
        raise _net_error(where, "timeout", f"no reply within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise _net_error(where, "refused", "connection refused (no kpasswd service on that port)") from None
    except (ConnectionResetError, BrokenPipeError, EOFError):
        raise _net_error(where, "reset", "the connection was closed without a reply") from None
    except OSError as exc:
        raise _net_error(where, "error", str(exc.strerror or exc)) from None
    finally:
        sock.close()


def _net_error(where: str, kind: str, text: str) -> KpasswdError:
    return KpasswdError(f"{where}: {text}.", details={"kind": kind, "changed": False})


def local_address_for(host: str, port: int) -> str:
    """Our source IP towards ``host`` (a connected UDP socket sends nothing)."""
    family, _t, _p, _c, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(sockaddr)
        return str(s.getsockname()[0])


def change_password(host: str, port: int, ticket: Ticket, session_enctype: int, session_key: bytes,
                    client: PrincipalName, crealm: str, new_password: str, *, proto: Proto = "tcp",
                    version: int = VERSION_CHANGE, timeout: float = 5.0, clock_offset: float = 0.0) -> KpasswdReply:
    """Change ``client``'s own password with a kadmin/changepw ticket; raises KpasswdError unless it succeeded.

    Version 1 (the default) is a change of one's own password everywhere (MIT, Heimdal, Samba, AD). 0xff80 with
    the target named is a change for MIT but a *set* (an administrative reset, needing that right) for AD."""
    try:
        local = local_address_for(host, port)
    except OSError as exc:  # as send() says it: a KpasswdError, so the caller can tell nothing changed
        raise _net_error(f"kpasswd {host}:{port}/{proto}", "resolve", f"cannot resolve the host ({exc})") from None
    req = build_request(ticket, session_enctype, session_key, client, crealm, new_password, local_address=local,
                        version=version, clock_offset=clock_offset)
    raw, _ = send(host, port, req.data, proto, timeout)
    reply = parse_reply(raw, req)
    if not reply.ok:
        detail: dict[str, Any] = {"result_code": reply.result_code, "result": reply.result_name,
                                  "text": reply.text, "changed": False}
        if reply.krb_error is not None:
            detail["krb_error"] = reply.krb_error.error_code
        raise KpasswdError(f"the password server refused the change: {reply.result_name}"
                           f"{': ' + reply.text if reply.text else ''}.", details=detail)
    return reply
