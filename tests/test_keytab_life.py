"""Keytab life (issue 13): unusable entries skipped and reported, start-up that fails fast, key age."""

from __future__ import annotations

import logging
import os

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
