"""`fastkrb doctor` against the real MIT KDC: every misconfiguration made for real, and the finding that names it.

Stale keytabs come from real key rotations (kadmin cpw), missing enctypes from a keytab that lacks the
KDC's ticket enctype, wrong keys from MIT ktutil with a wrong password, the clock offset from libfaketime
around doctor's own process, the closed port from a port nothing listens on. Doctor must not only fail
(exit 1) but say which check failed, with the evidence an operator needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fastkrb.tools.doctor import DoctorConfig, Report, read_krb5_conf, run_doctor
from fastkrb.tools.kdcclient import KdcAddress, parse_kdc
from support.keytabfile import keytab_kvnos, read_keytab
from support.krb5conf import ENCTYPES
from support.procs import free_port

REPO = Path(__file__).resolve().parents[1]


_COPIES: list[tempfile.TemporaryDirectory[str]] = []   # one per process, removed at exit by its finalizer


def private(keytab: str | Path) -> str:
    """A 0600 copy: the fixture writes some keytab variants with the umask's 0644, which doctor flags.
    (Other modules use this helper too, so the copies' directory is the process's, not a fixture's.)"""
    if not _COPIES:
        _COPIES.append(tempfile.TemporaryDirectory(prefix="fk-doctor-"))
    d = Path(tempfile.mkdtemp(dir=_COPIES[0].name))
    dst = d / Path(keytab).name
    shutil.copyfile(keytab, dst)
    os.chmod(dst, 0o600)
    return str(dst)


def doctor(lab: Any, keytab: str | Path | None, *principals: str, raw: bool = False, **kw: Any) -> Report:
    if keytab is not None and not raw and Path(keytab).exists():
        keytab = private(keytab)
    cfg = DoctorConfig(keytab=str(keytab) if keytab else None, principals=principals,
                       krb5_conf=str(lab.realm.krb5_conf), check_dns=False, timeout=kw.pop("timeout", 2.0), **kw)
    return run_doctor(cfg)


def statuses(rep: Report, check: str) -> list[str]:
    return [f.status for f in rep.by_check(check)]


def only(rep: Report, check: str) -> Any:
    found = [f for f in rep.findings if f.check == check]
    assert len(found) == 1, (check, [f.to_dict() for f in rep.findings])
    return found[0]


def cli(lab: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **lab.realm.env, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fastkrb", "doctor", "--no-dns", *args], env=full,
                          capture_output=True, text=True, timeout=120)


# --- healthy ----------------------------------------------------------------------------------------------------


def test_healthy_keytab_and_full_round_trip(mit_lab: Any) -> None:
    svc = mit_lab.services["multi"]
    out = cli(mit_lab, "--keytab", private(mit_lab.keytabs["multi"]), "--principal", svc, "--user", "alice",
              "--password-env", "FK_PW", "--json", env={"FK_PW": mit_lab.realm.password})
    assert out.returncode == 0, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    by = {f["check"]: f for f in rep["findings"]}
    assert rep["ok"] and rep["errors"] == 0
    for check in ("krb5.conf", "keytab.permissions", "keytab.enctypes", "spn.keytab", "kdc.config",
                  "kdc.reach.tcp", "kdc.reach.udp", "clock.offset", "kdc.key", "roundtrip.self", "roundtrip.user"):
        assert by[check]["status"] == "ok", by[check]
    assert by["kdc.reach.tcp"]["evidence"]["port"] == mit_lab.realm.port
    assert abs(by["clock.offset"]["evidence"]["offset_seconds"]) < 2
    # the ticket the KDC issues for the service is the one alice would get
    want = ENCTYPES[mit_lab.ticket_enctypes["multi"]]
    assert want in by["roundtrip.user"]["evidence"]["ticket_enctype"]
    assert by["roundtrip.user"]["evidence"]["client"] == mit_lab.realm.user
    assert mit_lab.realm.password not in out.stdout


def test_text_output_names_each_check(mit_lab: Any) -> None:
    out = cli(mit_lab, "--keytab", str(mit_lab.keytabs["svc18"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kdc.key" in out.stdout and "0 error(s)" in out.stdout
    assert all(e.key.hex() not in out.stdout for e in read_keytab(mit_lab.keytabs["svc18"]))


# --- stale keytab, wrong key, missing enctype -------------------------------------------------------------------


@pytest.mark.parametrize("keytab", ["rotated_k1", "rotated_k12"])
def test_stale_keytab_after_rotation(mit_lab: Any, keytab: str) -> None:
    svc = mit_lab.services["rotated"]  # the KDC is at kvno 3
    rep = doctor(mit_lab, mit_lab.keytabs[keytab], svc, user="alice", password=mit_lab.realm.password)
    assert not rep.ok
    key = only(rep, "kdc.key")
    assert key.status == "error" and "stale" in key.summary
    newest = max(keytab_kvnos(mit_lab.keytabs[keytab]))
    assert key.evidence["keytab_kvno"] == newest
    assert all("does not match" in v for v in key.evidence["keys"].values())
    assert "Export the keytab again" in key.fix
    # the user's real ticket carries kvno 3, and validation says why it fails
    user = only(rep, "roundtrip.user")
    assert user.status == "error" and user.evidence["code"] == "key_version_mismatch"
    assert user.evidence["ticket_kvno"] == 3 and user.evidence["details"]["keytab_kvnos"] == \
        keytab_kvnos(mit_lab.keytabs[keytab])


def test_current_keytab_after_rotation_is_ok(mit_lab: Any) -> None:
    rep = doctor(mit_lab, mit_lab.keytabs["rotated_k23"], mit_lab.services["rotated"])
    assert rep.ok, [f.to_dict() for f in rep.findings if f.status == "error"]
    assert only(rep, "kdc.key").evidence["keytab_kvno"] == 3
    assert only(rep, "roundtrip.self").evidence["ticket_kvno"] == 3


def test_key_from_wrong_password_same_kvno(mit_lab: Any) -> None:
    svc = mit_lab.services["svc18"]
    rep = doctor(mit_lab, mit_lab.keytabs["svc18_wrong"], svc)
    key = only(rep, "kdc.key")
    assert key.status == "error"
    assert key.evidence["keytab_kvno"] == 1
    # the KDC's salt is reported, for whoever rebuilds the keytab from the password
    assert key.evidence["kdc_salts"]["aes256-cts-hmac-sha1-96(18)"] == "FASTKRB.TESTHTTPsvc18.fastkrb.test"
    assert "salt" in key.fix


def test_missing_enctype_is_named_and_proven(mit_lab: Any) -> None:
    svc = mit_lab.services["multi"]
    et = mit_lab.ticket_enctypes["multi"]
    rep = doctor(mit_lab, mit_lab.keytabs["multi_missing"], svc)
    assert not rep.ok
    missing = only(rep, "kdc.enctypes.missing")
    assert f"{ENCTYPES[et]}({et})" in missing.evidence["missing"]
    # the other keys are current ...
    assert only(rep, "kdc.key").status == "ok"
    # ... but the KDC's ticket for the service uses the one the keytab lacks
    rt = only(rep, "roundtrip.self")
    assert rt.status == "error" and rt.evidence["code"] == "enctype_not_in_keytab"
    assert rt.evidence["ticket_enctype"] == f"{ENCTYPES[et]}({et})"


def test_spn_missing_from_keytab_and_kdc(mit_lab: Any) -> None:
    rep = doctor(mit_lab, mit_lab.keytabs["svc18"], "HTTP/nothere.fastkrb.test")
    spn = only(rep, "spn.keytab")
    assert spn.status == "error" and spn.evidence["principal"] == "HTTP/nothere.fastkrb.test@FASTKRB.TEST"
    assert mit_lab.services["svc18"] in spn.evidence["keytab_principals"]
    unknown = only(rep, "kdc.principal")
    assert unknown.status == "error" and "C_PRINCIPAL_UNKNOWN" in unknown.summary


def test_preauth_required_principal(mit_lab: Any, tmp_path: Path) -> None:
    """A service with +requires_preauth: the key is proven with PA-ENC-TIMESTAMP, and a stale key is found."""
    realm = mit_lab.realm
    name = realm.principal("HTTP/doctor-pre.fastkrb.test")
    realm.kadmin(f"addprinc -randkey +requires_preauth {name}")
    kt = realm.export(tmp_path / "pre.keytab", name)
    rep = doctor(mit_lab, kt, name)
    key = only(rep, "kdc.key")
    assert key.status == "ok", key.to_dict()
    assert only(rep, "roundtrip.self").status == "ok"
    realm.rotate(name)
    rep = doctor(mit_lab, kt, name)
    key = only(rep, "kdc.key")
    assert key.status == "error" and "PREAUTH_FAILED" in json.dumps(key.evidence["keys"])


# --- file permissions and dev keytabs ----------------------------------------------------------------------------


def test_world_readable_keytab(mit_lab: Any, tmp_path: Path) -> None:
    kt = tmp_path / "open.keytab"
    shutil.copyfile(mit_lab.keytabs["svc18"], kt)
    os.chmod(kt, 0o644)
    rep = doctor(mit_lab, kt, mit_lab.services["svc18"], raw=True)
    perm = only(rep, "keytab.permissions")
    assert perm.status == "error" and perm.evidence["mode"] == "0644" and "chmod 600" in perm.fix
    assert not rep.ok


def test_unreadable_keytab_path(mit_lab: Any, tmp_path: Path) -> None:
    rep = doctor(mit_lab, tmp_path / "absent.keytab", mit_lab.services["svc18"])
    assert only(rep, "keytab.file").status == "error"


# --- network ----------------------------------------------------------------------------------------------------


def test_closed_port_is_named(mit_lab: Any) -> None:
    port = free_port()
    out = cli(mit_lab, "--keytab", private(mit_lab.keytabs["svc18"]), "--kdc", f"127.0.0.1:{port}", "--json",
              "--timeout", "1")
    assert out.returncode == 1
    rep = json.loads(out.stdout)
    reach = [f for f in rep["findings"] if f["check"].startswith("kdc.reach")]
    assert {f["evidence"]["proto"] for f in reach} == {"tcp", "udp"}
    for f in reach:
        assert f["status"] == "error" and f["evidence"]["port"] == port
        assert f["evidence"]["kind"] == "refused", f
        assert f"127.0.0.1:{port}/{f['evidence']['proto']}" in f["summary"]
    key = [f for f in rep["findings"] if f["check"] == "kdc.key"]
    assert key and key[0]["status"] == "error" and "no KDC answered" in key[0]["summary"]


def test_kdc_from_krb5_conf_and_command_line_agree(mit_lab: Any) -> None:
    a = doctor(mit_lab, None, mit_lab.services["svc18"])
    b = doctor(mit_lab, None, mit_lab.services["svc18"], kdcs=[f"127.0.0.1:{mit_lab.realm.port}"])
    assert only(a, "kdc.config").evidence["kdcs"] == only(b, "kdc.config").evidence["kdcs"]
    assert only(a, "kdc.config").evidence["source"] == "krb5.conf"
    assert statuses(a, "kdc.reach") == ["ok", "ok"]


# --- the clock -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [600, -900])
def test_clock_offset_measured_from_the_kdc(mit_lab: Any, faketime: str, shift: int) -> None:
    """Doctor's own clock moved by libfaketime: the offset is read from the KDC's KRB-ERROR stime."""
    out = cli(mit_lab, "--keytab", private(mit_lab.keytabs["multi"]), "--json",
              env={"LD_PRELOAD": faketime, "FAKETIME": f"{shift:+d}", "FAKETIME_DONT_RESET": "1",
                   "DONT_FAKE_MONOTONIC": "1"})
    assert out.returncode == 1, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    by = {f["check"]: f for f in rep["findings"]}
    clock = by["clock.offset"]
    assert clock["status"] == "error"
    assert abs(clock["evidence"]["offset_seconds"] + shift) < 5, clock
    assert ("ahead of" if shift > 0 else "behind") in clock["summary"]
    # the keys are still checked (timestamps corrected by the measured offset) ...
    assert by["kdc.key"]["status"] == "ok"
    # ... and a real ticket fails here exactly as it would for clients
    assert by["roundtrip.self"]["status"] == "error"
    assert by["roundtrip.self"]["evidence"]["code"] in ("clock_skew", "ticket_not_yet_valid", "ticket_expired")


def test_small_offset_is_only_a_warning(mit_lab: Any, faketime: str) -> None:
    out = cli(mit_lab, "--keytab", private(mit_lab.keytabs["multi"]), "--json", "--clock-skew", "300",
              env={"LD_PRELOAD": faketime, "FAKETIME": "+200", "FAKETIME_DONT_RESET": "1", "DONT_FAKE_MONOTONIC": "1"})
    rep = json.loads(out.stdout)
    clock = next(f for f in rep["findings"] if f["check"] == "clock.offset")
    assert clock["status"] == "warning" and abs(clock["evidence"]["offset_seconds"] + 200) < 5
    assert out.returncode == 0, "warnings alone do not fail the run"


# --- pieces without a KDC ------------------------------------------------------------------------------------------


def test_krb5_conf_parser(tmp_path: Path) -> None:
    inc = tmp_path / "conf.d"
    inc.mkdir()
    (inc / "extra").write_text("[realms]\n OTHER.TEST = {\n  kdc = other.test\n }\n")
    conf = tmp_path / "krb5.conf"
    conf.write_text(f"""# comment
includedir {inc}
[libdefaults]
    default_realm = EXAMPLE.TEST
    clockskew = 120
    rdns = false
[realms]
    EXAMPLE.TEST = {{
        kdc = kdc1.example.test:88
        kdc = [2001:db8::1]:750
        admin_server = kdc1.example.test
    }}
""")
    profile, files = read_krb5_conf([str(conf)])
    assert files == [str(conf), str(inc / "extra")]
    assert profile["libdefaults"]["default_realm"] == ["EXAMPLE.TEST"]
    assert profile["realms"]["EXAMPLE.TEST"]["kdc"] == ["kdc1.example.test:88", "[2001:db8::1]:750"]
    assert profile["realms"]["OTHER.TEST"]["kdc"] == ["other.test"]
    assert parse_kdc("[2001:db8::1]:750") == KdcAddress("2001:db8::1", 750)
    assert parse_kdc("tcp/kdc.example.test") == KdcAddress("kdc.example.test", 88)
    with pytest.raises(ValueError):
        parse_kdc("kdc:99999")


def test_no_kdc_known_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "krb5.conf"
    conf.write_text("[libdefaults]\n default_realm = NOKDC.TEST\n")
    rep = run_doctor(DoctorConfig(principals=["HTTP/x.nokdc.test"], krb5_conf=str(conf), check_dns=False))
    f = only(rep, "kdc.config")
    assert f.status == "error" and "NOKDC.TEST" in f.summary and "--kdc" in f.fix


def test_user_round_trip_with_a_client_keytab(mit_lab: Any, tmp_path: Path) -> None:
    client_kt = mit_lab.realm.export(tmp_path / "alice.keytab", mit_lab.realm.user)
    rep = doctor(mit_lab, mit_lab.keytabs["svc18"], mit_lab.services["svc18"], user="alice",
                 client_keytab=str(client_kt))
    rt = only(rep, "roundtrip.user")
    assert rt.status == "ok" and rt.evidence["client"] == mit_lab.realm.user
    assert rt.evidence["ticket_enctype"] == "aes256-cts-hmac-sha1-96(18)"


def test_user_round_trip_wrong_password(mit_lab: Any) -> None:
    rep = doctor(mit_lab, mit_lab.keytabs["svc18"], mit_lab.services["svc18"], user="alice", password="wrong")
    rt = only(rep, "roundtrip.user")
    assert rt.status == "error" and "cannot get a TGT" in rt.summary
