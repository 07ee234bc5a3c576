"""SPN aliases: a keytab that names the account while clients ask for one of its SPNs.

Active Directory keytabs (samba-tool exportkeytab --principal=<account>, msktutil, ktpass) often hold
``svc-api@CORP`` or ``web1$@CORP`` while clients ask for ``HTTP/api.corp.example``: the KDC encrypts the ticket
with the account's key. MIT's acceptor (no acceptor name) tries its keytab's keys and accepts; fastkrb does the
same for an sname that is not in the keytab. ``server`` is the principal whose key decrypted the ticket,
``requested_server`` the clear-text sname (unauthenticated, RFC 4120 §5.3). Minted tickets first, then the real
MIT KDC with MIT's acceptor on the same tokens.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.krb import asn1
from fastkrb.testing import make_keytab, mint

NOW = 1_700_000_000.0
REALM = "EXAMPLE.TEST"
ACCOUNT = f"svc-api@{REALM}"
SPN = f"HTTP/api.example.test@{REALM}"
OTHER_ACCOUNT = f"web1$@{REALM}"


def _v(kt: Keytab, **kw: Any) -> Validator:
    kw.setdefault("replay_cache", "none")
    kw.setdefault("cold_start", False)
    return Validator(kt, **kw)


def _key(kt: Keytab, principal: str, enctype: int = 18, kvno: int | None = None) -> tuple[bytes, int]:
    e = max((x for x in kt.find(principal) if x.enctype == enctype and (kvno is None or x.kvno == kvno)),
            key=lambda x: x.kvno)
    return e.key, e.kvno


def _alias_token(kt: Keytab, account: str = ACCOUNT, server: str = SPN, enctype: int = 18, kvno: int | None = None,
                 ticket_kvno: int | None = None, seed: int = 1, **kw: Any) -> Any:
    key, kv = _key(kt, account, enctype, kvno)
    return mint(server=server, key=key, ticket_enctype=enctype, kvno=kv if ticket_kvno is None else ticket_kvno,
                now=NOW, rng=random.Random(seed), **kw)


def _code(v: Validator, token: Any) -> KerberosError:
    with pytest.raises(KerberosError) as info:
        v.validate(token, now=NOW)
    assert info.value.cause and info.value.fix
    return info.value


@pytest.fixture
def kt() -> Keytab:
    return make_keytab(principals=(ACCOUNT, OTHER_ACCOUNT), enctypes=(18, 17), kvno=3, rng=random.Random(7))


# --- accepted, and named for what it is


@pytest.mark.parametrize("framing", ["spnego", "krb5", "raw"])
def test_spn_of_the_account_is_accepted(kt: Keytab, framing: str) -> None:
    m = _alias_token(kt, framing=framing, pac=True)
    res = _v(kt).validate(m.token, now=NOW)
    assert res.server == ACCOUNT, "server is the principal whose key decrypted the ticket"
    assert res.requested_server == SPN, "requested_server is the clear-text sname"
    assert res.client == f"alice@{REALM}"
    assert res.kvno == 3 and res.enctype == 18
    assert res.pac_verified, "the PAC's server signature is checked with the decrypting key"
    assert res.to_dict()["requested_server"] == SPN
    assert "requested_server" in repr(res)
    assert m.verify_ap_rep(res.response_token)  # mutual authentication still answers


def test_the_decrypting_account_is_found_among_several(kt: Keytab) -> None:
    m = _alias_token(kt, account=OTHER_ACCOUNT, server=f"HOST/web1.example.test@{REALM}", enctype=17)
    res = _v(kt).validate(m.token, now=NOW)
    assert res.server == OTHER_ACCOUNT and res.enctype == 17
    assert res.requested_server == f"HOST/web1.example.test@{REALM}"


def test_normal_ticket_names_itself_twice(kt: Keytab) -> None:
    m = mint(kt, server=ACCOUNT, now=NOW, rng=random.Random(2))
    res = _v(kt).validate(m.token, now=NOW)
    assert res.server == res.requested_server == ACCOUNT
    assert "requested_server" not in repr(res)


def test_replay_key_is_the_decrypting_principal(kt: Keytab) -> None:
    """The replay identity never depends on the clear-text sname: rewriting it does not make a fresh token."""
    m = _alias_token(kt, framing="raw")
    direct = mint(kt, server=ACCOUNT, now=NOW, rng=random.Random(3), framing="raw")
    a = _v(kt).validate(m.token, now=NOW)
    b = _v(kt).validate(direct.token, now=NOW)
    assert a.replay_key[12:] == b.replay_key[12:], "same principal hash: the account's"
    v = _v(kt, replay_cache="memory")
    v.validate(m.token, now=NOW)
    # the same ticket and authenticator with another SPN written in clear text: a replay all the same
    raw = bytes(m.token)
    renamed = raw.replace(b"api.example.test", b"xyz.example.test")
    assert renamed != raw
    err = _code(v, renamed)
    assert err.code == "replay"


def test_sname_and_realm_are_not_authenticated(kt: Keytab) -> None:
    """Anyone can rewrite the clear-text sname and realm: they show in requested_server and nowhere else."""
    raw = bytes(_alias_token(kt, framing="raw").token)
    for old, new in ((b"api.example.test", b"www.example.evil"), (REALM.encode(), b"EXAMPLE.EVIL")):
        assert raw.count(old) == 1
        res = _v(kt).validate(raw.replace(old, new), now=NOW)
        assert res.server == ACCOUNT
        assert new.decode() in res.requested_server


def test_kvno_first_then_every_kvno(kt: Keytab) -> None:
    """MIT's order: keys of the ticket's kvno first, then the others; a stale kvno hint still finds the key."""
    kt2 = make_keytab(principals=(ACCOUNT,), enctypes=(18,), kvno=4, rng=random.Random(8))
    both = Keytab()
    for e in (*kt.entries, *kt2.entries):
        both.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    m = _alias_token(both, kvno=4)
    assert _v(both).validate(m.token, now=NOW).kvno == 4
    m = _alias_token(both, kvno=3)
    assert _v(both).validate(m.token, now=NOW).kvno == 3
    m = _alias_token(both, kvno=3, ticket_kvno=9)  # the kvno hint is wrong: every key is tried
    assert _v(both).validate(m.token, now=NOW).kvno == 3


def test_principals_keeps_its_meaning(kt: Keytab) -> None:
    """principals= decides which keys are used at all, aliases included."""
    m = _alias_token(kt)
    assert _v(kt, principals=["svc-api"]).validate(m.token, now=NOW).server == ACCOUNT
    assert _v(kt, principals=[ACCOUNT]).validate(m.token, now=NOW).server == ACCOUNT
    err = _code(_v(kt, principals=[OTHER_ACCOUNT]), m.token)
    assert err.code == "wrong_principal"
    assert err.details["alias_keys_tried"] == [f"{OTHER_ACCOUNT} kvno 3"]


def test_sname_in_the_keytab_is_not_an_alias(kt: Keytab) -> None:
    """The normal case is unchanged: an sname the keytab holds is decrypted with that principal's keys only."""
    both = Keytab()
    for e in kt.entries:
        both.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    both.add(SPN, bytes(32), enctype=18, kvno=3)   # the SPN with a wrong key
    m = _alias_token(both)                          # keyed with the account's key
    assert _code(_v(both), m.token).code == "integrity"


