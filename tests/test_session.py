"""Session cookies (fastkrb.sessions.cookie): sealed after one Negotiate, opened instead of the next ones.

Results are real: MIT tickets from the session's KDC (no PAC logon information) and minted AD-style tickets
through the Validator (a PAC with SIDs). Key files are real files, rotated and edited as an operator would;
clocks are injected (``now=``).
"""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from fastkrb import (
    ConfigurationError,
    CookieSettings,
    Forbidden,
    GroupNames,
    Policy,
    SessionCookies,
    SessionExpired,
    SessionInvalid,
    SessionTooLarge,
    Validator,
)
from fastkrb.errors import error_for_code
from fastkrb.sessions.cookie import (
    COOKIE_LIMIT,
    new_session_key,
    new_session_key_file,
    parse_session_keys,
    rotate_session_key_file,
)
from fastkrb.sessions.keyfile import KeyFileError
from fastkrb.sessions.principal import IdentityFacts, PolicyIdentity, PolicySubject, Principal
from fastkrb.testing import make_keytab, mint
from fastkrb.tools import sessionkeys

DOM = "S-1-5-21-1004336348-1177238915-682003330"
SERVICE = "HTTP/api.corp.example@CORP.EXAMPLE"
READERS, WRITERS = f"{DOM}-1200", f"{DOM}-1201"


@pytest.fixture(scope="module")
def ad_keytab() -> Any:
    return make_keytab((SERVICE,), rng=random.Random(16))


def ad_result(keytab: Any, groups: tuple[int, ...] = (513, 1200), client: str = "alice@CORP.EXAMPLE",
              endtime: int | None = None, now: float | None = None, extra: tuple[str, ...] = ()) -> Any:
    """A Validator result of a minted ticket whose PAC grants ``groups`` (RIDs under DOM) and ``extra`` SIDs."""
    t = time.time() if now is None else now
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1104, "group_rids": groups, "extra_sids": list(extra),
                          "logon_domain_name": "CORP", "user_name": client.partition("@")[0]},
           "upn": "alice@corp.example", "dns_domain": "CORP.EXAMPLE"}
    token = mint(keytab, client=client, server=SERVICE, pac=pac, now=t, endtime=endtime).header
    return Validator(keytab, cold_start=False, replay_cache="none").validate(token, now=t)


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].partition("=")[2]


# -- round trips ----------------------------------------------------------------------------------------------

def test_round_trip_with_a_real_mit_ticket(mit_lab: Any) -> None:
    token, _ = mit_lab.get_token("svc18")
    res = Validator(str(mit_lab.keytabs["svc18"]), cold_start=False).validate(token)
    assert res.identity is None   # MIT's PAC has no LOGON_INFO
    cookies = SessionCookies([new_session_key()], CookieSettings(max_age=600))
    now = time.time()
    sealed = cookies.seal(res, now=now)
    p = cookies.open(sealed.value, now=now + 1)
    assert (p.client, p.client_realm, p.server, p.short_name) == (res.client, res.client_realm, res.server,
                                                                 res.short_name)
    assert p.identity is None and p.via == "cookie" and p.kid == sealed.kid
    assert p.issued_at == int(now) and p.expires_at == int(min(res.end_time, now + 600))
    # the same Policy, the same verdicts
    for policy in (Policy(allowed_users=[res.client]), Policy(allowed_users=[res.short_name]),
                   Policy(allowed_realms=[res.client_realm]), Policy(allowed_users=["mallory"]),
                   Policy(allowed_realms=["ELSEWHERE.TEST"]), Policy(allowed_groups=[READERS])):
        assert policy.allows(p) == policy.allows(res), policy
    with pytest.raises(Forbidden) as on_ticket:
        Policy(allowed_groups=[READERS]).check(res)
    with pytest.raises(Forbidden) as on_session:
        Policy(allowed_groups=[READERS]).check(p)
    assert on_session.value.details == on_ticket.value.details
    assert on_session.value.cause == on_ticket.value.cause


def test_round_trip_keeps_the_pac_facts(ad_keytab: Any) -> None:
    res = ad_result(ad_keytab, groups=(513, 1200, 1201), extra=("S-1-5-21-7-8-9-1000",))
    cookies = SessionCookies([new_session_key()])
    p = cookies.open(cookies.seal(res).value)
    ident, facts = res.identity, p.identity
    assert facts is not None and facts == IdentityFacts.of(ident)
    assert facts.user_sid == f"{DOM}-1104" and facts.group_sids == ident.group_sids
    assert (facts.logon_name, facts.logon_domain, facts.upn, facts.dns_domain) == ("alice", "CORP",
                                                                                   "alice@corp.example",
                                                                                   "CORP.EXAMPLE")
    assert isinstance(p, PolicySubject) and isinstance(res, PolicySubject)
    assert isinstance(facts, PolicyIdentity) and isinstance(ident, PolicyIdentity)
    assert json.loads(json.dumps(p.to_dict()))["identity"]["user_sid"] == facts.user_sid


