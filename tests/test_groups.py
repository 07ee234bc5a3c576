"""The SID -> group name map: its file (written atomically, read strictly), lookups, reloading, and
``fastkrb groups sync`` (against ldap3's offline mock here, and against the session's Samba AD DC, the
``samba_dc`` fixture of tests/conftest.py: those tests are marked ``samba``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap3
import pytest

from fastkrb.groups import GroupNameError, GroupNames, is_sid, parse_map, read_map, write_map
from fastkrb.krb.pac import sid_from_str
from fastkrb.tools.groups import SyncError, SyncOptions, sync
from support import samba_dc as sdc

SRC = str(Path(__file__).resolve().parent.parent / "src")
DOM = "S-1-5-21-1004336348-1177238915-682003330"
GROUPS = {f"{DOM}-1200": "CORP\\api-readers", f"{DOM}-1201": "CORP\\api-writers", f"{DOM}-513": "CORP\\Domain Users"}


def test_sid_syntax() -> None:
    for good in ("S-1-5-32-544", f"{DOM}-1104", "S-1-18-1", "S-1-1-0", "S-1-5-21-4294967295-1-2-3"):
        assert is_sid(good), good
    for bad in ("S-1-5-21-x", "s-1-5-32-544", "S-2-5-1", "S-1-", "S-1-5-21-4294967296", "S-1-281474976710656-1",
                "S-1-5" + "-1" * 16, " S-1-5-32-544", "CORP\\x"):
        assert not is_sid(bad), bad


def test_written_map_reads_back_with_provenance(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    write_map(path, GROUPS, source="ldap://dc1.corp.example", domain="CORP")
    doc = json.loads(path.read_text())
    assert doc["format"] == "fastkrb-groups/1" and doc["source"] == "ldap://dc1.corp.example"
    assert doc["domain"] == "CORP" and doc["count"] == 3 and doc["generated"].endswith("Z")
    assert read_map(path) == GROUPS
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["groups.json"]     # no temporary file left behind


def test_a_hand_written_flat_map_is_read() -> None:
    assert parse_map(json.dumps(GROUPS)) == GROUPS


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not JSON"),
    ("[]", "want a JSON object"),
    ('{"format": "fastkrb-groups/9", "groups": {}}', "format 'fastkrb-groups/9'"),
    ('{"format": "fastkrb-groups/1"}', "no 'groups' object"),
    ('{"groups": {"S-1-5-x": "CORP\\\\a"}}', "not a SID"),
    ('{"groups": {"S-1-5-32-544": "a,b"}}', "no comma"),
    ('{"groups": {"S-1-5-32-544": ""}}', "empty group name"),
    ('{"groups": {"S-1-5-32-544": "a\\u0000b"}}', "printable"),
])
def test_bad_maps_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(GroupNameError, match=message):
        parse_map(text)


def test_lookups() -> None:
    names = GroupNames({**GROUPS, "S-1-5-21-9-9-9-1200": "PARTNER\\api-readers",
                        "S-1-5-32-544": "BUILTIN\\Administrators"})
    assert names.name(f"{DOM}-1200") == "CORP\\api-readers" and names.name("S-1-1-0") is None
    assert names.display([f"{DOM}-1201", "S-1-18-1"]) == ["CORP\\api-writers", "S-1-18-1"]
    assert names.sids_for("corp\\API-Readers") == (f"{DOM}-1200",)
    assert names.sids_for("api-writers") == (f"{DOM}-1201",)
    assert names.sids_for("administrators") == ("S-1-5-32-544",)
    with pytest.raises(GroupNameError, match="ambiguous"):
        names.sids_for("api-readers")
    with pytest.raises(GroupNameError, match="no group named"):
        names.sids_for("CORP\\nobody")
    assert len(names) == 5 and f"{DOM}-513" in names


def test_the_map_reloads_when_its_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    write_map(path, GROUPS)
    names = GroupNames.load(path, reload_interval=0.05)
    assert names.generation == 0 and not names.maybe_reload()      # unchanged; and too soon anyway
    write_map(path, {**GROUPS, f"{DOM}-1300": "CORP\\api-admins"})
    assert names.name(f"{DOM}-1300") is None                       # not before the interval has passed
    time.sleep(0.06)
    assert names.maybe_reload() and names.generation == 1 and names.name(f"{DOM}-1300") == "CORP\\api-admins"
    # a broken file is refused: the map in service stays, the error is kept
    path.write_text('{"groups": {"S-1-5-x": "y"}}')
    time.sleep(0.06)
    assert not names.maybe_reload()
    assert names.generation == 1 and names.error is not None and "not a SID" in names.error
    assert names.name(f"{DOM}-1300") == "CORP\\api-admins"
    # fixed: taken, the error cleared
    write_map(path, GROUPS)
    assert names.reload() and names.generation == 2 and names.error is None and names.name(f"{DOM}-1300") is None


def test_reload_interval_zero_reloads_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    write_map(path, GROUPS)
    names = GroupNames.load(path, reload_interval=0)
    write_map(path, {f"{DOM}-1300": "CORP\\api-admins"})
    assert not names.maybe_reload() and names.generation == 0
    assert names.check_file() and names.generation == 1 and names.name(f"{DOM}-1300") == "CORP\\api-admins"
    assert not names.check_file()                                  # nothing changed since


def test_readers_never_see_a_partial_map(tmp_path: Path) -> None:
    """Many rewrites while another thread reloads as fast as it can: every load is a whole map."""
    path = tmp_path / "groups.json"
    big = {f"{DOM}-{2000 + i}": f"CORP\\g{i:05d}" for i in range(3000)}
    write_map(path, big)
    names = GroupNames.load(path, reload_interval=0)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            write_map(path, big if i % 2 else {**big, f"{DOM}-9": "CORP\\extra"})
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            names.reload()
            assert names.error is None, names.error
            assert len(names) in (3000, 3001)
    finally:
        stop.set()
        t.join()


# -- sync, against ldap3's offline mock ---------------------------------------------------------------------------

def mock_directory(groups: dict[str, str], extra: Callable[[Any], None] | None = None) -> Callable[[SyncOptions], Any]:
    """A connect() for sync(): ldap3's MOCK_SYNC strategy holding the groups (and a user, which must be skipped)."""

    def connect(o: SyncOptions) -> Any:
        server = ldap3.Server("dc1.corp.example", get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=f"CN=sync,{o.base_dn}", password="pw", client_strategy=ldap3.MOCK_SYNC)
        conn.strategy.add_entry(f"CN=sync,{o.base_dn}", {"objectClass": "user", "userPassword": "pw",
                                                           "sAMAccountName": "sync",
                                                           "objectSid": sid_from_str(f"{DOM}-1500")})
        for sid, name in groups.items():
            conn.strategy.add_entry(f"CN={name},OU=groups,{o.base_dn}",
                                    {"objectClass": "group", "sAMAccountName": name, "objectSid": sid_from_str(sid)})
        if extra:
            extra(conn)
        conn.bind()
        return conn

    return connect


