"""A real browser: Debian's headless Chromium, a ticket from the MIT test KDC, Debian's nginx running the
shipped deploy/nginx/fastkrb.conf, and ``fastkrb serve`` behind its auth_request.

What a person at that browser sees, kept as screenshots in ``build/test-artifacts/browser/`` (gitignored
with build/; each test prints the path):

1. with a ticket, the first navigation answers 200 through one Negotiate round (nginx's 401 + challenge,
   Chromium's AP-REQ, one validation by the sidecar), and the page shows the user's name;
2. the next navigations: with session cookies (the sidecar's ``session_keys``) they ride the cookie and the
   sidecar validates no new AP-REQ; without, each costs one AP-REQ (see the test's docstring);
3. a browser without a ticket is offered Negotiate once (the sidecar's challenge rule sets its "tried"
   cookie), cannot answer, asks again with the cookie and gets the configured page, 401 without
   ``WWW-Authenticate: Negotiate``: no offer left that could open a password dialog (docs/sidecar.md#honest-
   challenges: the shipped file's block, and challenge_networks = 127.0.0.0/8 as the "domain's" network);
4. a browser whose User-Agent the rule never offers Negotiate gets the page at once, without any offer.

The host is ``localhost`` (SPN ``HTTP/localhost@FASTKRB.TEST``, added to the lab here): Chromium keeps a
``Secure`` cookie from http://localhost (a secure context) as a user's browser keeps it from an https site.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fastkrb.sidecar.config import ServerConfig
from support.browser import INSTALL_HINT, Browser, Navigation, chromium_path
from support.procs import wait_listening
from support.sidecar import SRC, Sidecar
from test_e2e_nginx import enable_challenges, serve

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "build" / "test-artifacts" / "browser"
HOST = "localhost"

#: Session cookies in the sidecar: on once its configuration has ``session_keys`` (issue 16); the tests of the
#: second navigation assert the behaviour of whichever sidecar this is.
SESSIONS = "session_keys" in {f.name for f in dataclasses.fields(ServerConfig)}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fastkrb: signed in</title><link rel="icon" href="data:,"></head>
<body style="font-family: sans-serif; margin: 2em">
<h1>Hello, <!--# echo var="fastkrb_user" default="(nobody)" --></h1>
<p>Signed in with Kerberos as <b id="principal"><!--# echo var="fastkrb_principal" default="" --></b>
(realm <span id="realm"><!--# echo var="fastkrb_realm" default="" --></span>).</p>
<p>Page: <!--# echo var="request_uri" --></p>
</body></html>
"""

DENIED = """<!doctype html>
<html><head><meta charset="utf-8"><title>fastkrb: sign-in needed</title><link rel="icon" href="data:,"></head>
<body style="font-family: sans-serif; margin: 2em">
<h1>Sign-in needed</h1>
<p>This site signs you in with your Windows or Kerberos login. Your browser sent no ticket:
log in to the domain (or run <code>kinit</code>) and reload this page.</p>
</body></html>
"""


#: A User-Agent the sidecar never offers Negotiate (never_challenge_user_agents), as a kiosk or a bot.
KIOSK = "Mozilla/5.0 (X11; Linux x86_64) FastkrbKiosk/1.0"


def site_locations(text: str) -> str:
    """The shipped file with its honest-challenge block on (the 401 page comes from the sidecar), plus a page
    that shows the user (SSI reads the variables the auth request set)."""
    text = enable_challenges(text)
    locations = "    location /welcome/ {\n        ssi on;\n        index index.html;\n    }\n"
    if SESSIONS and "upstream_http_set_cookie" not in text:
        # the sidecar's Set-Cookie to the browser, on the answer the auth request allowed
        locations += ("    auth_request_set $fastkrb_cookie $upstream_http_set_cookie;\n"
                      "    add_header Set-Cookie $fastkrb_cookie;\n")
    end = text.rindex("}")
    return text[:end] + locations + text[end:]


