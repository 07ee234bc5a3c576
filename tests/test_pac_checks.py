"""The PAC checks of validation, at parity with MIT (krb5_pac_verify, k5_pac_validate_client) and Heimdal.

Each PAC here is assembled buffer by buffer and correctly signed with the service key (and KDC key), so the
signature passes and only the rule under test can refuse it. What each refusal is, with MIT's answer:

| rule (MS-PAC)                                             | fastkrb code   | MIT krb5 1.20                       |
|-----------------------------------------------------------|----------------|-------------------------------------|
| header: Version 0, 1..256 buffers (§2.3)                  | malformed      | EINVAL (krb5_pac_parse)             |
| buffer 8-aligned, after the table, inside the PAC (§2.4)  | malformed      | EINVAL / ERANGE                     |
| two non-empty buffers overlap                             | malformed      | (not checked)                       |
| a known buffer type twice                                 | malformed      | EINVAL (k5_pac_locate_buffer)       |
| server or KDC signature missing (§2.8)                    | malformed      | ENOENT                              |
| server signature not the key's checksum type (§2.8.1)     | integrity      | KRB5_BAD_ENCTYPE, INAPP_CKSUM       |
| server signature wrong                                    | integrity      | KRB5KRB_AP_ERR_MODIFIED             |
| PAC_CLIENT_INFO missing or malformed (§2.7)               | malformed      | ENOENT / ERANGE                     |
| PAC_CLIENT_INFO name or authtime not the ticket's (§2.7)  | name_mismatch  | KRB5KRB_AP_WRONG_PRINC              |
| UPN_DNS_INFO malformed (§2.10)                            | malformed      | (not read)                          |
| UPN_DNS_INFO DnsDomainName not the ticket's realm         | name_mismatch  | (not read; Windows and Samba check) |

PRIVSVR (7), TICKET_CHECKSUM (16) and FULL_CHECKSUM (19) are keyed with the krbtgt key: only the KDC can verify
them, so a service accepts them unverified (as MIT and Heimdal do) and ``fastkrb inspect`` says so.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.krb import asn1, crypto
from fastkrb.krb.pac import (
    CLIENT_INFO,
    FULL_CHECKSUM,
    LOGON_INFO,
    PRIVSVR_CHECKSUM,
    SERVER_CHECKSUM,
    SIGNATURE_LENGTHS,
    TICKET_CHECKSUM,
    UPN_DNS_INFO,
    Pac,
    build_pac,
    unix_to_filetime,
)
from fastkrb.testing import make_keytab, mint

NOW = 1_700_000_000.0
REALM = "EXAMPLE.TEST"
SPN = f"HTTP/api.example.test@{REALM}"
LOGON = {"user_rid": 1104, "domain_sid": "S-1-5-21-11-22-33", "group_rids": [513, 1105]}


@pytest.fixture(scope="module")
def kt() -> Keytab:
    return make_keytab(principals=(SPN,), enctypes=(18, 17, 20, 23), kvno=2, rng=random.Random(11))


def _key(kt: Keytab, enctype: int = 18) -> bytes:
    return next(e.key for e in kt.entries if e.enctype == enctype)


# --- assembling and signing PACs


def buffers(kt: Keytab, enctype: int = 18, **kw: Any) -> list[tuple[int, bytes]]:
    """The buffers of a PAC for alice@EXAMPLE.TEST at NOW, as build_pac makes them."""
    args: dict[str, Any] = {"client_name": "alice", "auth_time": NOW, "server_key": (enctype, _key(kt, enctype)),
                            "logon_info": LOGON, "upn": "alice@example.test", "dns_domain": REALM}
    args.update(kw)
    p = Pac(build_pac(**args))
    return [(b.type, p.data[b.offset:b.offset + b.size]) for b in p.buffers]


def assemble(bufs: list[tuple[int, bytes]], *, version: int = 0,
             offsets: dict[int, int] | None = None) -> bytearray:
    """PACTYPE around bufs, 8-aligned in order; offsets[i] overrides entry i's offset."""
    out = bytearray(struct.pack("<II", len(bufs), version))
    pos = 8 + 16 * len(bufs)
    table = []
    for i, (_t, raw) in enumerate(bufs):
        table.append((offsets or {}).get(i, pos))
        pos += len(raw) + (-len(raw) % 8)
    for (t, raw), off in zip(bufs, table, strict=True):
        out += struct.pack("<IIQ", t, len(raw), off)
    for _t, raw in bufs:
        out += raw + bytes(-len(raw) % 8)
    return out


