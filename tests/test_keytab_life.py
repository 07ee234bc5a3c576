"""Keytab life (issue 13): unusable entries skipped and reported, start-up that fails fast, key age."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Validator
from fastkrb.errors import ConfigurationError, KerberosError, KeyUnusable
from fastkrb.keytab import DEV_MARKER, Keytab, NoUsableKeys, is_dev_only, unusable_reason
from fastkrb.testing import mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"


def _crafted() -> Keytab:
    """One good aes256 key (kvno 3), and beside it every kind of entry fastkrb cannot use."""
    kt = Keytab()
    kt.add(SPN, os.urandom(32), enctype=18, kvno=3)
    kt.add(SPN, os.urandom(92), enctype=18, kvno=2)   # Heimdal ext_keytab after cpw --keepold: sealed old key
    kt.add(SPN, os.urandom(8), enctype=3, kvno=3)     # DES
    kt.add(SPN, os.urandom(16), enctype=99, kvno=3)   # unknown enctype
    kt.add(SPN, b"", enctype=17, kvno=3)              # zero-length key
    kt.add(SPN, os.urandom(16), enctype=20, kvno=3)   # aes256-sha384 key of aes128 length
    return kt


def test_reasons_are_precise() -> None:
    kt = _crafted()
    reasons = {(e.kvno, e.enctype): why for e, why in kt.unusable()}
    assert len(reasons) == 5 and len(kt.usable()) == 1
    assert "92 bytes" in reasons[(2, 18)] and "master key" in reasons[(2, 18)]
    assert "DES" in reasons[(3, 3)]
    assert "enctype-99" in reasons[(3, 99)] or "(99)" in reasons[(3, 99)]
    assert "empty" in reasons[(3, 17)]
    assert "16 bytes" in reasons[(3, 20)] and "32" in reasons[(3, 20)]
    assert unusable_reason(kt.usable()[0]) is None


def test_unusable_entries_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    kt = _crafted()
    with caplog.at_level(logging.WARNING, logger="fastkrb"):
        v = Validator(kt, replay_cache="none")
    warned = [m for m in (r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
              if "keytab entry" in m]
    assert len(warned) == 5 and all("skipped" in w for w in warned)
    assert any("kvno 2" in w and "92 bytes" in w for w in warned)
    assert len(v.skipped) == 5
    good = next(e for e in kt.usable())
    assert v.validate(mint(kt, server=SPN, ticket_enctype=18, kvno=3, key=good.key).token_bytes).server == SPN


@pytest.mark.parametrize("kvno,enctype,needle", [
    (2, 18, "92 bytes"),       # the sealed old key
    (3, 17, "empty"),          # zero-length
    (3, 20, "16 bytes"),       # wrong length
])
def test_ticket_needing_an_unusable_entry_names_it(kvno: int, enctype: int, needle: str) -> None:
    kt = _crafted()
    v = Validator(kt, replay_cache="none")
    from fastkrb.testing import _random_key  # a key the KDC might have: it cannot match the unusable entry
    tok = mint(kt, server=SPN, ticket_enctype=enctype, kvno=kvno, key=_random_key(None, enctype)).token_bytes
    with pytest.raises(KeyUnusable) as ei:
        v.validate(tok)
    err = ei.value
    assert needle in err.cause and f"kvno {kvno}" in err.cause and SPN in err.cause
    assert err.details["unusable_entry"] == {"principal": SPN, "kvno": kvno, "enctype": enctype}
    assert err.code == "key_unusable" and err.fix


def test_no_usable_entry_is_a_typed_error() -> None:
    kt = Keytab()
    kt.add(SPN, os.urandom(8), enctype=1, kvno=1)
    kt.add(SPN, os.urandom(92), enctype=18, kvno=1)
    with pytest.raises(NoUsableKeys) as ei:
        Validator(kt, replay_cache="none")
    err = ei.value
    assert isinstance(err, KerberosError) and err.code == "keytab_unusable"
    assert "no entry fastkrb can use" in err.cause and "92 bytes" in err.cause and err.fix
    assert "error 4" not in str(err)
    with pytest.raises(NoUsableKeys):
        Validator(Keytab(), replay_cache="none")


def test_principal_with_too_many_components_is_skipped() -> None:
    kt = _aes()
    kt.add("a/b/c/d/e/f/g/h/i@EXAMPLE.TEST", os.urandom(32), enctype=18, kvno=1)
    v = Validator(kt, replay_cache="none")
    assert [s[0] for s in v.skipped] == ["a/b/c/d/e/f/g/h/i@EXAMPLE.TEST"] and "9 name components" in v.skipped[0][3]


def test_no_internal_error_number_reaches_the_user() -> None:
    kt = Keytab()
    kt.add(SPN, os.urandom(31), enctype=18, kvno=1)
    with pytest.raises(KerberosError) as ei:
        Validator(kt, replay_cache="none")
    assert not isinstance(ei.value, (TypeError,)) and "error " not in ei.value.cause


# --- item 2: fail fast ---------------------------------------------------------------------------------------


def _aes() -> Keytab:
    kt = Keytab()
    kt.add(SPN, os.urandom(32), enctype=18, kvno=1)
    kt.add(SPN, os.urandom(16), enctype=17, kvno=1)
    return kt


def test_principal_not_in_keytab() -> None:
    with pytest.raises(ConfigurationError) as ei:
        Validator(_aes(), principals=["HTTP/typo.example.test@EXAMPLE.TEST"], replay_cache="none")
    assert "typo" in ei.value.cause and ei.value.fix and isinstance(ei.value, ValueError)
    Validator(_aes(), principals=[SPN], replay_cache="none")
    Validator(_aes(), principals=["HTTP/api.example.test"], replay_cache="none")   # bare name: any realm


def test_enctypes_none_usable() -> None:
    with pytest.raises(ConfigurationError) as ei:
        Validator(_aes(), enctypes=(20, 19), replay_cache="none")
    assert "permits no enctype" in ei.value.cause
    Validator(_aes(), enctypes=(20, 19, 18), replay_cache="none")   # some missing beside one present: fine


def test_rc4_without_rc4_key() -> None:
    with pytest.raises(ConfigurationError) as ei:
        Validator(_aes(), enctypes=(18, 17, 23), replay_cache="none")
    assert "RC4" in ei.value.cause
    kt = _aes()
    kt.add(SPN, os.urandom(16), enctype=23, kvno=1)
    Validator(kt, enctypes=(18, 17, 23), replay_cache="none")


def test_refused_reload_keeps_the_keys() -> None:
    kt = _aes()
    v = Validator(kt, replay_cache="none")
    tok = lambda: mint(kt, server=SPN, ticket_enctype=18).token_bytes  # noqa: E731
    bad = Keytab()
    bad.add(SPN, os.urandom(92), enctype=18, kvno=2)
    with pytest.raises(NoUsableKeys):
        v.reload(bad)
    assert v.keytab is kt and v.validate(tok()).server == SPN


def test_dev_marker() -> None:
    from fastkrb.tools.dev import MARKER

    assert MARKER == DEV_MARKER
    assert not is_dev_only(_aes())


# --- a real Heimdal realm: ext_keytab after cpw --keepold -----------------------------------------------------


@pytest.mark.kdc
@pytest.mark.heimdal
def test_heimdal_keepold_keytab(heimdal_lab: Any) -> None:
    """A real `kadmin -l cpw --keepold --random-key` then `ext_keytab`: tickets of the current kvno validate,
    as with MIT's acceptor. Issue 13 reports ext_keytab writing the kept old keys still sealed under the master
    key (92 bytes for aes256); this Heimdal 7.8 with `kadmin -l` writes them plain. Either way the test holds:
    sealed entries are skipped and an old ticket is refused naming one; plain ones validate old tickets."""
    r = heimdal_lab.realm
    svc = r.add_service(r.service("keepold"), (18, 17))
    old_cc = r.kinit(r.ccache("keepold-old"))
    r.fetch_ticket(old_cc, svc)                                   # a ticket for kvno 1, before the change
    r.kadmin(f"cpw --keepold --random-key {svc}")
    path = r.export(r.keytab("keepold"), svc)
    kt = Keytab.load(path)
    assert {e.kvno for e in kt.entries} == {1, 2} and {e.kvno for e in kt.usable()} >= {2}
    sealed = {(e.kvno, e.enctype): why for e, why in kt.unusable()}
    assert all(k == 1 and "master key" in why for (k, _), why in sealed.items())

    v = Validator(str(path), replay_cache="memory", cold_start=False)
    assert len(v.skipped) == len(sealed)
    new_cc = r.kinit(r.ccache("keepold-new"))
    token, _ = r.get_token(svc, ccache=new_cc)
    assert v.validate(token).kvno == 2
    assert r.mit_accept(token, path).ok                           # MIT's acceptor agrees

    old_token, _ = r.get_token(svc, ccache=old_cc)
    mit_ok = r.mit_accept(old_token, path).ok
    if sealed:
        with pytest.raises(KeyUnusable) as ei:
            v.validate(old_token)
        assert ei.value.details["unusable_entry"]["kvno"] == 1 and "master key" in ei.value.cause
        assert not mit_ok
    else:
        assert v.validate(old_token).kvno == 1 and mit_ok


def test_sealed_keepold_keytab_as_reported() -> None:
    """The keytab issue 13 reports (Heimdal ext_keytab after cpw --keepold): kvno 2 plain, kvno 1 aes256 and
    aes128 sealed (92 and 76 bytes). Loads, kvno 2 validates, a kvno-1 ticket is refused naming the entry."""
    kt = Keytab()
    kt.add(SPN, os.urandom(32), enctype=18, kvno=2)
    kt.add(SPN, os.urandom(16), enctype=17, kvno=2)
    kt.add(SPN, os.urandom(92), enctype=18, kvno=1)
    kt.add(SPN, os.urandom(76), enctype=17, kvno=1)
    v = Validator(Keytab.from_bytes(kt.to_bytes()), replay_cache="none")
    good = kt.find(SPN, kvno=2, enctype=18)[0]
    assert v.validate(mint(kt, server=SPN, ticket_enctype=18, kvno=2, key=good.key).token_bytes).kvno == 2
    from fastkrb.testing import _random_key
    with pytest.raises(KeyUnusable) as ei:
        v.validate(mint(kt, server=SPN, ticket_enctype=17, kvno=1, key=_random_key(None, 17)).token_bytes)
    assert "kvno 1" in ei.value.cause and "76 bytes" in ei.value.cause


# --- item 5 and the reporting of item 1: keytab list, doctor ------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return subprocess.run([sys.executable, "-m", "fastkrb", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_keytab_list_marks_unusable_entries_and_old_keys(tmp_path: Path) -> None:
    now = int(time.time())
    kt = Keytab()
    kt.add(SPN, os.urandom(32), enctype=18, kvno=3, timestamp=now - 120 * 86400)   # current, 120 days old
    kt.add(SPN, os.urandom(32), enctype=18, kvno=2, timestamp=now - 400 * 86400)   # older kvno: not judged
    kt.add(SPN, os.urandom(92), enctype=18, kvno=1, timestamp=now - 500 * 86400)
    kt.add(SPN, os.urandom(8), enctype=3, kvno=3, timestamp=now - 120 * 86400)
    path = tmp_path / "k.keytab"
    kt.save(path)
    out = _cli("keytab", "list", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    assert "120d" in lines[0] and "WARNING" in lines[0] and "--max-key-age 90" in lines[0]
    assert "400d" in lines[1] and "WARNING" not in lines[1] and "UNUSABLE" not in lines[1]
    assert "UNUSABLE" in lines[2] and "92 bytes" in lines[2] and "master key" in lines[2]
    assert "UNUSABLE" in lines[3] and "DES" in lines[3]
    out = _cli("keytab", "list", "--max-key-age", "365", str(path))
    assert "WARNING" not in out.stdout.splitlines()[0]
    rows = json.loads(_cli("keytab", "list", "--json", str(path)).stdout)
    assert [r["usable"] for r in rows] == [True, True, False, False]
    assert rows[0]["stale"] and not rows[1]["stale"] and 119 < rows[0]["age_days"] < 121
    assert rows[2]["enctype"] == "aes256-cts-hmac-sha1-96(18)" and rows[2]["enctype_number"] == 18
    assert "master key" in rows[2]["reason"]


@pytest.mark.kdc
def test_doctor_key_age_unusable_entries_and_ticket_kvno(mit_lab: Any, tmp_path: Path) -> None:
    from test_doctor import doctor, only

    svc = mit_lab.services["rotated"]   # the KDC is at kvno 3
    src = Keytab.load(mit_lab.keytabs["rotated_k23"])
    old = int(time.time()) - 200 * 86400
    kt = Keytab([dataclasses.replace(e, timestamp=old) for e in src.entries])
    kt.add(svc, os.urandom(92), enctype=18, kvno=1, timestamp=old)
    path = tmp_path / "aged.keytab"
    kt.save(path)
    rep = doctor(mit_lab, path, svc)
    unusable = only(rep, "keytab.unusable")
    assert unusable.status == "warning" and "kvno 1" in unusable.summary and "92 bytes" in unusable.summary
    age = only(rep, "keytab.age")
    assert age.status == "warning" and "200 days" in age.summary and age.evidence["kvno"] == 3
    kvno = only(rep, "kdc.kvno")
    assert kvno.status == "ok" and kvno.evidence["ticket_kvno"] == 3
    assert rep.ok, [f.to_dict() for f in rep.findings if f.status == "error"]
    assert only(doctor(mit_lab, path, svc, max_key_age_days=365), "keytab.age").status == "ok"


@pytest.mark.kdc
def test_doctor_keytab_behind_the_kdc_kvno(mit_lab: Any) -> None:
    """kvno 2 only while the KDC is at 3: the user's ticket shows it (the service's own keys do not match)."""
    from test_doctor import doctor, only

    svc = mit_lab.services["rotated"]
    rep = doctor(mit_lab, mit_lab.keytabs["rotated_k2"], svc, user="alice", password=mit_lab.realm.password)
    kvno = only(rep, "kdc.kvno")
    assert kvno.status == "error" and kvno.evidence["ticket_kvno"] == 3 and kvno.evidence["keytab_kvnos"] == [2]
    assert "out of date" in kvno.summary