def test_enctype_rules_come_first(kt: Keytab) -> None:
    m = _alias_token(kt, enctype=17)
    assert _code(_v(kt, enctypes=(18,)), m.token).code == "enctype_not_permitted"


# --- nothing decrypts: the diagnosis stays precise


def test_no_key_decrypts_names_what_was_tried(kt: Keytab) -> None:
    m = mint(server=SPN, key=bytes(32), ticket_enctype=18, kvno=3, now=NOW, rng=random.Random(4))
    err = _code(_v(kt), m.token)
    assert err.code == "wrong_principal"
    assert err.details["alias_keys_tried"] == [f"{ACCOUNT} kvno 3", f"{OTHER_ACCOUNT} kvno 3"]
    assert err.details["keys_tried"] == 2
    assert SPN in err.cause and "none of its 2 aes256-cts-hmac-sha1-96" in err.cause
    assert sorted(err.details["keytab_principals"]) == sorted([ACCOUNT, OTHER_ACCOUNT])


@pytest.mark.parametrize("ticket_kvno, word", [(9, "newer"), (1, "older")])
def test_no_key_decrypts_says_which_kvno_is_stale(kt: Keytab, ticket_kvno: int, word: str) -> None:
    m = mint(server=SPN, key=bytes(32), ticket_enctype=18, kvno=ticket_kvno, now=NOW, rng=random.Random(5))
    err = _code(_v(kt), m.token)
    assert err.code == "wrong_principal"
    assert f"kvno {ticket_kvno} is {word}" in err.cause
    assert err.details["ticket_kvno"] == ticket_kvno