def sign(pac: bytearray, key: tuple[int, bytes], kdc: tuple[int, bytes] | None = None) -> bytes:
    """Write the server and KDC signatures (MS-PAC §2.8) of the first type-6/7 buffers, whatever else is wrong."""
    _kenc, kkey = kdc or key
    count = struct.unpack_from("<I", pac)[0]
    where = {}
    for i in range(count):
        t, _size, off = struct.unpack_from("<IIQ", pac, 8 + 16 * i)
        if t in (SERVER_CHECKSUM, PRIVSVR_CHECKSUM) and t not in where:
            where[t] = off
    zeroed = bytearray(pac)
    for off in where.values():
        n = SIGNATURE_LENGTHS.get(struct.unpack_from("<i", pac, off)[0], 0)
        zeroed[off + 4:off + 4 + n] = bytes(n)
    srv = where[SERVER_CHECKSUM]
    stype = struct.unpack_from("<i", pac, srv)[0]
    sig = crypto.checksum(stype, key[1], 17, bytes(zeroed))
    pac[srv + 4:srv + 4 + len(sig)] = sig
    if PRIVSVR_CHECKSUM in where:
        k = where[PRIVSVR_CHECKSUM]
        ksig = crypto.checksum(struct.unpack_from("<i", pac, k)[0], kkey, 17, sig)
        pac[k + 4:k + 4 + len(ksig)] = ksig
    return bytes(pac)


def replace(bufs: list[tuple[int, bytes]], t: int, raw: bytes) -> list[tuple[int, bytes]]:
    return [(x, raw if x == t else r) for x, r in bufs]


def client_info(name: str, t: float = NOW, extra_ft: int = 0) -> bytes:
    raw = name.encode("utf-16-le")
    return struct.pack("<QH", unix_to_filetime(t) + extra_ft, len(raw)) + raw


def upn_dns(upn: str, dns: str, flags: int = 0) -> bytes:
    u, d = upn.encode("utf-16-le"), dns.encode("utf-16-le")
    head = 16
    return struct.pack("<HHHHI", len(u), head, len(d), head + len(u) + (-len(u) % 8), flags) + bytes(4) + \
        u + bytes(-len(u) % 8) + d


def validate(kt: Keytab, pac: bytes, enctype: int = 18, **kw: Any) -> Any:
    mkw = {k: kw.pop(k) for k in list(kw) if k in ("client", "crealm", "cname_type", "server")}
    m = mint(kt, server=mkw.pop("server", SPN), now=NOW, ticket_enctype=enctype, pac=pac,
             rng=random.Random(len(pac)), **mkw)
    v = Validator(kt, replay_cache="none", cold_start=False, enctypes=(20, 18, 17, 23), **kw)
    return v.validate(m.token, now=NOW)


def refusal(kt: Keytab, pac: bytes, enctype: int = 18, **kw: Any) -> KerberosError:
    with pytest.raises(KerberosError) as info:
        validate(kt, pac, enctype, **kw)
    err = info.value
    assert err.cause and err.fix
    return err


# --- what passes


@pytest.mark.parametrize("enctype", [17, 18, 20, 23])
def test_well_formed_pacs_pass(kt: Keytab, enctype: int) -> None:
    res = validate(kt, sign(assemble(buffers(kt, enctype)), (enctype, _key(kt, enctype))), enctype)
    assert res.pac_verified and res.identity is not None


def test_minimal_pac_without_logon_info(kt: Keytab) -> None:
    """MIT's minimal PAC (CLIENT_INFO and the signatures) is accepted; it has no identity."""
    res = validate(kt, build_pac(client_name="alice", auth_time=NOW, server_key=(18, _key(kt)), minimal=True))
    assert res.pac_verified and res.identity is None
    res = validate(kt, build_pac(client_name="alice", auth_time=NOW, server_key=(18, _key(kt)), minimal=True,
                                 upn="alice@example.test", dns_domain=REALM))
    assert res.pac_verified and res.identity is None