def test_policy_gives_the_same_verdict_on_the_session_as_on_the_ticket(ad_keytab: Any) -> None:
    names = GroupNames({READERS: "CORP\\api-readers", WRITERS: "CORP\\api-writers"})
    policies = [
        Policy(), Policy(allowed_groups=["CORP\\api-readers"], group_names=names),
        Policy(allowed_groups=["CORP\\api-writers"], group_names=names, name="writers"),
        Policy(allowed_groups=["S-1-5-21-7-8-9-1000"]), Policy(allowed_groups=[f"{DOM}-513"]),
        Policy(allowed_users=[f"{DOM}-1104"]), Policy(allowed_users=[f"{DOM}-1105"]),
        Policy(allowed_users=["alice"]), Policy(allowed_users=["bob"]), Policy(allowed_users=["alice@CORP.EXAMPLE"]),
        Policy(allowed_realms=["CORP.EXAMPLE"]), Policy(allowed_realms=["PARTNER.EXAMPLE"]),
        Policy(allowed_users=["alice"], allowed_groups=[WRITERS], allowed_realms=["CORP.EXAMPLE"]),
    ]
    cookies = SessionCookies([new_session_key()])
    verdicts = []
    for res in (ad_result(ad_keytab, groups=(513, 1200)), ad_result(ad_keytab, groups=(513, 1201),
                                                                     extra=("S-1-5-21-7-8-9-1000",))):
        p = cookies.open(cookies.seal(res).value)
        for policy in policies:
            ok = policy.allows(res)
            assert policy.allows(p) == ok, policy
            verdicts.append(ok)
            if not ok:
                with pytest.raises(Forbidden) as a:
                    policy.check(res)
                with pytest.raises(Forbidden) as b:
                    policy.check(p)
                assert (b.value.cause, b.value.details) == (a.value.cause, a.value.details)
    assert True in verdicts and False in verdicts   # both kinds of verdict were compared


# -- refusals ---------------------------------------------------------------------------------------------------