def test_no_key_of_the_enctype(kt: Keytab) -> None:
    m = mint(server=SPN, key=bytes(32), ticket_enctype=20, kvno=3, now=NOW, rng=random.Random(6))
    err = _code(_v(kt, enctypes=(20, 18, 17)), m.token)
    assert err.code == "wrong_principal"
    assert err.details["alias_keys_tried"] == []
    assert "has no aes256-cts-hmac-sha384-192" in err.cause


def test_later_failures_name_the_account(kt: Keytab) -> None:
    m = _alias_token(kt)
    with pytest.raises(KerberosError) as info:
        _v(kt).validate(m.token, now=NOW + 3600)
    err = info.value
    assert err.code == "clock_skew"
    assert err.details["keytab_principal_used"] == ACCOUNT
    assert err.details["server"] == SPN


def test_async_and_policy_see_the_alias(kt: Keytab) -> None:
    import asyncio

    seen: list[tuple[str, str]] = []

    class Record:
        def check(self, result: Any) -> None:
            seen.append((result.server, result.requested_server))

    v = _v(kt, policy=Record())
    m = _alias_token(kt)
    v.validate(m.token, now=NOW)
    asyncio.run(v.avalidate(_alias_token(kt, seed=9).token, now=NOW))
    assert seen == [(ACCOUNT, SPN)] * 2


# --- the real MIT KDC: the service key exported under an account's name


def _rename_keytab(src: Path, dst: Path, principal: str) -> Path:
    """The keytab's keys (kvno, enctype, key bytes) under another principal name, written byte by byte (v2)."""
    from support.keytabfile import read_keytab

    comps_s, realm = principal.rsplit("@", 1)
    comps = comps_s.split("/")
    out = bytearray(b"\x05\x02")
    for e in read_keytab(src):
        rec = struct.pack(">H", len(comps)) + struct.pack(">H", len(realm)) + realm.encode()
        for c in comps:
            rec += struct.pack(">H", len(c)) + c.encode()
        rec += struct.pack(">IIB", asn1.NT_PRINCIPAL, 0, e.kvno & 0xFF) + struct.pack(">HH", e.enctype, len(e.key))
        rec += e.key + struct.pack(">I", e.kvno)
        out += struct.pack(">i", len(rec)) + rec
    dst.write_bytes(bytes(out))
    return dst


@pytest.mark.parametrize("svc", ["svc18", "svc20", "multi"])
def test_mit_ticket_for_an_spn_of_the_account(mit_lab: Any, tmp_path: Path, svc: str) -> None:
    account = "svc-account@FASTKRB.TEST"
    kt = _rename_keytab(mit_lab.keytabs[svc], tmp_path / "account.keytab", account)
    token, init = mit_lab.get_token(svc, mech="spnego", mutual=True)
    v = Validator(keytab=str(kt), replay_cache="memory", cold_start=False, enctypes=(20, 19, 18, 17))
    res = v.validate(token)
    assert res.server == account
    assert res.requested_server == mit_lab.services[svc]
    assert res.client == "alice@FASTKRB.TEST"
    assert res.pac_verified and res.identity is None  # MIT's minimal PAC: no LOGON_INFO
    from support.mitgss import finish_initiator

    assert finish_initiator(init, res.response_token)
    ok, err, _ = mit_lab.mit_accept(token, kt)
    assert ok, f"MIT's acceptor accepts the same token with the same keytab: {err}"


def test_mit_ticket_with_an_unrelated_account_key(mit_lab: Any, tmp_path: Path) -> None:
    """Another service's key under an account name: neither fastkrb nor MIT accepts."""
    kt = _rename_keytab(mit_lab.keytabs["other"], tmp_path / "other.keytab", "svc-account@FASTKRB.TEST")
    token, _ = mit_lab.get_token("svc18")
    v = Validator(keytab=str(kt), replay_cache="memory", cold_start=False)
    with pytest.raises(KerberosError) as info:
        v.validate(token)
    assert info.value.code == "wrong_principal"
    assert any("svc-account@FASTKRB.TEST" in k for k in info.value.details["alias_keys_tried"])
    ok, _, _ = mit_lab.mit_accept(token, kt)
    assert not ok


def test_inspect_decrypts_an_alias(kt: Keytab) -> None:
    from fastkrb.tools.inspect_token import inspect_token

    rep = inspect_token(_alias_token(kt, pac=True).token, kt, now=NOW)
    assert rep["server"] == SPN and rep["keytab"]["has_server"] is False
    assert rep["ticket"]["decrypted_with_principal"] == ACCOUNT
    assert rep["verdict"]["accepted"] and rep["verdict"]["server"] == ACCOUNT
    assert rep["verdict"]["requested_server"] == SPN
