"""fastkrb against a real Active Directory domain controller: Samba's AD DC (tests/support/samba_dc.py, the
session's ``samba_dc`` fixture of tests/conftest.py), CORP.EXAMPLE.

Every ticket here is issued by Samba's KDC from the AD database (users in nested groups, a user in 1,000
groups, UPNs in another suffix or none, service accounts limited to one enctype, a computer account) and every
AP-REQ is made by MIT's kinit and GSSAPI initiator. The directory's own answers (objectSid, tokenGroups,
userPrincipalName, msDS-KeyVersionNumber) and MIT's acceptor are the reference.

Needs root and Debian's samba, samba-ad-dc and ldb-tools (.ci/system-deps installs them): the tests fail, not
skip, when they are missing. Marked ``samba``; ``-m "not samba"`` leaves them out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from support import samba_dc as sdc

pytestmark = pytest.mark.samba

ENCTYPES = (18, 17, 23)  # what Samba 4.17's KDC issues (no aes-sha2); RC4 for the RC4-only account
BUILTIN = "S-1-5-32-"  # BUILTIN\\ groups: in tokenGroups, never in a KDC's PAC (the resource server adds them)
ASSERTED_IDENTITY = {"S-1-18-1", "S-1-18-2"}  # MS-PAC/MS-SFU: authentication authority / service asserted


@pytest.fixture(scope="session")
def bob_cc(samba_dc: sdc.SambaDC) -> Path:
    return samba_dc.kinit("bob", ccache=samba_dc.ccache("bob-session"))


def _validator(keytab: Path, **kw: Any) -> Validator:
    # RC4 only where the keytab has an RC4 key: a Validator refuses to permit it otherwise
    rc4 = any(e.enctype == 23 for e in Keytab.load(keytab).usable())
    enctypes = tuple(e for e in ENCTYPES if e != 23 or rc4)
    return Validator(str(keytab), enctypes=enctypes, replay_cache="memory", replay_capacity=1024, cold_start=False,
                     **kw)


def _fastkrb_code(token: bytes, keytab: Path) -> str:
    """fastkrb's verdict as a string: "ok" or the error code."""
    return _fastkrb_code_with(token, keytab)


def _fastkrb_code_with(token: bytes, keytab: Path, **kw: Any) -> str:
    try:
        _validator(keytab, **kw).validate(token)
    except KerberosError as exc:
        return exc.code
    return "ok"


# --------------------------------------------------------------------------------------------------------------
# The DC itself


def test_dc_runs_in_its_own_network_namespace(samba_dc: sdc.SambaDC, record_property: Any) -> None:
    for k, v in samba_dc.timings.items():
        record_property(f"samba_{k}_s", round(v, 2))
    assert samba_dc.netns_inode is not None
    assert samba_dc.netns_inode != os.stat("/proc/self/ns/net").st_ino
    assert os.stat(samba_dc.netns).st_ino == samba_dc.netns_inode
    # samba owns 127.0.0.1:88 (TCP and UDP) and :389 inside; nothing of ours listens there
    listening = samba_dc.run(["ss", "-Hlntu"], netns=True).stdout
    for proto, port in (("tcp", 88), ("udp", 88), ("tcp", 389)):
        assert any(line.split()[0] == proto and line.split()[4] == f"127.0.0.1:{port}"
                   for line in listening.splitlines()), listening
    # only loopback exists in there
    links = samba_dc.run(["ip", "-o", "link"], netns=True).stdout
    assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"]


def test_ldap_serves_the_directory(samba_dc: sdc.SambaDC) -> None:
    root = samba_dc.search("", "defaultNamingContext", "dnsHostName", ldap=True)
    assert root[0]["defaultNamingContext"] == [sdc.BASE_DN]
    carol = samba_dc.truth("carol")
    over_ldap = samba_dc.search(carol.dn, "tokenGroups", "objectSid", ldap=True)[0]
    assert over_ldap["objectSid"] == [carol.sid]
    assert sorted(over_ldap["tokenGroups"]) == sorted(carol.token_groups)


