"""Kerberos and GSS/SPNEGO messages in pyasn1: the slow, independent reference for the native decoder.

Used to mint test tokens (fastkrb.testing) and to check the native DER reader differentially, so every
decoder here returns plain dataclasses. Specs follow RFC 4120 Appendix A (``DEFINITIONS EXPLICIT TAGS``),
RFC 2743 §3.1 (InitialContextToken framing), RFC 4121 §4.1 (krb5 TOK_IDs, the 0x8003 checksum) and
RFC 4178 §4.2 (SPNEGO). Not on the hot path.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import struct
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
    "OID_KRB5", "OID_MS_KRB5", "OID_SPNEGO", "OID_NTLMSSP", "OID_KRB5_USER_TO_USER",
    "TOK_ID_AP_REQ", "TOK_ID_AP_REP", "TOK_ID_KRB_ERROR",
    # numbers
    "NT_UNKNOWN", "NT_PRINCIPAL", "NT_SRV_INST", "NT_SRV_HST", "NT_ENTERPRISE",
    "AD_IF_RELEVANT", "AD_WIN2K_PAC", "AD_AUTH_DATA_AP_OPTIONS", "KERB_AP_OPTIONS_CBT",
    "CKSUMTYPE_GSSAPI", "ADDRTYPE_INET", "ADDRTYPE_INET6", "GSS_C_AF_NULLADDR",
    "TICKET_FLAGS", "AP_OPTIONS", "GSS_FLAGS",
    "flags_to_int", "flags_to_names", "gss_flags_to_int", "encode_time", "decode_time",
    # dataclasses
    "PrincipalName", "EncryptedData", "EncryptionKey", "Checksum", "ADEntry", "HostAddress",
    "TransitedEncoding", "Ticket", "EncTicketPart", "Authenticator", "ApReq", "ApRep", "EncApRepPart",
    "KrbCredInfo", "KrbCred", "EncKrbCredPart", "KrbError",
    "encode_authorization_data", "decode_authorization_data",
    # GSS / SPNEGO
    "GssToken", "gss_wrap", "gss_unwrap", "der_length", "read_der_length",
    "NegTokenInit", "NegTokenResp", "spnego_init", "spnego_resp", "decode_spnego",
    "ChannelBindings", "channel_bindings_hash", "GssChecksum", "unwrap_ap_req",
    # KDC exchanges
    "PA_TGS_REQ", "PA_ENC_TIMESTAMP", "PA_ETYPE_INFO", "PA_ETYPE_INFO2", "PA_PAC_REQUEST", "KDC_OPTIONS",
    "KRB_ERROR_NAMES", "PaData", "KdcReqBody", "KdcReq", "KdcRep", "EncKdcRepPart", "PaEncTsEnc",
    "EtypeInfo2Entry", "decode_etype_info2", "decode_method_data", "pa_pac_request",
]

OID_KRB5 = "1.2.840.113554.1.2.2"
OID_MS_KRB5 = "1.2.840.48018.1.2.2"          # Windows' mistyped krb5 OID, still offered first by Windows
OID_SPNEGO = "1.3.6.1.5.5.2"
OID_NTLMSSP = "1.3.6.1.4.1.311.2.2.10"
OID_KRB5_USER_TO_USER = "1.2.840.113554.1.2.2.3"

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


def _x(n: int, t: Any) -> Any:
    """An EXPLICIT context tag [n] (the module default)."""
    return t.subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, n))


def _app(n: int) -> Any:
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
        namedtype.NamedType("name-type", _x(0, Int32Asn1())),
        namedtype.NamedType("name-string", _x(1, univ.SequenceOf(componentType=KerberosStringAsn1()))),
    )


class HostAddressAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("addr-type", _x(0, Int32Asn1())),
        namedtype.NamedType("address", _x(1, univ.OctetString())),
    )


class HostAddressesAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = HostAddressAsn1()


class ADEntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ad-type", _x(0, Int32Asn1())),
        namedtype.NamedType("ad-data", _x(1, univ.OctetString())),
    )


class AuthorizationDataAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = ADEntryAsn1()


class EncryptedDataAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("etype", _x(0, Int32Asn1())),
        namedtype.OptionalNamedType("kvno", _x(1, UInt32Asn1())),
        namedtype.NamedType("cipher", _x(2, univ.OctetString())),
    )


class EncryptionKeyAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("keytype", _x(0, Int32Asn1())),
        namedtype.NamedType("keyvalue", _x(1, univ.OctetString())),
    )


class ChecksumAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("cksumtype", _x(0, Int32Asn1())),
        namedtype.NamedType("checksum", _x(1, univ.OctetString())),
    )


class TransitedEncodingAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("tr-type", _x(0, Int32Asn1())),
        namedtype.NamedType("contents", _x(1, univ.OctetString())),
    )


class TicketAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(1))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("tkt-vno", _x(0, univ.Integer())),
        namedtype.NamedType("realm", _x(1, KerberosStringAsn1())),
        namedtype.NamedType("sname", _x(2, PrincipalNameAsn1())),
        namedtype.NamedType("enc-part", _x(3, EncryptedDataAsn1())),
    )


class EncTicketPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(3))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("flags", _x(0, KerberosFlagsAsn1())),
        namedtype.NamedType("key", _x(1, EncryptionKeyAsn1())),
        namedtype.NamedType("crealm", _x(2, KerberosStringAsn1())),
        namedtype.NamedType("cname", _x(3, PrincipalNameAsn1())),
        namedtype.NamedType("transited", _x(4, TransitedEncodingAsn1())),
        namedtype.NamedType("authtime", _x(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", _x(6, KerberosTimeAsn1())),
        namedtype.NamedType("endtime", _x(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", _x(8, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("caddr", _x(9, HostAddressesAsn1())),
        namedtype.OptionalNamedType("authorization-data", _x(10, AuthorizationDataAsn1())),
    )


class AuthenticatorAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(2))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("authenticator-vno", _x(0, univ.Integer())),
        namedtype.NamedType("crealm", _x(1, KerberosStringAsn1())),
        namedtype.NamedType("cname", _x(2, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("cksum", _x(3, ChecksumAsn1())),
        namedtype.NamedType("cusec", _x(4, MicrosecondsAsn1())),
        namedtype.NamedType("ctime", _x(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("subkey", _x(6, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("seq-number", _x(7, UInt32Asn1())),
        namedtype.OptionalNamedType("authorization-data", _x(8, AuthorizationDataAsn1())),
    )


class ApReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(14))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(0, univ.Integer())),
        namedtype.NamedType("msg-type", _x(1, univ.Integer())),
        namedtype.NamedType("ap-options", _x(2, KerberosFlagsAsn1())),
        namedtype.NamedType("ticket", _x(3, TicketAsn1())),
        namedtype.NamedType("authenticator", _x(4, EncryptedDataAsn1())),
    )


class ApRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(15))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(0, univ.Integer())),
        namedtype.NamedType("msg-type", _x(1, univ.Integer())),
        namedtype.NamedType("enc-part", _x(2, EncryptedDataAsn1())),
    )


class EncApRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(27))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ctime", _x(0, KerberosTimeAsn1())),
        namedtype.NamedType("cusec", _x(1, MicrosecondsAsn1())),
        namedtype.OptionalNamedType("subkey", _x(2, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("seq-number", _x(3, UInt32Asn1())),
    )


class KrbCredInfoAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("key", _x(0, EncryptionKeyAsn1())),
        namedtype.OptionalNamedType("prealm", _x(1, KerberosStringAsn1())),
        namedtype.OptionalNamedType("pname", _x(2, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("flags", _x(3, KerberosFlagsAsn1())),
        namedtype.OptionalNamedType("authtime", _x(4, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", _x(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("endtime", _x(6, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", _x(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("srealm", _x(8, KerberosStringAsn1())),
        namedtype.OptionalNamedType("sname", _x(9, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("caddr", _x(10, HostAddressesAsn1())),
    )


class KrbCredAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(22))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(0, univ.Integer())),
        namedtype.NamedType("msg-type", _x(1, univ.Integer())),
        namedtype.NamedType("tickets", _x(2, univ.SequenceOf(componentType=TicketAsn1()))),
        namedtype.NamedType("enc-part", _x(3, EncryptedDataAsn1())),
    )


class EncKrbCredPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(29))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("ticket-info", _x(0, univ.SequenceOf(componentType=KrbCredInfoAsn1()))),
        namedtype.OptionalNamedType("nonce", _x(1, UInt32Asn1())),
        namedtype.OptionalNamedType("timestamp", _x(2, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("usec", _x(3, MicrosecondsAsn1())),
        namedtype.OptionalNamedType("s-address", _x(4, HostAddressAsn1())),
        namedtype.OptionalNamedType("r-address", _x(5, HostAddressesAsn1())),
    )


class KrbErrorAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(30))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(0, univ.Integer())),
        namedtype.NamedType("msg-type", _x(1, univ.Integer())),
        namedtype.OptionalNamedType("ctime", _x(2, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("cusec", _x(3, MicrosecondsAsn1())),
        namedtype.NamedType("stime", _x(4, KerberosTimeAsn1())),
        namedtype.NamedType("susec", _x(5, MicrosecondsAsn1())),
        namedtype.NamedType("error-code", _x(6, Int32Asn1())),
        namedtype.OptionalNamedType("crealm", _x(7, KerberosStringAsn1())),
        namedtype.OptionalNamedType("cname", _x(8, PrincipalNameAsn1())),
        namedtype.NamedType("realm", _x(9, KerberosStringAsn1())),
        namedtype.NamedType("sname", _x(10, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("e-text", _x(11, KerberosStringAsn1())),
        namedtype.OptionalNamedType("e-data", _x(12, univ.OctetString())),
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
        namedtype.NamedType("mechTypes", _x(0, MechTypeListAsn1())),
        namedtype.OptionalNamedType("reqFlags", _x(1, ContextFlagsAsn1())),
        namedtype.OptionalNamedType("mechToken", _x(2, univ.OctetString())),
        namedtype.OptionalNamedType("mechListMIC", _x(3, univ.OctetString())),
    )


class NegStateAsn1(univ.Enumerated):  # type: ignore[misc]
    namedValues = namedval.NamedValues(
        ("accept-completed", 0), ("accept-incomplete", 1), ("reject", 2), ("request-mic", 3))


class NegTokenRespAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("negState", _x(0, NegStateAsn1())),
        namedtype.OptionalNamedType("supportedMech", _x(1, univ.ObjectIdentifier())),
        namedtype.OptionalNamedType("responseToken", _x(2, univ.OctetString())),
        namedtype.OptionalNamedType("mechListMIC", _x(3, univ.OctetString())),
    )


class NegotiationTokenAsn1(univ.Choice):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("negTokenInit", _x(0, NegTokenInitAsn1())),
        namedtype.NamedType("negTokenResp", _x(1, NegTokenRespAsn1())),
    )


# --- encode / decode plumbing -----------------------------------------------------------------------------------


def _decode(data: bytes, spec: Any, what: str) -> Any:
    try:
        node, rest = der_decoder.decode(bytes(data), asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError) as exc:
        raise MalformedToken(f"{what} is not valid DER: {exc}", details={"message": what}) from exc
    if rest:
        raise MalformedToken(f"{what} is followed by {len(rest)} stray bytes.", details={"message": what})
    return node


def _encode(node: Any) -> bytes:
    # pyasn1's DER encoder drops empty OPTIONAL SEQUENCE OFs; keep them so minted messages say what was asked.
    return bytes(der_encoder.encode(node, omitEmptyOptionals=False))


def _opt(node: Any, name: str) -> Any:
    """The component if present, else None (without instantiating an empty one)."""
    return node.getComponentByName(name, default=None, instantiate=False)


def _flags_from_node(bs: Any) -> int:
    bits = tuple(bs)
    v = 0
    for i in range(32):
        v = (v << 1) | (bits[i] if i < len(bits) else 0)
    return v


def _flags_node(spec: Any, value: int) -> Any:
    return spec.clone(hexValue=f"{value & 0xFFFFFFFF:08x}")  # MIT always sends 32 bits


def _str_time(node: Any) -> int:
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
        kv = _opt(node, "kvno")
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
    return _encode(node)


def decode_authorization_data(data: bytes) -> tuple[ADEntry, ...]:
    return _ad_from(_decode(data, AuthorizationDataAsn1(), "AuthorizationData"))


def _check_int(node: Any, name: str, want: int, what: str) -> None:
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> Ticket:
        return cls._from(_decode(data, TicketAsn1(), "Ticket"))


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
        node["flags"] = _flags_node(node["flags"], self.flags)
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncTicketPart:
        n = _decode(data, EncTicketPartAsn1(), "EncTicketPart")
        st, rt, ca, ad = (_opt(n, k) for k in ("starttime", "renew-till", "caddr", "authorization-data"))
        return cls(
            flags=_flags_from_node(n["flags"]), key=EncryptionKey._from(n["key"]), crealm=str(n["crealm"]),
            cname=PrincipalName._from(n["cname"]), authtime=_str_time(n["authtime"]),
            endtime=_str_time(n["endtime"]),
            transited=TransitedEncoding(int(n["transited"]["tr-type"]), bytes(n["transited"]["contents"])),
            starttime=None if st is None else _str_time(st), renew_till=None if rt is None else _str_time(rt),
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> Authenticator:
        n = _decode(data, AuthenticatorAsn1(), "Authenticator")
        ck, sk, sq, ad = (_opt(n, k) for k in ("cksum", "subkey", "seq-number", "authorization-data"))
        return cls(
            crealm=str(n["crealm"]), cname=PrincipalName._from(n["cname"]), cusec=int(n["cusec"]),
            ctime=_str_time(n["ctime"]), cksum=None if ck is None else Checksum._from(ck),
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
        node["ap-options"] = _flags_node(node["ap-options"], self.ap_options)
        self.ticket._fill(node["ticket"])
        self.authenticator._fill(node["authenticator"])
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> ApReq:
        n = _decode(data, ApReqAsn1(), "AP-REQ")
        _check_int(n, "pvno", 5, "AP-REQ")
        _check_int(n, "msg-type", 14, "AP-REQ")
        return cls(Ticket._from(n["ticket"]), EncryptedData._from(n["authenticator"]),
                   _flags_from_node(n["ap-options"]))


@dataclass(frozen=True)
class ApRep:
    enc_part: EncryptedData

    def to_der(self) -> bytes:
        node = ApRepAsn1()
        node["pvno"] = 5
        node["msg-type"] = 15
        self.enc_part._fill(node["enc-part"])
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> ApRep:
        n = _decode(data, ApRepAsn1(), "AP-REP")
        _check_int(n, "pvno", 5, "AP-REP")
        _check_int(n, "msg-type", 15, "AP-REP")
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncApRepPart:
        n = _decode(data, EncApRepPartAsn1(), "EncAPRepPart")
        sk, sq = _opt(n, "subkey"), _opt(n, "seq-number")
        return cls(_str_time(n["ctime"]), int(n["cusec"]), None if sk is None else EncryptionKey._from(sk),
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
            node["flags"] = _flags_node(node["flags"], self.flags)
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
            v = _opt(n, name)
            return None if v is None else _str_time(v)

        pr, pn, fl, sr, sn, ca = (_opt(n, k) for k in ("prealm", "pname", "flags", "srealm", "sname", "caddr"))
        return cls(
            key=EncryptionKey._from(n["key"]), prealm=None if pr is None else str(pr),
            pname=None if pn is None else PrincipalName._from(pn), flags=None if fl is None else _flags_from_node(fl),
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> KrbCred:
        n = _decode(data, KrbCredAsn1(), "KRB-CRED")
        _check_int(n, "pvno", 5, "KRB-CRED")
        _check_int(n, "msg-type", 22, "KRB-CRED")
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> EncKrbCredPart:
        n = _decode(data, EncKrbCredPartAsn1(), "EncKrbCredPart")
        no, ts, us, sa, ra = (_opt(n, k) for k in ("nonce", "timestamp", "usec", "s-address", "r-address"))
        return cls(
            tuple(KrbCredInfo._from(i) for i in n["ticket-info"]), None if no is None else int(no),
            None if ts is None else _str_time(ts), None if us is None else int(us),
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
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> KrbError:
        n = _decode(data, KrbErrorAsn1(), "KRB-ERROR")
        _check_int(n, "pvno", 5, "KRB-ERROR")
        _check_int(n, "msg-type", 30, "KRB-ERROR")
        ct, cu, cr, cn, et, ed = (_opt(n, k) for k in ("ctime", "cusec", "crealm", "cname", "e-text", "e-data"))
        return cls(
            error_code=int(n["error-code"]), stime=_str_time(n["stime"]), susec=int(n["susec"]),
            realm=str(n["realm"]), sname=PrincipalName._from(n["sname"]),
            ctime=None if ct is None else _str_time(ct), cusec=None if cu is None else int(cu),
            crealm=None if cr is None else str(cr), cname=None if cn is None else PrincipalName._from(cn),
            e_text=None if et is None else str(et), e_data=None if ed is None else bytes(ed),
        )


# --- RFC 2743 §3.1 InitialContextToken framing -------------------------------------------------------------------


def der_length(n: int) -> bytes:
    """A DER length: short form below 128, else the minimal long form."""
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def read_der_length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, offset after it); rejects indefinite, over-long and non-minimal forms."""
    if pos >= len(buf):
        raise MalformedToken("DER length runs past the end of the token.", details={"offset": pos})
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > 4:
        raise MalformedToken("DER length is indefinite or too long.", details={"offset": pos})
    if pos + 1 + n > len(buf):
        raise MalformedToken("DER length runs past the end of the token.", details={"offset": pos})
    v = int.from_bytes(buf[pos + 1:pos + 1 + n], "big")
    if v < 0x80 or buf[pos + 1] == 0:
        raise MalformedToken("DER length is not minimal.", details={"offset": pos})
    return v, pos + 1 + n