def test_kdc_only_buffers_pass_unverified(kt: Keytab) -> None:
    bufs = buffers(kt)
    bufs.insert(-2, (TICKET_CHECKSUM, struct.pack("<i", 16) + bytes(12)))
    bufs.insert(-2, (FULL_CHECKSUM, struct.pack("<i", 16) + bytes(12)))
    res = validate(kt, sign(assemble(bufs), (18, _key(kt))))
    assert res.pac_verified
    assert res.pac.ticket_checksum is not None and res.pac.full_checksum is not None


def test_table_out_of_offset_order_and_unknown_repeats_pass(kt: Keytab) -> None:
    bufs = buffers(kt)
    n = len(bufs)
    pac = assemble(bufs)
    # the same layout, table entries listed back to front
    entries = [pac[8 + 16 * i:24 + 16 * i] for i in range(n)]
    pac[8:8 + 16 * n] = b"".join(reversed(entries))
    assert validate(kt, sign(pac, (18, _key(kt)))).pac_verified
    bufs = [*bufs[:1], (99, b"x" * 8), (99, b"y" * 8), *bufs[1:]]   # unknown types may repeat
    assert validate(kt, sign(assemble(bufs), (18, _key(kt)))).pac_verified


def test_client_time_has_whole_seconds(kt: Keytab) -> None:
    """Kerberos times have whole seconds; MIT compares ClientId / 10^7 with authtime."""
    res = validate(kt, sign(assemble(replace(buffers(kt), CLIENT_INFO, client_info("alice", extra_ft=9_999_999))),
                            (18, _key(kt))))
    assert res.client == f"alice@{REALM}"


@pytest.mark.parametrize("dns", [REALM, "example.test", "Example.Test"])
def test_upn_domain_is_the_realm_without_case(kt: Keytab, dns: str) -> None:
    res = validate(kt, sign(assemble(replace(buffers(kt), UPN_DNS_INFO, upn_dns("alice@example.test", dns))),
                            (18, _key(kt))))
    assert res.pac_verified


def test_upn_domain_may_be_the_ticket_realm(kt: Keytab) -> None:
    """A user of a trusted realm mapped to an account of the service's domain: the PAC names that domain."""
    pac = sign(assemble(replace(buffers(kt), UPN_DNS_INFO, upn_dns("alice@example.test", REALM))), (18, _key(kt)))
    res = validate(kt, pac, crealm="TRUSTED.TEST", allowed_realms=["*"])
    assert res.client_realm == "TRUSTED.TEST"


@pytest.mark.parametrize("client, pac_name", [
    ("alice/admin", "alice/admin"),             # two components
    ("a\\/b", "a\\/b"),                          # one component with a '/' in it, quoted
    ("a\\@b", "a\\@b"),
    ("J\u00f6rg", "J\u00f6rg"),                  # non-ASCII
    ("\U0001f600x", "\U0001f600x"),              # a surrogate pair in UTF-16
])
def test_client_names_parse_like_mit(kt: Keytab, client: str, pac_name: str) -> None:
    bufs = replace(buffers(kt), CLIENT_INFO, client_info(pac_name))
    res = validate(kt, sign(assemble(bufs), (18, _key(kt))), client=client)
    assert res.client == f"{client}@{REALM}"


@pytest.mark.parametrize("pac_name", ["alice@corp.example", "alice\\@corp.example"])
def test_enterprise_client_name(kt: Keytab, pac_name: str) -> None:
    """NT-ENTERPRISE (RFC 6806): one component with '@'; AD writes it verbatim, an unparser quotes it."""
    bufs = replace(buffers(kt), CLIENT_INFO, client_info(pac_name))
    res = validate(kt, sign(assemble(bufs), (18, _key(kt))), client="alice\\@corp.example",
                   cname_type=asn1.NT_ENTERPRISE)
    assert res.client == f"alice\\@corp.example@{REALM}"


def test_default_minted_pacs_pass_for_unusual_names(kt: Keytab) -> None:
    for client, ctype in (("alice\\@corp.example", asn1.NT_ENTERPRISE), ("a\\/b", None), ("host/x.example", None)):
        m = mint(kt, client=client, cname_type=ctype, now=NOW, pac=True, rng=random.Random(1))
        res = Validator(kt, replay_cache="none", cold_start=False).validate(m.token, now=NOW)
        assert res.pac_verified, client