def test_directory_truth(samba_dc: sdc.SambaDC) -> None:
    dom = samba_dc.domain_sid()
    sid_of = {name: samba_dc.truth(name).sid for name in ("fk-g1", "fk-g2", "fk-dl", "fk-univ")}
    carol = samba_dc.truth("carol")
    assert carol.sid.startswith(dom + "-")
    # nested: carol -> fk-g1 -> fk-g2 -> fk-dl, and fk-univ; Domain Users (513) and BUILTIN\\Users (545)
    assert set(carol.token_groups) == {*sid_of.values(), f"{dom}-513", "S-1-5-32-545"}
    assert len(samba_dc.truth("dave").token_groups) == sdc.BULK_GROUPS + 2
    assert samba_dc.truth("alice").upn == f"alice@{sdc.ALT_UPN_SUFFIX}"
    assert samba_dc.truth("erin").upn is None
    suffixes = samba_dc.search(f"CN=Partitions,CN=Configuration,{sdc.BASE_DN}", "uPNSuffixes")
    assert suffixes[0]["uPNSuffixes"] == [sdc.ALT_UPN_SUFFIX]


@pytest.mark.parametrize("account", [s.account for s in sdc.SERVICES])
def test_exported_keytabs(samba_dc: sdc.SambaDC, account: str) -> None:
    spec = samba_dc.services[account]
    allowed = {e for bit, e in ((sdc.SET_AES256, 18), (sdc.SET_AES128, 17), (sdc.SET_RC4, 23))
               if spec.supported_enctypes & bit}
    by_spn = sdc.keytab_entries(samba_dc.keytab(account, "spn"))
    assert {p for _, p, _ in by_spn} == {f"{spn}@{sdc.REALM}" for spn in spec.spns}
    by_name = sdc.keytab_entries(samba_dc.keytab(account, "account"))
    assert {p for _, p, _ in by_name} == {spec.principal}
    kvno = samba_dc.truth(account).kvno
    assert {k for k, _, _ in by_spn} == {k for k, _, _ in by_name} == {kvno}
    # Exported by SPN (a server lookup in Samba's KDB) the keys are cut to msDS-SupportedEncryptionTypes; by
    # account name (a client lookup) every key the account has comes out, the RC4 one included.
    assert {e for _, _, e in by_spn} == allowed
    assert {e for _, _, e in by_name} == {18, 17, 23}


# --------------------------------------------------------------------------------------------------------------
# Users: kinit, a token, and the PAC against the directory


@pytest.mark.parametrize("name", [u.name for u in sdc.USERS])
def test_each_user_class(samba_dc: sdc.SambaDC, name: str) -> None:
    user = samba_dc.users[name]
    cc = samba_dc.user_ccache(name)
    assert samba_dc.default_principal(cc) == user.principal
    token = samba_dc.token(cc, "HTTP/aes256.corp.example")
    res = _validator(samba_dc.keytab("svc-aes256")).validate(token)
    assert res.client == user.principal
    assert res.server == f"HTTP/aes256.corp.example@{sdc.REALM}"
    mit = samba_dc.mit_accept(token, samba_dc.keytab("svc-aes256"))
    assert mit.accepted and mit.initiator == res.client, mit

    truth = samba_dc.truth(name)
    assert res.pac is not None and res.pac_verified
    info = res.pac.logon_info
    assert info.user_sid == truth.sid
    assert info.effective_name == name
    # Samba 4.17 puts every domain group (global, universal and domain-local alike) in GroupIds: exactly the
    # directory's tokenGroups minus BUILTIN; ExtraSids holds the asserted-identity SID only.
    assert set(info.group_sids) == {s for s in truth.token_groups if not s.startswith(BUILTIN)}
    assert {x.sid for x in info.extra_sids} <= ASSERTED_IDENTITY
    assert not info.resource_group_sids
    upn = res.pac.upn_dns_info
    assert upn.sam_name == name and upn.sid == truth.sid
    if truth.upn is None:  # the implicit UPN, flagged as constructed (MS-PAC 2.10, U bit)
        assert upn.upn == f"{name}@{sdc.DNS_DOMAIN}" and upn.flags & 1
    else:
        assert upn.upn == truth.upn and not upn.flags & 1


