"""MS-PAC: the Privilege Attribute Certificate that Active Directory (and MIT, minimally) puts in tickets.

``Pac(data)`` checks the PACTYPE header and buffer table at once (bounds, 8-byte alignment, overlaps, a
bound on the buffer count) and decodes each buffer only when it is first asked for. Every decoder is
bounds-checked and iterative; anything malformed raises :class:`fastkrb.errors.MalformedToken` naming the
buffer and the offset. ``build_pac`` is the inverse, for the test KDC and the benches, and
``verify_server_signature`` is the Python reference for the check the native validator does on the hot
path (MS-PAC 2.8).

References: [MS-PAC] 2.3-2.15, [MS-RPCE] 2.2.6 (type serialization v1), [C706] ch. 14 (NDR),
[MS-DTYP] 2.4.2 (SID).
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any, Final, NamedTuple

from fastkrb.errors import MalformedToken

__all__ = [
    "LOGON_INFO", "CREDENTIALS_INFO", "SERVER_CHECKSUM", "PRIVSVR_CHECKSUM", "CLIENT_INFO",
    "DELEGATION_INFO", "UPN_DNS_INFO", "CLIENT_CLAIMS_INFO", "DEVICE_INFO", "DEVICE_CLAIMS_INFO",
    "TICKET_CHECKSUM", "ATTRIBUTES_INFO", "REQUESTOR", "FULL_CHECKSUM",
    "BUFFER_NAMES", "MAX_BUFFERS", "KERB_NON_KERB_CKSUM_SALT", "SIGNATURE_LENGTHS", "CKSUMTYPE_FOR_ENCTYPE",
    "FILETIME_NEVER", "UPN_FLAG_U", "UPN_FLAG_S",
    "PacBuffer", "Signature", "ClientInfo", "UpnDnsInfo", "GroupMembership", "SidAndAttributes",
    "LogonInfo", "AttributesInfo", "Pac",
    "build_pac", "verify_server_signature", "verify_kdc_signature", "encode_logon_info",
    "filetime_to_datetime", "filetime_to_iso", "unix_to_filetime", "sid_to_str", "sid_from_str",
]

# PAC_INFO_BUFFER.ulType values (MS-PAC 2.4).
LOGON_INFO: Final = 1
CREDENTIALS_INFO: Final = 2
SERVER_CHECKSUM: Final = 6
PRIVSVR_CHECKSUM: Final = 7
CLIENT_INFO: Final = 10
DELEGATION_INFO: Final = 11
UPN_DNS_INFO: Final = 12
CLIENT_CLAIMS_INFO: Final = 13
DEVICE_INFO: Final = 14
DEVICE_CLAIMS_INFO: Final = 15
TICKET_CHECKSUM: Final = 16
ATTRIBUTES_INFO: Final = 17
REQUESTOR: Final = 18
FULL_CHECKSUM: Final = 19

BUFFER_NAMES: Final[dict[int, str]] = {
    LOGON_INFO: "LOGON_INFO", CREDENTIALS_INFO: "CREDENTIALS_INFO", SERVER_CHECKSUM: "SERVER_CHECKSUM",
    PRIVSVR_CHECKSUM: "PRIVSVR_CHECKSUM", CLIENT_INFO: "CLIENT_INFO", DELEGATION_INFO: "DELEGATION_INFO",
    UPN_DNS_INFO: "UPN_DNS_INFO", CLIENT_CLAIMS_INFO: "CLIENT_CLAIMS_INFO", DEVICE_INFO: "DEVICE_INFO",
    DEVICE_CLAIMS_INFO: "DEVICE_CLAIMS_INFO", TICKET_CHECKSUM: "TICKET_CHECKSUM",
    ATTRIBUTES_INFO: "ATTRIBUTES_INFO", REQUESTOR: "REQUESTOR", FULL_CHECKSUM: "FULL_CHECKSUM",
}
# A real AD PAC has about a dozen buffers; the bound keeps a hostile header from costing more than that.
MAX_BUFFERS: Final = 256
# Every PAC signature is keyed with this usage (MS-PAC 2.8).
KERB_NON_KERB_CKSUM_SALT: Final = 17
# Signature lengths by checksum type; a type not listed here cannot be zeroed, so the PAC is rejected.
SIGNATURE_LENGTHS: Final[dict[int, int]] = {15: 12, 16: 12, 19: 16, 20: 24, -138: 16}
# The checksum type a key of each enctype signs with (RFC 3961 mandatory checksum; RFC 4757 for rc4).
CKSUMTYPE_FOR_ENCTYPE: Final[dict[int, int]] = {17: 15, 18: 16, 19: 19, 20: 20, 23: -138}
FILETIME_NEVER: Final = 0x7FFFFFFFFFFFFFFF
UPN_FLAG_U: Final = 0x1  # the account has no userPrincipalName; the UPN was constructed
UPN_FLAG_S: Final = 0x2  # the structure carries the SAM account name and SID (MS-PAC 2.10.1)
_SINGLETONS: Final = frozenset(BUFFER_NAMES)  # a known buffer type twice is an ambiguity, never valid
_FILETIME_UNIX_EPOCH: Final = 116444736000000000  # 1970-01-01 in 100 ns ticks since 1601-01-01
_EPOCH_1601: Final = datetime(1601, 1, 1, tzinfo=timezone.utc)
_MAX_SUBAUTH: Final = 15  # MS-DTYP 2.4.2.2


# ---------------------------------------------------------------------------------------------- helpers

def _malformed(where: str, offset: int, what: str) -> MalformedToken:
    return MalformedToken(f"PAC {where} at offset {offset}: {what}",
                          details={"pac_part": where, "offset": offset})


def _buffer_label(ul_type: int) -> str:
    return f"{BUFFER_NAMES.get(ul_type, 'buffer')} (type {ul_type})"


def filetime_to_datetime(ft: int) -> datetime | None:
    """A FILETIME as an aware UTC datetime (microseconds); None for "never" and unrepresentable values."""
    if ft == FILETIME_NEVER or ft < 0:
        return None
    try:
        return _EPOCH_1601 + timedelta(microseconds=ft // 10)
    except OverflowError:
        return None


def filetime_to_iso(ft: int) -> str | None:
    """A FILETIME as ISO 8601 UTC with its full 100 ns precision (trailing zeros dropped); None for never."""
    dt = filetime_to_datetime(ft)
    if dt is None:
        return None
    frac = f"{ft % 10_000_000:07d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def unix_to_filetime(t: float | datetime) -> int:
    """Unix seconds (or an aware datetime) as a FILETIME."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("datetime must be timezone-aware")
        delta = t - _EPOCH_1601
        return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    return _FILETIME_UNIX_EPOCH + round(t * 10_000_000)