# --- what is refused


@pytest.mark.parametrize("name", ["bob", "Alice", "alice/admin", "alice@EXAMPLE.TEST", "alice\\", "", "alicex"])
def test_client_name_mismatch(kt: Keytab, name: str) -> None:
    err = refusal(kt, sign(assemble(replace(buffers(kt), CLIENT_INFO, client_info(name))), (18, _key(kt))))
    assert err.code == "name_mismatch"
    assert "PAC_CLIENT_INFO names" in err.cause and repr(name) in err.cause
    assert err.details["pac_client_name"] == name


def test_enterprise_name_needs_the_enterprise_type(kt: Keytab) -> None:
    """An unquoted '@' in the name of an NT-PRINCIPAL client would be a realm: MIT refuses to parse it."""
    bufs = replace(buffers(kt), CLIENT_INFO, client_info("alice@corp.example"))
    err = refusal(kt, sign(assemble(bufs), (18, _key(kt))), client="alice\\@corp.example")
    assert err.code == "name_mismatch"


@pytest.mark.parametrize("dt", [1, -1, 3600])
def test_client_time_mismatch(kt: Keytab, dt: int) -> None:
    err = refusal(kt, sign(assemble(replace(buffers(kt), CLIENT_INFO, client_info("alice", NOW + dt))),
                           (18, _key(kt))))
    assert err.code == "name_mismatch"
    assert "issued at" in err.cause
    assert err.details["pac_auth_time"] == NOW + dt


def test_upn_domain_mismatch(kt: Keytab) -> None:
    err = refusal(kt, sign(assemble(replace(buffers(kt), UPN_DNS_INFO, upn_dns("alice@other.test", "OTHER.TEST"))),
                           (18, _key(kt))))
    assert err.code == "name_mismatch"
    assert "'OTHER.TEST'" in err.cause and err.details["pac_dns_domain"] == "OTHER.TEST"


def _malformed(kt: Keytab, pac: bytes, words: str, enctype: int = 18) -> None:
    err = refusal(kt, pac, enctype)
    assert err.code == "malformed"
    assert words in err.cause, err.cause
    assert words in err.details["what"]


def test_structure_is_checked(kt: Keytab) -> None:
    key = (18, _key(kt))
    bufs = buffers(kt)
    _malformed(kt, sign(assemble(bufs, version=1), key), "Version")
    for t in (LOGON_INFO, CLIENT_INFO, UPN_DNS_INFO, SERVER_CHECKSUM):
        dup = [*bufs, next((x, r) for x, r in bufs if x == t)]
        _malformed(kt, sign(assemble(dup), key), "two buffers of one type")
    pac = assemble(bufs)
    second = struct.unpack_from("<Q", pac, 8 + 16 + 8)[0]
    _malformed(kt, sign(assemble(bufs, offsets={1: second - 8}), key), "overlap")
    _malformed(kt, sign(assemble(bufs, offsets={1: second + 4}), key), "aligned")
    _malformed(kt, sign(assemble(bufs, offsets={0: 8}), key), "outside")
    _malformed(kt, sign(assemble(bufs, offsets={len(bufs) - 3: len(pac)}), key), "outside")


def test_missing_buffers(kt: Keytab) -> None:
    key = (18, _key(kt))
    bufs = buffers(kt)
    _malformed(kt, sign(assemble([b for b in bufs if b[0] != CLIENT_INFO]), key), "no PAC_CLIENT_INFO")
    no_kdc = [b for b in bufs if b[0] != PRIVSVR_CHECKSUM]
    _malformed(kt, sign(assemble(no_kdc), key), "server or KDC signature")


@pytest.mark.parametrize("raw, words", [
    (b"\x00" * 9, "shorter than 10"),
    (struct.pack("<QH", unix_to_filetime(NOW), 12) + "alice".encode("utf-16-le"), "NameLength"),
    (struct.pack("<QH", unix_to_filetime(NOW), 3) + b"abc", "UTF-16"),
    (struct.pack("<QH", unix_to_filetime(NOW), 2) + b"\x00\xd8", "UTF-16"),       # a lone high surrogate
])
def test_malformed_client_info(kt: Keytab, raw: bytes, words: str) -> None:
    _malformed(kt, sign(assemble(replace(buffers(kt), CLIENT_INFO, raw)), (18, _key(kt))), words)


