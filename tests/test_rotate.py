"""`fastkrb keytab rotate` / `keytab prune` (tools/rotate.py, krb/kpasswd.py) against MIT's kadmind.

The MIT realm of support/mit.py runs krb5kdc only; this module's realm also runs kadmind, which serves the
kpasswd protocol (RFC 3244) on its own loopback port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Validator
from fastkrb.errors import KerberosError
from fastkrb.keytab import Keytab
from fastkrb.krb import kpasswd
from fastkrb.tools import rotate
from fastkrb.tools.cli import main as cli_main
from fastkrb.tools.kdcclient import KdcAddress
from support import procs
from support.mit import MitRealm
from support.realm import which

ENCTYPES = (18, 17)

pytestmark = pytest.mark.skipif(not which("kadmind") or not which("krb5kdc"), reason="MIT kadmind not installed")


class KpasswdRealm:
    def __init__(self, realm: MitRealm, kpasswd_port: int, kadmind: subprocess.Popen[bytes]) -> None:
        self.realm, self.kpasswd_port, self.kadmind = realm, kpasswd_port, kadmind

    @property
    def kdc(self) -> KdcAddress:
        return KdcAddress("127.0.0.1", self.realm.port)

    @property
    def kp(self) -> KdcAddress:
        return KdcAddress("127.0.0.1", self.kpasswd_port)

    def kdc_kvno(self, principal: str) -> int:
        out = self.realm.kadmin(f"getprinc {principal}")
        m = re.search(r"Key: vno (\d+)", out)
        assert m, out
        return int(m.group(1))

    def new_service(self, tmp: Path, host: str) -> tuple[str, Path]:
        spn = self.realm.add_service(self.realm.service(host), ENCTYPES)
        kt = tmp / f"{host}.keytab"
        self.realm.export(kt, spn)
        return spn, kt


@pytest.fixture(scope="module")
def kp_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KpasswdRealm]:
    realm = MitRealm(name="ROTATE.TEST", workdir=tmp_path_factory.mktemp("rotate-mit"), domain="rotate.test")
    realm.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        kp_port, adm_port = procs.free_port(), procs.free_port()
        conf = realm.kdc_conf.read_text()
        conf = re.sub(r"(\n(\s*)max_life = 10h\n)",
                      rf"\1\2kpasswd_listen = 127.0.0.1:{kp_port}\n\2kadmind_listen = 127.0.0.1:{adm_port}\n"
                      rf"\2kpasswd_port = {kp_port}\n\2kadmind_port = {adm_port}\n", conf, count=1)
        assert "kpasswd_listen" in conf
        realm.kdc_conf.write_text(conf)
        log = realm.workdir / "kadmind.out"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([which("kadmind") or "kadmind", "-nofork", "-r", realm.name,
                                     "-P", str(realm.workdir / "kadmind.pid")],
                                    stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **realm.env},
                                    start_new_session=True)
        procs.wait_listening(kp_port, proc, realm.workdir / "kadmin.log", "kadmind")
        yield KpasswdRealm(realm, kp_port, proc)
    finally:
        if proc is not None:
            procs.stop(proc)
        realm.stop()


def _validator(kt: Path) -> Validator:
    return Validator(str(kt), enctypes=(20, 19, 18, 17), replay_cache="memory", replay_capacity=1024, cold_start=False)


def test_rotate_keeps_old_and_adds_new_kvno(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    r = kp_realm.realm
    spn, kt = kp_realm.new_service(tmp_path, "web1")
    os.chmod(kt, 0o640)
    before = Keytab.load(kt)
    old_kvno = max(e.kvno for e in before)
    # a ticket issued under the old key, before the rotation
    cc_old = r.kinit(tmp_path / "cc-old")
    r.fetch_ticket(cc_old, spn)

    res = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)

    assert res.old_kvno == old_kvno and res.new_kvno == old_kvno + 1
    assert kp_realm.kdc_kvno(spn) == res.new_kvno
    after = Keytab.load(kt)
    assert {e.kvno for e in after} == {old_kvno, res.new_kvno}
    # kadmind derives the new password's keys for every supported enctype, not only the old kvno's
    assert set(ENCTYPES) <= {e.enctype for e in after if e.kvno == res.new_kvno} == set(res.enctypes)
    assert os.stat(kt).st_mode & 0o777 == 0o640
    assert [e for e in after if e.kvno == old_kvno] == list(before)

    v = _validator(kt)
    tok_old, _ = r.get_token(spn, ccache=cc_old)  # the ticket from before the rotation
    assert v.validate(tok_old).kvno == old_kvno
    cc_new = r.kinit(tmp_path / "cc-new")
    r.fetch_ticket(cc_new, spn)
    assert f"kvno = {res.new_kvno}" in r.run(["kvno", "-c", f"FILE:{cc_new}", spn]).stdout
    tok_new, _ = r.get_token(spn, ccache=cc_new)
    assert v.validate(tok_new).kvno == res.new_kvno
    # and the old keytab alone does not accept the new ticket
    old_only = tmp_path / "old.keytab"
    before.save(old_only)
    with pytest.raises(KerberosError):
        _validator(old_only).validate(tok_new)


def test_rotate_over_udp_twice(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    """UDP, and both protocol versions: 0xff80 (ChangePasswdData naming ourselves) then 1 (the bare password)."""
    spn, kt = kp_realm.new_service(tmp_path, "web2")
    a = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp, proto="udp",
                      kpasswd_version=kpasswd.VERSION_SET)
    b = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp, proto="udp")
    assert b.new_kvno == a.new_kvno + 1
    assert {e.kvno for e in Keytab.load(kt)} == {a.old_kvno, a.new_kvno, b.new_kvno}


def test_wrong_current_key_is_typed_and_keytab_untouched(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    spn, _ = kp_realm.new_service(tmp_path, "web3")
    kvno = kp_realm.kdc_kvno(spn)
    bad = Keytab()
    for et in ENCTYPES:
        bad.add(spn, os.urandom(32 if et == 18 else 16), enctype=et, kvno=kvno)
    kt = tmp_path / "bad.keytab"
    bad.save(kt)
    raw = kt.read_bytes()
    with pytest.raises(rotate.CurrentKeyRejected) as ei:
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert ei.value.details["changed"] is False
    assert "Nothing changed" in ei.value.cause
    assert kt.read_bytes() == raw
    assert kp_realm.kdc_kvno(spn) == kvno
    assert not list(tmp_path.glob(".keytab-rotate-*"))


def test_kpasswd_refusal_is_typed(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    """A password the server's policy refuses (MIT: a minimum length) -> KpasswdError, nothing changed."""
    r = kp_realm.realm
    r.kadmin("addpol -minlength 64 long")
    spn, kt = kp_realm.new_service(tmp_path, "web4")
    r.kadmin(f"modprinc -policy long {spn}")
    raw = kt.read_bytes()
    kvno = kp_realm.kdc_kvno(spn)
    with pytest.raises(kpasswd.KpasswdError) as ei:
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert ei.value.details["result_code"] == 4  # KRB5_KPASSWD_SOFTERROR
    assert "still holds kvno" in ei.value.cause
    assert kt.read_bytes() == raw and kp_realm.kdc_kvno(spn) == kvno