def _oid_der(oid: str) -> bytes:
    return _encode(univ.ObjectIdentifier(oid))


_KRB5_MECHS = (OID_KRB5, OID_MS_KRB5, OID_KRB5_USER_TO_USER)


@dataclass(frozen=True)
class GssToken:
    mech: str
    tok_id: bytes | None   # krb5 mechanisms only (RFC 4121 §4.1)
    inner: bytes


def gss_wrap(mech: str, inner: bytes, tok_id: bytes | None = None) -> bytes:
    """``[APPLICATION 0] IMPLICIT SEQUENCE { thisMech OID, innerContextToken ANY }`` (0x60 ...)."""
    body = _oid_der(mech) + (tok_id or b"") + inner
    return b"\x60" + der_length(len(body)) + body


def gss_unwrap(token: bytes) -> GssToken:
    """Split an InitialContextToken; the TOK_ID is taken for krb5 mechanisms."""
    token = bytes(token)
    if not token or token[0] != 0x60:
        raise MalformedToken("Not a GSS InitialContextToken (first octet is not 0x60).")
    length, pos = read_der_length(token, 1)
    if pos + length != len(token):
        raise MalformedToken("GSS token length does not match its size.", details={"declared": length})
    if pos >= len(token) or token[pos] != 0x06:
        raise MalformedToken("GSS token does not start with a mechanism OID.")
    olen, opos = read_der_length(token, pos + 1)
    if opos + olen > len(token):
        raise MalformedToken("GSS mechanism OID runs past the end of the token.")
    oid_node = _decode(token[pos:opos + olen], univ.ObjectIdentifier(), "mechanism OID")
    mech = str(oid_node)
    rest = token[opos + olen:]
    if mech in _KRB5_MECHS:
        if len(rest) < 2:
            raise MalformedToken("krb5 GSS token has no TOK_ID.")
        return GssToken(mech, rest[:2], rest[2:])
    return GssToken(mech, None, rest)


