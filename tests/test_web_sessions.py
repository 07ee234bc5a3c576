"""Sessions and bearer tokens in the middleware (issue 16): one Negotiate, then a session cookie or a bearer token
instead of a new ticket, through real servers (uvicorn, wsgiref, aiohttp) with real MIT tokens.

What each test proves: the first request's Negotiate sets the cookie with the configured attributes; the next
request with only the cookie is served without any validation (the validator counts its calls); a cookie that
does not open is treated as absent (401 Negotiate, and cleared), never a refusal by itself when a good
Negotiate header is there too; the same Policy refuses the cookie's and the token's client as it refuses the
ticket's; a bearer token of the service's issuer is accepted, an expired one refused; the app sees how the
request was authenticated (``via``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from aiohttp import web
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from fastkrb import CookieSettings, Policy, SessionCookies, TokenIssuer, TokenVerifier, Validator
from fastkrb.sessions.bearer import new_signing_key
from fastkrb.sessions.cookie import new_session_key
from fastkrb.testing import make_keytab, mint
from fastkrb.web import aiohttp as fk_aiohttp
from fastkrb.web import asgi as fk_asgi
from fastkrb.web.negotiate import VIA_KEY, rejection_log
from support.http_clients import (
    Apps,
    CountingValidator,
    behind_middleware,
    negotiate_header,
    service_validator,
    uvicorn_server,
)

KINDS = ["asgi", "wsgi", "aiohttp"]
ISSUER, AUDIENCE = "https://svc18.fastkrb.test", "svc18.fastkrb.test"


# -- one app per framework that says who and how: "<principal> <via> <REMOTE_USER or short name>" ----------------

async def _asgi_who(request: Request) -> PlainTextResponse:
    user = request.user
    return PlainTextResponse(f"{user.display_name} {request.scope[VIA_KEY]} {user.via} {user.name} "
                             f"{user.sid}")


def _wsgi_who(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    user = environ["fastkrb.user"]
    return [f"{environ['GSS_NAME']} {environ[VIA_KEY]} {environ['AUTH_TYPE']} {environ['REMOTE_USER']} "
            f"{user.sid}".encode()]


async def _aiohttp_who(request: web.Request) -> web.Response:
    user = request[fk_aiohttp.USER]
    return web.Response(text=f"{user.principal} {request[fk_aiohttp.VIA]} {user.via} {user.name} {user.sid}")


WHO = Apps(asgi=_asgi_who, wsgi=_wsgi_who, aiohttp=_aiohttp_who)


def serve(kind: str, validator: Any, **kw: Any) -> Any:
    return behind_middleware(kind, validator, WHO, **kw)


def get(port: int, authorization: str | None = None, cookie: str | None = None) -> httpx.Response:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if cookie is not None:
        headers["Cookie"] = cookie
    return httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=30)


def set_cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


def the_cookie(r: httpx.Response, name: str) -> Any:
    """The one Set-Cookie of ``name`` in the answer, read by the standard library's parser."""
    found = [c for c in set_cookies(r) if c.startswith(f"{name}=")]
    assert len(found) == 1, set_cookies(r)
    jar: SimpleCookie = SimpleCookie()
    jar.load(found[0])
    return jar[name]


@pytest.fixture(autouse=True)
def every_refusal_logged() -> Iterator[None]:
    before, rejection_log.per_second = rejection_log.per_second, 0
    yield
    rejection_log.per_second = before


@pytest.fixture
def cookies() -> SessionCookies:
    return SessionCookies([new_session_key()], CookieSettings(name="svc_session", max_age=600, same_site="Strict"))


def accepted(lab: Any) -> Any:
    """A real MIT ticket accepted by the service's validator: the result a session or a token stands for."""
    return Validator(str(lab.keytabs["svc18"]), cold_start=False).validate(negotiate_header(lab))


