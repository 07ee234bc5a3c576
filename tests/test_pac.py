"""MS-PAC decoding, signing and rejection, against published PACs (gokrb5, MS-PAC spec, Kerberos.NET AD).

The signature checks are compared with the independent reference of tests/support/refcrypto.py (built on
``cryptography``: RFC 3961/3962 DK, RFC 8009 KDF, RFC 4757 HMAC-MD5), so the test does not grade fastkrb's
crypto with itself; the reference is checked against published vectors at the end.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastkrb.errors import MalformedToken
from fastkrb.krb import pac as pacmod
from fastkrb.krb.pac import (
    FILETIME_NEVER,
    UPN_FLAG_S,
    GroupMembership,
    LogonInfo,
    Pac,
    SidAndAttributes,
    build_pac,
    encode_logon_info,
    filetime_to_iso,
    sid_from_str,
    sid_to_str,
    verify_kdc_signature,
    verify_server_signature,
)
from support import refcrypto
from support.pac_checks import check_ad_pac, check_kerb_validation_info

VECTORS = Path(__file__).parent / "vectors"
PAC_JSON = json.loads((VECTORS / "pac.json").read_text())
AD_JSON = json.loads((VECTORS / "ad_tokens.json").read_text())
GOKRB5 = PAC_JSON["pacs"][0]
AD = AD_JSON["decoded"]  # aes128, aes256, rc4


KEY_LEN = {17: 16, 18: 32, 19: 16, 20: 32, 23: 16}


@pytest.mark.parametrize("enctype", sorted(KEY_LEN))
def test_native_checksum_matches_reference(enctype: int) -> None:
    key = bytes(range(KEY_LEN[enctype]))
    ctype = pacmod.CKSUMTYPE_FOR_ENCTYPE[enctype]
    for data in (b"", b"x", bytes(range(256)) * 3):
        assert pacmod._checksum(ctype, key, 17, data) == refcrypto.checksum(ctype, key, 17, data)


# ------------------------------------------------------------------------------------ decoding tests

def test_gokrb5_pac_header_and_buffers() -> None:
    exp = GOKRB5["expected"]
    p = Pac(bytes.fromhex(GOKRB5["pac_hex"]))
    assert p.version == exp["version"]
    assert len(p.buffers) == exp["cbuffers"]
    for b, e in zip(p.buffers, exp["buffers"], strict=True):
        assert (b.type, b.size, b.offset) == (e["ul_type"], e["cb_buffer_size"], e["offset"])
        assert p.raw(b.type) == bytes.fromhex(e["buffer_hex"])


def test_gokrb5_pac_typed_views() -> None:
    exp = GOKRB5["expected"]
    p = Pac(bytes.fromhex(GOKRB5["pac_hex"]))
    for sig, e in ((p.server_checksum, exp["server_checksum"]), (p.kdc_checksum, exp["kdc_checksum"])):
        assert sig is not None
        assert sig.type == e["signature_type"]
        assert sig.signature.hex() == e["signature_hex"]
        assert (sig.rodc_identifier or 0) == e["rodc_identifier"]
    ci = p.client_info
    assert ci is not None
    assert filetime_to_iso(ci.client_id) == exp["client_info"]["client_id_utc"]
    assert ci.name == exp["client_info"]["name"]
    assert 2 * len(ci.name) == exp["client_info"]["name_length"]
    u, eu = p.upn_dns_info, exp["upn_dns_info"]
    assert u is not None
    assert (u.upn, u.dns_domain, u.flags) == (eu["upn"], eu["dns_domain"], eu["flags"])
    assert p.logon_info is not None
    check_kerb_validation_info(p.logon_info, exp["kerb_validation_info"])
    assert p.ticket_checksum is None and p.full_checksum is None and p.requestor_sid is None
    assert p.client_claims is None and p.attributes_info is None


def test_gokrb5_pac_inside_authorization_data() -> None:
    ad = bytes.fromhex(GOKRB5["authorization_data_hex"])
    assert Pac(_find_pac(ad)).data == bytes.fromhex(GOKRB5["pac_hex"])


def _der_tlv(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at i; enough to dig a PAC out of AuthorizationData."""
    tag, n = buf[i], buf[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[i:i + k], "big")
        i += k
    return tag, i, i + n


