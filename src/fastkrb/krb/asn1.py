"""Kerberos messages in pyasn1: the slow, independent reference for the native decoder.

Used to mint test tokens (fastkrb.testing) and to check the native DER reader differentially, so every
decoder here returns plain dataclasses. Specs follow RFC 4120 Appendix A (``DEFINITIONS EXPLICIT TAGS``)
and RFC 4178 §4.2 (the SPNEGO NegotiationToken). GSS framing and SPNEGO tokens are in ``gss``, the KDC
exchanges in ``kdc``; the plumbing (``explicit``, ``der_decode``, ``der_encode``, ...) serves both.
Not on the hot path.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, constraint, namedtype, namedval, tag, univ, useful

from fastkrb.errors import MalformedToken

__all__ = [
    # OIDs and token ids
    "OID_KRB5", "OID_MS_KRB5", "OID_SPNEGO", "OID_NTLMSSP", "OID_KRB5_USER_TO_USER", "KRB5_MECHS",
    "TOK_ID_AP_REQ", "TOK_ID_AP_REP", "TOK_ID_KRB_ERROR",
    # numbers
    "NT_UNKNOWN", "NT_PRINCIPAL", "NT_SRV_INST", "NT_SRV_HST", "NT_ENTERPRISE",
    "AD_IF_RELEVANT", "AD_WIN2K_PAC", "AD_AUTH_DATA_AP_OPTIONS", "KERB_AP_OPTIONS_CBT",
    "CKSUMTYPE_GSSAPI", "ADDRTYPE_INET", "ADDRTYPE_INET6", "GSS_C_AF_NULLADDR",
    "TICKET_FLAGS", "AP_OPTIONS", "GSS_FLAGS",
    "flags_to_int", "flags_to_names", "gss_flags_to_int", "encode_time", "decode_time",
    # plumbing shared by the models here, in gss and in kdc
    "explicit", "application", "der_decode", "der_encode", "optional", "flags_from_node", "flags_node",
    "node_time", "check_int",
    # dataclasses
    "PrincipalName", "EncryptedData", "EncryptionKey", "Checksum", "ADEntry", "HostAddress",
    "TransitedEncoding", "Ticket", "EncTicketPart", "Authenticator", "ApReq", "ApRep", "EncApRepPart",
    "KrbCredInfo", "KrbCred", "EncKrbCredPart", "KrbError",
    "encode_authorization_data", "decode_authorization_data",
]

OID_KRB5 = "1.2.840.113554.1.2.2"
OID_MS_KRB5 = "1.2.840.48018.1.2.2"          # Windows' mistyped krb5 OID, still offered first by Windows
OID_SPNEGO = "1.3.6.1.5.5.2"
OID_NTLMSSP = "1.3.6.1.4.1.311.2.2.10"
OID_KRB5_USER_TO_USER = "1.2.840.113554.1.2.2.3"
KRB5_MECHS = (OID_KRB5, OID_MS_KRB5, OID_KRB5_USER_TO_USER)   # mechanisms whose tokens carry a TOK_ID

TOK_ID_AP_REQ = b"\x01\x00"    # RFC 4121 §4.1
TOK_ID_AP_REP = b"\x02\x00"
TOK_ID_KRB_ERROR = b"\x03\x00"

NT_UNKNOWN, NT_PRINCIPAL, NT_SRV_INST, NT_SRV_HST, NT_ENTERPRISE = 0, 1, 2, 3, 10

AD_IF_RELEVANT = 1
AD_WIN2K_PAC = 128
AD_AUTH_DATA_AP_OPTIONS = 143   # MS-KILE §2.2.11: KERB_AUTH_DATA_AP_OPTIONS
KERB_AP_OPTIONS_CBT = 0x4000    # its value (LE uint32): channel bindings are mandatory

CKSUMTYPE_GSSAPI = 0x8003
ADDRTYPE_INET, ADDRTYPE_INET6 = 2, 24
GSS_C_AF_NULLADDR = 255        # the "no address" type Java puts into channel bindings

# RFC 4120 §5.3: KerberosFlags bit 0 is the most significant bit of the first octet; as an int we use
# the 32-bit big-endian value of the first four octets, so bit n is 1 << (31 - n) (MIT's TKT_FLG_*).
TICKET_FLAGS = {
    "reserved": 0, "forwardable": 1, "forwarded": 2, "proxiable": 3, "proxy": 4, "may-postdate": 5,
    "postdated": 6, "invalid": 7, "renewable": 8, "initial": 9, "pre-authent": 10, "hw-authent": 11,
    "transited-policy-checked": 12, "ok-as-delegate": 13, "enc-pa-rep": 15, "anonymous": 16,
}
AP_OPTIONS = {"reserved": 0, "use-session-key": 1, "mutual-required": 2}
# RFC 2744 §3.9 / RFC 4121 §4.1.1.1: these are plain bit values, little-endian in the checksum.
GSS_FLAGS = {
    "deleg": 1, "mutual": 2, "replay": 4, "sequence": 8, "conf": 16, "integ": 32, "anon": 64,
    "prot_ready": 128, "trans": 256, "dce_style": 0x1000, "identify": 0x2000, "extended_error": 0x4000,
}

T = TypeVar("T")


def flags_to_int(flags: int | Iterable[str], table: dict[str, int] = TICKET_FLAGS) -> int:
    """Names (or an int, returned as is) to the 32-bit KerberosFlags value."""
    if isinstance(flags, int):
        return flags
    v = 0
    for name in flags:
        v |= 1 << (31 - table[name])
    return v


def flags_to_names(value: int, table: dict[str, int] = TICKET_FLAGS) -> list[str]:
    return [n for n, b in sorted(table.items(), key=lambda kv: kv[1]) if value & (1 << (31 - b))]


def gss_flags_to_int(flags: int | Iterable[str]) -> int:
    """GSS flag names (GSS_FLAGS keys) or an int to the checksum's Flags value."""
    if isinstance(flags, int):
        return flags
    v = 0
    for name in flags:
        v |= GSS_FLAGS[name]
    return v


