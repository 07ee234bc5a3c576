"""The KDC exchanges (RFC 4120 §5.4: AS and TGS) in pyasn1, for the client that `fastkrb doctor` runs.

Models and plain dataclasses, as in ``asn1``, for KDC-REQ/KDC-REP, PA-DATA, PA-ENC-TIMESTAMP and
ETYPE-INFO2. Not on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyasn1.type import namedtype, univ

from fastkrb.errors import MalformedToken
from fastkrb.krb.asn1 import (
    EncryptedData,
    EncryptedDataAsn1,
    EncryptionKey,
    EncryptionKeyAsn1,
    HostAddressesAsn1,
    Int32Asn1,
    KerberosFlagsAsn1,
    KerberosStringAsn1,
    KerberosTimeAsn1,
    MicrosecondsAsn1,
    PrincipalName,
    PrincipalNameAsn1,
    Ticket,
    TicketAsn1,
    UInt32Asn1,
    application,
    check_int,
    der_decode,
    der_encode,
    encode_time,
    explicit,
    flags_from_node,
    flags_node,
    node_time,
    optional,
)

__all__ = [
    "PA_TGS_REQ", "PA_ENC_TIMESTAMP", "PA_ETYPE_INFO", "PA_ETYPE_INFO2", "PA_PAC_REQUEST", "KDC_OPTIONS",
    "KRB_ERROR_NAMES", "PaData", "KdcReqBody", "KdcReq", "KdcRep", "EncKdcRepPart", "PaEncTsEnc",
    "EtypeInfo2Entry", "decode_etype_info2", "decode_method_data", "pa_pac_request",
]


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
        namedtype.NamedType("padata-type", explicit(1, Int32Asn1())),
        namedtype.NamedType("padata-value", explicit(2, univ.OctetString())),
    )


class MethodDataAsn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = PaDataAsn1()


class KdcReqBodyAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("kdc-options", explicit(0, KerberosFlagsAsn1())),
        namedtype.OptionalNamedType("cname", explicit(1, PrincipalNameAsn1())),
        namedtype.NamedType("realm", explicit(2, KerberosStringAsn1())),
        namedtype.OptionalNamedType("sname", explicit(3, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("from", explicit(4, KerberosTimeAsn1())),
        namedtype.NamedType("till", explicit(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("rtime", explicit(6, KerberosTimeAsn1())),
        namedtype.NamedType("nonce", explicit(7, UInt32Asn1())),
        namedtype.NamedType("etype", explicit(8, univ.SequenceOf(componentType=Int32Asn1()))),
        namedtype.OptionalNamedType("addresses", explicit(9, HostAddressesAsn1())),
        namedtype.OptionalNamedType("enc-authorization-data", explicit(10, EncryptedDataAsn1())),
        namedtype.OptionalNamedType("additional-tickets", explicit(11, univ.SequenceOf(componentType=TicketAsn1()))),
    )


def _kdc_req_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(1, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(2, univ.Integer())),
        namedtype.OptionalNamedType("padata", explicit(3, MethodDataAsn1())),
        namedtype.NamedType("req-body", explicit(4, KdcReqBodyAsn1())),
    )


class AsReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(10))
    componentType = _kdc_req_types()


class TgsReqAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(12))
    componentType = _kdc_req_types()


def _kdc_rep_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("pvno", explicit(0, univ.Integer())),
        namedtype.NamedType("msg-type", explicit(1, univ.Integer())),
        namedtype.OptionalNamedType("padata", explicit(2, MethodDataAsn1())),
        namedtype.NamedType("crealm", explicit(3, KerberosStringAsn1())),
        namedtype.NamedType("cname", explicit(4, PrincipalNameAsn1())),
        namedtype.NamedType("ticket", explicit(5, TicketAsn1())),
        namedtype.NamedType("enc-part", explicit(6, EncryptedDataAsn1())),
    )


class AsRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(11))
    componentType = _kdc_rep_types()


class TgsRepAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(13))
    componentType = _kdc_rep_types()


class LastReqEntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("lr-type", explicit(0, Int32Asn1())),
        namedtype.NamedType("lr-value", explicit(1, KerberosTimeAsn1())),
    )


def _enc_kdc_rep_types() -> Any:
    return namedtype.NamedTypes(
        namedtype.NamedType("key", explicit(0, EncryptionKeyAsn1())),
        namedtype.NamedType("last-req", explicit(1, univ.SequenceOf(componentType=LastReqEntryAsn1()))),
        namedtype.NamedType("nonce", explicit(2, UInt32Asn1())),
        namedtype.OptionalNamedType("key-expiration", explicit(3, KerberosTimeAsn1())),
        namedtype.NamedType("flags", explicit(4, KerberosFlagsAsn1())),
        namedtype.NamedType("authtime", explicit(5, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("starttime", explicit(6, KerberosTimeAsn1())),
        namedtype.NamedType("endtime", explicit(7, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("renew-till", explicit(8, KerberosTimeAsn1())),
        namedtype.NamedType("srealm", explicit(9, KerberosStringAsn1())),
        namedtype.NamedType("sname", explicit(10, PrincipalNameAsn1())),
        namedtype.OptionalNamedType("caddr", explicit(11, HostAddressesAsn1())),
        namedtype.OptionalNamedType("encrypted-pa-data", explicit(12, MethodDataAsn1())),  # RFC 6806
    )


class EncAsRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(25))
    componentType = _enc_kdc_rep_types()


class EncTgsRepPartAsn1(univ.Sequence):  # type: ignore[misc]
    tagSet = univ.Sequence.tagSet.tagExplicitly(application(26))
    componentType = _enc_kdc_rep_types()


class PaEncTsEncAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("patimestamp", explicit(0, KerberosTimeAsn1())),
        namedtype.OptionalNamedType("pausec", explicit(1, MicrosecondsAsn1())),
    )


class EtypeInfo2EntryAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("etype", explicit(0, Int32Asn1())),
        namedtype.OptionalNamedType("salt", explicit(1, KerberosStringAsn1())),
        namedtype.OptionalNamedType("s2kparams", explicit(2, univ.OctetString())),
    )


class EtypeInfo2Asn1(univ.SequenceOf):  # type: ignore[misc]
    componentType = EtypeInfo2EntryAsn1()


class PaPacRequestAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("include-pac", explicit(0, univ.Boolean())),
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
    return _padata_from(der_decode(data, MethodDataAsn1(), "METHOD-DATA"))


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
        node["kdc-options"] = flags_node(node["kdc-options"], self.options)
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
        return der_encode(node)


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
        return der_encode(node)


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
        n = der_decode(data, spec(), "KDC-REP")
        check_int(n, "pvno", 5, "KDC-REP")
        pa = optional(n, "padata")
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
        n = der_decode(data, spec(), "EncKDCRepPart")
        st, rt, ke = (optional(n, k) for k in ("starttime", "renew-till", "key-expiration"))
        return cls(EncryptionKey._from(n["key"]), int(n["nonce"]), flags_from_node(n["flags"]),
                   node_time(n["authtime"]), node_time(n["endtime"]), str(n["srealm"]),
                   PrincipalName._from(n["sname"]), None if st is None else node_time(st),
                   None if rt is None else node_time(rt), None if ke is None else node_time(ke))


@dataclass(frozen=True)
class PaEncTsEnc:
    patimestamp: int
    pausec: int | None = None

    def to_der(self) -> bytes:
        node = PaEncTsEncAsn1()
        node["patimestamp"] = encode_time(self.patimestamp)
        if self.pausec is not None:
            node["pausec"] = self.pausec
        return der_encode(node)

    @classmethod
    def from_der(cls, data: bytes) -> PaEncTsEnc:
        n = der_decode(data, PaEncTsEncAsn1(), "PA-ENC-TS-ENC")
        us = optional(n, "pausec")
        return cls(node_time(n["patimestamp"]), None if us is None else int(us))


@dataclass(frozen=True)
class EtypeInfo2Entry:
    etype: int
    salt: str | None = None
    s2kparams: bytes | None = None


def decode_etype_info2(data: bytes) -> tuple[EtypeInfo2Entry, ...]:
    n = der_decode(data, EtypeInfo2Asn1(), "ETYPE-INFO2")
    out = []
    for e in n:
        salt, params = optional(e, "salt"), optional(e, "s2kparams")
        out.append(EtypeInfo2Entry(int(e["etype"]), None if salt is None else str(salt),
                                   None if params is None else bytes(params)))
    return tuple(out)


def pa_pac_request(include: bool = True) -> PaData:
    node = PaPacRequestAsn1()
    node["include-pac"] = include
    return PaData(PA_PAC_REQUEST, der_encode(node))