def _find_pac(buf: bytes) -> bytes:
    """Depth-first for the OCTET STRING that follows ad-type 128 (AD-WIN2K-PAC)."""
    stack, prev_int = [(0, len(buf))], None
    while stack:
        i, end = stack.pop()
        while i < end:
            tag, s, e = _der_tlv(buf, i)
            if tag == 0x02:
                prev_int = int.from_bytes(buf[s:e], "big")
            elif tag == 0x04 and prev_int == 128:
                return buf[s:e]
            elif tag & 0x20:
                stack.append((e, end))
                end = e
                i = s
                continue
            elif tag == 0x04:  # AD-IF-RELEVANT content: DER inside an OCTET STRING
                stack.append((e, end))
                end = e
                i = s
                continue
            i = e
    raise AssertionError("no PAC")


@pytest.mark.parametrize("index", [0, 1])
def test_kerb_validation_info_samples(index: int) -> None:
    sample = PAC_JSON["kerb_validation_info_samples"][index]
    exp = sample["expected"] if index else GOKRB5["expected"]["kerb_validation_info"]
    ndr = bytes.fromhex(sample["ndr_hex"])
    # Wrap the bare NDR in a one-buffer PAC, so it goes through the public decoder.
    p = Pac(struct.pack("<IIIIQ", 1, 0, 1, len(ndr), 24) + ndr)
    assert p.logon_info is not None
    check_kerb_validation_info(p.logon_info, exp)


def test_ms_pac_spec_example_pac() -> None:
    """The MS-PAC example (NTDEV\\lzhu) as a whole PAC, found inside its AuthorizationData."""
    sample = PAC_JSON["kerb_validation_info_samples"][1]
    p = Pac(_find_pac(bytes.fromhex(sample["containing_authorization_data_hex"])))
    assert p.raw(1) == bytes.fromhex(sample["ndr_hex"])
    assert p.logon_info is not None
    check_kerb_validation_info(p.logon_info, sample["expected"])
    assert p.client_info is not None and p.client_info.name == "lzhu"
    json.dumps(p.to_dict())


@pytest.mark.parametrize("name", ["aes128", "aes256", "rc4"])
def test_ad_pacs_decode(name: str) -> None:
    exp = AD[name]["pac"]
    p = Pac(bytes.fromhex(exp["pac_hex"]))
    check_ad_pac(p, exp)
    d = p.to_dict()
    json.dumps(d)
    assert d["logon_info"]["user_sid"] == exp["logon_info"]["derived_user_sid"]
    assert "user_session_key" not in d["logon_info"]


def test_rc4_pac_kerberos_net_assertions() -> None:
    """The PacTests.cs assertions on the rc4 ticket's PAC, in fastkrb's representation."""
    li = Pac(bytes.fromhex(AD["rc4"]["pac"]["pac_hex"])).logon_info
    p = Pac(bytes.fromhex(AD["rc4"]["pac"]["pac_hex"]))
    assert li is not None and p.client_info is not None and p.upn_dns_info is not None
    iso = filetime_to_iso
    ours: dict[str, Any] = {
        "LogonInfo.LogonTime truncated to whole seconds": iso(li.logon_time)[:19] + "Z",  # type: ignore[index]
        "LogonInfo.PwdLastChangeTime truncated": iso(li.password_last_set)[:19] + "Z",  # type: ignore[index]
        "LogonInfo.PwdCanChangeTime truncated": iso(li.password_can_change)[:19] + "Z",  # type: ignore[index]
        "LogonInfo.LogonCount": li.logon_count,
        "LogonInfo.BadPasswordCount": li.bad_password_count,
        "LogonInfo.SubAuthStatus": li.sub_auth_status,
        "LogonInfo.LastSuccessfulILogon": iso(li.last_successful_ilogon),
        "LogonInfo.LastFailedILogon": iso(li.last_failed_ilogon),
        "LogonInfo.UserName": li.effective_name,
        "LogonInfo.UserDisplayName": li.full_name,
        "LogonInfo.DomainSid": li.logon_domain_id,
        "LogonInfo.UserSid": li.user_sid,
        "LogonInfo.GroupSid": li.primary_group_sid,
        "LogonInfo.GroupSids.Count()": len(li.group_ids),
        "LogonInfo.ExtraSids.Count()": len(li.extra_sids),
        "LogonInfo.ResourceGroups.Count()": len(li.resource_group_ids),
        "ClientInformation.Name": p.client_info.name,
        "ClientInformation.ClientId": iso(p.client_info.client_id),
        "UpnDomainInformation.Domain": p.upn_dns_info.dns_domain,
        "UpnDomainInformation.Upn": p.upn_dns_info.upn,
        "UpnDomainInformation.Flags": p.upn_dns_info.flags,
    }
    expected = {e["assertion"]: e["expected"] for e in _token("rc4-kerberos")["expected"]}
    for assertion, value in ours.items():
        assert value == expected[assertion], assertion
    # Kerberos.NET maps "never" to DateTimeOffset.MinValue and sizes strings by MaximumLength; the raw wire
    # values behind those assertions:
    for assertion, ft in (("LogonInfo.LogoffTime", li.logoff_time), ("LogonInfo.KickOffTime", li.kickoff_time),
                          ("LogonInfo.PwdMustChangeTime", li.password_must_change)):
        assert expected[assertion].startswith("0001-01-01") and ft == FILETIME_NEVER
    assert expected["LogonInfo.ServerName"] == li.logon_server + "\0"
    assert expected["LogonInfo.DomainName"] == li.logon_domain_name + "\0"
    assert expected["LogonInfo.UserFlags"].endswith("(0x20)") and li.user_flags == 0x20
    assert "= 528" in expected["LogonInfo.UserAccountControl"] and li.user_account_control == 528
    assert expected["LogonInfo.ResourceDomainSid"] == "null" and li.resource_group_domain_sid is None