@pytest.mark.parametrize("canonicalize", [False, True], ids=["enterprise", "enterprise-canonical"])
def test_alt_suffix_upn_as_enterprise_name(samba_dc: sdc.SambaDC, canonicalize: bool) -> None:
    """kinit -E alice@corp-alt.example: the KDC finds alice by her UPN in the other suffix."""
    cc = samba_dc.kinit(f"alice@{sdc.ALT_UPN_SUFFIX}", enterprise=True, canonicalize=canonicalize,
                        ccache=samba_dc.ccache(f"alice-E{int(canonicalize)}"))
    token = samba_dc.token(cc, "HTTP/aes256.corp.example")
    res = _validator(samba_dc.keytab("svc-aes256")).validate(token)
    mit = samba_dc.mit_accept(token, samba_dc.keytab("svc-aes256"))
    assert mit.accepted and mit.initiator == res.client, mit
    # Without canonicalization Samba keeps the enterprise name as the ticket's client; with it, alice@REALM
    expected = f"alice@{sdc.REALM}" if canonicalize else f"alice\\@{sdc.ALT_UPN_SUFFIX}@{sdc.REALM}"
    assert samba_dc.default_principal(cc) == expected
    assert res.client == expected
    assert res.pac.logon_info.user_sid == samba_dc.truth("alice").sid
    assert res.pac.upn_dns_info.upn == f"alice@{sdc.ALT_UPN_SUFFIX}"


def test_thousand_group_user_pac(samba_dc: sdc.SambaDC) -> None:
    cc = samba_dc.user_ccache("dave")
    token = samba_dc.token(cc, "HTTP/aes256.corp.example")
    assert len(token) > 9000
    res = _validator(samba_dc.keytab("svc-aes256")).validate(token)
    assert res.pac_verified
    size = len(res.pac_bytes)
    assert 8 * 1024 <= size <= 10 * 1024, size  # ~8.6 KiB: 1,001 GROUP_MEMBERSHIPs of 8 bytes and the rest
    info = res.pac.logon_info
    assert len(info.group_ids) == sdc.BULK_GROUPS + 1  # the bulk groups and Domain Users
    truth = samba_dc.truth("dave")
    assert set(info.group_sids) == {s for s in truth.token_groups if not s.startswith(BUILTIN)}
    assert samba_dc.mit_accept(token, samba_dc.keytab("svc-aes256")).accepted


@pytest.mark.parametrize("name", [u.name for u in sdc.USERS])
def test_identity_against_the_directory(samba_dc: sdc.SambaDC, name: str) -> None:
    """AuthResult.identity (decoded in C) says what the directory says: objectSid, tokenGroups minus BUILTIN
    (plus the asserted-identity SID), the UPN and whether it is implicit; member_of agrees."""
    from fastkrb._native import SidSet

    token = samba_dc.token(samba_dc.user_ccache(name), "HTTP/aes256.corp.example")
    res = _validator(samba_dc.keytab("svc-aes256")).validate(token)
    ident = res.identity
    truth = samba_dc.truth(name)
    dom = samba_dc.domain_sid()
    assert ident is not None
    assert ident.user_sid == truth.sid
    assert ident.primary_group_sid == f"{dom}-513"
    domain_groups = {s for s in truth.token_groups if not s.startswith(BUILTIN)}
    assert set(ident.group_sids) - ASSERTED_IDENTITY == domain_groups
    assert ident.group_count == len(ident.group_sids) == len(res.pac.logon_info.group_ids) + len(
        res.pac.logon_info.extra_sids)
    assert ident.logon_name == name and ident.logon_domain == sdc.DOMAIN
    assert ident.dns_domain is not None and ident.dns_domain.lower() == sdc.DNS_DOMAIN
    if truth.upn is None:
        assert ident.upn == f"{name}@{sdc.DNS_DOMAIN}" and ident.upn_implicit
    else:
        assert ident.upn == truth.upn and not ident.upn_implicit
    assert ident.member_of(SidSet(sorted(domain_groups)[:10]))
    assert ident.member_of(SidSet([truth.sid]))
    assert not ident.member_of(SidSet(["S-1-5-32-544", "S-1-5-32-545", f"{dom}-512"]))  # BUILTIN; Domain Admins
    assert ident.to_dict()["group_sids"] == list(ident.group_sids)