def test_no_kpasswd_service(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    spn, kt = kp_realm.new_service(tmp_path, "web5")
    raw = kt.read_bytes()
    with pytest.raises(kpasswd.KpasswdError) as ei:
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=KdcAddress("127.0.0.1", procs.free_port()))
    assert ei.value.details["kind"] == "refused"
    assert kt.read_bytes() == raw


def test_prune_after_rotation(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    spn, kt = kp_realm.new_service(tmp_path, "web6")
    res = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    early = rotate.prune(kt, 36000)
    assert early.removed == [] and early.kept[0][:2] == (spn, res.old_kvno)
    later = rotate.prune(kt, 36000, now=time.time() + 36001)
    assert later.removed == [(spn, res.old_kvno)]
    assert {e.kvno for e in Keytab.load(kt)} == {res.new_kvno}


def test_cli_rotate_and_prune(kp_realm: KpasswdRealm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spn, kt = kp_realm.new_service(tmp_path, "web7")
    rc = cli_main(["keytab", "rotate", str(kt), "--principal", spn, "--kdc", str(kp_realm.kdc),
                   "--kpasswd-server", str(kp_realm.kp)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "rotated" in out
    assert cli_main(["keytab", "prune", str(kt), "--keep-newest", "--older-than", "10h"]) == 0
    assert "kept" in capsys.readouterr().out
    assert len({e.kvno for e in Keytab.load(kt)}) == 2


def test_duration() -> None:
    assert rotate.parse_duration("10h") == 36000
    assert rotate.parse_duration("1h30m") == 5400
    assert rotate.parse_duration("90") == 90
    with pytest.raises(ValueError):
        rotate.parse_duration("10x")


def test_ad_salt() -> None:
    assert rotate.ad_salt("web$@EXAMPLE.COM", computer=True) == "EXAMPLE.COMhostweb.example.com"
    assert rotate.ad_salt("svc-web@EXAMPLE.COM", computer=False) == "EXAMPLE.COMsvc-web"


def test_random_password_classes() -> None:
    pw = rotate.random_password()
    assert len(pw) == 32 and any(c.isupper() for c in pw) and any(c.isdigit() for c in pw)


# --- Samba's AD DC: kpasswd on 464 inside its network namespace -------------------------------------------------

SRC = Path(__file__).resolve().parent.parent / "src"


def test_rotate_against_samba_ad(samba_dc: Any, tmp_path: Path) -> None:
    """A user service account with an SPN: the keytab (account name + SPN, the same keys) rotated by the CLI run
    in the DC's namespace; AD's salt (REALM + sAMAccountName) comes from ETYPE-INFO2."""
    from support import samba_dc as sdc

    dc = samba_dc
    acct, spn = "fk-rotsvc", f"HTTP/fk-rotate.{sdc.DNS_DOMAIN}"
    db = ["-s", str(dc.smb_conf), "-H", str(dc.sam_ldb)]
    dc.run(["samba-tool", "user", "create", acct, "Fk-Rot-Init-1-Passw0rd!", *db])
    dn = f"CN={acct},CN=Users,{sdc.BASE_DN}"
    dc.run(["ldbmodify", "-H", str(dc.sam_ldb)],
           input=f"dn: {dn}\nchangetype: modify\nadd: servicePrincipalName\nservicePrincipalName: {spn}\n")
    # a self-service change obeys the minimum password age (1 day by default): a PSO lifts it for this account
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "create", "fk-rot-pso", "1", "--min-pwd-age=0",
            *db])
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "apply", "fk-rot-pso", acct, *db])
    principal = f"{acct}@{sdc.REALM}"
    kt = dc.export_keytab(tmp_path / "rot.keytab", principal, spn)
    old_kvno = max(e.kvno for e in Keytab.load(kt))
    etypes = tuple(sorted({e.enctype for e in Keytab.load(kt)}))

    cc_old = dc.kinit("bob", ccache=dc.ccache("rot-old"))
    dc.service_ticket(cc_old, spn)
    tok_old = dc.token(cc_old, spn)

    out = dc.run([sys.executable, "-m", "fastkrb", "keytab", "rotate", str(kt), "--principal", principal,
                  "--kdc", "127.0.0.1", "--json"], netns=True, env={"PYTHONPATH": str(SRC)})
    res = json.loads(out.stdout)
    assert res["old_kvno"] == old_kvno and res["new_kvno"] == old_kvno + 1
    print(f"Samba user account rotation (CLI, TCP) took {res['seconds'] * 1000:.0f} ms: {res['steps']}")
    assert res["salt"] == f"{sdc.REALM}{acct}"
    assert res["also"] == [f"{spn}@{sdc.REALM}"]
    assert dc.kvno(acct) == res["new_kvno"]
    after = Keytab.load(kt)
    assert {e.kvno for e in after.find(f"{spn}@{sdc.REALM}")} == {old_kvno, res["new_kvno"]}

    v = Validator(str(kt), enctypes=(18, 17, 23), replay_cache="memory", replay_capacity=1024, cold_start=False)
    assert v.validate(tok_old).kvno == old_kvno
    cc_new = dc.kinit("bob", ccache=dc.ccache("rot-new"))
    dc.service_ticket(cc_new, spn)
    assert v.validate(dc.token(cc_new, spn)).kvno == res["new_kvno"]
    assert etypes  # the export had keys