# --- RFC 4178 SPNEGO ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegTokenInit:
    mech_types: tuple[str, ...]
    req_flags: int | None = None     # ContextFlags bits as in the BIT STRING, bit 0 = delegFlag
    mech_token: bytes | None = None
    mech_list_mic: bytes | None = None


@dataclass(frozen=True)
class NegTokenResp:
    neg_state: int | None = None     # 0 accept-completed, 1 accept-incomplete, 2 reject, 3 request-mic
    supported_mech: str | None = None
    response_token: bytes | None = None
    mech_list_mic: bytes | None = None


def spnego_init(mech_token: bytes | None, mech_types: Sequence[str] = (OID_KRB5,),
                req_flags: int | None = None, mech_list_mic: bytes | None = None) -> bytes:
    """The client's first SPNEGO token, framed with the SPNEGO OID (RFC 4178 §4.2.1)."""
    choice = NegotiationTokenAsn1()
    init = choice["negTokenInit"]
    init["mechTypes"].clear()
    init["mechTypes"].extend([univ.ObjectIdentifier(m) for m in mech_types])
    if req_flags is not None:
        bits = "".join("1" if req_flags >> i & 1 else "0" for i in range(7))  # bit 0 = delegFlag
        init["reqFlags"] = init["reqFlags"].clone(binValue=bits)
    if mech_token is not None:
        init["mechToken"] = mech_token
    if mech_list_mic is not None:
        init["mechListMIC"] = mech_list_mic
    return gss_wrap(OID_SPNEGO, _encode(choice))