def sid_to_str(raw: bytes) -> str:
    """A binary SID (MS-DTYP 2.4.2.2) as "S-1-5-21-..."; ValueError when it is not exactly one SID."""
    if len(raw) < 8:
        raise ValueError("SID shorter than 8 bytes")
    rev, count = raw[0], raw[1]
    if rev != 1:
        raise ValueError(f"SID revision {rev} is not 1")
    if count > _MAX_SUBAUTH:
        raise ValueError(f"SID has {count} sub-authorities (at most {_MAX_SUBAUTH})")
    if len(raw) != 8 + 4 * count:
        raise ValueError(f"SID of {count} sub-authorities is {len(raw)} bytes, not {8 + 4 * count}")
    auth = int.from_bytes(raw[2:8], "big")
    head = f"S-1-{auth}" if auth < 2**32 else f"S-1-0x{auth:012X}"
    subs = struct.unpack_from(f"<{count}I", raw, 8)
    return head + "".join(f"-{s}" for s in subs)


def sid_from_str(sid: str) -> bytes:
    """"S-1-5-21-..." as a binary SID."""
    parts = sid.split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
        raise ValueError(f"not a SID string: {sid!r}")
    auth = int(parts[2], 16) if parts[2].lower().startswith("0x") else int(parts[2])
    subs = [int(p) for p in parts[3:]]
    if len(subs) > _MAX_SUBAUTH or not 0 <= auth < 2**48 or any(not 0 <= s < 2**32 for s in subs):
        raise ValueError(f"SID out of range: {sid!r}")
    return bytes([1, len(subs)]) + auth.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


def _utf16(raw: bytes, where: str, offset: int, field: str) -> str:
    if len(raw) % 2:
        raise _malformed(where, offset, f"{field}: odd UTF-16 length {len(raw)}")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise _malformed(where, offset, f"{field}: invalid UTF-16 ({exc.reason})") from None


# ----------------------------------------------------------------------------------------- typed views

class PacBuffer(NamedTuple):
    """One PAC_INFO_BUFFER entry: where a buffer lies in the PAC."""

    type: int
    size: int
    offset: int

    @property
    def name(self) -> str:
        return BUFFER_NAMES.get(self.type, f"UNKNOWN_{self.type}")


@dataclass(frozen=True, slots=True)
class Signature:
    """PAC_SIGNATURE_DATA (MS-PAC 2.8): a checksum type, the MAC, and the RODC id when a RODC signed."""

    type: int
    signature: bytes
    rodc_identifier: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "signature": self.signature.hex(), "rodc_identifier": self.rodc_identifier}


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """PAC_CLIENT_INFO (MS-PAC 2.7): the ticket's authtime and the client name without realm."""

    client_id: int  # FILETIME
    name: str

    @property
    def client_time(self) -> datetime | None:
        return filetime_to_datetime(self.client_id)

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": filetime_to_iso(self.client_id), "name": self.name}


@dataclass(frozen=True, slots=True)
class UpnDnsInfo:
    """UPN_DNS_INFO (MS-PAC 2.10), with the SAM name and SID of the S-flag extension when present."""

    upn: str
    dns_domain: str
    flags: int
    sam_name: str | None = None
    sid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"upn": self.upn, "dns_domain": self.dns_domain, "flags": self.flags,
                "sam_name": self.sam_name, "sid": self.sid}


class GroupMembership(NamedTuple):
    """GROUP_MEMBERSHIP: a RID in the logon (or resource) domain and its SE_GROUP_* attributes."""

    relative_id: int
    attributes: int


class SidAndAttributes(NamedTuple):
    """KERB_SID_AND_ATTRIBUTES with the SID as a string."""

    sid: str
    attributes: int


