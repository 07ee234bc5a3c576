"""Decoded PACs compared field by field with the published values of tests/vectors (pac.json, ad_tokens.json).

Shared by test_pac.py (the decoder on the raw PACs) and test_ad_tokens.py (the PACs of real AD tokens through
the Validator).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from fastkrb.krb.pac import FILETIME_NEVER, LogonInfo, Pac, filetime_to_iso

NEVER = "never (0x7fffffffffffffff)"


def check_kerb_validation_info(li: LogonInfo, exp: dict[str, Any]) -> None:
    """Compare with the snake_case expectations of pac.json (gokrb5's assertions)."""
    for key, attr in (("logon_time_utc", "logon_time"), ("password_last_set_utc", "password_last_set"),
                      ("password_can_change_utc", "password_can_change"), ("logoff_time", "logoff_time"),
                      ("kickoff_time", "kickoff_time")):
        ft = getattr(li, attr)
        if exp[key] == NEVER:
            assert ft == FILETIME_NEVER
        else:
            assert filetime_to_iso(ft) == exp[key]
    for key in ("effective_name", "full_name", "logon_script", "profile_path", "home_directory",
                "home_directory_drive", "logon_count", "bad_password_count", "user_id", "primary_group_id",
                "user_flags", "logon_server", "logon_domain_name", "logon_domain_id", "user_account_control",
                "sub_auth_status", "failed_ilogon_count", "resource_group_domain_sid"):
        assert getattr(li, key) == exp[key], key
    assert len(li.group_ids) == exp["group_count"]
    assert [(g.relative_id, g.attributes) for g in li.group_ids] == [
        (g["relative_id"], g["attributes"]) for g in exp["group_ids"]]
    assert li.user_session_key.hex() == exp["user_session_key_hex"]
    assert len(li.extra_sids) == exp["sid_count"]
    listed = exp.get("extra_sids", exp.get("extra_sids_first_12"))
    assert [(s.sid, s.attributes) for s in li.extra_sids[:len(listed)]] == [
        (s["sid"], s["attributes"]) for s in listed]
    assert [(g.relative_id, g.attributes) for g in li.resource_group_ids] == exp["resource_group_ids"]


def check_ad_logon_info(li: LogonInfo, exp: dict[str, Any]) -> None:
    """Compare with the raw NDR values of ad_tokens.json (decoded.*.pac.logon_info, CamelCase)."""
    for key, attr in (("LogonTime", "logon_time"), ("LogoffTime", "logoff_time"), ("KickOffTime", "kickoff_time"),
                      ("PasswordLastSet", "password_last_set"), ("PasswordCanChange", "password_can_change"),
                      ("PasswordMustChange", "password_must_change"),
                      ("LastSuccessfulILogon", "last_successful_ilogon"), ("LastFailedILogon", "last_failed_ilogon")):
        assert getattr(li, attr) == int(exp[key]["filetime_hex"], 16), key
        if "iso" in exp[key]:  # the json gives milliseconds
            assert filetime_to_iso(getattr(li, attr))[:23] == exp[key]["iso"][:23]  # type: ignore[index]
    for key, attr in (("EffectiveName", "effective_name"), ("FullName", "full_name"),
                      ("LogonScript", "logon_script"), ("ProfilePath", "profile_path"),
                      ("HomeDirectory", "home_directory"), ("HomeDirectoryDrive", "home_directory_drive"),
                      ("LogonServer", "logon_server"), ("LogonDomainName", "logon_domain_name")):
        assert getattr(li, attr) == exp[key]["value"], key
    for key, attr in (("LogonCount", "logon_count"), ("BadPasswordCount", "bad_password_count"),
                      ("UserId", "user_id"), ("PrimaryGroupId", "primary_group_id"), ("UserFlags", "user_flags"),
                      ("UserAccountControl", "user_account_control"), ("SubAuthStatus", "sub_auth_status"),
                      ("FailedILogonCount", "failed_ilogon_count"), ("LogonDomainId", "logon_domain_id"),
                      ("ResourceGroupDomainSid", "resource_group_domain_sid")):
        assert getattr(li, attr) == exp[key], key
    assert li.user_session_key.hex() == exp["UserSessionKey_hex"]
    assert len(li.group_ids) == exp["GroupCount"]
    assert [(g.relative_id, g.attributes) for g in li.group_ids] == [
        (g["RelativeId"], g["Attributes"]) for g in exp["GroupIds"]]
    assert len(li.extra_sids) == exp["SidCount"]
    assert [(s.sid, s.attributes) for s in li.extra_sids] == [(s["Sid"], s["Attributes"]) for s in exp["ExtraSids"]]
    assert len(li.resource_group_ids) == exp["ResourceGroupCount"] == len(exp["ResourceGroupIds"])
    assert li.user_sid == exp["derived_user_sid"]
    assert li.primary_group_sid == exp["derived_primary_group_sid"]
    assert li.group_sids == exp["derived_group_sids"]


def check_ad_pac(p: Pac, exp: dict[str, Any]) -> None:
    assert len(p.data) == exp["length"]
    assert p.version == exp["version"]
    assert len(p.buffers) == exp["cbuffers"]
    assert [(b.type, b.size, b.offset) for b in p.buffers] == [
        (b["ul_type"], b["cb_buffer_size"], b["offset"]) for b in exp["buffers"]]
    assert [b.name for b in p.buffers] == [b["type_name"] for b in exp["buffers"]]
    for sig, e in ((p.server_checksum, exp["server_checksum"]), (p.kdc_checksum, exp["kdc_checksum"])):
        assert sig is not None
        assert (sig.type, sig.signature.hex()) == (e["signature_type"], e["signature_hex"])
    ci, eci = p.client_info, exp["client_info"]
    assert ci is not None
    assert ci.client_id == int(eci["ClientId"]["filetime_hex"], 16)
    assert filetime_to_iso(ci.client_id) == eci["ClientId"]["iso"].replace(".000Z", "Z")
    assert (ci.name, 2 * len(ci.name)) == (eci["Name"], eci["NameLength"])
    u, eu = p.upn_dns_info, exp["upn_dns_info"]
    assert u is not None
    assert (u.upn, u.dns_domain, u.flags) == (eu["Upn"], eu["DnsDomainName"], eu["Flags"])
    assert (u.sam_name, u.sid) == (None, None)
    raw = p.raw(12)
    assert raw is not None
    assert struct.unpack_from("<HHHH", raw) == (eu["UpnLength"], eu["UpnOffset"], eu["DnsDomainNameLength"],
                                               eu["DnsDomainNameOffset"])
    assert p.logon_info is not None
    check_ad_logon_info(p.logon_info, exp["logon_info"])
    assert hashlib.sha256(p.zeroed_for_server_signature()).hexdigest() == exp["pac_with_signatures_zeroed_hex_sha256"]