@dataclass
class BrowserSite:
    lab: Any
    url: str
    sidecar: Sidecar
    dir: Path

    def browser(self, name: str, *, ticket: bool, user_agent: str | None = None) -> Browser:
        """A fresh browser profile; with ``ticket`` the lab user's ccache, without it an empty one."""
        realm = self.lab.realm
        cc = realm.ccache("default") if ticket else self.dir / f"no-ticket-{name}.ccache"
        env = {"KRB5_CONFIG": str(realm.krb5_conf), "KRB5CCNAME": f"FILE:{cc}",
               "KRB5_KTNAME": realm.env["KRB5_KTNAME"], "KRB5RCACHEDIR": realm.env["KRB5RCACHEDIR"]}
        extra = (f"--user-agent={user_agent}",) if user_agent else ()
        return Browser(self.dir / f"profile-{name}", allow=HOST, env=env, extra_args=extra)

    def counts(self) -> dict[str, int]:
        """The sidecar's decisions, once the workers' counters settle (they publish every tick, 0.2 s here):
        ``negotiate`` = AP-REQs accepted (``fastkrb_decisions_total{code="ok",outcome="accepted"}``),
        ``challenged`` = requests without a token answered 401 Negotiate, ``fallback`` = those the challenge
        rule answered without the offer (``fastkrb_challenge_fallbacks_total``, every reason). No AP-REQ may be
        refused."""
        last: dict[str, int] | None = None
        for _ in range(50):
            status, _, body = self.sidecar.http("GET", "/metrics")
            assert status == 200
            text = body.decode()
            refused = re.findall(r'^fastkrb_decisions_total\{code="([^"]+)",outcome="rejected"\} (\S+)', text, re.M)
            assert not refused, f"the sidecar refused a browser's AP-REQ: {refused}"
            now = {name: _metric(text, code, outcome) for name, code, outcome in
                   (("negotiate", "ok", "accepted"), ("challenged", "no_token", "challenged"))}
            now["fallback"] = sum(int(float(v)) for v in
                                  re.findall(r'^fastkrb_challenge_fallbacks_total\{reason="[^"]+"\} (\S+)', text, re.M))
            if now == last:
                return now
            last = now
            time.sleep(0.5)
        raise AssertionError("the sidecar's counters did not settle")


def _metric(text: str, code: str, outcome: str) -> int:
    m = re.search(rf'^fastkrb_decisions_total\{{code="{code}",outcome="{outcome}"\}} (\S+)', text, re.M)
    return int(float(m.group(1))) if m else 0


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def chromium_or_fail() -> str:
    path = chromium_path()
    assert path is not None, f"chromium is not installed: {INSTALL_HINT}"
    return path