@dataclass(frozen=True, slots=True)
class LogonInfo:
    """KERB_VALIDATION_INFO (MS-PAC 2.5). Times are raw FILETIMEs (see filetime_to_datetime)."""

    logon_time: int
    logoff_time: int
    kickoff_time: int
    password_last_set: int
    password_can_change: int
    password_must_change: int
    effective_name: str
    full_name: str
    logon_script: str
    profile_path: str
    home_directory: str
    home_directory_drive: str
    logon_count: int
    bad_password_count: int
    user_id: int
    primary_group_id: int
    group_ids: tuple[GroupMembership, ...]
    user_flags: int
    user_session_key: bytes
    logon_server: str
    logon_domain_name: str
    logon_domain_id: str | None
    user_account_control: int
    sub_auth_status: int
    last_successful_ilogon: int
    last_failed_ilogon: int
    failed_ilogon_count: int
    extra_sids: tuple[SidAndAttributes, ...]
    resource_group_domain_sid: str | None
    resource_group_ids: tuple[GroupMembership, ...]

    def _in_domain(self, rid: int) -> str | None:
        return None if self.logon_domain_id is None else f"{self.logon_domain_id}-{rid}"

    @property
    def user_sid(self) -> str | None:
        return self._in_domain(self.user_id)

    @property
    def primary_group_sid(self) -> str | None:
        return self._in_domain(self.primary_group_id)

    @property
    def group_sids(self) -> list[str]:
        """GroupIds as SIDs in the logon domain (empty when the domain SID is absent)."""
        dom = self.logon_domain_id
        return [] if dom is None else [f"{dom}-{g.relative_id}" for g in self.group_ids]

    @property
    def resource_group_sids(self) -> list[str]:
        dom = self.resource_group_domain_sid
        return [] if dom is None else [f"{dom}-{g.relative_id}" for g in self.resource_group_ids]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; times as ISO 8601 (None for never); the user session key is left out."""
        return {
            "logon_time": filetime_to_iso(self.logon_time),
            "logoff_time": filetime_to_iso(self.logoff_time),
            "kickoff_time": filetime_to_iso(self.kickoff_time),
            "password_last_set": filetime_to_iso(self.password_last_set),
            "password_can_change": filetime_to_iso(self.password_can_change),
            "password_must_change": filetime_to_iso(self.password_must_change),
            "effective_name": self.effective_name,
            "full_name": self.full_name,
            "logon_script": self.logon_script,
            "profile_path": self.profile_path,
            "home_directory": self.home_directory,
            "home_directory_drive": self.home_directory_drive,
            "logon_count": self.logon_count,
            "bad_password_count": self.bad_password_count,
            "user_id": self.user_id,
            "primary_group_id": self.primary_group_id,
            "group_ids": [{"relative_id": g.relative_id, "attributes": g.attributes} for g in self.group_ids],
            "user_flags": self.user_flags,
            "logon_server": self.logon_server,
            "logon_domain_name": self.logon_domain_name,
            "logon_domain_id": self.logon_domain_id,
            "user_account_control": self.user_account_control,
            "sub_auth_status": self.sub_auth_status,
            "last_successful_ilogon": filetime_to_iso(self.last_successful_ilogon),
            "last_failed_ilogon": filetime_to_iso(self.last_failed_ilogon),
            "failed_ilogon_count": self.failed_ilogon_count,
            "extra_sids": [{"sid": s.sid, "attributes": s.attributes} for s in self.extra_sids],
            "resource_group_domain_sid": self.resource_group_domain_sid,
            "resource_group_ids": [{"relative_id": g.relative_id, "attributes": g.attributes}
                                   for g in self.resource_group_ids],
            "user_sid": self.user_sid,
        }


@dataclass(frozen=True, slots=True)
class AttributesInfo:
    """PAC_ATTRIBUTES_INFO (MS-PAC 2.14): bit 0 PAC was requested, bit 1 given implicitly."""

    flags_length: int  # in bits
    flags: tuple[int, ...]

    @property
    def pac_was_requested(self) -> bool:
        return bool(self.flags and self.flags[0] & 1)

    @property
    def pac_was_given_implicitly(self) -> bool:
        return bool(self.flags and self.flags[0] & 2)

    def to_dict(self) -> dict[str, Any]:
        return {"flags_length": self.flags_length, "flags": list(self.flags)}


# ------------------------------------------------------------------------------------------ NDR reader

class _Ndr:
    """Bounds-checked little-endian NDR reader over one PAC buffer; offsets reported PAC-relative."""

    __slots__ = ("base", "data", "pos", "where")

    def __init__(self, data: bytes, base: int, where: str) -> None:
        self.data = data
        self.base = base
        self.pos = 0
        self.where = where

    def fail(self, what: str) -> MalformedToken:
        return _malformed(self.where, self.base + self.pos, what)

    def take(self, n: int, what: str) -> int:
        """Reserve n bytes and return where they start."""
        p = self.pos
        if n < 0 or p + n > len(self.data):
            raise self.fail(f"truncated reading {what} ({n} bytes needed, {len(self.data) - p} left)")
        self.pos = p + n
        return p

    def align4(self) -> None:
        self.pos = (self.pos + 3) & ~3

    def u32(self, what: str) -> int:
        self.align4()
        p = self.take(4, what)
        v: int = struct.unpack_from("<I", self.data, p)[0]
        return v

    def string(self, hdr: tuple[int, int, int], what: str) -> str:
        """The deferred body of an RPC_UNICODE_STRING: conformant varying array of WCHAR."""
        length, maxlen, ptr = hdr
        if ptr == 0:
            return ""
        self.align4()
        p = self.take(12, what)
        max_count, offset, actual = struct.unpack_from("<III", self.data, p)
        if offset != 0 or actual > max_count or actual * 2 != length or max_count * 2 != maxlen:
            raise _malformed(self.where, self.base + p,
                             f"{what}: NDR counts (max {max_count}, offset {offset}, actual {actual}) do not match "
                             f"Length {length} / MaximumLength {maxlen}")
        q = self.take(actual * 2, what)
        return _utf16(self.data[q:q + actual * 2], self.where, self.base + q, what)

    def groups(self, count: int, ptr: int, what: str) -> tuple[GroupMembership, ...]:
        """A conformant array of GROUP_MEMBERSHIP of the announced count."""
        if ptr == 0:
            if count:
                raise self.fail(f"{what}: count {count} but a null pointer")
            return ()
        n = self.u32(f"{what} count")
        if n != count:
            raise self.fail(f"{what}: array of {n} where the count says {count}")
        p = self.take(8 * n, what)
        return tuple(map(GroupMembership._make, struct.iter_unpack("<II", self.data[p:p + 8 * n])))

    def sid(self, what: str) -> str:
        """A conformant RPC_SID: the sub-authority count first, then the SID itself."""
        n = self.u32(f"{what} count")
        if n > _MAX_SUBAUTH:
            raise self.fail(f"{what}: {n} sub-authorities (at most {_MAX_SUBAUTH})")
        p = self.take(8 + 4 * n, what)
        raw = self.data[p:p + 8 + 4 * n]
        if raw[1] != n:
            raise _malformed(self.where, self.base + p, f"{what}: SubAuthorityCount {raw[1]} but NDR count {n}")
        try:
            return sid_to_str(raw)
        except ValueError as exc:
            raise _malformed(self.where, self.base + p, f"{what}: {exc}") from None


# Fixed part of KERB_VALIDATION_INFO after the top-level referent: 216 bytes, all 4-aligned.
_KVI = struct.Struct("<6Q" + "HHI" * 6 + "HH" + "4I" + "I" + "16s" + "HHI" * 2 + "I" + "2I" + "2I" + "2Q"
                     + "2I" + "5I")
_TS_HEADER = struct.Struct("<BBHIII")  # MS-RPCE 2.2.6.1 common header + 2.2.6.2 private header


def _decode_logon_info(data: bytes, base: int) -> LogonInfo:
    where = _buffer_label(LOGON_INFO)
    r = _Ndr(data, base, where)
    p = r.take(_TS_HEADER.size, "type serialization header")
    version, endian, hdrlen, _filler, objlen, _filler2 = _TS_HEADER.unpack_from(data, p)
    if version != 1 or endian != 0x10 or hdrlen != 8:
        raise _malformed(where, base, f"type serialization header version {version}, endianness 0x{endian:02x}, "
                                      f"length {hdrlen} (want 1, 0x10 little-endian, 8)")
    end = _TS_HEADER.size + objlen
    if objlen % 8 or end > len(data):
        raise _malformed(where, base + 8, f"ObjectBufferLength {objlen} not a multiple of 8 or past the "
                                          f"buffer's {len(data)} bytes")
    r.data = data[:end]  # nothing of the object may lie beyond its stated length
    if r.u32("top-level pointer") == 0:
        raise _malformed(where, base + 16, "null KERB_VALIDATION_INFO pointer")
    p = r.take(_KVI.size, "KERB_VALIDATION_INFO")
    f = _KVI.unpack_from(data, p)
    times = f[0:6]
    names: list[tuple[int, int, int]] = [(f[6 + 3 * i], f[7 + 3 * i], f[8 + 3 * i]) for i in range(6)]
    (logon_count, bad_pw, user_id, pgid, group_count, group_ptr, user_flags, session_key) = f[24:32]
    server_hdr: tuple[int, int, int] = (f[32], f[33], f[34])
    domain_hdr: tuple[int, int, int] = (f[35], f[36], f[37])
    domain_sid_ptr = f[38]
    uac, sub_auth = f[41], f[42]
    last_ok, last_fail, failed_count = f[43], f[44], f[45]
    sid_count, extra_ptr, res_dom_ptr, res_count, res_ptr = f[47:52]

    for length, maxlen, ptr in [*names, server_hdr, domain_hdr]:
        if length % 2 or length > maxlen or (ptr == 0 and length):
            raise r.fail(f"RPC_UNICODE_STRING Length {length}, MaximumLength {maxlen}, pointer {ptr:#x} is "
                         "inconsistent")
    labels = ("EffectiveName", "FullName", "LogonScript", "ProfilePath", "HomeDirectory", "HomeDirectoryDrive")
    eff, full, script, profile, home, drive = (r.string(h, n) for h, n in zip(names, labels, strict=True))
    groups = r.groups(group_count, group_ptr, "GroupIds")
    logon_server = r.string(server_hdr, "LogonServer")
    logon_domain = r.string(domain_hdr, "LogonDomainName")
    domain_sid = r.sid("LogonDomainId") if domain_sid_ptr else None

    extra: list[SidAndAttributes] = []
    if extra_ptr == 0:
        if sid_count:
            raise r.fail(f"ExtraSids: SidCount {sid_count} but a null pointer")
    else:
        n = r.u32("ExtraSids count")
        if n != sid_count:
            raise r.fail(f"ExtraSids: array of {n} where SidCount says {sid_count}")
        q = r.take(8 * n, "ExtraSids")
        flat = struct.unpack_from(f"<{2 * n}I", data, q)
        for i in range(n):  # the SIDs are deferred after the whole array, in array order
            if flat[2 * i] == 0:
                raise r.fail(f"ExtraSids[{i}]: null SID pointer")
            extra.append(SidAndAttributes(r.sid(f"ExtraSids[{i}]"), flat[2 * i + 1]))
    res_dom = r.sid("ResourceGroupDomainSid") if res_dom_ptr else None
    res_groups = r.groups(res_count, res_ptr, "ResourceGroupIds")
    if end - r.pos >= 8:
        raise r.fail(f"{end - r.pos} bytes left inside the serialized object")
    return LogonInfo(
        times[0], times[1], times[2], times[3], times[4], times[5], eff, full, script, profile, home, drive,
        logon_count, bad_pw, user_id, pgid, groups, user_flags, session_key, logon_server, logon_domain,
        domain_sid, uac, sub_auth, last_ok, last_fail, failed_count, tuple(extra), res_dom, res_groups,
    )


# ----------------------------------------------------------------------------- small buffer decoders

def _decode_signature(data: bytes, base: int, ul_type: int) -> Signature:
    where = _buffer_label(ul_type)
    if len(data) < 4:
        raise _malformed(where, base, f"{len(data)} bytes, too short for a SignatureType")
    ctype = struct.unpack_from("<i", data)[0]
    n = SIGNATURE_LENGTHS.get(ctype)
    if n is None:
        raise _malformed(where, base, f"unknown SignatureType {ctype}")
    if len(data) not in (4 + n, 6 + n):
        raise _malformed(where, base, f"{len(data)} bytes for a SignatureType {ctype} signature of {n} "
                                      "(+2 for a RODC identifier)")
    rodc = struct.unpack_from("<H", data, 4 + n)[0] if len(data) == 6 + n else None
    return Signature(ctype, data[4:4 + n], rodc)


def _decode_client_info(data: bytes, base: int) -> ClientInfo:
    where = _buffer_label(CLIENT_INFO)
    if len(data) < 10:
        raise _malformed(where, base, f"{len(data)} bytes, too short (10 at least)")
    client_id, n = struct.unpack_from("<QH", data)
    if 10 + n > len(data):
        raise _malformed(where, base + 8, f"NameLength {n} runs past the buffer's {len(data)} bytes")
    return ClientInfo(client_id, _utf16(data[10:10 + n], where, base + 10, "Name"))


def _decode_upn_dns_info(data: bytes, base: int) -> UpnDnsInfo:
    where = _buffer_label(UPN_DNS_INFO)
    if len(data) < 12:
        raise _malformed(where, base, f"{len(data)} bytes, too short (12 at least)")
    upn_len, upn_off, dns_len, dns_off, flags = struct.unpack_from("<HHHHI", data)

    def field(length: int, off: int, name: str, at: int) -> bytes:
        if off + length > len(data):
            raise _malformed(where, base + at, f"{name} (offset {off}, length {length}) runs past the buffer's "
                                               f"{len(data)} bytes")
        return data[off:off + length]

    upn = _utf16(field(upn_len, upn_off, "Upn", 0), where, base + upn_off, "Upn")
    dns = _utf16(field(dns_len, dns_off, "DnsDomainName", 4), where, base + dns_off, "DnsDomainName")
    sam = sid = None
    if flags & UPN_FLAG_S:
        if len(data) < 20:
            raise _malformed(where, base + 12, "S flag set but no SamName/Sid fields")
        sam_len, sam_off, sid_len, sid_off = struct.unpack_from("<HHHH", data, 12)
        sam = _utf16(field(sam_len, sam_off, "SamName", 12), where, base + sam_off, "SamName")
        try:
            sid = sid_to_str(field(sid_len, sid_off, "Sid", 16))
        except ValueError as exc:
            raise _malformed(where, base + sid_off, f"Sid: {exc}") from None
    return UpnDnsInfo(upn, dns, flags, sam, sid)


def _decode_attributes(data: bytes, base: int) -> AttributesInfo:
    where = _buffer_label(ATTRIBUTES_INFO)
    if len(data) < 4:
        raise _malformed(where, base, "too short for FlagsLength")
    bits = struct.unpack_from("<I", data)[0]
    words = (bits + 31) // 32
    if len(data) != 4 + 4 * words:
        raise _malformed(where, base, f"FlagsLength {bits} bits needs {4 + 4 * words} bytes, buffer has {len(data)}")
    return AttributesInfo(bits, struct.unpack_from(f"<{words}I", data, 4))


def _decode_requestor(data: bytes, base: int) -> str:
    try:
        return sid_to_str(data)
    except ValueError as exc:
        raise _malformed(_buffer_label(REQUESTOR), base, f"Sid: {exc}") from None


# ----------------------------------------------------------------------------------------------- Pac

_MISSING: Final = object()


class Pac:
    """A PACTYPE (MS-PAC 2.3): header and buffer table checked now, buffers decoded when first read."""

    __slots__ = ("_by_type", "_cache", "buffers", "data", "version")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self._cache: dict[int, Any] = {}
        n = len(self.data)
        if n < 8:
            raise _malformed("header", 0, f"{n} bytes, too short for cBuffers and Version")
        count, version = struct.unpack_from("<II", self.data)
        if version != 0:
            raise _malformed("header", 4, f"Version {version} (must be 0)")
        if count < 1 or count > MAX_BUFFERS:
            raise _malformed("header", 0, f"cBuffers {count} (1..{MAX_BUFFERS} accepted)")
        table_end = 8 + 16 * count
        if table_end > n:
            raise _malformed("header", 0, f"cBuffers {count} needs a {table_end}-byte table, PAC has {n} bytes")
        self.version: int = version
        entries = list(map(PacBuffer._make, struct.iter_unpack("<IIQ", self.data[8:table_end])))
        by_type: dict[int, PacBuffer] = {}
        for i, b in enumerate(entries):
            t, size, off = b
            if off & 7 or off < table_end or off + size > n or (t in by_type and t in _SINGLETONS):
                label = f"buffer table entry {i} ({_buffer_label(t)})"
                if off & 7:
                    raise _malformed(label, 16 + 16 * i, f"buffer offset {off} is not 8-byte aligned")
                if t in by_type:
                    raise _malformed(label, 8 + 16 * i, f"second buffer of type {t}")
                raise _malformed(label, 16 + 16 * i, f"buffer [{off}, {off + size}) lies outside the data "
                                                     f"area [{table_end}, {n})")
            if t not in by_type:
                by_type[t] = b
        spans = sorted((b.offset, b.offset + b.size, i) for i, b in enumerate(entries) if b.size)
        for (_s1, e1, i1), (s2, _e2, i2) in pairwise(spans):
            if s2 < e1:
                raise _malformed(f"buffer table entry {i2}", 8 + 16 * i2 + 8,
                                 f"buffer at {s2} overlaps entry {i1}'s buffer ending at {e1}")
        self.buffers: tuple[PacBuffer, ...] = tuple(entries)
        self._by_type = by_type

    def __repr__(self) -> str:
        return f"<Pac {len(self.data)} bytes: {', '.join(b.name for b in self.buffers)}>"

    def raw(self, ul_type: int) -> bytes | None:
        """The bytes of the (first) buffer of a type, or None."""
        b = self._by_type.get(ul_type)
        return None if b is None else self.data[b.offset:b.offset + b.size]

    def _view(self, ul_type: int) -> Any:
        hit = self._cache.get(ul_type, _MISSING)
        if hit is not _MISSING:
            return hit
        b = self._by_type.get(ul_type)
        value: Any = None
        if b is not None:
            raw = self.data[b.offset:b.offset + b.size]
            if ul_type == LOGON_INFO:
                value = _decode_logon_info(raw, b.offset)
            elif ul_type == CLIENT_INFO:
                value = _decode_client_info(raw, b.offset)
            elif ul_type == UPN_DNS_INFO:
                value = _decode_upn_dns_info(raw, b.offset)
            elif ul_type in (SERVER_CHECKSUM, PRIVSVR_CHECKSUM, TICKET_CHECKSUM, FULL_CHECKSUM):
                value = _decode_signature(raw, b.offset, ul_type)
            elif ul_type == ATTRIBUTES_INFO:
                value = _decode_attributes(raw, b.offset)
            elif ul_type == REQUESTOR:
                value = _decode_requestor(raw, b.offset)
            else:
                value = raw
        self._cache[ul_type] = value
        return value

    @property
    def logon_info(self) -> LogonInfo | None:
        v: LogonInfo | None = self._view(LOGON_INFO)
        return v

    @property
    def client_info(self) -> ClientInfo | None:
        v: ClientInfo | None = self._view(CLIENT_INFO)
        return v

    @property
    def upn_dns_info(self) -> UpnDnsInfo | None:
        v: UpnDnsInfo | None = self._view(UPN_DNS_INFO)
        return v

    @property
    def server_checksum(self) -> Signature | None:
        v: Signature | None = self._view(SERVER_CHECKSUM)
        return v

    @property
    def kdc_checksum(self) -> Signature | None:
        v: Signature | None = self._view(PRIVSVR_CHECKSUM)
        return v

    @property
    def ticket_checksum(self) -> Signature | None:
        v: Signature | None = self._view(TICKET_CHECKSUM)
        return v

    @property
    def full_checksum(self) -> Signature | None:
        v: Signature | None = self._view(FULL_CHECKSUM)
        return v

    @property
    def attributes_info(self) -> AttributesInfo | None:
        v: AttributesInfo | None = self._view(ATTRIBUTES_INFO)
        return v

    @property
    def requestor_sid(self) -> str | None:
        v: str | None = self._view(REQUESTOR)
        return v

    @property
    def client_claims(self) -> bytes | None:
        """CLIENT_CLAIMS_INFO, undecoded (MS-ADTS claims blob)."""
        return self.raw(CLIENT_CLAIMS_INFO)

    @property
    def device_info(self) -> bytes | None:
        return self.raw(DEVICE_INFO)

    @property
    def device_claims(self) -> bytes | None:
        return self.raw(DEVICE_CLAIMS_INFO)

    def zeroed_for_server_signature(self) -> bytes:
        """The PAC with the Signature fields of the server and KDC signatures zeroed (MS-PAC 2.8.1).

        The SignatureType and RODCIdentifier fields stay (MIT zeroed the RODC id too until krb5 PR #1208 and
        then failed RODC-issued PACs); so do the ticket and full-PAC signatures, which the KDC computes before
        the server signature.
        """
        out = bytearray(self.data)
        for t in (SERVER_CHECKSUM, PRIVSVR_CHECKSUM):
            b = self._by_type.get(t)
            if b is not None:
                sig: Signature = self._view(t)
                out[b.offset + 4:b.offset + 4 + len(sig.signature)] = bytes(len(sig.signature))
        return bytes(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view of every buffer (no key bytes); raw buffers as hex."""
        views: dict[str, Any] = {}
        for b in self.buffers:
            v = self._view(b.type)
            views[b.name.lower()] = v.hex() if isinstance(v, bytes) else v.to_dict() if hasattr(v, "to_dict") else v
        return {
            "version": self.version,
            "length": len(self.data),
            "buffers": [{"type": b.type, "name": b.name, "size": b.size, "offset": b.offset} for b in self.buffers],
            **views,
        }