def test_running_validator_across_rotation(kp_realm: KpasswdRealm, tmp_path: Path) -> None:
    """A validator loaded before the rotation keeps accepting the old kvno, and after reloading the rewritten
    file accepts both."""
    r = kp_realm.realm
    spn, kt = kp_realm.new_service(tmp_path, "web8")
    v = _validator(kt)
    cc_old = r.kinit(tmp_path / "cc8-old")
    r.fetch_ticket(cc_old, spn)
    res = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert v.validate(r.get_token(spn, ccache=cc_old)[0]).kvno == res.old_kvno
    v.reload(str(kt))
    cc_new = r.kinit(tmp_path / "cc8-new")
    r.fetch_ticket(cc_new, spn)
    assert v.validate(r.get_token(spn, ccache=cc_old)[0]).kvno == res.old_kvno
    assert v.validate(r.get_token(spn, ccache=cc_new)[0]).kvno == res.new_kvno
    print(f"rotation took {res.seconds * 1000:.0f} ms: {res.steps}")


def test_rotate_ad_computer_account_and_wrong_key(samba_dc: Any, tmp_path: Path) -> None:
    """A computer account (salt REALMhost<name>.<domain>, from ETYPE-INFO2), rotated in-process from the DC's
    namespace; then a keytab with a wrong key is refused with a typed error and left byte-identical."""
    from support import samba_dc as sdc

    dc = samba_dc
    name = "fk-rotpc"
    db = ["-s", str(dc.smb_conf), "-H", str(dc.sam_ldb)]
    dc.run(["samba-tool", "computer", "create", name, *db])
    dc.run(["samba-tool", "user", "setpassword", f"{name}$", "--newpassword=Fk-Pc-Init-1-Passw0rd!", *db])
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "create", "fk-rotpc-pso", "2", "--min-pwd-age=0",
            *db])
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "apply", "fk-rotpc-pso", f"{name}$", *db])
    principal = f"{name}$@{sdc.REALM}"
    kt = dc.export_keytab(tmp_path / "pc.keytab", principal)
    old_kvno = max(e.kvno for e in Keytab.load(kt))
    out = dc.run([sys.executable, "-m", "fastkrb", "keytab", "rotate", str(kt), "--kdc", "127.0.0.1", "--json",
                  "--proto", "udp"], netns=True, env={"PYTHONPATH": str(SRC)})
    res = json.loads(out.stdout)
    print(f"Samba computer account rotation (CLI, UDP) took {res['seconds'] * 1000:.0f} ms: {res['steps']}")
    assert res["salt"] == rotate.ad_salt(principal, computer=True) == f"{sdc.REALM}host{name}.{sdc.DNS_DOMAIN}"
    assert res["new_kvno"] == old_kvno + 1 == dc.kvno(f"{name}$")

    bad = Keytab()
    for et in (18, 17):
        bad.add(principal, os.urandom(32 if et == 18 else 16), enctype=et, kvno=res["new_kvno"])
    bad_kt = tmp_path / "bad.keytab"
    bad.save(bad_kt)
    raw = bad_kt.read_bytes()
    fail = dc.run([sys.executable, "-m", "fastkrb", "keytab", "rotate", str(bad_kt), "--kdc", "127.0.0.1"],
                  netns=True, env={"PYTHONPATH": str(SRC)}, check=False)
    assert fail.returncode == 2
    assert "current_key_rejected" in fail.stderr and "KDC_ERR_PREAUTH_FAILED" in fail.stderr, fail.stderr
    assert bad_kt.read_bytes() == raw
    assert dc.kvno(f"{name}$") == res["new_kvno"]