_TIME_RE = re.compile(r"^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$")


def encode_time(unix: int | float) -> str:
    """KerberosTime (RFC 4120 §5.2.3): GeneralizedTime, UTC, no fractional seconds."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(int(unix)))


def decode_time(s: str) -> int:
    m = _TIME_RE.match(s)
    if not m:
        raise MalformedToken(f"KerberosTime {s!r} is not YYYYMMDDHHMMSSZ (RFC 4120 §5.2.3).")
    y, mo, d, h, mi, se = (int(g) for g in m.groups())
    return calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0))


# --- pyasn1 specs (RFC 4120 Appendix A) -------------------------------------------------------------------------


def explicit(n: int, t: Any) -> Any:
    """An EXPLICIT context tag [n] (the module default)."""
    return t.subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, n))


def application(n: int) -> Any:
    return tag.Tag(tag.tagClassApplication, tag.tagFormatConstructed, n)


class Int32Asn1(univ.Integer):  # type: ignore[misc]
    subtypeSpec = univ.Integer.subtypeSpec + constraint.ValueRangeConstraint(-(2**31), 2**31 - 1)


class UInt32Asn1(univ.Integer):  # type: ignore[misc]
    subtypeSpec = univ.Integer.subtypeSpec + constraint.ValueRangeConstraint(0, 2**32 - 1)


class MicrosecondsAsn1(univ.Integer):  # type: ignore[misc]
    subtypeSpec = univ.Integer.subtypeSpec + constraint.ValueRangeConstraint(0, 999999)


class KerberosStringAsn1(char.GeneralString):  # type: ignore[misc]
    encoding = "utf-8"  # RFC 4120 §5.2.1: IA5 in theory, UTF-8 octets in practice (MIT, AD)


class KerberosTimeAsn1(useful.GeneralizedTime):  # type: ignore[misc]
    pass


class KerberosFlagsAsn1(univ.BitString):  # type: ignore[misc]
    pass


class PrincipalNameAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("name-type", explicit(0, Int32Asn1())),
        namedtype.NamedType("name-string", explicit(1, univ.SequenceOf(componentType=KerberosStringAsn1()))),
    )


class HostAddressAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("addr-type", explicit(0, Int32Asn1())),
        namedtype.NamedType("address", explicit(1, univ.OctetString())),
    )


class HostAddressesAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = HostAddressAsn1()


class ADEntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ad-type", explicit(0, Int32Asn1())),
        namedtype.NamedType("ad-data", explicit(1, univ.OctetString())),
    )


class AuthorizationDataAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = ADEntryAsn1()


class EncryptedDataAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("etype", explicit(0, Int32Asn1())),
        namedtype.OptionalNamedType("kvno", explicit(1, UInt32Asn1())),
        namedtype.NamedType("cipher", explicit(2, univ.OctetString())),
    )


class EncryptionKeyAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("keytype", explicit(0, Int32Asn1())),
        namedtype.NamedType("keyvalue", explicit(1, univ.OctetString())),
    )


class ChecksumAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("cksumtype", explicit(0, Int32Asn1())),
        namedtype.NamedType("checksum", explicit(1, univ.OctetString())),
    )


class TransitedEncodingAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("tr-type", explicit(0, Int32Asn1())),
        namedtype.NamedType("contents", explicit(1, univ.OctetString())),
    )


class TicketAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(1))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("tkt-vno", explicit(0, univ.Integer())),
        namedtype.NamedType("realm", explicit(1, KerberosStringAsn1())),
        namedtype.NamedType("sname", explicit(2, PrincipalNameAsn1())),
        namedtype.NamedType("enc-part", explicit(3, EncryptedDataAsn1())),
    )


class EncTicketPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(3))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("flags", explicit(0, KerberosFlagsAsn1())),
        namedtype.NamedType("key", explicit(1, EncryptionKeyAsn1())),
        namedtype.NamedType("crealm", explicit(2, KerberosStringAsn1())),
        namedtype.NamedType("cname", explicit(3, PrincipalNameAsn1())),
        namedtype.NamedType("transited", explicit(4, TransitedEncodingAsn1())),
        namedtype.NamedType("authtime", explicit(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", explicit(6, KerberosTimeAsn1())),
        namedtype.NamedType("endtime", explicit(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", explicit(8, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("caddr", explicit(9, HostAddressesAsn1())),
        namedtype.OptionalNamedType("authorization-data", explicit(10, AuthorizationDataAsn1())),
    )


class AuthenticatorAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(2))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("authenticator-vno", explicit(0, univ.Integer())),
        namedtype.NamedType("crealm", explicit(1, KerberosStringAsn1())),
        namedtype.NamedType("cname", explicit(2, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("cksum", explicit(3, ChecksumAsn1())),
        namedtype.NamedType("cusec", explicit(4, MicrosecondsAsn1())),
        namedtype.NamedType("ctime", explicit(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("subkey", explicit(6, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("seq-number", explicit(7, UInt32Asn1())),
        namedtype.OptionalNamedType("authorization-data", explicit(8, AuthorizationDataAsn1())),
    )


class ApReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(14))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.NamedType("ap-options", explicit(2, KerberosFlagsAsn1())),
        namedtype.NamedType("ticket", explicit(3, TicketAsn1())),
        namedtype.NamedType("authenticator", explicit(4, EncryptedDataAsn1())),
    )


class ApRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(15))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.NamedType("enc-part", explicit(2, EncryptedDataAsn1())),
    )


class EncApRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(27))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ctime", explicit(0, KerberosTimeAsn1())),
        namedtype.NamedType("cusec", explicit(1, MicrosecondsAsn1())),
        namedtype.OptionalNamedType("subkey", explicit(2, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("seq-number", explicit(3, UInt32Asn1())),
    )


class KrbCredInfoAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("key", explicit(0, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("prealm", explicit(1, KerberosStringAsn1())),
        namedtype.OptionalNamedType("pname", explicit(2, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("flags", explicit(3, KerberosFlagsAsn1())),
        namedtype.OptionalNamedType("authtime", explicit(4, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", explicit(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("endtime", explicit(6, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", explicit(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("srealm", explicit(8, KerberosStringAsn1())),
        namedtype.OptionalNamedType("sname", explicit(9, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("caddr", explicit(10, HostAddressesAsn1())),
    )


class KrbCredAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(22))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.NamedType("tickets", explicit(2, univ.SequenceOf(componentType=TicketAsn1()))),
        namedtype.NamedType("enc-part", explicit(3, EncryptedDataAsn1())),
    )


class EncKrbCredPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(29))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ticket-info", explicit(0, univ.SequenceOf(componentType=KrbCredInfoAsn1()))),
        namedtype.OptionalNamedType("nonce", explicit(1, UInt32Asn1())),
        namedtype.OptionalNamedType("timestamp", explicit(2, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("usec", explicit(3, MicrosecondsAsn1())),
        namedtype.OptionalNamedType("s-address", explicit(4, HostAddressAsn1())),
        namedtype.OptionalNamedType("r-address", explicit(5, HostAddressesAsn1())),
    )


class KrbErrorAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(30))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.OptionalNamedType("ctime", explicit(2, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("cusec", explicit(3, MicrosecondsAsn1())),
        namedtype.NamedType("stime", explicit(4, KerberosTimeAsn1())),
        namedtype.NamedType("susec", explicit(5, MicrosecondsAsn1())),
        namedtype.NamedType("error-code", explicit(6, Int32Asn1())),
        namedtype.OptionalNamedType("crealm", explicit(7, KerberosStringAsn1())),
        namedtype.OptionalNamedType("cname", explicit(8, PrincipalNameAsn1())),
        namedtype.NamedType("realm", explicit(9, KerberosStringAsn1())),
        namedtype.NamedType("sname", explicit(10, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("e-text", explicit(11, KerberosStringAsn1())),
        namedtype.OptionalNamedType("e-data", explicit(12, univ.OctetString())),
    )


# RFC 4178 §4.2


class MechTypeListAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = univ.ObjectIdentifier()


class ContextFlagsAsn1(univ.BitString):  # type: ignore[misc]
    namedValues = namedval.NamedValues(
        ("delegFlag", 0), ("mutualFlag", 1), ("replayFlag", 2), ("sequenceFlag", 3),
        ("anonFlag", 4), ("confFlag", 5), ("integFlag", 6),
    )


class NegTokenInitAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("mechTypes", explicit(0, MechTypeListAsn1())),
        namedtype.OptionalNamedType("reqFlags", explicit(1, ContextFlagsAsn1())),
        namedtype.OptionalNamedType("mechToken", explicit(2, univ.OctetString())),
        namedtype.OptionalNamedType("mechListMIC", explicit(3, univ.OctetString())),
    )


class NegStateAsn1(univ.Enumerated):  # type: ignore[misc]
    namedValues = namedval.NamedValues(
        ("accept-completed", 0), ("accept-incomplete", 1), ("reject", 2), ("request-mic", 3))


class NegTokenRespAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("negState", explicit(0, NegStateAsn1())),
        namedtype.OptionalNamedType("supportedMech", explicit(1, univ.ObjectIdentifier())),
        namedtype.OptionalNamedType("responseToken", explicit(2, univ.OctetString())),
        namedtype.OptionalNamedType("mechListMIC", explicit(3, univ.OctetString())),
    )


class NegotiationTokenAsn1(univ.Choice):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("negTokenInit", explicit(0, NegTokenInitAsn1())),
        namedtype.NamedType("negTokenResp", explicit(1, NegTokenRespAsn1())),
    )


# --- encode / decode plumbing -----------------------------------------------------------------------------------


def der_decode(data: bytes, spec: Any, what: str) -> Any:
    try:
        node, rest = der_decoder.decode(bytes(data), asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError) as exc:
        raise MalformedToken(f"{what} is not valid DER: {exc}", details={"message": what}) from exc
    if rest:
        raise MalformedToken(f"{what} is followed by {len(rest)} stray bytes.", details={"message": what})
    return node


def der_encode(node: Any) -> bytes:
    # pyasn1's DER encoder drops empty OPTIONAL SEQUENCE OFs; keep them so minted messages say what was asked.
    return bytes(der_encoder.encode(node, omitEmptyOptionals=False))


def optional(node: Any, name: str) -> Any:
    """The component if present, else None (without instantiating an empty one)."""
    return node.getComponentByName(name, default=None, instantiate=False)


def flags_from_node(bs: Any) -> int:
    bits = tuple(bs)
    v = 0
    for i in range(32):
        v = (v << 1) | (bits[i] if i < len(bits) else 0)
    return v


def flags_node(spec: Any, value: int) -> Any:
    return spec.clone(hexValue=f"{value & 0xFFFFFFFF:08x}")  # MIT always sends 32 bits


def node_time(node: Any) -> int:
    return decode_time(str(node))


# --- the messages as dataclasses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalName:
    name_type: int
    components: tuple[str, ...]

    def _fill(self, node: Any) -> None:
        node["name-type"] = self.name_type
        names = node["name-string"]
        names.clear()  # an empty SEQUENCE OF is still encoded (pyasn1 omits a never-touched one)
        names.extend(list(self.components))

    @classmethod
    def _from(cls, node: Any) -> PrincipalName:
        return cls(int(node["name-type"]), tuple(str(s) for s in node["name-string"]))

    def with_realm(self, realm: str) -> str:
        """``comp1/comp2@REALM`` (no escaping: for messages and tests, not for round trips)."""
        return "/".join(self.components) + "@" + realm


@dataclass(frozen=True)
class EncryptedData:
    etype: int
    cipher: bytes = field(repr=False)
    kvno: int | None = None

    def _fill(self, node: Any) -> None:
        node["etype"] = self.etype
        if self.kvno is not None:
            node["kvno"] = self.kvno
        node["cipher"] = self.cipher

    @classmethod
    def _from(cls, node: Any) -> EncryptedData:
        kv = optional(node, "kvno")
        return cls(int(node["etype"]), bytes(node["cipher"]), None if kv is None else int(kv))


@dataclass(frozen=True)
class EncryptionKey:
    keytype: int
    keyvalue: bytes = field(repr=False)

    def _fill(self, node: Any) -> None:
        node["keytype"] = self.keytype
        node["keyvalue"] = self.keyvalue

    @classmethod
    def _from(cls, node: Any) -> EncryptionKey:
        return cls(int(node["keytype"]), bytes(node["keyvalue"]))


@dataclass(frozen=True)
class Checksum:
    cksumtype: int
    checksum: bytes

    def _fill(self, node: Any) -> None:
        node["cksumtype"] = self.cksumtype
        node["checksum"] = self.checksum

    @classmethod
    def _from(cls, node: Any) -> Checksum:
        return cls(int(node["cksumtype"]), bytes(node["checksum"]))


@dataclass(frozen=True)
class ADEntry:
    ad_type: int
    ad_data: bytes


@dataclass(frozen=True)
class HostAddress:
    addr_type: int
    address: bytes

    def _fill(self, node: Any) -> None:
        node["addr-type"] = self.addr_type
        node["address"] = self.address

    @classmethod
    def _from(cls, node: Any) -> HostAddress:
        return cls(int(node["addr-type"]), bytes(node["address"]))


@dataclass(frozen=True)
class TransitedEncoding:
    tr_type: int = 1  # DOMAIN-X500-COMPRESS (RFC 4120 §3.3.3.2)
    contents: bytes = b""


def _fill_ad(node: Any, entries: Sequence[ADEntry]) -> None:
    node.clear()
    for e in entries:
        item = ADEntryAsn1()
        item["ad-type"] = e.ad_type
        item["ad-data"] = e.ad_data
        node.append(item)


def _ad_from(node: Any) -> tuple[ADEntry, ...]:
    return tuple(ADEntry(int(e["ad-type"]), bytes(e["ad-data"])) for e in node)


def _fill_addrs(node: Any, addrs: Sequence[HostAddress]) -> None:
    node.clear()
    for a in addrs:
        item = HostAddressAsn1()
        a._fill(item)
        node.append(item)


def _addrs_from(node: Any) -> tuple[HostAddress, ...]:
    return tuple(HostAddress._from(a) for a in node)


def encode_authorization_data(entries: Sequence[ADEntry]) -> bytes:
    """DER AuthorizationData, e.g. the content of an AD-IF-RELEVANT element."""
    node = AuthorizationDataAsn1()
    _fill_ad(node, entries)
    return der_encode(node)


def decode_authorization_data(data: bytes) -> tuple[ADEntry, ...]:
    return _ad_from(der_decode(data, AuthorizationDataAsn1(), "AuthorizationData"))


def check_int(node: Any, name: str, want: int, what: str) -> None:
    got = int(node[name])
    if got != want:
        raise MalformedToken(f"{what}: {name} is {got}, expected {want}.", details={"message": what, name: got})


@dataclass(frozen=True)
class Ticket:
    realm: str
    sname: PrincipalName
    enc_part: EncryptedData
    tkt_vno: int = 5

    def _fill(self, node: Any) -> None:
        node["tkt-vno"] = self.tkt_vno
        node["realm"] = self.realm
        self.sname._fill(node["sname"])
        self.enc_part._fill(node["enc-part"])

    @classmethod
    def _from(cls, node: Any) -> Ticket:
        return cls(str(node["realm"]), PrincipalName._from(node["sname"]), EncryptedData._from(node["enc-part"]),
                   int(node["tkt-vno"]))

    def to_der(self) -> bytes:
        node = TicketAsn1()
        self._fill(node)
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> Ticket:
        return cls._from(der_decode(data, TicketAsn1(), "Ticket"))


@dataclass(frozen=True)
class EncTicketPart:
    flags: int
    key: EncryptionKey
    crealm: str
    cname: PrincipalName
    authtime: int
    endtime: int
    transited: TransitedEncoding = TransitedEncoding()
    starttime: int | None = None
    renew_till: int | None = None
    caddr: tuple[HostAddress, ...] | None = None
    authorization_data: tuple[ADEntry, ...] | None = None

    def to_der(self) -> bytes:
        node = EncTicketPartAsn1()
        node["flags"] = flags_node(node["flags"], self.flags)
        self.key._fill(node["key"])
        node["crealm"] = self.crealm
        self.cname._fill(node["cname"])
        node["transited"]["tr-type"] = self.transited.tr_type
        node["transited"]["contents"] = self.transited.contents
        node["authtime"] = encode_time(self.authtime)
        if self.starttime is not None:
            node["starttime"] = encode_time(self.starttime)
        node["endtime"] = encode_time(self.endtime)
        if self.renew_till is not None:
            node["renew-till"] = encode_time(self.renew_till)
        if self.caddr is not None:
            _fill_addrs(node["caddr"], self.caddr)
        if self.authorization_data is not None:
            _fill_ad(node["authorization-data"], self.authorization_data)
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncTicketPart:
        n = der_decode(data, EncTicketPartAsn1(), "EncTicketPart")
        st, rt, ca, ad = (optional(n, k) for k in ("starttime", "renew-till", "caddr", "authorization-data"))
        return cls(
            flags=flags_from_node(n["flags"]), key=EncryptionKey._from(n["key"]), crealm=str(n["crealm"]),
            cname=PrincipalName._from(n["cname"]), authtime=node_time(n["authtime"]),
            endtime=node_time(n["endtime"]),
            transited=TransitedEncoding(int(n["transited"]["tr-type"]), bytes(n["transited"]["contents"])),
            starttime=None if st is None else node_time(st), renew_till=None if rt is None else node_time(rt),
            caddr=None if ca is None else _addrs_from(ca), authorization_data=None if ad is None else _ad_from(ad),
        )


@dataclass(frozen=True)
class Authenticator:
    crealm: str
    cname: PrincipalName
    cusec: int
    ctime: int
    cksum: Checksum | None = None
    subkey: EncryptionKey | None = None
    seq_number: int | None = None
    authorization_data: tuple[ADEntry, ...] | None = None
    authenticator_vno: int = 5

    def to_der(self) -> bytes:
        node = AuthenticatorAsn1()
        node["authenticator-vno"] = self.authenticator_vno
        node["crealm"] = self.crealm
        self.cname._fill(node["cname"])
        if self.cksum is not None:
            self.cksum._fill(node["cksum"])
        node["cusec"] = self.cusec
        node["ctime"] = encode_time(self.ctime)
        if self.subkey is not None:
            self.subkey._fill(node["subkey"])
        if self.seq_number is not None:
            node["seq-number"] = self.seq_number
        if self.authorization_data is not None:
            _fill_ad(node["authorization-data"], self.authorization_data)
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> Authenticator:
        n = der_decode(data, AuthenticatorAsn1(), "Authenticator")
        ck, sk, sq, ad = (optional(n, k) for k in ("cksum", "subkey", "seq-number", "authorization-data"))
        return cls(
            crealm=str(n["crealm"]), cname=PrincipalName._from(n["cname"]), cusec=int(n["cusec"]),
            ctime=node_time(n["ctime"]), cksum=None if ck is None else Checksum._from(ck),
            subkey=None if sk is None else EncryptionKey._from(sk), seq_number=None if sq is None else int(sq),
            authorization_data=None if ad is None else _ad_from(ad),
            authenticator_vno=int(n["authenticator-vno"]),
        )


@dataclass(frozen=True)
class ApReq:
    ticket: Ticket
    authenticator: EncryptedData
    ap_options: int = 0

    def to_der(self) -> bytes:
        node = ApReqAsn1()
        node["pvno"] = 5
        node["msg-type"] = 14
        node["ap-options"] = flags_node(node["ap-options"], self.ap_options)
        self.ticket._fill(node["ticket"])
        self.authenticator._fill(node["authenticator"])
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> ApReq:
        n = der_decode(data, ApReqAsn1(), "AP-REQ")
        check_int(n, "pvno", 5, "AP-REQ")
        check_int(n, "msg-type", 14, "AP-REQ")
        return cls(Ticket._from(n["ticket"]), EncryptedData._from(n["authenticator"]),
                   flags_from_node(n["ap-options"]))


@dataclass(frozen=True)
class ApRep:
    enc_part: EncryptedData

    def to_der(self) -> bytes:
        node = ApRepAsn1()
        node["pvno"] = 5
        node["msg-type"] = 15
        self.enc_part._fill(node["enc-part"])
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> ApRep:
        n = der_decode(data, ApRepAsn1(), "AP-REP")
        check_int(n, "pvno", 5, "AP-REP")
        check_int(n, "msg-type", 15, "AP-REP")
        return cls(EncryptedData._from(n["enc-part"]))


@dataclass(frozen=True)
class EncApRepPart:
    ctime: int
    cusec: int
    subkey: EncryptionKey | None = None
    seq_number: int | None = None

    def to_der(self) -> bytes:
        node = EncApRepPartAsn1()
        node["ctime"] = encode_time(self.ctime)
        node["cusec"] = self.cusec
        if self.subkey is not None:
            self.subkey._fill(node["subkey"])
        if self.seq_number is not None:
            node["seq-number"] = self.seq_number
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncApRepPart:
        n = der_decode(data, EncApRepPartAsn1(), "EncAPRepPart")
        sk, sq = optional(n, "subkey"), optional(n, "seq-number")
        return cls(node_time(n["ctime"]), int(n["cusec"]), None if sk is None else EncryptionKey._from(sk),
                   None if sq is None else int(sq))


@dataclass(frozen=True)
class KrbCredInfo:
    key: EncryptionKey
    prealm: str | None = None
    pname: PrincipalName | None = None
    flags: int | None = None
    authtime: int | None = None
    starttime: int | None = None
    endtime: int | None = None
    renew_till: int | None = None
    srealm: str | None = None
    sname: PrincipalName | None = None
    caddr: tuple[HostAddress, ...] | None = None

    def _fill(self, node: Any) -> None:
        self.key._fill(node["key"])
        if self.prealm is not None:
            node["prealm"] = self.prealm
        if self.pname is not None:
            self.pname._fill(node["pname"])
        if self.flags is not None:
            node["flags"] = flags_node(node["flags"], self.flags)
        for attr, name in (("authtime", "authtime"), ("starttime", "starttime"), ("endtime", "endtime"),
                           ("renew_till", "renew-till")):
            v = getattr(self, attr)
            if v is not None:
                node[name] = encode_time(v)
        if self.srealm is not None:
            node["srealm"] = self.srealm
        if self.sname is not None:
            self.sname._fill(node["sname"])
        if self.caddr is not None:
            _fill_addrs(node["caddr"], self.caddr)

    @classmethod
    def _from(cls, n: Any) -> KrbCredInfo:
        def t(name: str) -> int | None:
            v = optional(n, name)
            return None if v is None else node_time(v)

        pr, pn, fl, sr, sn, ca = (optional(n, k) for k in ("prealm", "pname", "flags", "srealm", "sname", "caddr"))
        return cls(
            key=EncryptionKey._from(n["key"]), prealm=None if pr is None else str(pr),
            pname=None if pn is None else PrincipalName._from(pn), flags=None if fl is None else flags_from_node(fl),
            authtime=t("authtime"), starttime=t("starttime"), endtime=t("endtime"), renew_till=t("renew-till"),
            srealm=None if sr is None else str(sr), sname=None if sn is None else PrincipalName._from(sn),
            caddr=None if ca is None else _addrs_from(ca),
        )


@dataclass(frozen=True)
class KrbCred:
    tickets: tuple[Ticket, ...]
    enc_part: EncryptedData

    def to_der(self) -> bytes:
        node = KrbCredAsn1()
        node["pvno"] = 5
        node["msg-type"] = 22
        node["tickets"].clear()
        for t in self.tickets:
            item = TicketAsn1()
            t._fill(item)
            node["tickets"].append(item)
        self.enc_part._fill(node["enc-part"])
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> KrbCred:
        n = der_decode(data, KrbCredAsn1(), "KRB-CRED")
        check_int(n, "pvno", 5, "KRB-CRED")
        check_int(n, "msg-type", 22, "KRB-CRED")
        return cls(tuple(Ticket._from(t) for t in n["tickets"]), EncryptedData._from(n["enc-part"]))


@dataclass(frozen=True)
class EncKrbCredPart:
    ticket_info: tuple[KrbCredInfo, ...]
    nonce: int | None = None
    timestamp: int | None = None
    usec: int | None = None
    s_address: HostAddress | None = None
    r_address: tuple[HostAddress, ...] | None = None

    def to_der(self) -> bytes:
        node = EncKrbCredPartAsn1()
        node["ticket-info"].clear()
        for info in self.ticket_info:
            item = KrbCredInfoAsn1()
            info._fill(item)
            node["ticket-info"].append(item)
        if self.nonce is not None:
            node["nonce"] = self.nonce
        if self.timestamp is not None:
            node["timestamp"] = encode_time(self.timestamp)
        if self.usec is not None:
            node["usec"] = self.usec
        if self.s_address is not None:
            self.s_address._fill(node["s-address"])
        if self.r_address is not None:
            _fill_addrs(node["r-address"], self.r_address)
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncKrbCredPart:
        n = der_decode(data, EncKrbCredPartAsn1(), "EncKrbCredPart")
        no, ts, us, sa, ra = (optional(n, k) for k in ("nonce", "timestamp", "usec", "s-address", "r-address"))
        return cls(
            tuple(KrbCredInfo._from(i) for i in n["ticket-info"]), None if no is None else int(no),
            None if ts is None else node_time(ts), None if us is None else int(us),
            None if sa is None else HostAddress._from(sa), None if ra is None else _addrs_from(ra),
        )


@dataclass(frozen=True)
class KrbError:
    error_code: int
    stime: int
    susec: int
    realm: str
    sname: PrincipalName
    ctime: int | None = None
    cusec: int | None = None
    crealm: str | None = None
    cname: PrincipalName | None = None
    e_text: str | None = None
    e_data: bytes | None = None

    def to_der(self) -> bytes:
        node = KrbErrorAsn1()
        node["pvno"] = 5
        node["msg-type"] = 30
        if self.ctime is not None:
            node["ctime"] = encode_time(self.ctime)
        if self.cusec is not None:
            node["cusec"] = self.cusec
        node["stime"] = encode_time(self.stime)
        node["susec"] = self.susec
        node["error-code"] = self.error_code
        if self.crealm is not None:
            node["crealm"] = self.crealm
        if self.cname is not None:
            self.cname._fill(node["cname"])
        node["realm"] = self.realm
        self.sname._fill(node["sname"])
        if self.e_text is not None:
            node["e-text"] = self.e_text
        if self.e_data is not None:
            node["e-data"] = self.e_data
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> KrbError:
        n = der_decode(data, KrbErrorAsn1(), "KRB-ERROR")
        check_int(n, "pvno", 5, "KRB-ERROR")
        check_int(n, "msg-type", 30, "KRB-ERROR")
        ct, cu, cr, cn, et, ed = (optional(n, k) for k in ("ctime", "cusec", "crealm", "cname", "e-text", "e-data"))
        return cls(
            error_code=int(n["error-code"]), stime=node_time(n["stime"]), susec=int(n["susec"]),
            realm=str(n["realm"]), sname=PrincipalName._from(n["sname"]),
            ctime=None if ct is None else node_time(ct), cusec=None if cu is None else int(cu),
            crealm=None if cr is None else str(cr), cname=None if cn is None else PrincipalName._from(cn),
            e_text=None if et is None else str(et), e_data=None if ed is None else bytes(ed),
        )
