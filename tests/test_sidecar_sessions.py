"""Sessions after one Negotiate in a real ``fastkrb serve``: tokens from MIT's initiator against the MIT lab.

One daemon runs with session cookies and bearer tokens on (its HTTP front door then answers in Python), one
with neither (the native request path answers its /auth). Every claim is checked where it shows: the
answer's headers, /metrics, the decision log, jwcrypto given nothing but the JWKS the daemon serves, and
MIT's initiator reading the KRB-ERROR of a refused token.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt
from prometheus_client.parser import text_string_to_metric_families

from fastkrb.sessions.bearer import TokenIssuer, new_signing_key_file
from fastkrb.sessions.cookie import new_session_key_file
from support.mitgss import finish_initiator, initiator_verdict
from support.sidecar import SRC, Sidecar, recv_all

ISS = "https://auth.fastkrb.test"
AUD = "api.fastkrb.test"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    new_session_key_file(d / "session-keys.json")
    new_signing_key_file(d / "signing-keys.json")
    return {"session": d / "session-keys.json", "signing": d / "signing-keys.json"}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory, mit_lab: Any, keys: dict[str, Path]) -> Iterator[Sidecar]:
    """Cookies and bearer tokens on; the policy "only-alice" allows the lab's user, "nobody" no one."""
    work = tmp_path_factory.mktemp("sessions")
    user = mit_lab.user
    (work / "fastkrb.toml").write_text(f'[policies.only-user]\nallowed_users = ["{user}"]\n'
                                       '[policies.nobody]\nallowed_users = ["nobody@FASTKRB.TEST"]\n')
    args = ("--replay-cache", "memory", "--config", str(work / "fastkrb.toml"), "--session-keys",
            str(keys["session"]), "--signing-keys", str(keys["signing"]), "--token-issuer", ISS, "--token-audience",
            AUD, "--token-ttl", "120")
    with Sidecar(work, mit_lab.keytabs["svc18"], workers=1, args=args) as sc:
        yield sc


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, mit_lab: Any) -> Iterator[Sidecar]:
    """No sessions: the native request path answers /auth (and hands its rejections to Python)."""
    with Sidecar(tmp_path_factory.mktemp("plain"), mit_lab.keytabs["svc18"], workers=1,
                 args=("--replay-cache", "memory")) as sc:
        yield sc


def negotiate(lab: Any, *, mutual: bool = True, mech: str = "spnego") -> tuple[str, Any]:
    token, init = lab.get_token("svc18", mech=mech, mutual=mutual)
    return "Negotiate " + base64.b64encode(token).decode(), init