def spnego_resp(neg_state: int | None = 0, supported_mech: str | None = OID_KRB5,
                response_token: bytes | None = None, mech_list_mic: bytes | None = None) -> bytes:
    """A NegTokenResp (``a1 ...``); subsequent tokens carry no InitialContextToken framing."""
    choice = NegotiationTokenAsn1()
    resp = choice["negTokenResp"]
    if neg_state is not None:
        resp["negState"] = neg_state
    if supported_mech is not None:
        resp["supportedMech"] = supported_mech
    if response_token is not None:
        resp["responseToken"] = response_token
    if mech_list_mic is not None:
        resp["mechListMIC"] = mech_list_mic
    return _encode(choice)


def decode_spnego(token: bytes) -> NegTokenInit | NegTokenResp:
    """A framed NegTokenInit (0x60 + SPNEGO OID) or a bare NegotiationToken (0xa0 / 0xa1)."""
    token = bytes(token)
    if token[:1] == b"\x60":
        g = gss_unwrap(token)
        if g.mech != OID_SPNEGO:
            raise MalformedToken(f"GSS token is for mechanism {g.mech}, not SPNEGO.", details={"mech": g.mech})
        token = g.inner
    node = _decode(token, NegotiationTokenAsn1(), "SPNEGO NegotiationToken")
    name = node.getName()
    if name == "negTokenInit":
        n = node["negTokenInit"]
        rf, mt, mic = _opt(n, "reqFlags"), _opt(n, "mechToken"), _opt(n, "mechListMIC")
        req = None
        if rf is not None:
            bits = tuple(rf)
            req = sum(1 << i for i, b in enumerate(bits) if b)
        return NegTokenInit(tuple(str(o) for o in n["mechTypes"]), req,
                            None if mt is None else bytes(mt), None if mic is None else bytes(mic))
    n = node["negTokenResp"]
    ns, sm, rt, mic = (_opt(n, k) for k in ("negState", "supportedMech", "responseToken", "mechListMIC"))
    return NegTokenResp(None if ns is None else int(ns), None if sm is None else str(sm),
                        None if rt is None else bytes(rt), None if mic is None else bytes(mic))


