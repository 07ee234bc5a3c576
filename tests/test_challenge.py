"""Honest challenges (issue 16 item 3): fastkrb.challenge.ChallengeRule decides whom to offer Negotiate, and the
middleware answers everyone else with the fallback page or redirect instead of a challenge that makes a browser
outside the domain show a password dialog or fall back to NTLM.

The rule's logic is tested directly (addresses, forwarded headers, user agents, the "tried" cookie, its
configuration errors); then through real servers (uvicorn, wsgiref, aiohttp) with real MIT tokens and a real
NTLM NEGOTIATE message (pyspnego's NTLM initiator, MS-NLMP §2.2.1.1).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
import spnego

from fastkrb.challenge import DEFAULT_FALLBACK_PAGE, ChallengeRule, Fallback, Offer, client_address
from fastkrb.errors import ConfigurationError
from fastkrb.web.negotiate import rejection_log
from support.http_clients import behind_middleware, negotiate_header, service_validator

KINDS = ["asgi", "wsgi", "aiohttp"]
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
EDGE = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Edg/126.0"


def headers_of(d: dict[str, str]) -> Callable[[str], str | None]:
    low = {k.lower(): v for k, v in d.items()}
    return lambda name: low.get(name)


# -- the rule itself -------------------------------------------------------------------------------------------

def test_client_address_believes_only_trusted_proxies() -> None:
    import ipaddress

    proxies = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:1::/48"))

    def client(peer: str | None, xff: str | None = None, fwd: str | None = None, unix: bool = False) -> str | None:
        h = headers_of({k: v for k, v in (("x-forwarded-for", xff), ("forwarded", fwd)) if v is not None})
        kind = "forwarded" if fwd is not None else "x-forwarded-for"
        a = client_address(peer, h, proxies, kind, unix)   # type: ignore[arg-type]
        return None if a is None else str(a)

    assert client("203.0.113.5") == "203.0.113.5"
    assert client("203.0.113.5", "10.1.2.3") == "203.0.113.5"            # an untrusted peer's header: ignored
    assert client("192.0.2.10", "10.1.2.3") == "10.1.2.3"                # a trusted proxy's: believed
    assert client("192.0.2.10", "10.9.9.9, 10.1.2.3") == "10.1.2.3"      # right-most untrusted
    assert client("192.0.2.10", "10.1.2.3, 192.0.2.11") == "10.1.2.3"    # a chain of trusted proxies skipped
    assert client("192.0.2.10", "192.0.2.12, 192.0.2.11") == "192.0.2.12"   # all trusted: the farthest
    assert client("192.0.2.10", "10.1.2.3, garbage") is None              # an unreadable hop: unknown
    assert client("192.0.2.10", "10.1.2.3:4711") == "10.1.2.3"            # a port some proxies add
    assert client("192.0.2.10") == "192.0.2.10"                           # no header: the proxy itself
    assert client("::ffff:192.0.2.10", "10.1.2.3") == "10.1.2.3"          # IPv4-mapped peer
    assert client("2001:db8:1::7", "2001:db8:2::9") == "2001:db8:2::9"
    assert client("192.0.2.10", fwd='for=10.9.9.9, for="[2001:db8:2::9]:80";proto=https') == "2001:db8:2::9"
    assert client("192.0.2.10", fwd="for=unknown") is None
    assert client("192.0.2.10", fwd="for=10.1.2.3;by=192.0.2.10, proto=http") is None   # an element without for=
    assert client(None, "10.1.2.3") is None                               # a Unix socket, not trusted
    assert client(None, "10.1.2.3", unix=True) == "10.1.2.3"


def test_decide() -> None:
    rule = ChallengeRule(networks=["10.0.0.0/8", "2001:db8::/32"], trusted_proxies=["192.0.2.1"],
                         never_user_agents=[r"Firefox/"], tried_cookie="krb_tried", tried_max_age=120)
    offer = rule.decide("10.1.2.3", headers_of({"user-agent": EDGE}))
    assert isinstance(offer, Offer) and offer.set_cookie == "krb_tried=1; Max-Age=120; Path=/; Secure; HttpOnly; " \
                                                            "SameSite=Lax"
    assert isinstance(rule.decide("2001:db8::5", headers_of({})), Offer)
    out = rule.decide("203.0.113.5", headers_of({"user-agent": EDGE}))
    assert isinstance(out, Fallback) and (out.reason, out.client, out.status) == ("network", "203.0.113.5", 401)
    assert ("Content-Type", "text/html; charset=utf-8") in out.headers
    assert not any(k == "WWW-Authenticate" for k, _ in out.headers) and out.body == DEFAULT_FALLBACK_PAGE.encode()
    spoof = rule.decide("203.0.113.5", headers_of({"x-forwarded-for": "10.1.2.3"}))
    assert isinstance(spoof, Fallback) and spoof.client == "203.0.113.5"
    proxied = rule.decide("192.0.2.1", headers_of({"x-forwarded-for": "10.1.2.3"}))
    assert isinstance(proxied, Offer)
    ua = rule.decide("10.1.2.3", headers_of({"user-agent": FIREFOX}))
    assert isinstance(ua, Fallback) and ua.reason == "user_agent"
    tried = rule.decide("10.1.2.3", headers_of({"cookie": "a=b; krb_tried=1"}))
    assert isinstance(tried, Fallback) and tried.reason == "tried"
    assert isinstance(rule.decide("10.1.2.3", headers_of({"cookie": "krb_tried_not=1"})), Offer)
    assert rule.tried_clear("krb_tried=1") == "krb_tried=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"
    assert rule.tried_clear("other=1") is None
    # offer_user_agents: only those
    only = ChallengeRule(offer_user_agents=[r"Windows NT"], tried_cookie=None)
    assert only.decide("203.0.113.5", headers_of({"user-agent": EDGE})) == Offer(None)
    assert isinstance(only.decide("203.0.113.5", headers_of({"user-agent": FIREFOX})), Fallback)
    assert isinstance(only.decide("203.0.113.5", headers_of({})), Fallback)
    # no networks: every address; a peer without an address is then fine too
    assert isinstance(ChallengeRule().decide(None, headers_of({})), Offer)
    # the redirect
    go = ChallengeRule(networks=["10.0.0.0/8"], redirect="https://login.example/sso").decide("127.0.0.1",
                                                                                              headers_of({}))
    assert isinstance(go, Fallback) and go.status == 303 and ("Location", "https://login.example/sso") in go.headers
    assert ChallengeRule().ntlm_answer() is None


@pytest.mark.parametrize("kw, words", [
    ({"networks": ["10.0.0.0/33"]}, "networks entry '10.0.0.0/33'"),
    ({"networks": "10.0.0.0/8"}, "not a string"),
    ({"trusted_proxies": ["proxy.example"]}, "trusted_proxies entry 'proxy.example'"),
    ({"never_user_agents": ["(unclosed"]}, "never_user_agents pattern '(unclosed'"),
    ({"tried_cookie": "a b"}, "tried_cookie 'a b'"),
    ({"tried_max_age": 0}, "tried_max_age 0"),
    ({"fallback_status": 200}, "fallback_status 200"),
    ({"redirect": "https://x/", "fallback_status": 401}, "with status 401"),
    ({"redirect": "https://x/\r\nSet-Cookie: a=b"}, "is not a redirect"),
    ({"forwarded": "x-real-ip"}, "forwarded='x-real-ip'"),
])
def test_configuration_errors(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        ChallengeRule(**kw)
    assert words in e.value.cause and e.value.fix


# -- through real servers --------------------------------------------------------------------------------------

def serve(kind: str, validator: Any, **kw: Any) -> Any:
    """The middleware with uvicorn's proxy-headers rewrite off (docs/integrations/asgi.md says why)."""
    return behind_middleware(kind, validator, proxy_headers=False, **kw)