def metrics(sc: Sidecar) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def count(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def cookie_of(set_cookie: str) -> str:
    """``name=value`` of a Set-Cookie value."""
    return set_cookie.split(";", 1)[0]


def log_lines(sc: Sidecar, **match: Any) -> list[dict[str, Any]]:
    time.sleep(1.2)   # decision lines are written on the worker's tick
    return [e for e in sc.events() if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture()
def session_cookie(sessions: Sidecar, mit_lab: Any) -> str:
    value, _ = negotiate(mit_lab)
    status, h, body = sessions.http("GET", "/auth", {"Authorization": value})
    assert status == 200, body
    return cookie_of(h["set-cookie"])


# -- session cookies ----------------------------------------------------------------------------------------

def test_negotiate_sets_a_session_cookie(sessions: Sidecar, mit_lab: Any) -> None:
    value, init = negotiate(mit_lab)
    status, h, body = sessions.http("GET", "/auth", {"Authorization": value})
    assert status == 200, body
    user = mit_lab.user
    assert (h["x-remote-user"], h["x-remote-principal"], h["x-remote-realm"]) == (user.split("@")[0], user,
                                                                                  user.split("@")[1])
    attrs = [a.strip() for a in h["set-cookie"].split(";")]
    assert attrs[0].startswith("fastkrb_session=") and len(attrs[0]) > 60
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=Lax"} <= set(attrs)
    max_age = int(next(a for a in attrs if a.startswith("Max-Age="))[8:])
    assert 3500 < max_age <= 3600
    # the AP-REP still goes back, and completes MIT's initiator
    assert finish_initiator(init, base64.b64decode(h["www-authenticate"].split()[1])) is True


def test_a_cookie_alone_authenticates_without_a_validation(sessions: Sidecar, mit_lab: Any,
                                                           session_cookie: str) -> None:
    before = metrics(sessions)
    for _ in range(3):
        status, h, body = sessions.http("GET", "/auth", {"Cookie": f"theme=dark; {session_cookie}; _ga=1"})
        assert status == 200, body
        assert h["x-remote-principal"] == mit_lab.user and h["x-remote-user"] == mit_lab.user.split("@")[0]
        assert "set-cookie" not in h and "www-authenticate" not in h
    after = metrics(sessions)
    # no Kerberos token was validated: fastkrb_decisions did not move, the session decisions did
    assert count(after, "fastkrb_decisions_total", outcome="accepted", code="ok") == \
        count(before, "fastkrb_decisions_total", outcome="accepted", code="ok")
    assert count(after, "fastkrb_authentications_total", via="session", outcome="accepted", code="ok") == \
        count(before, "fastkrb_authentications_total", via="session", outcome="accepted", code="ok") + 3
    assert count(after, "fastkrb_authentications_total", via="negotiate", outcome="accepted", code="ok") == \
        count(before, "fastkrb_decisions_total", outcome="accepted", code="ok")
    assert count(after, "fastkrb_sessions_issued_total", via="session") >= 1
    lines = log_lines(sessions, via="session", outcome="accepted")
    assert lines and lines[-1]["client"] == mit_lab.user and lines[-1]["server"] == mit_lab.services["svc18"]
    assert lines[-1]["kid"]


@pytest.mark.parametrize("how", ["flipped", "truncated", "other_name"])
def test_a_tampered_cookie_is_401_and_cleared(sessions: Sidecar, session_cookie: str, how: str) -> None:
    name, _, value = session_cookie.partition("=")
    if how == "flipped":
        i = len(value) // 2
        value = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1:]
    elif how == "truncated":
        value = value[:-8]
    else:
        name = "fastkrb_session"
    cookie = f"{name}={value}" if how != "other_name" else f"other={value}"
    status, h, body = sessions.http("GET", "/auth", {"Cookie": cookie})
    assert status == 401
    assert h["www-authenticate"] == "Negotiate"
    if how == "other_name":   # no cookie of ours: as without one
        assert h["x-auth-error"] == "no_token" and "set-cookie" not in h
        return
    assert h["x-auth-error"] == "session_invalid"
    assert json.loads(body)["code"] == "session_invalid"
    assert h["set-cookie"].startswith("fastkrb_session=; Max-Age=0")


def test_the_policy_applies_to_the_cookie_identity(sessions: Sidecar, mit_lab: Any, session_cookie: str) -> None:
    for path in ("/auth?policy=only-user", "/auth/policy/only-user/x", f"/auth?allowed_users={mit_lab.user}"):
        status, h, body = sessions.http("GET", path, {"Cookie": session_cookie})
        assert status == 200, (path, body)
        assert h["x-remote-principal"] == mit_lab.user
    assert h["x-remote-policy"] == f"allowed_users={mit_lab.user}"   # a query-built policy: its canonical query
    assert sessions.http("GET", "/auth?policy=only-user", {"Cookie": session_cookie})[1]["x-remote-policy"] == \
        "only-user"
    for path in ("/auth?policy=nobody", "/auth/policy/nobody", "/auth?allowed_realms=OTHER.TEST"):
        status, h, body = sessions.http("GET", path, {"Cookie": session_cookie})
        assert status == 403, (path, body)
        assert h["x-auth-error"] == "forbidden" and "www-authenticate" not in h
    lines = log_lines(sessions, via="session", outcome="forbidden")
    assert lines and lines[-1]["policy"] and lines[-1]["constraint"] in ("users", "realms")
    m = metrics(sessions)
    assert count(m, "fastkrb_policy_decisions_total", policy="nobody", outcome="forbidden") >= 2


def test_a_forbidden_negotiate_gets_no_cookie(sessions: Sidecar, mit_lab: Any) -> None:
    value, _ = negotiate(mit_lab)
    status, h, _ = sessions.http("GET", "/auth?policy=nobody", {"Authorization": value})
    assert status == 403 and "set-cookie" not in h


def challenges(sc: Sidecar, authorization: str) -> list[str]:
    """Every WWW-Authenticate value of a GET /auth answer, in order."""
    s = sc.connect()
    try:
        s.sendall(f"GET /auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {authorization}\r\n\r\n"
                  .encode())
        data = recv_all(s)
    finally:
        s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return [v.strip() for k, _, v in (ln.partition(":") for ln in head) if k.lower() == "www-authenticate"]


# -- bearer tokens ------------------------------------------------------------------------------------------

def exchange(sc: Sidecar, lab: Any) -> dict[str, Any]:
    value, _ = negotiate(lab)
    status, h, body = sc.http("POST", "/token", {"Authorization": value})
    assert status == 200, body
    assert h["content-type"] == "application/json" and h["cache-control"] == "no-store"
    doc: dict[str, Any] = json.loads(body)
    return doc


def test_token_exchange_verified_with_only_the_served_jwks(sessions: Sidecar, mit_lab: Any) -> None:
    doc = exchange(sessions, mit_lab)
    assert doc["token_type"] == "Bearer" and 100 < doc["expires_in"] <= 120
    status, h, jwks = sessions.http("GET", "/.well-known/jwks.json")
    assert status == 200 and h["content-type"] == "application/json"
    assert sessions.http("GET", "/jwks")[2] == jwks
    status, h, body = sessions.http("HEAD", "/.well-known/jwks.json")
    assert status == 200 and body == b"" and int(h["content-length"]) == len(jwks)
    assert all(set(k) == {"kty", "crv", "x", "y", "kid", "use", "alg"} for k in json.loads(jwks)["keys"])
    keyset = jc_jwk.JWKSet.from_json(jwks.decode())
    t = jc_jwt.JWT(jwt=doc["access_token"], key=keyset, algs=["ES256"], check_claims={"iss": ISS, "aud": AUD,
                                                                                       "exp": None})
    claims = json.loads(t.claims)
    assert claims["sub"] == mit_lab.user and claims["srv"] == mit_lab.services["svc18"]


def test_token_needs_post_and_a_negotiate_token(sessions: Sidecar, mit_lab: Any) -> None:
    status, h, _ = sessions.http("GET", "/token")
    assert status == 405 and h["allow"] == "POST"
    assert sessions.http("POST", "/.well-known/jwks.json")[0] == 405
    status, h, _ = sessions.http("POST", "/token")
    assert status == 401 and h["www-authenticate"] == "Negotiate" and h["x-auth-error"] == "no_token"
    status, h, _ = sessions.http("POST", "/token", {"Cookie": "x=1"})
    assert status == 401   # a session cookie is no ticket: /token wants Negotiate
    status, _, body = sessions.http("POST", "/token?policy=nobody", {"Authorization": negotiate(mit_lab)[0]})
    assert status == 403 and json.loads(body)["code"] == "forbidden"


def test_bearer_at_auth(sessions: Sidecar, mit_lab: Any) -> None:
    token = exchange(sessions, mit_lab)["access_token"]
    before = metrics(sessions)
    status, h, body = sessions.http("GET", "/auth?policy=only-user", {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    assert h["x-remote-principal"] == mit_lab.user and h["x-remote-policy"] == "only-user"
    assert "set-cookie" not in h
    assert sessions.http("GET", "/auth/policy/nobody", {"Authorization": f"Bearer {token}"})[0] == 403
    after = metrics(sessions)
    assert count(after, "fastkrb_decisions_total", outcome="accepted", code="ok") == \
        count(before, "fastkrb_decisions_total", outcome="accepted", code="ok")
    assert count(after, "fastkrb_authentications_total", via="bearer", outcome="accepted", code="ok") == \
        count(before, "fastkrb_authentications_total", via="bearer", outcome="accepted", code="ok") + 1
    assert log_lines(sessions, via="bearer", outcome="accepted")


def test_an_expired_bearer_is_401(sessions: Sidecar, mit_lab: Any, keys: dict[str, Path]) -> None:
    """Signed with the daemon's own key (so only the time is wrong), an hour ago, for 120 s."""
    issuer = TokenIssuer(str(keys["signing"]), issuer=ISS, audience=AUD, ttl=120)
    then = time.time() - 3600
    old = issuer.issue(SimpleNamespace(client=mit_lab.user, server=mit_lab.services["svc18"], end_time=then + 600,
                                       identity=None), now=then)
    status, h, body = sessions.http("GET", "/auth", {"Authorization": f"Bearer {old.token}"})
    assert status == 401
    assert h["x-auth-error"] == "bearer_expired" and json.loads(body)["code"] == "bearer_expired"
    assert challenges(sessions, f"Bearer {old.token}") == ["Negotiate", 'Bearer error="invalid_token"']
    status, h, _ = sessions.http("GET", "/auth", {"Authorization": "Bearer " + old.token[:-6] + "AAAAAA"})
    assert status == 401 and h["x-auth-error"] == "bearer_invalid"
    line = log_lines(sessions, via="bearer", code="bearer_expired")[-1]
    assert line["outcome"] == "rejected" and line["client"] == mit_lab.user


# -- KRB-ERROR in the 401 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["krb5", "spnego"])
@pytest.mark.parametrize("daemon", ["plain", "sessions"])
def test_a_refused_mutual_token_gets_the_krb_error(request: pytest.FixtureRequest, mit_lab: Any, daemon: str,
                                                   mech: str) -> None:
    """A replayed token: the 401's challenge carries MIT's KRB_AP_ERR_REPEAT and MIT's initiator says so; the
    same from the native request path (plain) and from Python's (sessions)."""
    sc: Sidecar = request.getfixturevalue(daemon)
    value, init = negotiate(mit_lab, mech=mech)
    assert sc.http("GET", "/auth", {"Authorization": value})[0] == 200
    status, h, _ = sc.http("GET", "/auth", {"Authorization": value})
    assert status == 401 and h["x-auth-error"] == "replay"
    scheme, _, answer = h["www-authenticate"].partition(" ")
    assert scheme == "Negotiate" and answer
    minor, text, _ = initiator_verdict(init, base64.b64decode(answer))
    assert text.endswith("): Request is a replay"), text
    print(f"SIDECAR-KRB-ERROR|{daemon}|{mech}|{minor:#x}|{text}")


def test_without_mutual_the_challenge_stays_bare(plain: Sidecar, mit_lab: Any) -> None:
    value, _ = negotiate(mit_lab, mutual=False)
    assert plain.http("GET", "/auth", {"Authorization": value})[0] == 200
    status, h, _ = plain.http("GET", "/auth", {"Authorization": value})
    assert status == 401 and h["x-auth-error"] == "replay" and h["www-authenticate"] == "Negotiate"


def test_the_plain_daemon_serves_no_session_paths(plain: Sidecar) -> None:
    assert plain.http("POST", "/token")[0] == 404
    assert plain.http("GET", "/.well-known/jwks.json")[0] == 404
    assert plain.http("GET", "/auth", {"Cookie": "fastkrb_session=abc"})[1]["x-auth-error"] == "no_token"


# -- configuration --------------------------------------------------------------------------------------------

def serve_check(tmp_path: Path, keytab: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "fastkrb", "serve", "--check", "--keytab", str(keytab), "--socket",
                           str(tmp_path / "s.sock"), "--replay-cache", "memory", "--workers", "1", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_serve_check_reads_the_key_files(tmp_path: Path, mit_lab: Any, keys: dict[str, Path]) -> None:
    kt = mit_lab.keytabs["svc18"]
    ok = serve_check(tmp_path, kt, "--session-keys", str(keys["session"]), "--signing-keys", str(keys["signing"]),
                     "--token-issuer", ISS, "--token-audience", AUD)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "session cookies on: fastkrb_session" in ok.stdout and "bearer tokens on:" in ok.stdout
    missing = serve_check(tmp_path, kt, "--session-keys", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    line = next(ln for ln in missing.stdout.splitlines() if ln.startswith("error: session_keys"))
    assert str(tmp_path / "nope.json") in line and "fastkrb keys session new" in line
    wrong = serve_check(tmp_path, kt, "--session-keys", str(keys["signing"]))   # a signing key file
    assert wrong.returncode == 2 and "is not a fastkrb session-keys file" in wrong.stdout
    for bad, says in ((("--signing-keys", str(keys["signing"])), "signing_keys needs token_issuer and token_audience"),
                      (("--session-keys", str(keys["session"]), "--session-samesite", "sideways"), "want Strict"),
                      (("--session-keys", str(keys["session"]), "--session-samesite", "None", "--no-session-secure"),
                       "SameSite=None needs Secure")):
        out = serve_check(tmp_path, kt, *bad)
        assert out.returncode == 2 and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