# --------------------------------------------------------------------------------------------------------------
# Service accounts: enctypes, SPNs, account-name keytabs, kvno


@pytest.mark.parametrize("account", [s.account for s in sdc.SERVICES])
def test_service_ticket_enctype(samba_dc: sdc.SambaDC, bob_cc: Path, account: str) -> None:
    spec = samba_dc.services[account]
    assert samba_dc.service_ticket(bob_cc, spec.spn) == spec.ticket_enctype  # klist -e on MIT's ccache
    token = samba_dc.token(bob_cc, spec.spn)
    res = _validator(samba_dc.keytab(account, "spn")).validate(token)
    assert res.enctype == spec.ticket_enctype
    assert res.server == f"{spec.spn}@{sdc.REALM}"
    assert res.kvno == samba_dc.truth(account).kvno
    assert samba_dc.mit_accept(token, samba_dc.keytab(account, "spn")).accepted


@pytest.mark.parametrize("spn", sdc.SERVICES[3].spns)
def test_every_spn_of_a_multi_spn_account(samba_dc: sdc.SambaDC, bob_cc: Path, spn: str) -> None:
    assert samba_dc.services["svc-multi"].spns == sdc.SERVICES[3].spns
    token = samba_dc.token(bob_cc, spn)
    res = _validator(samba_dc.keytab("svc-multi", "spn")).validate(token)
    assert res.server == f"{spn}@{sdc.REALM}"
    # a validator limited to this one SPN takes it too
    assert _validator(samba_dc.keytab("svc-multi", "spn"), principals=[f"{spn}@{sdc.REALM}"]).validate(token)


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
def test_computer_account(samba_dc: sdc.SambaDC, bob_cc: Path, mech: str) -> None:
    token = samba_dc.token(bob_cc, "HTTP/web1.corp.example", mech=mech)
    res = _validator(samba_dc.keytab("web1$", "spn")).validate(token)
    assert res.server == f"HTTP/web1.corp.example@{sdc.REALM}"
    assert res.framing == mech
    assert res.enctype == 18


@pytest.mark.parametrize(("account", "spn"), [("svc-multi", "HTTP/multi-alias.corp.example"),
                                              ("svc-aes256", "HTTP/aes256.corp.example"),
                                              ("svc-rc4", "HTTP/rc4.corp.example"),
                                              ("web1$", "HTTP/web1.corp.example")])