def get(port: int, **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/", headers={k.replace("_", "-"): v for k, v in headers.items()},
                     timeout=30)


def offered(r: httpx.Response) -> bool:
    """A 401 that offers Negotiate (the plain challenge)."""
    return r.status_code == 401 and r.headers.get("www-authenticate") == "Negotiate"


def fell_back(r: httpx.Response, body: bytes = DEFAULT_FALLBACK_PAGE.encode(), status: int = 401) -> bool:
    return (r.status_code == status and "www-authenticate" not in r.headers and r.content == body
            and r.headers["content-type"] == "text/html; charset=utf-8")


def tried_cookie(r: httpx.Response, name: str = "fastkrb_tried") -> Any:
    found = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    if not found:
        return None
    assert len(found) == 1
    jar: SimpleCookie = SimpleCookie()
    jar.load(found[0])
    return jar[name]


def ntlm_negotiate() -> str:
    """A real NTLM NEGOTIATE message (MS-NLMP §2.2.1.1) from pyspnego's NTLM initiator, as a browser outside the
    domain sends it in ``Authorization: Negotiate`` after SSPI fell back from Kerberos."""
    token = spnego.client("alice", "secret", hostname="svc18.fastkrb.test", service="HTTP", protocol="ntlm").step()
    assert token is not None and token.startswith(b"NTLMSSP\x00\x01\x00\x00\x00")
    return "Negotiate " + base64.b64encode(token).decode()