def test_sync_writes_every_group_past_the_page_size(tmp_path: Path) -> None:
    groups = {f"{DOM}-{3000 + i}": f"fk-bulk-{i:04d}" for i in range(1200)}   # pages of 500
    groups["S-1-5-32-544"] = "Administrators"
    out = tmp_path / "groups.json"
    got = sync(SyncOptions("ldaps://dc1.corp.example", "DC=corp,DC=example", out=str(out), domain="CORP"),
               connect=mock_directory(groups))
    assert len(got) == 1201 and f"{DOM}-1500" not in got                      # the user is not a group
    assert got[f"{DOM}-3000"] == "CORP\\fk-bulk-0000" and got["S-1-5-32-544"] == "BUILTIN\\Administrators"
    names = GroupNames.load(out)
    assert names.sids_for("fk-bulk-1199") == (f"{DOM}-4199",)
    assert json.loads(out.read_text())["source"] == "ldaps://dc1.corp.example"


def test_sync_names_the_domain_from_the_base_dn_without_its_crossref(tmp_path: Path) -> None:
    got = sync(SyncOptions("ldaps://dc1", "DC=corp,DC=example"), connect=mock_directory({f"{DOM}-1200": "r"}))
    assert got == {f"{DOM}-1200": "CORP\\r"}


def test_sync_skips_a_name_that_cannot_be_a_header_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = sync(SyncOptions("ldaps://dc1", "DC=corp,DC=example", domain="CORP"),
               connect=mock_directory({f"{DOM}-1200": "ok", f"{DOM}-1201": "a,b"}))
    assert got == {f"{DOM}-1200": "CORP\\ok"}
    assert "skipped" in capsys.readouterr().err


def test_sync_refuses_to_replace_a_map_with_nothing(tmp_path: Path) -> None:
    out = tmp_path / "groups.json"
    write_map(out, GROUPS)
    with pytest.raises(SyncError, match="no group found"):
        sync(SyncOptions("ldaps://dc1", "DC=corp,DC=example", out=str(out)), connect=mock_directory({}))
    assert read_map(out) == GROUPS
    sync(SyncOptions("ldaps://dc1", "DC=corp,DC=example", out=str(out), allow_empty=True), connect=mock_directory({}))
    assert read_map(out) == {}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fastkrb", "groups", "sync", *args], capture_output=True,
                          text=True, env=e, timeout=60)


