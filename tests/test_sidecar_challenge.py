"""Honest challenges in a real ``fastkrb serve`` (sidecar/challenge.py, docs/sidecar.md#honest-challenges).

One daemon offers Negotiate to 10.0.0.0/8 only, believes X-Forwarded-For from a peer on its Unix socket (as
behind nginx) and from 127.0.0.2 over TCP, never to a bot's User-Agent, sets a "tried" cookie, serves a page
file as the fallback and the built-in NTLM page. Another sends the others to a login URL (the 401 form nginx
can pass, and the direct 303), and a third has no rule: today's answers. Tokens: MIT's initiator against the
MIT lab; the NTLM token is pyspnego's NEGOTIATE_MESSAGE.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spnego
from prometheus_client.parser import text_string_to_metric_families

from support.procs import free_port
from support.sidecar import SRC, Sidecar, parse_response, recv_all

PAGE = "<!doctype html><title>outside</title><h1>Use the VPN</h1>\n"
LOGIN = "https://login.example.com/kerberos-help?from=fastkrb"


def ntlm_header() -> str:
    """A real NTLM NEGOTIATE_MESSAGE (what Windows sends when it has no Kerberos ticket for the SPN)."""
    ctx = spnego.client("alice", "secret", hostname="api.fastkrb.test", service="HTTP", protocol="ntlm")
    return "Negotiate " + base64.b64encode(ctx.step()).decode()


def negotiate(lab: Any) -> str:
    token, _ = lab.get_token("svc18", mech="spnego", mutual=False)
    return "Negotiate " + base64.b64encode(token).decode()


def tcp_get(port: int, path: str, headers: dict[str, str], source: str = "127.0.0.1") -> tuple[int, dict[str, str],
                                                                                               bytes]:
    """One request over TCP from ``source`` (any 127/8 address: a peer the daemon may or may not trust)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        h = {"Host": "sidecar", "Connection": "close", **headers}
        s.sendall((f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
        return parse_response(recv_all(s))
    finally:
        s.close()


def fallbacks(sc: Sidecar) -> dict[str, float]:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "fastkrb_challenge_fallbacks_total":
                out[s.labels["reason"]] = s.value
    return out


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory, mit_lab: Any) -> Iterator[tuple[Sidecar, int]]:
    work = tmp_path_factory.mktemp("challenge")
    (work / "outside.html").write_text(PAGE)
    port = free_port()
    (work / "fastkrb.toml").write_text(
        '[serve]\nchallenge_networks = ["10.0.0.0/8"]\ntrusted_proxies = ["unix", "127.0.0.2/32"]\n'
        'never_challenge_user_agents = ["(?i)bot\\\\b", "Teams/"]\nchallenge_tried_cookie = "fastkrb_tried"\n'
        f'challenge_fallback = "{work / "outside.html"}"\nntlm_page = "default"\n')
    args = ("--replay-cache", "memory", "--config", str(work / "fastkrb.toml"), "--tcp", f"127.0.0.1:{port}")
    with Sidecar(work, mit_lab.keytabs["svc18"], workers=1, args=args) as sc:
        yield sc, port


def assert_offer(status: int, h: dict[str, str]) -> None:
    assert status == 401 and h["www-authenticate"] == "Negotiate" and h["x-auth-error"] == "no_token"
    assert "x-auth-fallback" not in h
    attrs = [a.strip() for a in h["set-cookie"].split(";")]
    assert attrs[0] == "fastkrb_tried=1" and {"Max-Age=600", "Path=/", "HttpOnly", "Secure"} <= set(attrs)


def assert_fallback(status: int, h: dict[str, str], body: bytes, reason: str) -> None:
    assert status == 401
    assert "www-authenticate" not in h               # no offer: no password dialog
    assert h["x-auth-fallback"] == reason and h["x-auth-error"] == "no_token"
    assert h["content-type"] == "text/html; charset=utf-8" and body == PAGE.encode()
    assert "set-cookie" not in h


def test_client_networks_through_a_trusted_proxy(ruled: tuple[Sidecar, int]) -> None:
    """Behind nginx on the Unix socket: the client is X-Forwarded-For's address (trusted_proxies = unix)."""
    sc, _ = ruled
    before = fallbacks(sc)
    assert_offer(*sc.http("GET", "/auth", {"X-Forwarded-For": "10.1.2.3"})[:2])
    assert_fallback(*sc.http("GET", "/auth", {"X-Forwarded-For": "203.0.113.9"}), "network")
    assert_fallback(*sc.http("GET", "/auth"), "network")        # no address at all: not offered
    # a client cannot talk its way in: only the right-most entry (what the proxy appended) counts
    assert_fallback(*sc.http("GET", "/auth", {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}), "network")
    assert fallbacks(sc).get("network", 0) == before.get("network", 0) + 3


def test_forwarded_address_from_an_untrusted_peer_is_ignored(ruled: tuple[Sidecar, int]) -> None:
    sc, port = ruled
    # 127.0.0.1 is no trusted proxy: its X-Forwarded-For is a claim, the client is 127.0.0.1 (outside 10/8)
    assert_fallback(*tcp_get(port, "/auth", {"X-Forwarded-For": "10.1.2.3"}), "network")
    # 127.0.0.2 is one: the address it forwards decides
    status, h, _ = tcp_get(port, "/auth", {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.2")
    assert_offer(status, h)
    assert_fallback(*tcp_get(port, "/auth", {"X-Forwarded-For": "198.51.100.4"}, source="127.0.0.2"), "network")
    time.sleep(1.2)   # decision lines are written on the worker's tick
    line = [e for e in sc.events() if e.get("outcome") == "fallback"][-1]
    assert line["code"] == "no_token" and "network" in line["cause"] and "198.51.100.4" in line["cause"]


def test_user_agent_patterns(ruled: tuple[Sidecar, int]) -> None:
    sc, _ = ruled
    inside = {"X-Forwarded-For": "10.1.2.3"}
    assert_fallback(*sc.http("GET", "/auth", {**inside, "User-Agent": "Slackbot 1.0"}), "user_agent")
    assert_fallback(*sc.http("GET", "/auth", {**inside, "User-Agent": "Mozilla/5.0 Teams/1.6"}), "user_agent")
    assert_offer(*sc.http("GET", "/auth", {**inside, "User-Agent": "Mozilla/5.0 (Windows NT 10.0) Chrome/125"})[:2])


def test_the_tried_cookie(ruled: tuple[Sidecar, int], mit_lab: Any) -> None:
    """Offered once (the cookie set); back without a token, with the cookie: the page, not a second offer;
    a Negotiate that succeeds drops the cookie, so the next visit is offered again."""
    sc, _ = ruled
    inside = {"X-Forwarded-For": "10.1.2.3"}
    status, h, _ = sc.http("GET", "/auth", inside)
    assert_offer(status, h)
    cookie = h["set-cookie"].split(";", 1)[0]
    assert_fallback(*sc.http("GET", "/auth", {**inside, "Cookie": f"theme=dark; {cookie}"}), "tried")
    status, h, body = sc.http("GET", "/auth", {**inside, "Cookie": cookie, "Authorization": negotiate(mit_lab)})
    assert status == 200, body
    attrs = [a.strip() for a in h["set-cookie"].split(";")]
    assert attrs[0] == "fastkrb_tried=" and "Max-Age=0" in attrs
    # without the cookie the success sets none
    status, h, body = sc.http("GET", "/auth", {**inside, "Authorization": negotiate(mit_lab)})
    assert status == 200 and "set-cookie" not in h, body


def test_ntlm_token_gets_the_ntlm_page(ruled: tuple[Sidecar, int]) -> None:
    sc, _ = ruled
    before = fallbacks(sc)
    status, h, body = sc.http("GET", "/auth", {"X-Forwarded-For": "10.1.2.3", "Authorization": ntlm_header()})
    assert status == 401 and h["x-auth-error"] == "unsupported_mechanism"   # the precise diagnosis stays
    assert "www-authenticate" not in h and h["x-auth-fallback"] == "ntlm"
    assert b"Kerberos sign-in failed" in body and b"unsupported_mechanism" in body
    assert h["set-cookie"].startswith("fastkrb_tried=1")
    assert fallbacks(sc)["ntlm"] == before.get("ntlm", 0) + 1
    time.sleep(1.2)
    line = [e for e in sc.events() if e.get("code") == "unsupported_mechanism"][-1]
    assert line["outcome"] == "rejected" and "NTLM" in line["cause"]


def test_pages_for_nginx_error_page(ruled: tuple[Sidecar, int]) -> None:
    """GET /challenge/<reason>: what nginx's error_page 401 shows (the reason from X-Auth-Fallback)."""
    sc, _ = ruled
    status, h, body = sc.http("GET", "/challenge/network")
    assert status == 401 and body == PAGE.encode() and "www-authenticate" not in h
    status, h, body = sc.http("GET", "/challenge/ntlm")
    assert status == 401 and b"Kerberos sign-in failed" in body and "set-cookie" not in h


def test_redirect_forms(tmp_path: Path, mit_lab: Any) -> None:
    """A login URL as the fallback: behind nginx (401, X-Auth-Redirect and a page that goes there) and
    direct (303 Location) for proxies that pass the answer; User-Agents offered by pattern."""
    common = ("--replay-cache", "memory", "--challenge-fallback", LOGIN, "--challenge-user-agents", r"Windows NT \d")
    with Sidecar(tmp_path, mit_lab.keytabs["svc18"], args=common, name="r401") as sc:
        status, h, body = sc.http("GET", "/auth", {"User-Agent": "Mozilla/5.0 (X11; Linux)"})
        assert status == 401 and "www-authenticate" not in h
        assert h["x-auth-fallback"] == "user_agent" and h["x-auth-redirect"] == LOGIN
        assert b'http-equiv="refresh"' in body and LOGIN.replace("&", "&amp;").encode() in body
        status, h, _ = sc.http("GET", "/auth", {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64)"})
        assert status == 401 and h["www-authenticate"] == "Negotiate" and "set-cookie" not in h
    with Sidecar(tmp_path, mit_lab.keytabs["svc18"], args=(*common, "--challenge-fallback-status", "303"),
                 name="r303") as sc:
        status, h, _ = sc.http("GET", "/auth", {"User-Agent": "curl/8"})
        assert status == 303 and h["location"] == LOGIN and "www-authenticate" not in h


def test_off_by_default(tmp_path: Path, mit_lab: Any) -> None:
    """No challenge option: the 401 offers Negotiate to everyone, an NTLM token gets the plain refusal, and
    there is no /challenge/ page."""
    with Sidecar(tmp_path, mit_lab.keytabs["svc18"], args=("--replay-cache", "memory")) as sc:
        status, h, body = sc.http("GET", "/auth", {"X-Forwarded-For": "203.0.113.9", "User-Agent": "Slackbot"})
        assert (status, h["www-authenticate"], h["x-auth-error"]) == (401, "Negotiate", "no_token")
        assert "x-auth-fallback" not in h and "set-cookie" not in h and body.startswith(b'{"code": "no_token"')
        status, h, _ = sc.http("GET", "/auth", {"Authorization": ntlm_header()})
        assert (status, h["www-authenticate"], h["x-auth-error"]) == (401, "Negotiate", "unsupported_mechanism")
        assert sc.http("GET", "/challenge/network")[0] == 404


@pytest.mark.parametrize(("args", "words"), [
    (("--challenge-networks", "10.0.0.0/33"), "challenge_networks entry '10.0.0.0/33' is not an address"),
    (("--trusted-proxies", "nginx", "--challenge-tried-cookie", "t"), "trusted_proxies entry 'nginx'"),
    (("--never-challenge-user-agents", "(", "--challenge-tried-cookie", "t"), "is not a regular expression"),
    (("--challenge-tried-cookie", "a b"), "challenge_tried_cookie 'a b' is not a cookie name"),
    (("--challenge-tried-cookie", "t", "--challenge-fallback", "https://x.example", "--challenge-fallback-status",
      "403"), "challenge_fallback_status 403 does not go with the redirect"),
    (("--challenge-fallback", "/nonexistent/page.html"), "no challenge option withholds the offer"),
    (("--ntlm-page", "/nonexistent/ntlm.html"), "ntlm_page /nonexistent/ntlm.html: cannot read the page file"),
])
def test_check_names_the_option(tmp_path: Path, mit_lab: Any, args: tuple[str, ...], words: str) -> None:
    """``fastkrb serve --check``: each bad challenge option is one sentence naming it and the fix."""
    out = subprocess.run([sys.executable, "-m", "fastkrb", "serve", "--check", "--keytab",
                          str(mit_lab.keytabs["svc18"]), "--socket", str(tmp_path / "s.sock"), *args],
                         capture_output=True, text=True, env={"PYTHONPATH": SRC}, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert words.lower() in text.lower(), text
    assert "Traceback" not in text
    line = next(x for x in text.splitlines() if words.lower() in x.lower())
    assert line.count(";") >= 1, line   # the cause; the fix