def unwrap_ap_req(token: bytes) -> bytes:
    """The AP-REQ inside any framing: SPNEGO NegTokenInit, krb5 GSS token, or bare (0x6e)."""
    token = bytes(token)
    if token[:1] == b"\x6e":
        return token
    if token[:1] in (b"\x60", b"\xa0"):
        if token[:1] == b"\x60":
            g = gss_unwrap(token)
            if g.mech in _KRB5_MECHS:
                if g.tok_id != TOK_ID_AP_REQ:
                    raise MalformedToken("krb5 GSS token is not an AP-REQ (TOK_ID).")
                return g.inner
        spnego = decode_spnego(token)
        if isinstance(spnego, NegTokenInit) and spnego.mech_token is not None:
            return unwrap_ap_req(spnego.mech_token)
        raise MalformedToken("SPNEGO token carries no mechToken.")
    raise MalformedToken("Token is neither SPNEGO, a krb5 GSS token, nor an AP-REQ.")


# --- RFC 4121 §4.1.1 the GSS authenticator checksum (type 0x8003) -----------------------------------------------


@dataclass(frozen=True)
class ChannelBindings:
    """gss_channel_bindings_struct (RFC 2744 §3.11); for TLS only application_data is set."""

    application_data: bytes = b""
    initiator_addrtype: int = 0
    initiator_address: bytes = b""
    acceptor_addrtype: int = 0
    acceptor_address: bytes = b""