def test_cli_refuses_a_password_in_clear_and_half_configurations(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    base = ["--base-dn", "DC=corp,DC=example", "--out", str(tmp_path / "m.json")]
    r = _cli("--ldap-url", "ldap://127.0.0.1:9", "--bind-dn", "CN=x", "--password-file", str(pw), *base)
    assert r.returncode == 1 and "in clear" in r.stderr and "secret" not in r.stderr + r.stdout
    r = _cli("--ldap-url", "ldaps://127.0.0.1:9", "--bind-dn", "CN=x", *base)
    assert r.returncode == 2 and "--password-file" in r.stderr
    r = _cli("--ldap-url", "ldaps://127.0.0.1:9", *base)
    assert r.returncode == 1 and "--bind-dn" in r.stderr and "--keytab" in r.stderr
    r = _cli("--ldap-url", "http://dc", "--bind-dn", "CN=x", "--password-file", str(pw), *base)
    assert r.returncode == 1 and "ldaps://" in r.stderr
    # nothing listens on port 9: the step that failed is named, no map is written
    r = _cli("--ldap-url", "ldaps://127.0.0.1:9", "--bind-dn", "CN=x", "--password-file", str(pw), "--timeout", "2",
             *base)
    assert r.returncode == 1 and "connect to ldaps://127.0.0.1:9 failed" in r.stderr
    assert not (tmp_path / "m.json").exists()


# -- sync against a real directory: the Samba AD DC ------------------------------------------------------------

def _dc_run(dc: sdc.SambaDC, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv where the DC's LDAP answers: inside its network namespace, with its client profile."""
    full = {**os.environ, **dc.env, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(dc.netns_argv(argv), capture_output=True, text=True, env=full, timeout=300)


def _tls_args(dc: sdc.SambaDC) -> list[str]:
    """ldaps:// to the DC with Samba's own CA (it makes one on first start) and its host name in the certificate."""
    ca = dc.workdir / "private" / "tls" / "ca.pem"
    return ["--ldap-url", dc.ldap_url.replace("ldap://", "ldaps://"), "--ca-file", str(ca),
            "--tls-name", dc.host_fqdn]


def test_sync_from_samba_simple_bind(samba_dc: sdc.SambaDC, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(samba_dc.admin_password + "\n")
    out = tmp_path / "groups.json"
    r = _dc_run(samba_dc, [sys.executable, "-m", "fastkrb", "groups", "sync", *_tls_args(samba_dc), "--base-dn",
                           samba_dc.base_dn, "--bind-dn", samba_dc.admin_bind_dn, "--password-file", str(pw),
                           "--out", str(out)])
    assert r.returncode == 0, r.stderr
    _check_samba_map(samba_dc, out)


def test_sync_from_samba_gssapi_bind(samba_dc: sdc.SambaDC, tmp_path: Path) -> None:
    """A GSSAPI bind with the Administrator's keytab: a ticket for ldap/dc1.corp.example (an SPN the fixture
    gives the DC's account), over TLS without a SASL security layer (ldap3 has none; the fixture's smb.conf
    allows that with ``ldap server require strong auth = allow_sasl_over_tls``)."""
    assert f"ldap/{samba_dc.host_fqdn}".lower() in {s.lower() for s in samba_dc.dc_account_spns()}
    keytab = tmp_path / "admin.keytab"
    samba_dc.export_keytab(keytab, "Administrator")
    out = tmp_path / "groups.json"
    r = _dc_run(samba_dc, [sys.executable, "-m", "fastkrb", "groups", "sync", *_tls_args(samba_dc), "--base-dn",
                           samba_dc.base_dn, "--keytab", str(keytab), "--sasl-host", samba_dc.host_fqdn,
                           "--out", str(out)])
    assert r.returncode == 0, r.stderr
    _check_samba_map(samba_dc, out)


def _check_samba_map(dc: sdc.SambaDC, out: Path) -> None:
    names = GroupNames.load(out)
    doc = json.loads(out.read_text())
    assert doc["domain"] == "CORP"                                   # the NetBIOS name, from the crossRef
    domain_sid = dc.domain_sid()
    # the directory's own answers: every group of the fixture, under its objectSid
    for group in ("fk-g1", "fk-g2", "fk-dl", "fk-univ", "fk-bulk-0001", "fk-bulk-1000"):
        (sid,) = names.sids_for(f"CORP\\{group}")
        assert sid.startswith(domain_sid + "-")
        truth = dc.search(dc.base_dn, "objectSid", scope="sub", expr=f"(sAMAccountName={group})")
        assert truth[0]["objectSid"][0] == sid
    assert names.sids_for("Domain Users") == (f"{domain_sid}-513",)
    assert names.sids_for("BUILTIN\\Administrators") == ("S-1-5-32-544",)
    assert sum(1 for _, n in names.items() if n.startswith("CORP\\fk-bulk-")) == 1000   # paged past 1,000