# --- the messages, without a server -----------------------------------------------------------------------------


def _fake_request() -> kpasswd.KpasswdRequest:
    from fastkrb.krb import crypto

    return kpasswd.KpasswdRequest(b"", kpasswd.VERSION_CHANGE, 18, crypto.random_key(18), crypto.random_key(18),
                                  1_800_000_000, 5)


def _server_reply(req: kpasswd.KpasswdRequest, code: int, text: bytes, *, ctime: int | None = None) -> bytes:
    """A reply as a password server builds it: AP-REP (session key) + KRB-PRIV (our subkey)."""
    from fastkrb.krb import crypto
    from fastkrb.krb.asn1 import ApRep, EncApRepPart, EncryptedData

    enc = EncApRepPart(req.ctime if ctime is None else ctime, req.cusec).to_der()
    ap = ApRep(EncryptedData(18, crypto.encrypt(18, req.session_key, 12, enc))).to_der()
    priv = kpasswd._krb_priv(18, req.subkey, code.to_bytes(2, "big") + text, None, None, time.time())
    return (6 + len(ap) + len(priv)).to_bytes(2, "big") + b"\x00\x01" + len(ap).to_bytes(2, "big") + ap + priv


def test_reply_result_codes() -> None:
    req = _fake_request()
    ok = kpasswd.parse_reply(_server_reply(req, 0, b"Password changed"), req)
    assert ok.ok and ok.result_name == "KRB5_KPASSWD_SUCCESS"
    soft = kpasswd.parse_reply(_server_reply(req, 4, b"Password is too short"), req)
    assert not soft.ok and soft.result_name == "KRB5_KPASSWD_SOFTERROR" and soft.text == "Password is too short"
    policy = b"\x00\x00" + (7).to_bytes(4, "big") + (24).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(16)
    assert kpasswd.parse_reply(_server_reply(req, 4, policy), req).text == \
        "password policy: minimum length 7, history 24, complexity on"