def test_account_name_keytab_mit_accepts(samba_dc: sdc.SambaDC, bob_cc: Path, account: str, spn: str,
                                         tmp_path: Path) -> None:
    """A keytab exported by account name (svc-multi@CORP.EXAMPLE) holds the keys every SPN of the account is
    encrypted with. MIT's acceptor (no acceptor name) takes a ticket for any of them, and so does fastkrb (an
    SPN alias, issue 12): the server is the account whose key decrypted it, the SPN is what was asked for."""
    token = samba_dc.token(bob_cc, spn)
    keytab = samba_dc.keytab(account, "account")
    mit = samba_dc.mit_accept(token, keytab)
    assert mit.accepted, mit.error
    assert mit.initiator == f"bob@{sdc.REALM}"
    assert mit.target == f"{account}@{sdc.REALM}"
    res = _validator(keytab).validate(token)
    assert res.client == mit.initiator
    assert res.server == mit.target
    assert res.requested_server == f"{spn}@{sdc.REALM}"
    assert res.pac_verified and res.identity is not None
    # principals= still decides: the account's keys are not used when only another name is accepted (that name
    # needs a key in the keytab, or the Validator is refused at construction)
    other = Keytab.load(keytab)
    other.add(f"svc-other@{sdc.REALM}", os.urandom(32), enctype=18, kvno=1)
    other.add(f"svc-other@{sdc.REALM}", os.urandom(16), enctype=23, kvno=1)   # RC4 is permitted beside RC4 keys
    other.save(tmp_path / "plus-other.keytab")
    assert _fastkrb_code_with(token, tmp_path / "plus-other.keytab", principals=[f"svc-other@{sdc.REALM}"]) == \
        "wrong_principal"


def test_password_change_raises_kvno(samba_dc: sdc.SambaDC) -> None:
    spn = samba_dc.services["svc-rot"].spn
    before_cc = samba_dc.kinit("bob", ccache=samba_dc.ccache("bob-before-rotation"))
    old_token = samba_dc.token(before_cc, spn)
    rot = samba_dc.rotate("svc-rot")
    assert rot.new_kvno == rot.old_kvno + 1
    assert {k for k, _, _ in sdc.keytab_entries(rot.old_spn_keytab)} == {rot.old_kvno}
    assert {k for k, _, _ in sdc.keytab_entries(rot.new_spn_keytab)} == {rot.new_kvno}  # Samba exports no old keys
    assert {k for k, _, _ in sdc.keytab_entries(rot.new_account_keytab)} == {rot.new_kvno}
    new_token = samba_dc.token(samba_dc.kinit("carol"), spn)

    assert _validator(rot.old_spn_keytab).validate(old_token).kvno == rot.old_kvno
    assert _validator(rot.new_spn_keytab).validate(new_token).kvno == rot.new_kvno
    assert _fastkrb_code(old_token, rot.new_spn_keytab) == "key_version_mismatch"
    assert _fastkrb_code(new_token, rot.old_spn_keytab) == "key_version_mismatch"
    # MIT agrees on all four
    assert samba_dc.mit_accept(old_token, rot.old_spn_keytab).accepted
    assert samba_dc.mit_accept(new_token, rot.new_spn_keytab).accepted
    assert not samba_dc.mit_accept(old_token, rot.new_spn_keytab).accepted
    assert not samba_dc.mit_accept(new_token, rot.old_spn_keytab).accepted
    # a keytab holding both generations takes both tickets
    both = sdc.merge_keytabs(samba_dc.workdir / "keytabs" / "rot-both.keytab", rot.old_spn_keytab,
                             rot.new_spn_keytab)
    v = _validator(both)
    assert v.validate(old_token).kvno == rot.old_kvno
    assert v.validate(new_token).kvno == rot.new_kvno


# --------------------------------------------------------------------------------------------------------------
# Stop and start again


def test_restart_leaves_nothing_behind(samba_dc: sdc.SambaDC) -> None:
    pid, inode = samba_dc.pid, samba_dc.netns_inode
    held = os.open(samba_dc.netns, os.O_RDONLY)  # keeps the inode ours while we look
    try:
        samba_dc.stop(remove=False)
        assert not os.path.exists(f"/proc/{pid}")
        assert sdc.namespace_members(inode) == []  # nobody left in the namespace; it dies with our reference
        assert subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 1  # no group left
    finally:
        os.close(held)
    samba_dc.start()
    assert samba_dc.pid != pid
    cc = samba_dc.user_ccache("erin")
    assert _validator(samba_dc.keytab("svc-aes128")).validate(samba_dc.token(cc, "HTTP/aes128.corp.example"))