def channel_bindings_hash(cb: ChannelBindings | bytes) -> bytes:
    """MD5 over the little-endian serialisation of RFC 4121 §4.1.1.2."""
    if isinstance(cb, (bytes, bytearray)):
        cb = ChannelBindings(bytes(cb))
    data = b"".join((
        struct.pack("<II", cb.initiator_addrtype, len(cb.initiator_address)), cb.initiator_address,
        struct.pack("<II", cb.acceptor_addrtype, len(cb.acceptor_address)), cb.acceptor_address,
        struct.pack("<I", len(cb.application_data)), cb.application_data,
    ))
    return hashlib.md5(data, usedforsecurity=False).digest()


@dataclass(frozen=True)
class GssChecksum:
    """The 0x8003 checksum value: Lgth(16) | Bnd | Flags [| DlgOpt | Dlgth | Deleg] [| Exts]."""

    bnd: bytes = bytes(16)
    flags: int = 0
    delegation: bytes | None = None   # KRB-CRED; present when flags has deleg
    deleg_option: int = 1
    exts: bytes = b""
    lgth: int = 16

    def to_bytes(self) -> bytes:
        out = struct.pack("<I", self.lgth) + self.bnd + struct.pack("<I", self.flags)
        if self.delegation is not None:
            out += struct.pack("<HH", self.deleg_option, len(self.delegation)) + self.delegation
        return out + self.exts

    @classmethod
    def from_bytes(cls, data: bytes) -> GssChecksum:
        if len(data) < 24:
            raise MalformedToken("GSS checksum shorter than 24 bytes (RFC 4121 §4.1.1).")
        (lgth,) = struct.unpack_from("<I", data, 0)
        if lgth != 16:
            raise MalformedToken(f"GSS checksum Lgth is {lgth}, not 16.")
        bnd = data[4:20]
        (flags,) = struct.unpack_from("<I", data, 20)
        rest = data[24:]
        deleg = None
        opt = 1
        if flags & GSS_FLAGS["deleg"]:
            if len(rest) < 4:
                raise MalformedToken("GSS checksum has the deleg flag but no DlgOpt/Dlgth.")
            opt, dlen = struct.unpack_from("<HH", rest, 0)
            if len(rest) < 4 + dlen:
                raise MalformedToken("GSS checksum delegation runs past its end.")
            deleg = rest[4:4 + dlen]
            rest = rest[4 + dlen:]
        return cls(bnd, flags, deleg, opt, rest, lgth)


# --- RFC 4120 §5.4 the KDC exchanges (AS and TGS), for `fastkrb doctor` ----------------------------------------

PA_TGS_REQ = 1
PA_ENC_TIMESTAMP = 2
PA_ETYPE_INFO = 11
PA_ETYPE_INFO2 = 19
PA_PAC_REQUEST = 128

KDC_OPTIONS = {"forwardable": 1, "forwarded": 2, "proxiable": 3, "proxy": 4, "allow-postdate": 5,
               "postdated": 6, "renewable": 8, "canonicalize": 15, "disable-transited-check": 26,
               "renewable-ok": 27, "enc-tkt-in-skey": 28, "renew": 30, "validate": 31}

#: KRB-ERROR codes doctor names (RFC 4120 §7.5.9).
KRB_ERROR_NAMES = {
    0: "KDC_ERR_NONE", 6: "KDC_ERR_C_PRINCIPAL_UNKNOWN", 7: "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    12: "KDC_ERR_POLICY", 14: "KDC_ERR_ETYPE_NOSUPP", 18: "KDC_ERR_CLIENT_REVOKED",
    23: "KDC_ERR_KEY_EXPIRED", 24: "KDC_ERR_PREAUTH_FAILED", 25: "KDC_ERR_PREAUTH_REQUIRED",
    31: "KRB_AP_ERR_BAD_INTEGRITY", 32: "KRB_AP_ERR_TKT_EXPIRED", 33: "KRB_AP_ERR_TKT_NYV",
    34: "KRB_AP_ERR_REPEAT", 35: "KRB_AP_ERR_NOT_US", 36: "KRB_AP_ERR_BADMATCH", 37: "KRB_AP_ERR_SKEW",
    41: "KRB_AP_ERR_MODIFIED", 44: "KRB_AP_ERR_BADKEYVER", 45: "KRB_AP_ERR_NOKEY", 52: "KRB_ERR_RESPONSE_TOO_BIG",
    60: "KRB_ERR_GENERIC", 68: "KDC_ERR_WRONG_REALM",
}


class PaDataAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(  # tags start at 1 (RFC 4120 §5.2.7)
        namedtype.NamedType("padata-type", _x(1, Int32Asn1())),
        namedtype.NamedType("padata-value", _x(2, univ.OctetString())),
    )


class MethodDataAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = PaDataAsn1()


class KdcReqBodyAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("kdc-options", _x(0, KerberosFlagsAsn1())),
        namedtype.OptionalNamedType("cname", _x(1, PrincipalNameAsn1())),
        namedtype.NamedType("realm", _x(2, KerberosStringAsn1())),
        namedtype.OptionalNamedType("sname", _x(3, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("from", _x(4, KerberosTimeAsn1())),
        namedtype.NamedType("till", _x(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("rtime", _x(6, KerberosTimeAsn1())),
        namedtype.NamedType("nonce", _x(7, UInt32Asn1())),
        namedtype.NamedType("etype", _x(8, univ.SequenceOf(componentType=Int32Asn1()))),
        namedtype.OptionalNamedType("addresses", _x(9, HostAddressesAsn1())),
        namedtype.OptionalNamedType("enc-authorization-data", _x(10, EncryptedDataAsn1())),
        namedtype.OptionalNamedType("additional-tickets", _x(11, univ.SequenceOf(componentType=TicketAsn1()))),
    )


def _kdc_req_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(1, univ.Integer())),
        namedtype.NamedType("msg-type", _x(2, univ.Integer())),
        namedtype.OptionalNamedType("padata", _x(3, MethodDataAsn1())),
        namedtype.NamedType("req-body", _x(4, KdcReqBodyAsn1())),
    )


class AsReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(10))
    componentType = _kdc_req_types()


class TgsReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(12))
    componentType = _kdc_req_types()


def _kdc_rep_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("pvno", _x(0, univ.Integer())),
        namedtype.NamedType("msg-type", _x(1, univ.Integer())),
        namedtype.OptionalNamedType("padata", _x(2, MethodDataAsn1())),
        namedtype.NamedType("crealm", _x(3, KerberosStringAsn1())),
        namedtype.NamedType("cname", _x(4, PrincipalNameAsn1())),
        namedtype.NamedType("ticket", _x(5, TicketAsn1())),
        namedtype.NamedType("enc-part", _x(6, EncryptedDataAsn1())),
    )


class AsRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(11))
    componentType = _kdc_rep_types()


class TgsRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(13))
    componentType = _kdc_rep_types()


class LastReqEntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("lr-type", _x(0, Int32Asn1())),
        namedtype.NamedType("lr-value", _x(1, KerberosTimeAsn1())),
    )