def test_reply_must_answer_our_request() -> None:
    from fastkrb.errors import MalformedToken

    req = _fake_request()
    with pytest.raises(MalformedToken):
        kpasswd.parse_reply(_server_reply(req, 0, b"", ctime=req.ctime + 1), req)
    with pytest.raises(MalformedToken):
        kpasswd.parse_reply(_server_reply(req, 0, b"")[:-3], req)
    with pytest.raises(MalformedToken):
        kpasswd.parse_reply(b"\x00\x04", req)


def test_change_passwd_data_der() -> None:
    from fastkrb.krb.asn1 import PrincipalName

    der = kpasswd.encode_change_passwd_data(b"pw", PrincipalName(1, ("svc",)), "R")
    assert der.startswith(b"\x30") and b"pw" in der and b"svc" in der


def test_incomplete_rotation_keeps_keytab_and_says_what_kdc_holds(kp_realm: KpasswdRealm, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The KDC takes the new password but no derived key works (a salt we cannot guess, simulated): typed error,
    the keytab unchanged, the candidate keys kept in a .pending file."""
    from fastkrb.krb import crypto

    spn, kt = kp_realm.new_service(tmp_path, "web9")
    raw = kt.read_bytes()
    kvno = kp_realm.kdc_kvno(spn)
    real = crypto.string_to_key
    monkeypatch.setattr(crypto, "string_to_key", lambda et, pw, salt, params=None, **kw: real(et, pw, "NOT-THE-SALT",
                                                                                               params, **kw))
    with pytest.raises(rotate.RotationIncomplete) as ei:
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert ei.value.details["changed"] is True
    assert f"not kvno {kvno}" in ei.value.cause
    assert kt.read_bytes() == raw
    assert kp_realm.kdc_kvno(spn) == kvno + 1
    pending = Path(ei.value.details["pending"])
    assert pending.stat().st_mode & 0o777 == 0o600 and len(Keytab.load(pending)) > 0


def test_unwritable_keytab_is_refused_before_the_kdc(kp_realm: KpasswdRealm, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run as root, so an unwritable directory is simulated: refused before any exchange."""
    spn, kt = kp_realm.new_service(tmp_path, "web10")
    kvno = kp_realm.kdc_kvno(spn)
    monkeypatch.setattr(rotate.os, "access", lambda *_a, **_k: False)
    with pytest.raises(rotate.RotationRefused, match="not writable"):
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert kp_realm.kdc_kvno(spn) == kvno


def test_lost_reply_is_settled_by_the_kdc(kp_realm: KpasswdRealm, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No reply from the password server (a lost UDP datagram): the new keys decide whether the change happened.
    Processed but lost -> the rotation completes; never sent -> kpasswd_failed saying the KDC holds the old kvno."""
    real_send = kpasswd.send

    def processed_then_lost(*a: Any, **k: Any) -> Any:
        real_send(*a, **k)
        raise kpasswd.KpasswdError("no reply.", details={"kind": "timeout", "changed": False})

    spn, kt = kp_realm.new_service(tmp_path, "web11")
    monkeypatch.setattr(kpasswd, "send", processed_then_lost)
    res = rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp, proto="udp")
    assert res.new_kvno == res.old_kvno + 1 == kp_realm.kdc_kvno(spn)
    assert any("no usable reply" in step for step in res.steps)

    def never_sent(*a: Any, **k: Any) -> Any:
        raise kpasswd.KpasswdError("no reply.", details={"kind": "timeout", "changed": False})

    spn, kt = kp_realm.new_service(tmp_path, "web12")
    raw = kt.read_bytes()
    monkeypatch.setattr(kpasswd, "send", never_sent)
    with pytest.raises(kpasswd.KpasswdError, match="still holds kvno 1 \\(checked"):
        rotate.rotate(kt, spn, kp_realm.kdc, kpasswd_addr=kp_realm.kp)
    assert kt.read_bytes() == raw and not list(tmp_path.glob("web12.keytab.pending-*"))