def test_every_altered_byte_is_refused(ad_keytab: Any) -> None:
    cookies = SessionCookies([new_session_key()])
    value = cookies.seal(ad_result(ad_keytab)).value
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    reasons = set()
    for i in range(len(raw)):
        for flip in (0x01, 0x80):
            bad = bytearray(raw)
            bad[i] ^= flip
            text = base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode()
            with pytest.raises(SessionInvalid) as ei:
                cookies.open(text)
            reasons.add(ei.value.details["reason"])
    assert {"version", "integrity", "unknown_kid"} <= reasons
    for cut in (1, 16, len(raw) // 2, len(raw) - 1):
        with pytest.raises(SessionInvalid):
            cookies.open(base64.urlsafe_b64encode(raw[:cut]).rstrip(b"=").decode())
    for junk in ("", "A", "AAAAA", "not a cookie", "a" * 9000, value + "A", value + "AA", "=" + value):
        with pytest.raises(SessionInvalid):
            cookies.open(junk)
    cookies.open(value)   # the untouched cookie still opens


def test_expiry_is_the_ticket_end_or_the_max_age(ad_keytab: Any) -> None:
    now = float(int(time.time()))
    cookies = SessionCookies([new_session_key()], CookieSettings(max_age=3600))
    short = cookies.seal(ad_result(ad_keytab, endtime=int(now) + 600, now=now), now=now)
    assert short.expires_at == now + 600   # the ticket ends first
    cookies.open(short.value, now=now + 599)
    with pytest.raises(SessionExpired) as ei:
        cookies.open(short.value, now=now + 600)
    assert ei.value.details["reason"] == "expiry" and ei.value.details["expired_at"] == now + 600
    long = cookies.seal(ad_result(ad_keytab, endtime=int(now) + 36000, now=now), now=now)
    assert long.expires_at == now + 3600   # the maximum age ends first
    assert "Max-Age=3600" in cookies.set_cookie(long, now=now)
    assert "Max-Age=3000" in cookies.set_cookie(long, now=now + 600)
    cookies.open(long.value, now=now + 3599)
    with pytest.raises(SessionExpired):
        cookies.open(long.value, now=now + 3600)
    # lowering max_age ends the sessions already issued at the new maximum
    stricter = SessionCookies(cookies.ring, CookieSettings(max_age=60))
    stricter.open(long.value, now=now + 59)
    with pytest.raises(SessionExpired) as ei:
        stricter.open(long.value, now=now + 60)
    assert ei.value.details["reason"] == "max_age"
    # a ticket that ends now gives no cookie
    with pytest.raises(SessionExpired):
        cookies.seal(ad_result(ad_keytab, endtime=int(now) + 600, now=now), now=now + 600)


def test_the_cookie_name_is_bound(ad_keytab: Any) -> None:
    keys = [new_session_key()]
    a = SessionCookies(keys, CookieSettings(name="app_a"))
    b = SessionCookies(keys, CookieSettings(name="app_b"))
    value = a.seal(ad_result(ad_keytab)).value
    a.open(value)
    with pytest.raises(SessionInvalid) as ei:
        b.open(value)
    assert ei.value.details["reason"] == "integrity" and ei.value.code == "session_invalid"


def test_another_key_under_the_same_id_is_refused(ad_keytab: Any) -> None:
    k = new_session_key()
    value = SessionCookies([k]).seal(ad_result(ad_keytab)).value
    impostor = type(k)(k.kid, os.urandom(32), k.created)
    with pytest.raises(SessionInvalid) as ei:
        SessionCookies([impostor]).open(value)
    assert ei.value.details["reason"] == "integrity"


# -- key files: rotation and removal ------------------------------------------------------------------------------

def test_rotation_keeps_one_period_and_removal_ends_sessions(tmp_path: Path, ad_keytab: Any) -> None:
    path = tmp_path / "session-keys.json"
    first = new_session_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    replica_a = SessionCookies(path, reload_interval=0)
    replica_b = SessionCookies(str(path), reload_interval=0)
    res = ad_result(ad_keytab)
    old = replica_a.seal(res)
    assert old.kid == first.kid
    replica_b.open(old.value)            # replicas share the file

    second = rotate_session_key_file(path)
    assert [k.kid for k in parse_session_keys(path.read_bytes())] == [second.kid, first.kid]
    new = replica_b.seal(res)
    assert new.kid == second.kid        # the new key seals
    replica_a.open(old.value)            # the previous key still opens, for one period
    replica_a.open(new.value)

    third = rotate_session_key_file(path)   # the first key leaves the file: its sessions are gone
    assert [k.kid for k in parse_session_keys(path.read_bytes())] == [third.kid, second.kid]
    with pytest.raises(SessionInvalid) as ei:
        replica_b.open(old.value)
    assert ei.value.details == {"cookie": "fastkrb_session", "kid": first.kid, "reason": "unknown_kid"}
    assert str(path) in ei.value.cause
    replica_b.open(new.value)

    # revoking by hand: the operator removes a key from the file
    doc = json.loads(path.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["kid"] != second.kid]
    path.write_text(json.dumps(doc))
    with pytest.raises(SessionInvalid):
        replica_a.open(new.value)


def test_a_damaged_key_file_keeps_the_keys_in_service(tmp_path: Path, ad_keytab: Any) -> None:
    path = tmp_path / "keys.json"
    new_session_key_file(path)
    cookies = SessionCookies(path, reload_interval=0)
    value = cookies.seal(ad_result(ad_keytab)).value
    path.write_text("{not json")
    assert cookies.ring.check_file() is False and "not JSON" in (cookies.ring.error or "")
    cookies.open(value)
    path.unlink()                        # a file that disappears does not revoke either
    cookies.open(value)


@pytest.mark.parametrize(("doc", "says"), [
    ("[]", "not a fastkrb session-keys file"),
    ('{"fastkrb": "session-keys", "version": 2, "keys": []}', "version 2"),
    ('{"fastkrb": "session-keys", "version": 1, "keys": []}', "lists no keys"),
    ('{"fastkrb": "session-keys", "version": 1, "keys": [{"kid": "a b", "key": ""}]}', "is not 1-64 characters"),
    ('{"fastkrb": "session-keys", "version": 1, "keys": [{"kid": "a", "key": "AAAA"}]}', "not 32 bytes"),
    ('{"fastkrb": "session-keys", "version": 1, "keys": [{"kid": "a", "key": "%s"}, {"kid": "a", "key": "%s"}]}'
     % ((base64.b64encode(bytes(32)).decode(),) * 2), "listed twice"),
    ('{"fastkrb": "signing-keys", "version": 1, "keys": []}', "not a fastkrb session-keys file"),
])
def test_key_file_errors_say_what_is_wrong(tmp_path: Path, doc: str, says: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(doc)
    with pytest.raises(KeyFileError) as ei:
        SessionCookies(path)
    assert says in ei.value.cause and str(path) in ei.value.cause
    assert isinstance(ei.value, ConfigurationError) and ei.value.code == "configuration"
    with pytest.raises(KeyFileError, match="cannot be read"):
        SessionCookies(tmp_path / "missing.json")


# -- the cookie header -------------------------------------------------------------------------------------------

def test_set_cookie_attributes_read_by_an_independent_parser(ad_keytab: Any) -> None:
    now = float(int(time.time()))
    res = ad_result(ad_keytab, now=now)
    default = SessionCookies([new_session_key()]).issue(res, now=now)
    jar: SimpleCookie = SimpleCookie()
    jar.load(default)
    m = jar["fastkrb_session"]
    assert m["secure"] and m["httponly"] and m["samesite"] == "Lax" and m["path"] == "/"
    assert int(m["max-age"]) == 3600 and not m["domain"]
    assert m.value == cookie_value(default)
    custom = SessionCookies([new_session_key()], CookieSettings(name="__Host-s", max_age=120, same_site="Strict"))
    jar.load(custom.issue(res, now=now))
    m = jar["__Host-s"]
    assert m["samesite"] == "Strict" and int(m["max-age"]) == 120 and m["secure"]
    plain = SessionCookies([new_session_key()], CookieSettings(secure=False, http_only=False, same_site=None,
                                                               path="/api", domain="corp.example"))
    header = plain.issue(res, now=now)
    assert "Secure" not in header and "HttpOnly" not in header and "SameSite" not in header
    assert "; Path=/api" in header and "; Domain=corp.example" in header
    assert plain.clear_cookie().startswith("fastkrb_session=; Max-Age=0; Path=/api")


@pytest.mark.parametrize("kw", [{"name": "a;b"}, {"name": ""}, {"max_age": 0}, {"same_site": "none"},
                                {"same_site": "None", "secure": False}, {"path": "api"}, {"path": "/a;b"},
                                {"name": "__Host-x", "path": "/api"}, {"name": "__Secure-x", "secure": False},
                                {"domain": "a b"}])
def test_cookie_settings_that_browsers_would_drop_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CookieSettings(**kw)


def test_authenticate_reads_the_cookie_header(ad_keytab: Any) -> None:
    cookies = SessionCookies([new_session_key()])
    value = cookie_value(cookies.issue(ad_result(ad_keytab)))
    assert cookies.authenticate(None) is None
    assert cookies.authenticate("other=1; theme=dark") is None
    p = cookies.authenticate(f"other=1; fastkrb_session={value}; theme=dark")
    assert isinstance(p, Principal) and p.client == "alice@CORP.EXAMPLE"
    assert cookies.authenticate(["a=1", f'fastkrb_session="{value}"']) == p
    with pytest.raises(SessionInvalid):
        cookies.authenticate("fastkrb_session=forged")


def test_a_cookie_too_large_for_browsers_is_refused_at_sealing(ad_keytab: Any) -> None:
    rng = random.Random(3)
    many = tuple(sorted({513, *(rng.randrange(1100, 10**6) for _ in range(900))}))
    res = ad_result(ad_keytab, groups=many)
    cookies = SessionCookies([new_session_key()])
    with pytest.raises(SessionTooLarge) as ei:
        cookies.seal(res)
    assert ei.value.details["bytes"] > COOKIE_LIMIT and ei.value.details["group_sids"] == len(many)
    typical = ad_result(ad_keytab, groups=many[:60])
    assert len(cookies.issue(typical)) < COOKIE_LIMIT


def test_error_codes_round_trip() -> None:
    for cls in (SessionInvalid, SessionExpired, SessionTooLarge):
        e = error_for_code(cls.code, "why")
        assert type(e) is cls and e.krb_error is None and e.fix


# -- fastkrb keys ----------------------------------------------------------------------------------------------

def test_the_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    assert sessionkeys.main(["keys", "session", "new", str(path)]) == 0
    kid = parse_session_keys(path.read_bytes())[0].kid
    assert f"key {kid} seals session cookies" in capsys.readouterr().out
    assert sessionkeys.main(["keys", "session", "new", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "rotate" in err
    assert sessionkeys.main(["keys", "session", "rotate", str(path)]) == 0
    assert [k.kid for k in parse_session_keys(path.read_bytes())][1] == kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sessionkeys.main(["keys", "session", "rotate", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "none.json cannot be read" in err and "keys session new" in err
    assert sessionkeys.main(["keys", "session", "new", str(tmp_path / "no" / "dir.json")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'no' / 'dir.json'}" in err and "Traceback" not in err


def test_a_key_file_others_can_read_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    new_session_key_file(path)
    with caplog.at_level("WARNING", logger="fastkrb"):
        SessionCookies(path)
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="fastkrb"):
        SessionCookies(path)
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage() and "chmod 600" in r.getMessage()]