def _token(tid: str) -> dict[str, Any]:
    return next(t for t in AD_JSON["tokens"] if t["id"] == tid)


def test_views_are_decoded_once() -> None:
    p = Pac(bytes.fromhex(GOKRB5["pac_hex"]))
    assert p.logon_info is p.logon_info
    assert p.client_info is p.client_info


# ----------------------------------------------------------------------------------------- signatures

def _signed_pacs() -> list[tuple[str, bytes, int, bytes]]:
    out = [("gokrb5", bytes.fromhex(GOKRB5["pac_hex"]), GOKRB5["service_key_enctype"],
            bytes.fromhex(GOKRB5["service_key_hex"]))]
    for name in ("aes128", "aes256", "rc4"):
        k = AD[name]["service_key"]
        out.append((name, bytes.fromhex(AD[name]["pac"]["pac_hex"]), k["enctype"], bytes.fromhex(k["key_hex"])))
    return out


SIGNED = _signed_pacs()


@pytest.mark.parametrize(("name", "data", "enctype", "key"), SIGNED, ids=[s[0] for s in SIGNED])
def test_server_signature_verifies(name: str, data: bytes, enctype: int, key: bytes) -> None:
    p = Pac(data)
    assert p.server_checksum is not None
    # The reference, independently: the MAC over the PAC with both signature fields zeroed.
    zeroed = p.zeroed_for_server_signature()
    assert refcrypto.checksum(p.server_checksum.type, key, 17, zeroed) == p.server_checksum.signature
    assert verify_server_signature(data, enctype, key) is True
    assert verify_server_signature(p, enctype, key) is True