@pytest.mark.parametrize("raw, words", [
    (b"\x00" * 11, "shorter than 12"),
    (struct.pack("<HHHHI", 200, 16, 0, 16, 0) + bytes(8), "runs past"),
    (struct.pack("<HHHHI", 2, 16, 0, 16, 0) + bytes(4) + b"\x00\xdc", "UTF-16"),  # a lone low surrogate
])
def test_malformed_upn_dns_info(kt: Keytab, raw: bytes, words: str) -> None:
    _malformed(kt, sign(assemble(replace(buffers(kt), UPN_DNS_INFO, raw)), (18, _key(kt))), words)


@pytest.mark.parametrize("enctype, sigtype", [(18, 15), (18, -138), (17, 16), (20, 16), (23, 16), (18, 20)])
def test_signature_must_be_the_keys_checksum_type(kt: Keytab, enctype: int, sigtype: int) -> None:
    bufs = buffers(kt, enctype)
    sig = struct.pack("<i", sigtype) + bytes(SIGNATURE_LENGTHS[sigtype])
    pac = assemble(replace(bufs, SERVER_CHECKSUM, sig))
    err = refusal(kt, bytes(pac), enctype)   # unsigned: the type is refused before any MAC is computed
    assert err.code == "integrity"
    assert f"checksum type {sigtype}" in err.cause
    assert err.details["pac_signature_type"] == sigtype


def test_signature_is_checked(kt: Keytab) -> None:
    pac = bytearray(sign(assemble(buffers(kt)), (18, _key(kt))))
    first = struct.unpack_from("<Q", pac, 16)[0]
    pac[first + 40] ^= 1   # inside LOGON_INFO, which the server signature covers
    assert refusal(kt, bytes(pac)).code == "integrity"


def test_verify_pac_false_skips_every_check(kt: Keytab) -> None:
    pac = sign(assemble(replace(buffers(kt), CLIENT_INFO, client_info("mallory"))), (18, _key(kt)))
    res = validate(kt, pac, verify_pac=False)
    assert not res.pac_verified
    assert res.identity is None, "an identity only ever comes from a verified PAC"


# --- real KDCs: every PAC they issue passes the checks (the interop suites validate them all)


def test_mit_pac_passes_and_has_no_identity(mit_lab: Any) -> None:
    token, _ = mit_lab.get_token("svc18")
    res = Validator(keytab=str(mit_lab.keytabs["svc18"]), replay_cache="none", cold_start=False).validate(token)
    assert res.pac_verified and res.pac.client_info.name == "alice"
    assert res.identity is None


def test_heimdal_tickets_pass(heimdal_lab: Any) -> None:
    token, _ = heimdal_lab.get_token("svc18")
    res = Validator(keytab=str(heimdal_lab.keytabs["svc18"]), replay_cache="none", cold_start=False).validate(token)
    assert res.pac is None or res.pac_verified  # this Heimdal KDC issues no PAC for a plain principal
    assert res.identity is None


def test_inspect_marks_kdc_only_buffers(kt: Keytab) -> None:
    from fastkrb.tools.inspect_token import inspect_token

    bufs = buffers(kt)
    bufs.insert(-2, (TICKET_CHECKSUM, struct.pack("<i", 16) + bytes(12)))
    bufs.insert(-2, (FULL_CHECKSUM, struct.pack("<i", 16) + bytes(12)))
    m = mint(kt, server=SPN, now=NOW, ticket_enctype=18, pac=sign(assemble(bufs), (18, _key(kt))),
             rng=random.Random(2))
    rep = inspect_token(m.token, kt, now=NOW)
    assert rep["verdict"]["accepted"] and rep["verdict"]["pac_verified"]
    marks = rep["pac"]["kdc_verifiable"]
    assert [x.split(" ")[0] for x in marks] == ["TICKET_CHECKSUM", "FULL_CHECKSUM", "PRIVSVR_CHECKSUM"]
    assert all("KDC-verifiable" in x for x in marks)
    assert rep["identity"]["user_sid"] == "S-1-5-21-11-22-33-1104"