# -------------------------------------------------------------------------------------------- encoder

class _NdrWriter:
    __slots__ = ("buf", "ref")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ref = 0x00020000

    def align4(self) -> None:
        self.buf += bytes(-len(self.buf) % 4)

    def ptr(self, present: bool = True) -> int:
        if not present:
            return 0
        r = self.ref
        self.ref += 4
        return r

    def u32(self, v: int) -> None:
        self.align4()
        self.buf += struct.pack("<I", v)

    def string(self, s: str) -> None:
        raw = s.encode("utf-16-le")
        self.align4()
        self.buf += struct.pack("<III", len(raw) // 2, 0, len(raw) // 2) + raw

    def groups(self, gs: tuple[GroupMembership, ...]) -> None:
        self.u32(len(gs))
        for g in gs:
            self.buf += struct.pack("<II", g.relative_id, g.attributes)

    def sid(self, sid: str) -> None:
        raw = sid_from_str(sid)
        self.u32(raw[1])
        self.buf += raw


def encode_logon_info(info: LogonInfo) -> bytes:
    """KERB_VALIDATION_INFO as a type-serialized (MS-RPCE 2.2.6) NDR stream; inverse of the decoder."""
    w = _NdrWriter()
    w.u32(w.ptr())  # top-level unique pointer
    strings = [info.effective_name, info.full_name, info.logon_script, info.profile_path, info.home_directory,
               info.home_directory_drive]

    def hdr(s: str) -> tuple[int, int, int]:
        n = len(s.encode("utf-16-le"))
        return n, n, w.ptr()

    hdrs = [hdr(s) for s in strings]
    group_ptr = w.ptr()
    server_hdr, domain_hdr = hdr(info.logon_server), hdr(info.logon_domain_name)
    dom_ptr = w.ptr(info.logon_domain_id is not None)
    extra_ptr = w.ptr(bool(info.extra_sids))
    res_dom_ptr = w.ptr(info.resource_group_domain_sid is not None)
    res_ptr = w.ptr(bool(info.resource_group_ids))
    w.buf += _KVI.pack(
        info.logon_time, info.logoff_time, info.kickoff_time, info.password_last_set, info.password_can_change,
        info.password_must_change, *[x for h in hdrs for x in h], info.logon_count, info.bad_password_count,
        info.user_id, info.primary_group_id, len(info.group_ids), group_ptr, info.user_flags,
        info.user_session_key, *server_hdr, *domain_hdr, dom_ptr, 0, 0, info.user_account_control,
        info.sub_auth_status, info.last_successful_ilogon, info.last_failed_ilogon, info.failed_ilogon_count, 0,
        len(info.extra_sids), extra_ptr, res_dom_ptr, len(info.resource_group_ids), res_ptr,
    )
    for s in strings:
        w.string(s)
    w.groups(info.group_ids)
    w.string(info.logon_server)
    w.string(info.logon_domain_name)
    if info.logon_domain_id is not None:
        w.sid(info.logon_domain_id)
    if info.extra_sids:
        w.u32(len(info.extra_sids))
        for e in info.extra_sids:
            w.buf += struct.pack("<II", w.ptr(), e.attributes)
        for e in info.extra_sids:
            w.sid(e.sid)
    if info.resource_group_domain_sid is not None:
        w.sid(info.resource_group_domain_sid)
    if info.resource_group_ids:
        w.groups(info.resource_group_ids)
    body = bytes(w.buf) + bytes(-len(w.buf) % 8)
    return _TS_HEADER.pack(1, 0x10, 8, 0xCCCCCCCC, len(body), 0) + body


_LOGON_KEYS: Final = frozenset({
    "user_name", "user_rid", "domain_sid", "group_rids", "extra_sids", "full_name", "logon_server",
    "logon_domain_name", "primary_group_rid", "group_attributes", "extra_sid_attributes", "user_flags",
    "user_account_control", "logon_count", "resource_domain_sid", "resource_group_rids", "logon_time",
})


def _logon_info_from(spec: Mapping[str, Any], client_name: str, auth_ft: int, dns_domain: str | None) -> LogonInfo:
    unknown = set(spec) - _LOGON_KEYS
    if unknown:
        raise ValueError(f"unknown logon_info keys: {sorted(unknown)}")
    gattr = int(spec.get("group_attributes", 7))  # SE_GROUP_MANDATORY | ENABLED_BY_DEFAULT | ENABLED
    sattr = int(spec.get("extra_sid_attributes", 0x20000007))  # ... | SE_GROUP_RESOURCE as AD sets it
    extra = tuple(SidAndAttributes(s, sattr) for s in spec.get("extra_sids", ()))
    primary = int(spec.get("primary_group_rid", 513))
    rids: Iterable[int] = spec.get("group_rids", (primary,))
    res_dom = spec.get("resource_domain_sid")
    res = tuple(GroupMembership(int(r), gattr) for r in spec.get("resource_group_rids", ()))
    domain = dns_domain.split(".")[0].upper() if dns_domain else "DOMAIN"
    return LogonInfo(
        logon_time=int(spec.get("logon_time", auth_ft)), logoff_time=FILETIME_NEVER, kickoff_time=FILETIME_NEVER,
        password_last_set=auth_ft, password_can_change=auth_ft, password_must_change=FILETIME_NEVER,
        effective_name=str(spec.get("user_name", client_name)), full_name=str(spec.get("full_name", "")),
        logon_script="", profile_path="", home_directory="", home_directory_drive="",
        logon_count=int(spec.get("logon_count", 1)), bad_password_count=0,
        user_id=int(spec.get("user_rid", 1000)), primary_group_id=primary,
        group_ids=tuple(GroupMembership(int(r), gattr) for r in rids),
        user_flags=int(spec.get("user_flags", 0x20 if extra else 0)), user_session_key=bytes(16),
        logon_server=str(spec.get("logon_server", "DC")),
        logon_domain_name=str(spec.get("logon_domain_name", domain)),
        logon_domain_id=str(spec.get("domain_sid", "S-1-5-21-1-2-3")),
        user_account_control=int(spec.get("user_account_control", 0x10)), sub_auth_status=0,
        last_successful_ilogon=0, last_failed_ilogon=0, failed_ilogon_count=0, extra_sids=extra,
        resource_group_domain_sid=None if res_dom is None else str(res_dom),
        resource_group_ids=res if res_dom is not None else (),
    )


def _upn_dns_info(upn: str, dns: str, flags: int, sam: str | None, sid: str | None) -> bytes:
    head = 20 if flags & UPN_FLAG_S else 12
    parts = [upn.encode("utf-16-le"), dns.encode("utf-16-le")]
    if flags & UPN_FLAG_S:
        parts += [(sam or "").encode("utf-16-le"), sid_from_str(sid) if sid else b""]
    out = bytearray(head + (-head % 8))
    locs: list[tuple[int, int]] = []
    for p in parts:
        locs.append((len(p), len(out)))
        out += p + bytes(-len(p) % 8)
    struct.pack_into("<HHHHI", out, 0, *locs[0], *locs[1], flags)
    if flags & UPN_FLAG_S:
        struct.pack_into("<HHHH", out, 12, *locs[2], *locs[3])
    return bytes(out)


def _checksum(cksumtype: int, key: bytes, usage: int, data: bytes) -> bytes:
    """Keyed checksum through fastkrb.krb.crypto (imported here: decoding a PAC needs no native code)."""
    from fastkrb.krb import crypto

    out: bytes = crypto.checksum(cksumtype, key, usage, data)
    return out


def _cksumtype_for(enctype: int) -> int:
    try:
        return CKSUMTYPE_FOR_ENCTYPE[enctype]
    except KeyError:
        raise ValueError(f"no PAC checksum type for enctype {enctype}") from None


def build_pac(*, client_name: str, auth_time: float | datetime, server_key: tuple[int, bytes],
              kdc_key: tuple[int, bytes] | None = None, logon_info: Mapping[str, Any] | None = None,
              upn: str | None = None, dns_domain: str | None = None, minimal: bool = False,
              requestor_sid: str | None = None, attributes_flags: int | None = None,
              upn_implicit: bool = False) -> bytes:
    """A signed PAC, for test KDCs and benches.

    ``client_name`` is the client principal without its realm (what CLIENT_INFO carries), ``auth_time`` the
    ticket's authtime (unix seconds or aware datetime). ``minimal`` makes an MIT-style PAC: CLIENT_INFO and
    the signatures (+ UPN_DNS_INFO when ``upn`` is given). Otherwise a LOGON_INFO is added from
    ``logon_info`` (keys: user_name, user_rid, domain_sid, group_rids, extra_sids, and optionally full_name,
    logon_server, logon_domain_name, primary_group_rid, ...); each group adds 8 bytes, each extra SID about
    36. With a LOGON_INFO and a UPN, UPN_DNS_INFO carries the S-flag SAM name and SID as current AD does.
    The server signature is keyed with ``server_key`` over the PAC with both signature fields zero, the KDC
    signature with ``kdc_key`` (default: the server key) over the server signature (MS-PAC 2.8).
    ``upn_implicit`` sets UPN_DNS_INFO's U flag, as AD does for an account without a userPrincipalName.
    """
    if minimal and logon_info is not None:
        raise ValueError("a minimal PAC has no LOGON_INFO")
    auth_ft = unix_to_filetime(auth_time)
    stype = _cksumtype_for(server_key[0])
    kenc, kkey = kdc_key if kdc_key is not None else server_key
    ktype = _cksumtype_for(kenc)
    bufs: list[tuple[int, bytes]] = []
    info: LogonInfo | None = None
    if not minimal:
        info = _logon_info_from(logon_info or {}, client_name, auth_ft, dns_domain)
        bufs.append((LOGON_INFO, encode_logon_info(info)))
    name = client_name.encode("utf-16-le")
    bufs.append((CLIENT_INFO, struct.pack("<QH", auth_ft, len(name)) + name))
    if upn is not None:
        dns = dns_domain if dns_domain is not None else upn.rpartition("@")[2].upper()
        u = UPN_FLAG_U if upn_implicit else 0
        if info is not None:
            bufs.append((UPN_DNS_INFO, _upn_dns_info(upn, dns, UPN_FLAG_S | u, info.effective_name, info.user_sid)))
        else:
            bufs.append((UPN_DNS_INFO, _upn_dns_info(upn, dns, u, None, None)))
    elif upn_implicit:
        raise ValueError("upn_implicit needs a upn")
    if attributes_flags is not None:
        bufs.append((ATTRIBUTES_INFO, struct.pack("<II", 2, attributes_flags)))
    if requestor_sid is not None:
        bufs.append((REQUESTOR, sid_from_str(requestor_sid)))
    bufs.append((SERVER_CHECKSUM, struct.pack("<i", stype) + bytes(SIGNATURE_LENGTHS[stype])))
    bufs.append((PRIVSVR_CHECKSUM, struct.pack("<i", ktype) + bytes(SIGNATURE_LENGTHS[ktype])))

    out = bytearray(struct.pack("<II", len(bufs), 0))
    pos = 8 + 16 * len(bufs)
    where: dict[int, int] = {}
    for t, raw in bufs:
        out += struct.pack("<IIQ", t, len(raw), pos)
        where[t] = pos
        pos += len(raw) + (-len(raw) % 8)
    for _t, raw in bufs:
        out += raw + bytes(-len(raw) % 8)
    server_sig = _checksum(stype, server_key[1], KERB_NON_KERB_CKSUM_SALT, bytes(out))
    s_at = where[SERVER_CHECKSUM] + 4
    out[s_at:s_at + len(server_sig)] = server_sig
    kdc_sig = _checksum(ktype, kkey, KERB_NON_KERB_CKSUM_SALT, server_sig)
    k_at = where[PRIVSVR_CHECKSUM] + 4
    out[k_at:k_at + len(kdc_sig)] = kdc_sig
    return bytes(out)


def verify_server_signature(pac_bytes: bytes | Pac, enctype: int, key: bytes) -> bool:
    """True when the PAC's server signature verifies with the service key (MS-PAC 2.8.1).

    False when it is absent, of a checksum type other than the key's, or does not match. A PAC that does
    not parse raises MalformedToken; an enctype without a PAC checksum type raises ValueError.
    """
    pac = pac_bytes if isinstance(pac_bytes, Pac) else Pac(pac_bytes)
    want = _cksumtype_for(enctype)
    sig = pac.server_checksum
    if sig is None or sig.type != want:
        return False
    mac = _checksum(sig.type, key, KERB_NON_KERB_CKSUM_SALT, pac.zeroed_for_server_signature())
    return hmac.compare_digest(mac, sig.signature)


def verify_kdc_signature(pac_bytes: bytes | Pac, enctype: int, key: bytes) -> bool:
    """True when the KDC (privsvr) signature over the server signature verifies with the krbtgt key."""
    pac = pac_bytes if isinstance(pac_bytes, Pac) else Pac(pac_bytes)
    want = _cksumtype_for(enctype)
    server, kdc = pac.server_checksum, pac.kdc_checksum
    if server is None or kdc is None or kdc.type != want:
        return False
    mac = _checksum(kdc.type, key, KERB_NON_KERB_CKSUM_SALT, server.signature)
    return hmac.compare_digest(mac, kdc.signature)