@pytest.mark.parametrize(("name", "data", "enctype", "key"), SIGNED, ids=[s[0] for s in SIGNED])
def test_server_signature_rejects_wrong_key(name: str, data: bytes, enctype: int, key: bytes) -> None:
    for i in (0, len(key) // 2, len(key) - 1):
        bad = bytearray(key)
        bad[i] ^= 0x01
        assert verify_server_signature(data, enctype, bytes(bad)) is False
    for other in ("aes128", "aes256", "rc4"):  # the other tickets' keys, where the length fits
        okey = bytes.fromhex(AD[other]["service_key"]["key_hex"])
        if okey != key and len(okey) == len(key):
            assert verify_server_signature(data, enctype, okey) is False
    # The same key bytes claimed for another enctype means another checksum type: refused.
    assert verify_server_signature(data, {17: 19, 18: 20, 23: 17}[enctype], key) is False


@pytest.mark.parametrize(("name", "data", "enctype", "key"), SIGNED, ids=[s[0] for s in SIGNED])
def test_server_signature_covers_every_byte_but_the_signatures(name: str, data: bytes, enctype: int,
                                                                key: bytes) -> None:
    p = Pac(data)
    server, kdc = (next(b for b in p.buffers if b.type == t) for t in (6, 7))
    assert p.kdc_checksum is not None
    kdc_field = range(kdc.offset + 4, kdc.offset + 4 + len(p.kdc_checksum.signature))
    type_fields = {*range(server.offset, server.offset + 4), *range(kdc.offset, kdc.offset + 4)}
    checked = 0
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x40
        try:
            ok = verify_server_signature(bytes(flipped), enctype, key)
        except MalformedToken:
            assert i < 8 + 16 * len(p.buffers) or i in type_fields, f"byte {i}"
            continue
        if i in kdc_field:
            assert ok, f"byte {i} lies in the KDC signature, which the server signature does not cover"
        else:
            assert not ok, f"flipping byte {i} went unnoticed"
            checked += 1
    assert checked >= len(data) - len(kdc_field) - 8 - 16 * len(p.buffers) - 8


@pytest.mark.parametrize("name", ["aes128", "aes256", "rc4"])
def test_kerberos_net_modified_pac(name: str) -> None:
    """PacTests.Kerberos*ModifiedPac: the zeroed PAC verifies; with bytes 20..49 randomised it does not."""
    exp = AD[name]["pac"]
    p = Pac(bytes.fromhex(exp["pac_hex"]))
    key = bytes.fromhex(AD[name]["service_key"]["key_hex"])
    sig = p.server_checksum
    assert sig is not None
    zeroed = bytearray(p.zeroed_for_server_signature())
    assert refcrypto.checksum(sig.type, key, 17, bytes(zeroed)) == sig.signature
    zeroed[20:50] = hashlib.sha256(b"randomised").digest()[:30]
    assert refcrypto.checksum(sig.type, key, 17, bytes(zeroed)) != sig.signature
    tampered = bytearray(p.data)
    tampered[20:50] = zeroed[20:50]
    try:
        assert verify_server_signature(bytes(tampered), sig_enctype(sig.type), key) is False
    except MalformedToken:
        pass  # the randomised bytes fall in the buffer table; refusing to parse is also a rejection


def sig_enctype(ctype: int) -> int:
    return {v: k for k, v in pacmod.CKSUMTYPE_FOR_ENCTYPE.items()}[ctype]


def test_zeroing_keeps_type_and_rodc_and_other_checksums() -> None:
    p = Pac(bytes.fromhex(GOKRB5["pac_hex"]))
    z = p.zeroed_for_server_signature()
    assert len(z) == len(p.data)
    diff = [i for i in range(len(z)) if z[i] != p.data[i]]
    assert diff and min(diff) >= 760 + 4 and max(diff) < 776 + 4 + 16
    assert Pac(z).server_checksum.type == 16  # type: ignore[union-attr]
    assert Pac(z).server_checksum.signature == bytes(12)  # type: ignore[union-attr]


def test_rodc_identifier_is_decoded_and_not_zeroed() -> None:
    server = struct.pack("<i", 16) + b"\x11" * 12
    kdc = struct.pack("<i", -138) + b"\x22" * 16 + struct.pack("<H", 0x1234)  # signed by RODC 0x1234
    data = struct.pack("<IIIIQIIQ", 2, 0, 6, len(server), 40, 7, len(kdc), 56) + server + \
        bytes(56 - 40 - len(server)) + kdc
    p = Pac(data)
    assert p.kdc_checksum == pacmod.Signature(-138, b"\x22" * 16, 0x1234)
    assert p.server_checksum == pacmod.Signature(16, b"\x11" * 12, None)
    z = p.zeroed_for_server_signature()
    assert z[56:60] == data[56:60] and z[60:76] == bytes(16) and z[76:78] == b"\x34\x12"
    assert z[44:56] == bytes(12) and z[:44] == data[:44]


def test_verify_without_server_signature_is_false() -> None:
    data = bytearray(bytes.fromhex(GOKRB5["pac_hex"]))
    struct.pack_into("<I", data, 8 + 16 * 3, 0x99)  # entry 3 (the server checksum) becomes an unknown type
    assert verify_server_signature(bytes(data), 18, bytes.fromhex(GOKRB5["service_key_hex"])) is False


def test_verify_rejects_unknown_enctype() -> None:
    with pytest.raises(ValueError):
        verify_server_signature(bytes.fromhex(GOKRB5["pac_hex"]), 99, bytes(32))


# -------------------------------------------------------------------------------------------- builder

# (groups, with UPN) for the benches' PAC sizes: a LOGON_INFO costs ~530 bytes bare, each group 8 more.
RIDS_FOR_SIZE = {512: (1, False), 2048: (190, True), 8192: (960, True), 32768: (4030, True)}


@pytest.mark.parametrize("enctype", sorted(KEY_LEN))
@pytest.mark.parametrize("minimal", [False, True])
def test_build_round_trip(enctype: int, minimal: bool) -> None:
    skey = hashlib.sha256(b"service%d" % enctype).digest()[:KEY_LEN[enctype]]
    kkey = hashlib.sha256(b"krbtgt").digest()
    info = None if minimal else {
        "user_name": "alice", "user_rid": 1106, "domain_sid": "S-1-5-21-1-2-3", "group_rids": [513, 512, 1104],
        "extra_sids": ["S-1-18-1", "S-1-5-21-9-9-9-1000"], "full_name": "Alice Ä. Example",
        "resource_domain_sid": "S-1-5-21-7-7-7", "resource_group_rids": [1200],
    }
    data = build_pac(client_name="alice", auth_time=1_700_000_000, server_key=(enctype, skey),
                     kdc_key=(18, kkey), logon_info=info, upn="alice@example.com", dns_domain="EXAMPLE.COM",
                     minimal=minimal, requestor_sid="S-1-5-21-1-2-3-1106" if not minimal else None,
                     attributes_flags=1 if not minimal else None)
    p = Pac(data)
    assert len(data) % 8 == 0
    assert all(b.offset % 8 == 0 for b in p.buffers)
    assert p.client_info is not None
    assert (p.client_info.name, filetime_to_iso(p.client_info.client_id)) == ("alice", "2023-11-14T22:13:20Z")
    assert p.server_checksum is not None and p.kdc_checksum is not None
    assert p.server_checksum.type == pacmod.CKSUMTYPE_FOR_ENCTYPE[enctype]
    assert p.kdc_checksum.type == 16
    assert refcrypto.checksum(p.server_checksum.type, skey, 17, p.zeroed_for_server_signature()) == \
        p.server_checksum.signature
    assert refcrypto.checksum(16, kkey, 17, p.server_checksum.signature) == p.kdc_checksum.signature
    assert verify_server_signature(data, enctype, skey)
    assert verify_kdc_signature(data, 18, kkey)
    assert not verify_kdc_signature(data, 18, skey[:16] * 2)
    u = p.upn_dns_info
    assert u is not None and (u.upn, u.dns_domain) == ("alice@example.com", "EXAMPLE.COM")
    if minimal:
        assert [b.type for b in p.buffers] == [10, 12, 6, 7]
        assert p.logon_info is None and u.flags == 0 and u.sid is None
        return
    assert [b.type for b in p.buffers] == [1, 10, 12, 17, 18, 6, 7]
    li = p.logon_info
    assert li is not None
    assert (li.effective_name, li.full_name, li.user_sid) == ("alice", "Alice Ä. Example", "S-1-5-21-1-2-3-1106")
    assert li.group_sids == ["S-1-5-21-1-2-3-513", "S-1-5-21-1-2-3-512", "S-1-5-21-1-2-3-1104"]
    assert [s.sid for s in li.extra_sids] == ["S-1-18-1", "S-1-5-21-9-9-9-1000"]
    assert li.resource_group_sids == ["S-1-5-21-7-7-7-1200"]
    assert li.logon_domain_name == "EXAMPLE" and li.logoff_time == FILETIME_NEVER
    assert (u.flags & UPN_FLAG_S, u.sam_name, u.sid) == (UPN_FLAG_S, "alice", "S-1-5-21-1-2-3-1106")
    assert p.requestor_sid == "S-1-5-21-1-2-3-1106"
    assert p.attributes_info is not None and p.attributes_info.pac_was_requested
    assert not p.attributes_info.pac_was_given_implicitly
    json.dumps(p.to_dict())


def test_build_kdc_key_defaults_to_server_key() -> None:
    key = bytes(range(32))
    data = build_pac(client_name="bob", auth_time=0, server_key=(18, key), minimal=True)
    assert verify_server_signature(data, 18, key) and verify_kdc_signature(data, 18, key)


@pytest.mark.parametrize("target", sorted(RIDS_FOR_SIZE))
def test_build_ad_like_sizes(target: int) -> None:
    """The benches' PAC sizes (0.5, 2, 8, 32 KiB) come from the group count: 8 bytes a group."""
    n, with_upn = RIDS_FOR_SIZE[target]
    data = build_pac(client_name="user", auth_time=1_700_000_000, server_key=(18, bytes(32)),
                     logon_info={"user_name": "user", "user_rid": 1000, "domain_sid": "S-1-5-21-1-2-3",
                                 "group_rids": list(range(1000, 1000 + n))},
                     upn="user@example.com" if with_upn else None)
    assert abs(len(data) - target) <= target // 10
    li = Pac(data).logon_info
    assert li is not None and len(li.group_ids) == n


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_pac(client_name="x", auth_time=0, server_key=(16, bytes(24)))
    with pytest.raises(ValueError):
        build_pac(client_name="x", auth_time=0, server_key=(18, bytes(32)), minimal=True, logon_info={})
    with pytest.raises(ValueError):
        build_pac(client_name="x", auth_time=0, server_key=(18, bytes(32)), logon_info={"group_rid": [1]})


_u32 = st.integers(0, 2**32 - 1)
_ft = st.integers(0, 2**63 - 1)
_name = st.text(max_size=40)
_sid = st.builds(lambda auth, subs: "S-1-" + str(auth) + "".join(f"-{s}" for s in subs),
                 st.integers(0, 2**32 - 1), st.lists(_u32, max_size=15))
_groups = st.lists(st.builds(GroupMembership, _u32, _u32), max_size=20).map(tuple)
_logon_info = st.builds(
    LogonInfo, _ft, _ft, _ft, _ft, _ft, _ft, _name, _name, _name, _name, _name, _name,
    st.integers(0, 65535), st.integers(0, 65535), _u32, _u32, _groups, _u32, st.binary(min_size=16, max_size=16),
    _name, _name, st.none() | _sid, _u32, _u32, _ft, _ft, _u32,
    st.lists(st.builds(SidAndAttributes, _sid, _u32), max_size=10).map(tuple), st.none() | _sid, _groups,
)


@given(_logon_info)
@settings(max_examples=150, deadline=None)
def test_logon_info_encode_decode_round_trip(info: LogonInfo) -> None:
    ndr = encode_logon_info(info)
    assert len(ndr) % 8 == 0
    p = Pac(struct.pack("<IIIIQ", 1, 0, 1, len(ndr), 24) + ndr)
    assert p.logon_info == info


@given(st.integers(0, 2**48 - 1), st.lists(_u32, max_size=15))
def test_sid_string_round_trip(auth: int, subs: list[int]) -> None:
    raw = bytes([1, len(subs)]) + auth.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    assert sid_from_str(sid_to_str(raw)) == raw


def test_sid_strings() -> None:
    assert sid_to_str(sid_from_str("S-1-5-21-1-2-3-500")) == "S-1-5-21-1-2-3-500"
    assert sid_to_str(bytes([1, 0]) + (2**40).to_bytes(6, "big")) == "S-1-0x010000000000"  # MS-DTYP 2.4.2.1
    for bad in ("S-2-5", "X-1-5", "S-1-5-" + "-1" * 16, "S-1-5-4294967296"):
        with pytest.raises(ValueError):
            sid_from_str(bad)


# ------------------------------------------------------------------------------------------ malformed

def _exercise(data: bytes) -> None:
    """Everything a caller can do with a PAC: may raise MalformedToken, nothing else."""
    try:
        p = Pac(data)
        for attr in ("logon_info", "client_info", "upn_dns_info", "server_checksum", "kdc_checksum",
                     "ticket_checksum", "full_checksum", "attributes_info", "requestor_sid", "client_claims",
                     "device_info", "device_claims"):
            getattr(p, attr)
        json.dumps(p.to_dict())
        if p.logon_info is not None:
            p.logon_info.to_dict()
        p.zeroed_for_server_signature()
        for enctype, key in ((18, bytes(32)), (23, bytes(16))):
            verify_server_signature(p, enctype, key)
    except MalformedToken as exc:
        assert exc.code == "malformed"
        assert "offset" in exc.details


def _malformed_cause(data: bytes, view: str | None = None) -> str:
    with pytest.raises(MalformedToken) as info:
        p = Pac(data)
        if view:
            getattr(p, view)
    return info.value.cause


GOKRB5_BYTES = bytes.fromhex(GOKRB5["pac_hex"])
RC4_BYTES = bytes.fromhex(AD["rc4"]["pac"]["pac_hex"])


def _with(data: bytes, fmt: str, offset: int, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_every_truncation_is_malformed() -> None:
    """Every cut before the end of the last buffer (only its trailing alignment padding may go)."""
    assert len(GOKRB5_BYTES) == 796 + 4
    for n in range(796):
        with pytest.raises(MalformedToken):
            Pac(GOKRB5_BYTES[:n])


def test_truncated_buffers_name_the_buffer() -> None:
    # Shrink the LOGON_INFO buffer's size in the table: the NDR decoder runs out inside.
    cause = _malformed_cause(_with(GOKRB5_BYTES, "<I", 8 + 4, 300), "logon_info")
    assert "LOGON_INFO (type 1)" in cause and "offset" in cause
    cause = _malformed_cause(_with(GOKRB5_BYTES, "<I", 8 + 16 + 4, 9), "client_info")
    assert "CLIENT_INFO" in cause
    cause = _malformed_cause(_with(GOKRB5_BYTES, "<I", 8 + 32 + 4, 11), "upn_dns_info")
    assert "UPN_DNS_INFO" in cause
    cause = _malformed_cause(_with(GOKRB5_BYTES, "<I", 8 + 48 + 4, 15), "server_checksum")
    assert "SERVER_CHECKSUM" in cause


@pytest.mark.parametrize(("fmt", "offset", "value", "words"), [
    ("<I", 0, 0, "cBuffers 0"),
    ("<I", 0, 0xFFFFFFFF, "cBuffers 4294967295"),
    ("<I", 0, pacmod.MAX_BUFFERS + 1, "cBuffers"),
    ("<I", 0, 50, "table"),  # plausible count, table larger than the PAC
    ("<I", 4, 1, "Version 1"),
    ("<Q", 8 + 8, 2**63, "outside"),  # offset past the end (no wrap-around)
    ("<Q", 8 + 16 * 4 + 8, 800, "outside"),  # KDC checksum offset exactly at the end, size 20
    ("<I", 8 + 16 * 4 + 4, 2**32 - 1, "outside"),  # huge size
    ("<Q", 8 + 16 + 8, 88 + 8, "overlaps"),  # client info inside logon info
    ("<Q", 8 + 16 * 4 + 8, 760, "overlaps"),  # KDC checksum on the server checksum
    ("<Q", 8 + 8, 4, "aligned"),
    ("<Q", 8 + 16 + 8, 644, "aligned"),
    ("<Q", 8 + 8, 16, "outside"),  # a buffer inside the header
    ("<I", 8 + 16, 1, "second buffer of type 1"),  # duplicate LOGON_INFO
    ("<I", 8 + 16 * 4, 6, "second buffer of type 6"),  # two server checksums: ambiguous
])
def test_bad_header_and_table(fmt: str, offset: int, value: int, words: str) -> None:
    cause = _malformed_cause(_with(GOKRB5_BYTES, fmt, offset, value))
    assert words in cause


LI = 88  # LOGON_INFO offset in both the gokrb5 and the AD PACs
NDR = LI + 20  # start of the fixed KERB_VALIDATION_INFO part


@pytest.mark.parametrize(("fmt", "offset", "value", "words"), [
    ("<B", LI, 2, "type serialization header"),
    ("<B", LI + 1, 0x00, "type serialization header"),  # big-endian NDR is not what AD sends
    ("<I", LI + 8, 0x10000, "ObjectBufferLength"),
    ("<I", LI + 8, 0x211, "ObjectBufferLength"),
    ("<I", LI + 16, 0, "null KERB_VALIDATION_INFO pointer"),
    ("<I", NDR + 108, 0xFFFFFF, "GroupIds"),  # GroupCount huge
    ("<I", NDR + 112, 0, "null pointer"),  # GroupIds pointer null with groups
    ("<I", NDR + 200, 0, "null pointer"),  # ExtraSids pointer null with SidCount 2
    ("<H", NDR + 48, 19, "RPC_UNICODE_STRING"),  # odd Length (EffectiveName)
    ("<H", NDR + 48, 40, "RPC_UNICODE_STRING"),  # Length > MaximumLength
    ("<H", NDR + 48 + 2, 40, "NDR counts"),  # MaximumLength disagrees with the NDR max count
    ("<I", NDR + 196, 99, "ExtraSids"),  # SidCount disagrees with the array
])
def test_bad_ndr(fmt: str, offset: int, value: int, words: str) -> None:
    cause = _malformed_cause(_with(GOKRB5_BYTES, fmt, offset, value), "logon_info")
    assert words in cause and "LOGON_INFO (type 1)" in cause


def test_bad_small_buffers() -> None:
    assert "NameLength" in _malformed_cause(_with(GOKRB5_BYTES, "<H", 640 + 8, 200), "client_info")
    assert "invalid UTF-16" in _malformed_cause(_with(GOKRB5_BYTES, "<H", 640 + 10, 0xD800), "client_info")
    assert "Upn" in _malformed_cause(_with(GOKRB5_BYTES, "<H", 672 + 2, 80), "upn_dns_info")
    # The S flag on a buffer without SamName/Sid fields: the "fields" read from the UPN run past the end.
    assert "UPN_DNS_INFO" in _malformed_cause(_with(GOKRB5_BYTES, "<I", 672 + 8, UPN_FLAG_S), "upn_dns_info")
    assert "SignatureType" in _malformed_cause(_with(GOKRB5_BYTES, "<i", 760, 1), "server_checksum")
    # An unknown signature type cannot be zeroed, so the server signature cannot be checked at all.
    with pytest.raises(MalformedToken):
        verify_server_signature(_with(GOKRB5_BYTES, "<i", 776, 5), 18, bytes(32))


def test_requestor_and_attributes_malformed() -> None:
    base = build_pac(client_name="a", auth_time=0, server_key=(18, bytes(32)), minimal=True,
                     requestor_sid="S-1-5-21-1-2-3-4", attributes_flags=1)
    p = Pac(base)
    req = next(b for b in p.buffers if b.type == 18)
    att = next(b for b in p.buffers if b.type == 17)
    assert "REQUESTOR" in _malformed_cause(_with(base, "<B", req.offset + 1, 9), "requestor_sid")
    assert "ATTRIBUTES_INFO" in _malformed_cause(_with(base, "<I", att.offset, 64), "attributes_info")


_SEEDS = [GOKRB5_BYTES, RC4_BYTES, bytes.fromhex(AD["aes256"]["pac"]["pac_hex"]),
          _find_pac(bytes.fromhex(PAC_JSON["kerb_validation_info_samples"][1]["containing_authorization_data_hex"]))]
_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


@given(st.sampled_from(range(len(_SEEDS))),
       st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 2**16))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_pacs_raise_only_malformed(seed: int, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SEEDS[seed])
    for pos, val in flips:
        data[pos % len(data)] = val
    _exercise(bytes(data[:max(cut, len(data) // 2)]))


@given(st.sampled_from(range(len(_SEEDS))), st.integers(0, 2**16), st.sampled_from(_INTERESTING),
       st.integers(0, 2**16), st.sampled_from(_INTERESTING))
@settings(max_examples=600, deadline=None)
def test_mutated_ndr_words_raise_only_malformed(seed: int, p1: int, v1: int, p2: int, v2: int) -> None:
    """Interesting 32-bit values at aligned places inside LOGON_INFO: counts, lengths, pointers."""
    data = bytearray(_SEEDS[seed])
    li = Pac(bytes(data)).buffers[0]
    assert li.type == 1
    for p, v in ((p1, v1), (p2, v2)):
        struct.pack_into("<I", data, li.offset + 4 * (p % (li.size // 4)), v)
    _exercise(bytes(data))


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_malformed(blob: bytes) -> None:
    _exercise(blob)
    # And with a valid one-buffer header in front, so the bytes reach the NDR decoder.
    _exercise(struct.pack("<IIIIQ", 1, 0, 1, len(blob), 24) + blob)


_CKSUM_VECTORS = [v for v in json.loads((VECTORS / "checksums.json").read_text())["vectors"]
                  if v["cksumtype"] in pacmod.SIGNATURE_LENGTHS]


@pytest.mark.parametrize("v", _CKSUM_VECTORS, ids=[str(v["cksumtype"]) for v in _CKSUM_VECTORS])
def test_reference_checksum_published_vectors(v: dict[str, Any]) -> None:
    """The reference against krb5 t_cksums.c (checksums.json, copied by the crypto work): 15, 16, 19, 20, -138."""
    got = refcrypto.checksum(v["cksumtype"], bytes.fromhex(v["key_hex"]), v["usage"], bytes.fromhex(v["plaintext_hex"]))
    assert got.hex() == v["checksum_hex"]


def test_reference_covers_every_pac_checksum_type() -> None:
    assert {v["cksumtype"] for v in _CKSUM_VECTORS} == set(pacmod.SIGNATURE_LENGTHS)


@pytest.mark.parametrize(("text", "nbits", "out"), [
    (b"012345", 64, "be072631276b1955"),
    (b"password", 56, "78a07b6caf85fa"),
    (b"password", 168, "59e4a8ca7c0385c3c37b3f6d2000247cb6e6bd5b3e"),
    (b"kerberos", 128, "6b65726265726f737b9b5b2b93132b93"),
])
def test_reference_nfold(text: bytes, nbits: int, out: str) -> None:
    """RFC 3961 A.1 n-fold values: guards the reference the signature tests lean on."""
    assert refcrypto.nfold(text, nbits // 8).hex() == out