# -- cookies -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_one_negotiate_then_the_cookie_alone(mit_lab: Any, kind: str, cookies: SessionCookies) -> None:
    v = service_validator(mit_lab)
    user = mit_lab.realm.user
    with serve(kind, v, sessions=cookies) as port:
        first = get(port, negotiate_header(mit_lab))
        assert first.status_code == 200, first.text
        assert first.text.split()[:2] == [user, "negotiate"]
        c = the_cookie(first, "svc_session")
        assert c["path"] == "/" and c["secure"] and c["httponly"] and c["samesite"] == "Strict"
        assert 590 <= int(c["max-age"]) <= 600
        assert v.calls == 1
        for _ in range(3):   # the cookie alone, again and again: no token, no validation
            again = get(port, cookie=f"svc_session={c.value}")
            assert again.status_code == 200, again.text
            assert again.text.split()[:2] == [user, "session"]
            assert "www-authenticate" not in again.headers and not set_cookies(again)
        assert v.calls == 1
        assert v.inner.replay_stats()["inserts"] == 1   # one authenticator ever recorded
        # without the cookie it is Negotiate again
        assert get(port).status_code == 401


@pytest.mark.parametrize("kind", KINDS)
def test_a_cookie_that_does_not_open_is_absent(mit_lab: Any, kind: str, cookies: SessionCookies,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastkrb.http")
    res = accepted(mit_lab)
    good = cookies.issue(res).split(";", 1)[0].partition("=")[2]
    tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    past = time.time() - 3600
    expired = SessionCookies(cookies.ring, CookieSettings(name="svc_session", max_age=600)).issue(res, now=past)
    expired = expired.split(";", 1)[0].partition("=")[2]
    other_key = SessionCookies([new_session_key()], cookies.settings).issue(res).split(";", 1)[0].partition("=")[2]
    v = service_validator(mit_lab)
    with serve(kind, v, sessions=cookies) as port:
        for value, code, level in ((tampered, "session_invalid", logging.INFO),
                                   (expired, "session_expired", logging.DEBUG),
                                   (other_key, "session_invalid", logging.INFO)):
            caplog.clear()
            r = get(port, cookie=f"theme=dark; svc_session={value}")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Negotiate", r.text
            assert "x-auth-error" not in r.headers    # the normal challenge, not a refusal of the cookie
            clear = the_cookie(r, "svc_session")
            assert clear.value == "" and clear["max-age"] == "0"
            logged = [x for x in caplog.records if getattr(x, "fastkrb", {}).get("event") == "session_refused"]
            assert len(logged) == 1 and logged[0].levelno == level and logged[0].fastkrb["code"] == code
            assert value not in logged[0].getMessage()
            assert not [x for x in caplog.records if x.levelno >= logging.WARNING]
        # a bad cookie beside a good Negotiate header: the ticket decides, and a new cookie replaces the bad one
        r = get(port, negotiate_header(mit_lab), cookie=f"svc_session={tampered}")
        assert r.status_code == 200 and r.text.split()[1] == "negotiate"
        fresh = the_cookie(r, "svc_session")
        assert fresh.value and fresh.value != tampered
        assert get(port, cookie=f"svc_session={fresh.value}").text.split()[1] == "session"
    assert v.calls == 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_policy_applies_to_the_cookie(mit_lab: Any, kind: str, cookies: SessionCookies) -> None:
    res = accepted(mit_lab)
    value = cookies.issue(res).split(";", 1)[0].partition("=")[2]
    allowed = Policy(allowed_users=[res.short_name], name="team")
    forbidden = Policy(allowed_users=["mallory"], name="others")
    with serve(kind, service_validator(mit_lab), sessions=cookies, policy=allowed) as port:
        r = get(port, cookie=f"svc_session={value}")
        assert r.status_code == 200 and r.text.split()[:2] == [res.client, "session"]
    v = service_validator(mit_lab)
    with serve(kind, v, sessions=cookies, policy={"/": forbidden}) as port:
        r = get(port, cookie=f"svc_session={value}")
        assert r.status_code == 403 and r.headers["x-auth-error"] == "forbidden"
        assert "www-authenticate" not in r.headers and not set_cookies(r)
        assert v.calls == 0
        # the ticket itself: 403 as well, and no cookie for a client the policy refuses
        r = get(port, negotiate_header(mit_lab))
        assert r.status_code == 403 and not set_cookies(r)
        assert v.calls == 1


@pytest.mark.parametrize("kind", KINDS)
def test_remote_user_and_pac_facts_from_a_session(kind: str) -> None:
    """A minted AD ticket (a PAC with SIDs): the cookie carries the user SID the app reads; the short name."""
    service = "HTTP/api.corp.example@CORP.EXAMPLE"
    kt = make_keytab((service,), rng=random.Random(1616))
    pac = {"logon_info": {"domain_sid": "S-1-5-21-1-2-3", "user_rid": 1104, "group_rids": (513, 1200),
                          "logon_domain_name": "CORP", "user_name": "alice"}}
    header = mint(kt, client="alice@CORP.EXAMPLE", server=service, pac=pac).header
    cookies = SessionCookies([new_session_key()], CookieSettings(secure=False))
    v = CountingValidator(Validator(kt, cold_start=False))
    kw: dict[str, Any] = {"sessions": cookies}
    if kind == "wsgi":
        kw["remote_user"] = "short"
    with serve(kind, v, **kw) as port:
        first = get(port, header)
        assert first.status_code == 200
        c = the_cookie(first, "fastkrb_session")
        assert not c["secure"]
        r = get(port, cookie=f"fastkrb_session={c.value}")
    words = r.text.split()
    assert words[0] == "alice@CORP.EXAMPLE" and words[1] == "session"
    assert words[-1] == "S-1-5-21-1-2-3-1104"
    if kind == "wsgi":
        assert words[2:4] == ["Negotiate", "alice"]   # AUTH_TYPE, REMOTE_USER="short"
    assert v.calls == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_no_cookie_when_it_cannot_be_sealed(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A user in very many groups: the cookie would pass 4096 bytes (session_too_large). Served by Negotiate,
    no Set-Cookie, a DEBUG line; the next request needs Negotiate again."""
    caplog.set_level(logging.DEBUG, logger="fastkrb.http")
    service = "HTTP/api.corp.example@CORP.EXAMPLE"
    kt = make_keytab((service,), rng=random.Random(1617))
    rng = random.Random(3)
    many = tuple(sorted({513, *(rng.randrange(1100, 10**6) for _ in range(900))}))   # random RIDs deflate badly
    pac = {"logon_info": {"domain_sid": "S-1-5-21-1-2-3", "user_rid": 1104, "group_rids": many,
                          "logon_domain_name": "CORP", "user_name": "alice"}}
    cookies = SessionCookies([new_session_key()])
    with serve(kind, Validator(kt, cold_start=False), sessions=cookies) as port:
        r = get(port, mint(kt, client="alice@CORP.EXAMPLE", server=service, pac=pac).header)
        assert r.status_code == 200 and not set_cookies(r)
    lines = [x for x in caplog.records if getattr(x, "fastkrb", {}).get("event") == "session_not_issued"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG and lines[0].fastkrb["code"] == "session_too_large"


# -- bearer tokens -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_bearer_tokens_of_the_issuer(mit_lab: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    key = new_signing_key()
    issuer = TokenIssuer([key], issuer=ISSUER, audience=AUDIENCE, ttl=300)
    verifier = TokenVerifier([key], issuer=ISSUER, audience=AUDIENCE, leeway=5)
    res = accepted(mit_lab)
    token = issuer.issue(res).token
    old = issuer.issue(res, now=time.time() - 1000).token
    foreign = TokenIssuer([new_signing_key()], issuer=ISSUER, audience=AUDIENCE).issue(res).token
    v = service_validator(mit_lab)
    with serve(kind, v, bearer=verifier, policy=Policy(allowed_realms=[res.client_realm])) as port:
        r = get(port, f"Bearer {token}")
        assert r.status_code == 200 and r.text.split()[:2] == [res.client, "bearer"], r.text
        if kind == "wsgi":
            assert r.text.split()[2] == "Bearer"
        for bad, code in ((old, "bearer_expired"), (foreign, "bearer_invalid"), ("not.a.jwt", "bearer_invalid")):
            caplog.clear()
            r = get(port, f"Bearer {bad}")
            assert r.status_code == 401 and r.headers["x-auth-error"] == code, r.text
            assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert [x.fastkrb["code"] for x in caplog.records if x.levelno == logging.WARNING] == [code]
        # Negotiate still works beside it
        assert get(port, negotiate_header(mit_lab)).text.split()[1] == "negotiate"
    assert v.calls == 1
    with serve(kind, service_validator(mit_lab), bearer=verifier, policy=Policy(allowed_users=["mallory"])) as port:
        r = get(port, f"Bearer {token}")
        assert r.status_code == 403 and r.headers["x-auth-error"] == "forbidden"


@pytest.mark.parametrize("kind", KINDS)
def test_off_by_default(mit_lab: Any, kind: str, cookies: SessionCookies) -> None:
    """Without the options a cookie or a bearer token is nothing: 401 Negotiate, and no Set-Cookie ever."""
    res = accepted(mit_lab)
    value = cookies.issue(res).split(";", 1)[0].partition("=")[2]
    key = new_signing_key()
    token = TokenIssuer([key], issuer=ISSUER, audience=AUDIENCE).issue(res).token
    with serve(kind, service_validator(mit_lab)) as port:
        assert get(port, cookie=f"svc_session={value}").status_code == 401
        r = get(port, f"Bearer {token}")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Negotiate"
        ok = get(port, negotiate_header(mit_lab))
        assert ok.status_code == 200 and not set_cookies(ok)


def test_a_token_route_in_fastapi(mit_lab: Any) -> None:
    """The docs' /token route (docs/sessions.md): POST with Negotiate returns a bearer token; the token then
    authenticates GETs through the same middleware, and a session cookie cannot be exchanged for one."""
    from fastapi import FastAPI, HTTPException

    key = new_signing_key()
    issuer = TokenIssuer([key], issuer=ISSUER, audience=AUDIENCE, ttl=120)
    cookies = SessionCookies([new_session_key()], CookieSettings(secure=False))
    api = FastAPI()

    @api.post("/token")
    async def token(request: Request) -> dict[str, Any]:
        if request.scope[VIA_KEY] != "negotiate":
            raise HTTPException(401, headers={"WWW-Authenticate": "Negotiate"})
        return issuer.issue(request.scope["fastkrb"]).to_dict()

    @api.get("/")
    async def who(request: Request) -> dict[str, str]:
        return {"user": request.user.principal, "via": request.user.via}

    v = service_validator(mit_lab)
    api.add_middleware(fk_asgi.NegotiateMiddleware, validator=v, sessions=cookies,
                       bearer=TokenVerifier([key], issuer=ISSUER, audience=AUDIENCE))
    with uvicorn_server(api) as port:
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{url}/token", headers={"Authorization": negotiate_header(mit_lab)}, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["token_type"] == "Bearer" and 110 <= doc["expires_in"] <= 120
        session = the_cookie(r, "fastkrb_session").value
        for _ in range(2):
            me = httpx.get(url, headers={"Authorization": f"Bearer {doc['access_token']}"}, timeout=30)
            assert me.json() == {"user": mit_lab.realm.user, "via": "bearer"}
        assert httpx.post(f"{url}/token", headers={"Cookie": f"fastkrb_session={session}"},
                          timeout=30).status_code == 401
    assert v.calls == 1