def _enc_kdc_rep_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("key", _x(0, EncryptionKeyAsn1())),
        namedtype.NamedType("last-req", _x(1, univ.SequenceOf(componentType=LastReqEntryAsn1()))),
        namedtype.NamedType("nonce", _x(2, UInt32Asn1())),
        namedtype.OptionalNamedType("key-expiration", _x(3, KerberosTimeAsn1())),
        namedtype.NamedType("flags", _x(4, KerberosFlagsAsn1())),
        namedtype.NamedType("authtime", _x(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", _x(6, KerberosTimeAsn1())),
        namedtype.NamedType("endtime", _x(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", _x(8, KerberosTimeAsn1())),
        namedtype.NamedType("srealm", _x(9, KerberosStringAsn1())),
        namedtype.NamedType("sname", _x(10, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("caddr", _x(11, HostAddressesAsn1())),
        namedtype.OptionalNamedType("encrypted-pa-data", _x(12, MethodDataAsn1())),  # RFC 6806
    )


class EncAsRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(25))
    componentType = _enc_kdc_rep_types()


class EncTgsRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(_app(26))
    componentType = _enc_kdc_rep_types()


class PaEncTsEncAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("patimestamp", _x(0, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("pausec", _x(1, MicrosecondsAsn1())),
    )


class EtypeInfo2EntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("etype", _x(0, Int32Asn1())),
        namedtype.OptionalNamedType("salt", _x(1, KerberosStringAsn1())),
        namedtype.OptionalNamedType("s2kparams", _x(2, univ.OctetString())),
    )


class EtypeInfo2Asn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = EtypeInfo2EntryAsn1()


class PaPacRequestAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("include-pac", _x(0, univ.Boolean())),
    )


@dataclass(frozen=True)
class PaData:
    padata_type: int
    value: bytes = field(repr=False)


def _fill_padata(node: Any, items: Sequence[PaData]) -> None:
    node.clear()
    for p in items:
        e = PaDataAsn1()
        e["padata-type"] = p.padata_type
        e["padata-value"] = p.value
        node.append(e)


def _padata_from(node: Any) -> tuple[PaData, ...]:
    return tuple(PaData(int(p["padata-type"]), bytes(p["padata-value"])) for p in node)


def decode_method_data(data: bytes) -> tuple[PaData, ...]:
    """METHOD-DATA (the e-data of KDC_ERR_PREAUTH_REQUIRED)."""
    return _padata_from(_decode(data, MethodDataAsn1(), "METHOD-DATA"))


@dataclass(frozen=True)
class KdcReqBody:
    realm: str
    till: int
    nonce: int
    etypes: tuple[int, ...]
    cname: PrincipalName | None = None
    sname: PrincipalName | None = None
    options: int = 0
    rtime: int | None = None
    from_time: int | None = None  # a postdated ticket's start

    def _fill(self, node: Any) -> None:
        node["kdc-options"] = _flags_node(node["kdc-options"], self.options)
        if self.cname is not None:
            self.cname._fill(node["cname"])
        node["realm"] = self.realm
        if self.sname is not None:
            self.sname._fill(node["sname"])
        if self.from_time is not None:
            node["from"] = encode_time(self.from_time)
        node["till"] = encode_time(self.till)
        if self.rtime is not None:
            node["rtime"] = encode_time(self.rtime)
        node["nonce"] = self.nonce
        node["etype"].clear()
        node["etype"].extend(list(self.etypes))

    def to_der(self) -> bytes:
        """The body alone: the TGS-REQ authenticator checksums exactly these bytes (RFC 4120 §5.4.1)."""
        node = KdcReqBodyAsn1()
        self._fill(node)
        return _encode(node)


@dataclass(frozen=True)
class KdcReq:
    """AS-REQ (msg_type 10) or TGS-REQ (12)."""

    body: KdcReqBody
    padata: tuple[PaData, ...] = ()
    msg_type: int = 10

    def to_der(self) -> bytes:
        node = AsReqAsn1() if self.msg_type == 10 else TgsReqAsn1()
        node["pvno"] = 5
        node["msg-type"] = self.msg_type
        if self.padata:
            _fill_padata(node["padata"], self.padata)
        self.body._fill(node["req-body"])
        return _encode(node)


@dataclass(frozen=True)
class KdcRep:
    """AS-REP (msg_type 11) or TGS-REP (13); the encrypted part is decrypted by the caller."""

    msg_type: int
    crealm: str
    cname: PrincipalName
    ticket: Ticket
    enc_part: EncryptedData
    padata: tuple[PaData, ...] = ()
    ticket_der: bytes = field(default=b"", repr=False)

    @classmethod
    def from_der(cls, data: bytes) -> KdcRep:
        data = bytes(data)
        spec = {0x6B: AsRepAsn1, 0x6D: TgsRepAsn1}.get(data[0] if data else 0)
        if spec is None:
            raise MalformedToken("Not an AS-REP or TGS-REP.", details={"message": "KDC-REP"})
        n = _decode(data, spec(), "KDC-REP")
        _check_int(n, "pvno", 5, "KDC-REP")
        pa = _opt(n, "padata")
        ticket = Ticket._from(n["ticket"])
        return cls(int(n["msg-type"]), str(n["crealm"]), PrincipalName._from(n["cname"]), ticket,
                   EncryptedData._from(n["enc-part"]), () if pa is None else _padata_from(pa), ticket.to_der())


@dataclass(frozen=True)
class EncKdcRepPart:
    key: EncryptionKey
    nonce: int
    flags: int
    authtime: int
    endtime: int
    srealm: str
    sname: PrincipalName
    starttime: int | None = None
    renew_till: int | None = None
    key_expiration: int | None = None

    @classmethod
    def from_der(cls, data: bytes) -> EncKdcRepPart:
        """EncASRepPart or EncTGSRepPart: RFC 4120 §5.4.2 lets a KDC send either tag for either reply."""
        data = bytes(data)
        spec = {0x79: EncAsRepPartAsn1, 0x7A: EncTgsRepPartAsn1}.get(data[0] if data else 0)
        if spec is None:
            raise MalformedToken("Not an EncKDCRepPart.", details={"message": "EncKDCRepPart"})
        n = _decode(data, spec(), "EncKDCRepPart")
        st, rt, ke = (_opt(n, k) for k in ("starttime", "renew-till", "key-expiration"))
        return cls(EncryptionKey._from(n["key"]), int(n["nonce"]), _flags_from_node(n["flags"]),
                   _str_time(n["authtime"]), _str_time(n["endtime"]), str(n["srealm"]),
                   PrincipalName._from(n["sname"]), None if st is None else _str_time(st),
                   None if rt is None else _str_time(rt), None if ke is None else _str_time(ke))


@dataclass(frozen=True)
class PaEncTsEnc:
    patimestamp: int
    pausec: int | None = None

    def to_der(self) -> bytes:
        node = PaEncTsEncAsn1()
        node["patimestamp"] = encode_time(self.patimestamp)
        if self.pausec is not None:
            node["pausec"] = self.pausec
        return _encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> PaEncTsEnc:
        n = _decode(data, PaEncTsEncAsn1(), "PA-ENC-TS-ENC")
        us = _opt(n, "pausec")
        return cls(_str_time(n["patimestamp"]), None if us is None else int(us))


@dataclass(frozen=True)
class EtypeInfo2Entry:
    etype: int
    salt: str | None = None
    s2kparams: bytes | None = None


def decode_etype_info2(data: bytes) -> tuple[EtypeInfo2Entry, ...]:
    n = _decode(data, EtypeInfo2Asn1(), "ETYPE-INFO2")
    out = []
    for e in n:
        salt, params = _opt(e, "salt"), _opt(e, "s2kparams")
        out.append(EtypeInfo2Entry(int(e["etype"]), None if salt is None else str(salt),
                                   None if params is None else bytes(params)))
    return tuple(out)


def pa_pac_request(include: bool = True) -> PaData:
    node = PaPacRequestAsn1()
    node["include-pac"] = include
    return PaData(PA_PAC_REQUEST, _encode(node))