@pytest.fixture(scope="module")
def browser_site(mit_lab: Any) -> Iterator[BrowserSite]:
    chromium_or_fail()
    realm = mit_lab.realm
    principal = realm.add_service(f"HTTP/{HOST}")
    work = Path(tempfile.mkdtemp(prefix="fastkrb-browser-"))   # not under pytest's 0700 tmp: www-data walks it
    keytab = realm.export(work / "http.keytab", principal)
    (work / "www" / "welcome").mkdir(parents=True)
    (work / "www" / "welcome" / "index.html").write_text(PAGE)
    (work / "denied.html").write_text(DENIED)
    # the challenge rule: Negotiate offered to the "domain's" network (loopback, as nginx forwards it over the
    # Unix socket), once per tried cookie; the configured page for the rest
    config = ('[serve]\nchallenge_networks = ["127.0.0.0/8"]\ntrusted_proxies = ["unix"]\n'
              'challenge_tried_cookie = "fastkrb_tried"\nnever_challenge_user_agents = ["FastkrbKiosk/"]\n'
              f'challenge_fallback = "{work / "denied.html"}"\n')
    if SESSIONS:
        keys = work / "session-keys.json"
        subprocess.run([sys.executable, "-m", "fastkrb", "keys", "session", "new", str(keys)], check=True,
                       env={"PYTHONPATH": SRC}, capture_output=True)
        config += f'session_keys = "{keys}"\n'
    try:
        with serve(work, keytab, HOST, config, copies=(("site", True),), extra=site_locations) as served:
            port = served.ports["site"]
            wait_listening(port, served.nginx, work / "nginx-error.log", "nginx")
            yield BrowserSite(mit_lab, f"http://{HOST}:{port}", served.sidecar, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    print(f"screenshot: {path}")
    return path


def assert_signed_in(nav: Navigation, user: str) -> None:
    assert nav.status == 200, nav.text
    assert nav.title == "fastkrb: signed in"
    assert f"Hello, {user.split('@')[0]}" in nav.text
    assert f"Signed in with Kerberos as {user}" in nav.text
    assert nav.screenshot is not None and nav.screenshot.stat().st_size > 1000


def test_first_navigation_is_one_negotiate_round(browser_site: BrowserSite) -> None:
    """A browser with a ticket: 200 and the user's name on the first navigation, through one Negotiate round
    (one 401 challenge, one AP-REQ validated)."""
    user = browser_site.lab.realm.user
    before = browser_site.counts()
    with browser_site.browser("first", ticket=True) as b:
        nav = b.navigate(f"{browser_site.url}/welcome/", shot("1-first-navigation-negotiate"))
    assert_signed_in(nav, user)
    assert nav.headers["www-authenticate"].startswith("Negotiate ")   # the AP-REP (mutual authentication)
    used = spent(before, browser_site.counts())
    print(f"first navigation: {used}")
    assert used == {"negotiate": 1, "challenged": 1, "fallback": 0}


def test_later_navigations(browser_site: BrowserSite) -> None:
    """Three navigations in one browser. With session cookies (a sidecar with ``session_keys``): the first
    goes through Negotiate and gets the cookie, the second and third ride it, and the sidecar validates one
    AP-REQ in all. Without them (today's main), each navigation costs a 401 and a new AP-REQ: three in all.
    The assertion switches by itself when the sidecar's configuration has ``session_keys``."""
    user = browser_site.lab.realm.user
    before = browser_site.counts()
    navs = []
    with browser_site.browser("later", ticket=True) as b:
        for i in (1, 2, 3):
            nav = b.navigate(f"{browser_site.url}/welcome/?n={i}", shot(f"2-navigation-{i}-of-3"))
            assert_signed_in(nav, user)
            assert f"Page: /welcome/?n={i}" in nav.text
            navs.append(nav)
    used = spent(before, browser_site.counts())
    print(f"sessions={'on' if SESSIONS else 'off'}: 3 navigations: {used}")
    if SESSIONS:
        assert used == {"negotiate": 1, "challenged": 1, "fallback": 0}
        # the 200 that sets the session cookie keeps the tried cookie (one Set-Cookie per answer: nginx passes
        # one); the session cookie outlives it, and no request reaches the rule while it is valid
        assert sorted(c["name"] for c in navs[0].cookies) == ["fastkrb_session", "fastkrb_tried"]
        for nav in navs[1:]:
            assert "fastkrb_session=" in nav.requests[0].get("cookie", "")   # sent with the first try
    else:
        # each navigation offered again: the 200 of the one before dropped the tried cookie
        assert used == {"negotiate": 3, "challenged": 3, "fallback": 0}
        assert all(n.cookies == [] for n in navs)


def test_no_ticket_sees_the_configured_page(browser_site: BrowserSite) -> None:
    """A browser whose ticket cache is empty, in the offered network: offered Negotiate once, it cannot make a
    token and asks again (its auth controller's answer to a scheme that failed), now with the tried cookie
    the offer set: the sidecar withholds the offer, and nginx shows the sidecar's configured page, 401 without
    ``WWW-Authenticate: Negotiate``, so nothing is left that could open a password dialog. One challenge, one
    fallback, no validation; at once (the time shows nothing was waited for)."""
    before = browser_site.counts()
    with browser_site.browser("no-ticket", ticket=False) as b:
        start = time.monotonic()
        nav = b.navigate(f"{browser_site.url}/welcome/", shot("3-no-ticket-fallback-page"))
        took = time.monotonic() - start
    assert nav.status == 401
    assert "www-authenticate" not in nav.headers   # no offer on the page the user sees
    assert nav.title == "fastkrb: sign-in needed"
    assert "Your browser sent no ticket" in nav.text
    assert nav.screenshot is not None and nav.screenshot.stat().st_size > 1000
    assert took < 10
    assert [c["name"] for c in nav.cookies] == ["fastkrb_tried"]
    used = spent(before, browser_site.counts())
    print(f"no ticket: {used}")
    assert used == {"negotiate": 0, "challenged": 1, "fallback": 1}, used
    # the retry carried the offer's cookie: the rule's reason was "tried" (the sidecar's decision line)
    line = [e for e in browser_site.sidecar.events() if e.get("outcome") == "fallback"][-1]
    assert "the challenge rule's tried" in line["cause"], line


def test_user_agent_never_offered_sees_the_page_at_once(browser_site: BrowserSite) -> None:
    """A browser whose User-Agent the rule never offers Negotiate (a kiosk, a bot): the page on the first
    request, without any offer or challenge."""
    before = browser_site.counts()
    with browser_site.browser("kiosk", ticket=False, user_agent=KIOSK) as b:
        nav = b.navigate(f"{browser_site.url}/welcome/", shot("4-user-agent-not-offered"))
    assert nav.status == 401 and "www-authenticate" not in nav.headers
    assert nav.title == "fastkrb: sign-in needed"
    assert nav.cookies == [] and len(nav.requests) == 1
    used = spent(before, browser_site.counts())
    print(f"user agent not offered: {used}")
    assert used == {"negotiate": 0, "challenged": 0, "fallback": 1}, used