@pytest.fixture(autouse=True)
def every_refusal_logged() -> Iterator[None]:
    before, rejection_log.per_second = rejection_log.per_second, 0
    yield
    rejection_log.per_second = before


@pytest.mark.parametrize("kind", KINDS)
def test_networks_and_forwarded_addresses(mit_lab: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastkrb.http")
    v = service_validator(mit_lab)
    # the peer (127.0.0.1) in the domain's networks: offered; outside: the fallback page
    with serve(kind, v, challenge=ChallengeRule(networks=["127.0.0.0/8"])) as port:
        assert offered(get(port))
    with serve(kind, v, challenge=ChallengeRule(networks=["10.0.0.0/8"])) as port:
        r = get(port)
        assert fell_back(r) and tried_cookie(r) is None
        withheld = [x.fastkrb for x in caplog.records if getattr(x, "fastkrb", {}).get("event") == "withheld"]
        assert withheld[-1]["reason"] == "network" and withheld[-1]["client"] == "127.0.0.1"
        # a client with a ticket is still served: the rule only decides whom to offer
        assert get(port, authorization=negotiate_header(mit_lab)).status_code == 200
    # behind a trusted proxy (the peer): the right-most untrusted X-Forwarded-For address is the client
    rule = ChallengeRule(networks=["10.0.0.0/8"], trusted_proxies=["127.0.0.1/32"])
    with serve(kind, v, challenge=rule) as port:
        assert offered(get(port, x_forwarded_for="10.1.2.3"))
        assert offered(get(port, x_forwarded_for="203.0.113.9, 10.1.2.3"))
        assert fell_back(get(port, x_forwarded_for="10.1.2.3, 203.0.113.9"))   # a client wrote the 10.x
        assert fell_back(get(port))                                             # the proxy itself: not 10/8
    # an untrusted peer's X-Forwarded-For is ignored: the spoofed 10.x does not get the offer
    rule = ChallengeRule(networks=["10.0.0.0/8"], trusted_proxies=["192.0.2.0/24"])
    with serve(kind, v, challenge=rule) as port:
        assert fell_back(get(port, x_forwarded_for="10.1.2.3"))
        assert fell_back(get(port, forwarded="for=10.1.2.3"))


@pytest.mark.parametrize("kind", KINDS)
def test_user_agents(mit_lab: Any, kind: str) -> None:
    rule = ChallengeRule(never_user_agents=[r"Firefox/"], tried_cookie=None)
    with serve(kind, service_validator(mit_lab), challenge=rule) as port:
        assert fell_back(get(port, user_agent=FIREFOX))
        assert offered(get(port, user_agent=EDGE))
        assert offered(get(port))   # httpx's own user agent


@pytest.mark.parametrize("kind", KINDS)
def test_the_tried_cookie(mit_lab: Any, kind: str) -> None:
    """Offered once; back without a token while holding the cookie: the fallback, not a second pop-up; a ticket
    then clears the cookie, so the domain client is offered Negotiate again next time."""
    v = service_validator(mit_lab)
    with serve(kind, v, challenge=ChallengeRule(tried_cookie="krb_tried", tried_max_age=300)) as port:
        first = get(port)
        assert offered(first)
        c = tried_cookie(first, "krb_tried")
        assert c.value == "1" and c["max-age"] == "300" and c["httponly"] and c["secure"] and c["path"] == "/"
        second = get(port, cookie="krb_tried=1")
        assert fell_back(second) and tried_cookie(second, "krb_tried") is None
        ok = get(port, authorization=negotiate_header(mit_lab), cookie="krb_tried=1")
        assert ok.status_code == 200 and ok.text == mit_lab.realm.user
        gone = tried_cookie(ok, "krb_tried")
        assert gone.value == "" and gone["max-age"] == "0"
        assert offered(get(port))
        # without the tried cookie on the request, a success sets no cookie at all
        assert not get(port, authorization=negotiate_header(mit_lab)).headers.get_list("set-cookie")
    assert v.calls == 2


@pytest.mark.parametrize("kind", KINDS)
def test_fallback_body_and_redirect(mit_lab: Any, kind: str) -> None:
    page = "<p>Sign in at <a href=\"/login\">the login page</a>.</p>"
    rule = ChallengeRule(networks=["10.0.0.0/8"], fallback_body=page, fallback_status=403)
    with serve(kind, service_validator(mit_lab), challenge=rule) as port:
        assert fell_back(get(port), page.encode(), 403)
    rule = ChallengeRule(networks=["10.0.0.0/8"], redirect="https://login.corp.example/?next=%2F")
    with serve(kind, service_validator(mit_lab), challenge=rule) as port:
        r = get(port)
        assert r.status_code == 303 and r.headers["location"] == "https://login.corp.example/?next=%2F"
        assert "www-authenticate" not in r.headers


@pytest.mark.parametrize("kind", KINDS)
def test_ntlm_page(mit_lab: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    ntlm = ntlm_negotiate()
    page = "<h1>Your computer tried NTLM</h1>"
    with serve(kind, service_validator(mit_lab), challenge=ChallengeRule(ntlm_page=page)) as port:
        r = get(port, authorization=ntlm)
        assert r.status_code == 401 and "www-authenticate" not in r.headers and r.text == page
        assert r.headers["x-auth-error"] == "unsupported_mechanism"
        assert tried_cookie(r).value == "1"   # and no second offer on the next request without a token
        assert fell_back(get(port, cookie="fastkrb_tried=1"))
    logged = [x for x in caplog.records if x.name == "fastkrb.http" and x.levelno == logging.WARNING]
    assert len(logged) == 1 and logged[0].fastkrb["code"] == "unsupported_mechanism"
    assert "NTLM" in logged[0].fastkrb["cause"]
    # without ntlm_page: the plain refusal, with its precise diagnosis
    with serve(kind, service_validator(mit_lab), challenge=ChallengeRule()) as port:
        r = get(port, authorization=ntlm)
        assert offered(r) and r.headers["x-auth-error"] == "unsupported_mechanism"
        assert "NTLM" in r.text


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_rule_nothing_changes(mit_lab: Any, kind: str) -> None:
    with serve(kind, service_validator(mit_lab)) as port:
        r = get(port, x_forwarded_for="10.1.2.3", user_agent=FIREFOX, cookie="fastkrb_tried=1")
        assert offered(r) and not r.headers.get_list("set-cookie")
        assert offered(get(port, authorization=ntlm_negotiate()))
