"""End to end with real parts: MIT KDC, kinit + curl --negotiate, Debian nginx running the shipped
deploy/nginx/fastkrb.conf (auth_request to the sidecar's Unix socket), fastkrb serve, a small backend.

nginx's workers run as www-data (as on Debian); the sidecar's socket belongs to that group and its
SO_PEERCRED allow-list admits that group (and root, for the test's own probes).

Policies: the shipped file's /reports/ location asks for the policy "readers" (a group); the test adds a
copy of that pattern, /mine/, built in the URL (?allowed_users=alice@FASTKRB.TEST). MIT tickets carry no
PAC groups: 403 at /reports/, 200 at /mine/. With the Samba AD DC (tests/support/samba_dc.py) the same file runs
inside the DC's network namespace and curl --negotiate brings real AD tickets: a member of the group gets
200 and its SID, UPN and groups, a non-member 403 (the sidecar, a plain ``python -m fastkrb serve``, decodes
the PAC's identity natively).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import http.client
import http.server
import json
import os
import pwd
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fastkrb.groups import write_map
from support.mitgss import finish_initiator, initiator_verdict
from support.procs import free_port, stop, wait_listening
from support.sidecar import Sidecar

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "nginx" / "fastkrb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (apt-get install nginx-light)"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def render(text: str, *, socket_path: str, app_port: int | str, port: int, www: Path, host: str,
           guard: bool = True) -> str:
    """The shipped file with its ADAPT values replaced (each must be found: the file is what we test)."""
    app = app_port if isinstance(app_port, str) else f"127.0.0.1:{app_port}"   # a str: "unix:/path"
    subs = {"unix:/run/fastkrb/fastkrb.sock": f"unix:{socket_path}", "127.0.0.1:8080": app,
            "listen 80;": f"listen 127.0.0.1:{port};", "/srv/www": str(www), "api.example.com": host}
    for old, new in subs.items():
        assert old in text, f"{old!r} no longer in {SHIPPED.name}: update this test"
        text = text.replace(old, new)
    if not guard:  # the negative control: the same file without the internal-redirect guard (of /_fastkrb)
        text, n = re.subn(r"if \(\$fastkrb_user\) \{[^}]*?return 204;\s*\}", "", text, count=1)
        assert n == 1
    return text


def enable_challenges(text: str) -> str:
    """The shipped file with its honest-challenge block (commented out between BEGIN and END) switched on."""
    start = text.index("    # BEGIN honest challenges\n")
    end = text.index("    # END honest challenges\n")
    block = text[start:end]
    on = re.sub(r"^    #(?! BEGIN)", "    ", block, flags=re.M)
    assert len(re.findall(r"^    #", on, flags=re.M)) == 1, "a line of the block is not a directive: update this"
    return text[:start] + on + text[end:]


def add_policy_location(text: str, prefix: str, query: str) -> str:
    """A copy of the shipped /reports/ pattern (location + its auth location with the policy guard) for
    another prefix and a policy built in the URL."""
    start = text.index("    location /reports/ {")
    block = text[start:text.rindex("}")]
    policy = query[len("policy="):] if query.startswith("policy=") else query
    block = (block.replace("/reports/", prefix).replace("/_fastkrb_readers", "/_fastkrb" + prefix.strip("/"))
             .replace('$fastkrb_policy = "readers"', f'$fastkrb_policy = "{policy}"')
             .replace("/auth?policy=readers", "/auth?" + query))
    end = text.rindex("}")
    return text[:end] + block + text[end:]


class _Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        doc = {"user": self.headers.get("X-Remote-User"), "principal": self.headers.get("X-Remote-Principal"),
               "realm": self.headers.get("X-Remote-Realm"), "authorization": self.headers.get("Authorization")}
        for key, name in (("sid", "X-Remote-SID"), ("upn", "X-Remote-UPN"), ("groups", "X-Remote-Groups"),
                          ("groups_cut", "X-Remote-Groups-Truncated"), ("policy", "X-Remote-Policy")):
            if self.headers.get(name):   # only what the proxy passed (an MIT ticket has no PAC identity)
                doc[key] = self.headers[name]
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return str(self.client_address)   # a Unix socket peer has no (host, port)


class _UnixBackend(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The backend on a Unix socket: reachable from nginx in another network namespace."""

    daemon_threads = True


@dataclass
class Site:
    lab: Any
    principal: str
    host: str
    port: int
    bare_port: int          # the same site without the internal-redirect guard
    sidecar: Sidecar
    keytab: Path
    dir: Path

    def curl(self, path: str, *extra: str, negotiate: bool = True, port: int | None = None,
             ccache: Path | None = None) -> subprocess.CompletedProcess[str]:
        realm = self.lab.realm
        cc = ccache or realm.ccache("default")
        env = {**os.environ, **realm.env, "KRB5CCNAME": f"FILE:{cc}"}
        port = port or self.port
        auth = ["--negotiate", "-u", ":"] if negotiate else []
        return subprocess.run(["curl", "-sS", *auth, "--resolve", f"{self.host}:{port}:127.0.0.1", "-D", "-",
                               "-o", "-", *extra, f"http://{self.host}:{port}{path}"],
                              env=env, capture_output=True, text=True, timeout=30)

    def token(self, *, mutual: bool = True, ccache: Path | None = None) -> tuple[bytes, Any]:
        return self.lab.realm.get_token(self.principal, mech="spnego", mutual=mutual,  # type: ignore[no-any-return]
                                        ccache=ccache)

    def get(self, path: str, authorization: str | None, port: int | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
        c = conn or http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        headers = {"Host": self.host}
        if authorization:
            headers["Authorization"] = authorization
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        body = r.read()
        if conn is None:
            c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def _parse_curl(out: str) -> tuple[list[int], dict[str, str], str]:
    """curl -D - -o -: every status line seen (401 then 200 for Negotiate), last headers, body."""
    out = out.replace("\r\n", "\n")
    statuses = [int(m) for m in re.findall(r"^HTTP/1\.1 (\d{3})", out, flags=re.M)]
    blocks = out.split("\n\n")
    head = [b for b in blocks if b.startswith("HTTP/1.1 ")][-1]
    headers = {}
    for line in head.split("\n")[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = blocks[-1]
    return statuses, headers, body


READERS_SID = "S-1-5-21-1004336348-1177238915-682003330-1200"   # the MIT test's readers: a group no MIT ticket has


@dataclass
class Served:
    sidecar: Sidecar
    ports: dict[str, int]
    nginx: subprocess.Popen[bytes]


@contextlib.contextmanager
def serve(work: Path, keytab: Path, host: str, config: str, *, copies: tuple[tuple[str, bool], ...],
          extra: Any = None, netns: Any = None) -> Iterator[Served]:
    """The sidecar (config text as its --config) and nginx running the shipped file once per copy
    (name, with the internal-redirect guard?); ``extra(text)`` edits each copy; ``netns(argv)`` runs nginx
    elsewhere (inside a DC's network namespace)."""
    os.chmod(work, 0o755)   # nginx's workers (www-data) reach the socket and the files through it
    www = work / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("<h1>protected index</h1>\n")
    (www / "index.html").chmod(0o644)
    try:
        nginx_user = pwd.getpwnam("www-data").pw_name
        nginx_group = grp.getgrnam("www-data").gr_name
    except KeyError:
        nginx_user = nginx_group = "root"
    (work / "fastkrb.toml").write_text(config)
    sc = Sidecar(work, keytab, workers=2, args=("--replay-cache", f"shm:{work / 'replay.shm'}", "--config",
                                                str(work / "fastkrb.toml"), "--socket-group", nginx_group,
                                                "--allow-gids", nginx_group, "--allow-uids", "0"))
    backend: socketserver.BaseServer
    if netns is None:
        backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
        app: int | str = backend.server_address[1]   # type: ignore[index]
    else:
        backend = _UnixBackend(str(work / "app.sock"), _Backend)
        os.chmod(work / "app.sock", 0o666)
        app = f"unix:{work / 'app.sock'}"
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    tmp = work / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    shutil.chown(tmp, nginx_user, nginx_group)
    ports = {name: free_port() for name, _ in copies}
    shipped = SHIPPED.read_text()
    includes = []
    for name, guard in copies:
        conf = render(shipped, socket_path=sc.socket, app_port=app, port=ports[name], www=www, host=host,
                      guard=guard)
        if extra is not None:
            conf = extra(conf)
        if name != copies[0][0]:   # a second copy needs its own upstream names
            conf = conf.replace("fastkrb_sidecar", f"fastkrb_sidecar_{name}").replace("fastkrb_app",
                                                                                       f"fastkrb_app_{name}")
        path = work / f"{name}.conf"
        path.write_text(conf)
        includes.append(f"    include {path};")
    main = work / "nginx.conf"
    main.write_text("\n".join([
        f"user {nginx_user} {nginx_group};", "daemon off;", "worker_processes 2;", f"pid {work / 'nginx.pid'};",
        f"error_log {work / 'nginx-error.log'} warn;", "events { worker_connections 256; }", "http {",
        f"    access_log {work / 'nginx-access.log'};",
        *(f"    {d}_temp_path {tmp / d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        *includes, "}", ""]))
    check = subprocess.run([NGINX, "-t", "-c", str(main), "-p", str(work)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    sc.start()
    argv = [NGINX, "-c", str(main), "-p", str(work)]
    ngx = subprocess.Popen(netns(argv) if netns else argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield Served(sc, ports, ngx)
    finally:
        stop(ngx, signal.SIGQUIT, 10)
        assert sc.stop() == 0
        backend.shutdown()
        backend.server_close()


@pytest.fixture(scope="module")
def site(mit_lab: Any) -> Iterator[Site]:
    realm = mit_lab.realm
    principal = realm.add_service(realm.service("sidecar"))
    host = f"sidecar.{realm.domain}"
    work = Path(tempfile.mkdtemp(prefix="fastkrb-e2e-"))
    keytab = realm.export(work / "http.keytab", principal)
    config = f'[policies.readers]\nallowed_groups = ["{READERS_SID}"]\n'
    mine = f"allowed_users={realm.user}"

    def extra(text: str) -> str:
        text = add_policy_location(text, "/mine/", mine)
        # a location whose try_files redirects internally into /mine/ after its own (policy-free) auth
        redirect = "    location = /to-mine {\n        try_files /nonexistent /mine/x;\n    }\n"
        return text[:text.rindex("}")] + redirect + "}\n"

    try:
        with serve(work, keytab, host, config, copies=(("site", True), ("bare", False)), extra=extra) as served:
            wait_listening(served.ports["site"], served.nginx, work / "nginx-error.log", "nginx")
            wait_listening(served.ports["bare"], served.nginx, work / "nginx-error.log", "nginx")
            yield Site(mit_lab, principal, host, served.ports["site"], served.ports["bare"], served.sidecar, keytab,
                       work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_curl_negotiate_reaches_the_backend_as_the_user(site: Site) -> None:
    out = site.curl("/api/whoami")
    assert out.returncode == 0, out.stderr       # curl also checks the mutual answer it was sent
    statuses, headers, body = _parse_curl(out.stdout)
    assert statuses[-1] == 200
    doc = json.loads(body)
    user = site.lab.realm.user
    assert doc == {"user": user.split("@")[0], "principal": user, "realm": user.split("@")[1],
                   "authorization": None}       # identity passed, token not
    assert headers["www-authenticate"].startswith("Negotiate ")


def test_mutual_authentication_completes_in_mit_initiator(site: Site) -> None:
    token, ctx = site.token(mutual=True)
    status, headers, _ = site.get("/api/whoami", "Negotiate " + base64.b64encode(token).decode())
    assert status == 200
    answer = headers["www-authenticate"]
    assert answer.startswith("Negotiate ")
    assert finish_initiator(ctx, base64.b64decode(answer.split()[1])) is True


def test_index_through_internal_redirect_is_authenticated_once(site: Site) -> None:
    out = site.curl("/")
    assert out.returncode == 0, out.stderr
    statuses, _, body = _parse_curl(out.stdout)
    assert statuses[-1] == 200
    assert "protected index" in body


def test_without_the_guard_the_internal_redirect_is_a_replay(site: Site) -> None:
    """The negative control: the same shipped file minus the guard shows the trap it avoids."""
    token, init = site.token()
    status, headers, _ = site.get("/", "Negotiate " + base64.b64encode(token).decode(), port=site.bare_port)
    assert status == 401
    assert headers["x-auth-error"] == "replay"
    assert replay_reported(init, headers["www-authenticate"])
    time.sleep(0.5)
    replay = [e for e in site.sidecar.events() if e.get("code") == "replay"][-1]
    assert replay["first_seen_ago"] < 1.0            # re-validated within the same request
    assert "internal redirect" in replay["cause"]
    # while through the shipped file, the same path with a fresh token is fine
    token, _ = site.token()
    assert site.get("/", "Negotiate " + base64.b64encode(token).decode())[0] == 200


def test_no_header_is_401_negotiate(site: Site) -> None:
    out = site.curl("/api/whoami", negotiate=False)
    statuses, headers, _ = _parse_curl(out.stdout)
    assert statuses == [401]
    assert headers["www-authenticate"] == "Negotiate"


def replay_reported(init: Any, challenge: str) -> bool:
    """The 401's challenge, as nginx passed it, carries the sidecar's KRB-ERROR, and MIT's initiator fed it
    names the reason (the client asked for mutual authentication)."""
    scheme, _, answer = challenge.partition(" ")
    assert scheme == "Negotiate" and answer, challenge
    _, text, _ = initiator_verdict(init, base64.b64decode(answer))
    return text.endswith("): Request is a replay")


def test_the_same_header_twice_is_a_replay(site: Site) -> None:
    token, init = site.token()
    value = "Negotiate " + base64.b64encode(token).decode()
    assert site.get("/api/whoami", value)[0] == 200
    status, headers, _ = site.get("/api/whoami", value)
    assert status == 401
    assert headers["x-auth-error"] == "replay"
    assert replay_reported(init, headers["www-authenticate"])
    token, _ = site.token(mutual=False)   # without mutual authentication the client reads no answer token
    value = "Negotiate " + base64.b64encode(token).decode()
    assert site.get("/api/whoami", value)[0] == 200
    status, headers, _ = site.get("/api/whoami", value)
    assert status == 401 and headers["www-authenticate"] == "Negotiate"


def test_keytab_rotation_during_load_fails_no_request(site: Site) -> None:
    realm = site.lab.realm
    old_tokens = [site.token(mutual=False)[0] for _ in range(200)]   # the client's ticket predates the rotation
    results: list[int] = []

    def load() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
        for t in old_tokens:
            results.append(site.get("/api/whoami", "Negotiate " + base64.b64encode(t).decode(), conn=conn)[0])
            time.sleep(0.01)
        conn.close()

    def reloads() -> int:
        return sum(1 for e in site.sidecar.events() if e.get("event") == "keytab_reload" and e.get("result") == "ok")

    th = threading.Thread(target=load)
    th.start()
    time.sleep(0.3)
    before = reloads()
    realm.rotate(site.principal)                       # kvno + 1 in the KDC
    staged = site.dir / "http.keytab.new"
    shutil.copyfile(site.keytab, staged)
    realm.export(staged, site.principal)               # old keys + new keys
    os.replace(staged, site.keytab)                    # atomic swap on disk
    deadline = time.monotonic() + 10
    while reloads() < before + 2 and time.monotonic() < deadline:   # both workers
        time.sleep(0.05)
    assert th.is_alive(), "the load loop ended before the reload: make it longer"
    th.join(120)
    assert reloads() >= before + 2
    assert len(results) == len(old_tokens)
    assert set(results) == {200}
    # and a client that gets a new ticket (new kvno) is accepted too
    cc = realm.kinit(realm.ccache("sidecar-after-rotation"))
    out = site.curl("/api/whoami", ccache=cc)
    assert out.returncode == 0 and _parse_curl(out.stdout)[0][-1] == 200, out.stdout + out.stderr
    time.sleep(0.5)   # decision lines are flushed on the sidecar's tick
    decisions = [e for e in site.sidecar.events() if e.get("outcome") == "accepted"]
    assert {e["kvno"] for e in decisions} >= {1, 2}


def test_a_killed_worker_leaves_the_others_serving(site: Site) -> None:
    token, _ = site.token()
    value = "Negotiate " + base64.b64encode(token).decode()
    assert site.get("/api/whoami", value)[0] == 200
    pids = site.sidecar.worker_pids()
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    statuses = []
    for _ in range(30):
        t, _ = site.token()
        statuses.append(site.get("/api/whoami", "Negotiate " + base64.b64encode(t).decode())[0])
    assert statuses == [200] * 30, (site.dir / "nginx-error.log").read_text()[-3000:]
    status, headers, _ = site.get("/api/whoami", value)   # the replay cache is shared: still refused after the kill
    assert status == 401 and headers["x-auth-error"] == "replay"
    deadline = time.monotonic() + 10
    while len(site.sidecar.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(site.sidecar.worker_pids()) == 2   # replaced by the supervisor


def test_replay_after_worker_death_needs_the_shared_cache(site: Site) -> None:
    token, _ = site.token()
    value = "Negotiate " + base64.b64encode(token).decode()
    assert site.get("/api/whoami", value)[0] == 200
    for pid in site.sidecar.worker_pids():   # kill them all: the cache outlives the workers
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(site.sidecar.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, headers, _ = site.get("/api/whoami", value)
    assert status == 401 and headers["x-auth-error"] == "replay"


# -- sessions and bearer tokens --------------------------------------------------------------------------------

def test_session_cookie_and_token_exchange_through_nginx(mit_lab: Any) -> None:
    """The shipped file in front of a sidecar with sessions on: curl --negotiate with a cookie jar gets the
    page and the cookie (Set-Cookie passed by nginx), then the cookie alone gets the page again, with no new
    ticket; POST /token through the file's /token location gives a bearer token that /auth accepts."""
    from fastkrb.sessions.bearer import new_signing_key_file
    from fastkrb.sessions.cookie import new_session_key_file

    realm = mit_lab.realm
    principal = realm.add_service(realm.service("sessions"))
    host = f"sessions.{realm.domain}"
    work = Path(tempfile.mkdtemp(prefix="fastkrb-e2e-sessions-"))
    try:
        keytab = realm.export(work / "http.keytab", principal)
        new_session_key_file(work / "session-keys.json")
        new_signing_key_file(work / "signing-keys.json")
        # plain HTTP in this test: a Secure cookie would never be sent back (session_secure stays on in production)
        config = (f'session_keys = "{work / "session-keys.json"}"\nsession_secure = false\n'
                  f'signing_keys = "{work / "signing-keys.json"}"\ntoken_issuer = "https://{host}"\n'
                  f'token_audience = "{host}"\n')
        with serve(work, keytab, host, config, copies=(("site", True),)) as served:
            port = served.ports["site"]
            wait_listening(port, served.nginx, work / "nginx-error.log", "nginx")
            site = Site(mit_lab, principal, host, port, port, served.sidecar, keytab, work)
            jar = work / "cookies.txt"
            first = site.curl("/api/whoami", "-c", str(jar))
            assert first.returncode == 0, first.stderr
            statuses, headers, body = _parse_curl(first.stdout)
            assert statuses[-1] == 200                     # (curl may send its token before any challenge)
            assert headers["set-cookie"].startswith("fastkrb_session=") and "HttpOnly" in headers["set-cookie"]
            assert json.loads(body)["principal"] == realm.user
            second = site.curl("/api/whoami", "-b", str(jar), negotiate=False)
            assert second.returncode == 0, second.stderr
            statuses, headers, body = _parse_curl(second.stdout)
            assert statuses == [200]                       # no challenge: the cookie alone
            assert "set-cookie" not in headers
            doc = json.loads(body)
            assert (doc["principal"], doc["authorization"]) == (realm.user, None)
            # the index (an internal redirect) with the cookie alone: the guard holds for sessions too
            assert _parse_curl(site.curl("/", "-b", str(jar), negotiate=False).stdout)[0] == [200]
            # POST /token through nginx, then the bearer token at a protected location
            tok = site.curl("/token", "-X", "POST")
            assert tok.returncode == 0, tok.stderr
            statuses, headers, body = _parse_curl(tok.stdout)
            assert statuses[-1] == 200 and headers["content-type"] == "application/json"
            access = json.loads(body)["access_token"]
            status, _, body = site.get("/api/whoami", f"Bearer {access}")
            assert status == 200 and json.loads(body)["principal"] == realm.user
            status, headers, jwks = site.get("/.well-known/jwks.json", None)
            assert status == 200 and json.loads(jwks)["keys"][0]["alg"] == "ES256"
            time.sleep(1.2)   # decision lines are written on the sidecar's tick
            vias = [(e.get("via"), e["outcome"]) for e in served.sidecar.events() if e.get("event") == "decision"
                    and e["outcome"] == "accepted"]
            assert vias.count(("session", "accepted")) == 2 and vias.count(("bearer", "accepted")) == 1
            assert vias.count((None, "accepted")) == 2     # the two Negotiate validations: the page and /token
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- honest challenges ----------------------------------------------------------------------------------------

def test_honest_challenges_through_nginx(mit_lab: Any) -> None:
    """The shipped file with its honest-challenge block on, before a sidecar that offers Negotiate to 127.0.0.2
    only (the address nginx forwards as X-Forwarded-For over the Unix socket, trusted_proxies = unix): curl from
    127.0.0.1 gets the configured page, 401 without WWW-Authenticate: Negotiate (no dialog); from 127.0.0.2 the
    offer and its tried cookie, and with a ticket the page it asked for; back without a ticket, with the
    cookie, the page; an NTLM token the NTLM page with X-Auth-Error: unsupported_mechanism. Then the same file
    before a sidecar whose fallback is a login URL: nginx redirects (303)."""
    realm = mit_lab.realm
    principal = realm.add_service(realm.service("challenge"))
    host = f"challenge.{realm.domain}"
    work = Path(tempfile.mkdtemp(prefix="fastkrb-e2e-challenge-"))
    page = "<!doctype html><title>outside</title><h1>Sign in from the office network</h1>\n"
    try:
        keytab = realm.export(work / "http.keytab", principal)
        (work / "outside.html").write_text(page)
        (work / "outside.html").chmod(0o644)
        rule = ('challenge_networks = ["127.0.0.2/32"]\ntrusted_proxies = ["unix"]\n'
                'challenge_tried_cookie = "fastkrb_tried"\nchallenge_tried_secure = false\n')
        config = rule + f'challenge_fallback = "{work / "outside.html"}"\nntlm_page = "default"\n'
        with serve(work, keytab, host, config, copies=(("site", True),), extra=enable_challenges) as served:
            port = served.ports["site"]
            wait_listening(port, served.nginx, work / "nginx-error.log", "nginx")
            site = Site(mit_lab, principal, host, port, port, served.sidecar, keytab, work)
            # outside the offered network: the page, no offer
            statuses, headers, body = _parse_curl(site.curl("/api/whoami", negotiate=False).stdout)
            assert statuses == [401] and "www-authenticate" not in headers, headers
            assert body == page and headers["content-type"].startswith("text/html")
            # inside: the offer (nginx's 401 with the sidecar's challenge) and the tried cookie
            jar = work / "jar.txt"
            out = site.curl("/api/whoami", "--interface", "127.0.0.2", "-c", str(jar), negotiate=False)
            statuses, headers, body = _parse_curl(out.stdout)
            assert statuses == [401] and headers["www-authenticate"] == "Negotiate", out.stdout
            assert headers["set-cookie"].startswith("fastkrb_tried=1;") and "401 Authorization Required" in body
            # with a ticket: in, and the tried cookie dropped
            out = site.curl("/api/whoami", "--interface", "127.0.0.2", "-b", str(jar))
            statuses, headers, body = _parse_curl(out.stdout)
            assert statuses[-1] == 200 and json.loads(body)["principal"] == realm.user, out.stdout
            assert headers["set-cookie"].startswith("fastkrb_tried=;") and "Max-Age=0" in headers["set-cookie"]
            # back without a ticket, with the cookie: the page instead of a second offer
            out = site.curl("/api/whoami", "--interface", "127.0.0.2", "-b", "fastkrb_tried=1", negotiate=False)
            statuses, headers, body = _parse_curl(out.stdout)
            assert statuses == [401] and "www-authenticate" not in headers and body == page
            # an NTLM token: the NTLM page, its diagnosis kept
            import spnego

            ntlm = spnego.client("alice", "pw", hostname=host, service="HTTP", protocol="ntlm").step()
            out = site.curl("/api/whoami", "--interface", "127.0.0.2", "-H",
                            f"Authorization: Negotiate {base64.b64encode(ntlm).decode()}", negotiate=False)
            statuses, headers, body = _parse_curl(out.stdout)
            assert statuses == [401] and headers["x-auth-error"] == "unsupported_mechanism"
            assert "www-authenticate" not in headers and "Kerberos sign-in failed" in body
        login = "https://login.example.com/help"
        with serve(work, keytab, host, rule + f'challenge_fallback = "{login}"\n', copies=(("site", True),),
                   extra=enable_challenges) as served:
            port = served.ports["site"]
            wait_listening(port, served.nginx, work / "nginx-error.log", "nginx")
            site = Site(mit_lab, principal, host, port, port, served.sidecar, keytab, work)
            statuses, headers, _ = _parse_curl(site.curl("/api/whoami", negotiate=False).stdout)
            assert statuses == [303] and headers["location"] == login and "www-authenticate" not in headers
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- policies --------------------------------------------------------------------------------------------------

def test_group_location_refuses_an_mit_ticket_with_403(site: Site) -> None:
    """MIT tickets carry no PAC groups: the location of the policy "readers" answers 403, not 401."""
    out = site.curl("/reports/x")
    assert out.returncode == 0, out.stderr
    statuses, headers, _ = _parse_curl(out.stdout)
    assert statuses[-1] == 403 and 200 not in statuses   # (curl may show the 401 challenge before it)
    assert headers["x-auth-error"] == "forbidden"
    assert headers.get("www-authenticate", "") != "Negotiate"   # no new challenge: it would not help
    time.sleep(0.5)
    (line,) = [e for e in site.sidecar.events() if e.get("outcome") == "forbidden"][-1:]
    assert line["policy"] == "readers" and line["constraint"] == "groups" and line["group_count"] == 0
    assert line["client"] == site.lab.realm.user and "no PAC logon information" in line["cause"]


def test_allowed_users_location_lets_the_user_in(site: Site) -> None:
    out = site.curl("/mine/x")
    assert out.returncode == 0, out.stderr
    statuses, _, body = _parse_curl(out.stdout)
    assert statuses[-1] == 200
    doc = json.loads(body)
    assert doc["principal"] == site.lab.realm.user and doc["policy"] == f"allowed_users={site.lab.realm.user}"
    assert "sid" not in doc and "groups" not in doc           # no PAC, no identity headers
    # and the same shipped pattern refuses a user the URL does not name
    token, _ = site.token()
    status, headers, _ = site.get("/reports/x", "Negotiate " + base64.b64encode(token).decode())
    assert status == 403 and headers["x-auth-error"] == "forbidden"


def test_internal_redirect_into_a_policy_location_fails_closed(site: Site) -> None:
    """Authenticated for a policy-free location, then redirected into /mine/: the token is spent and this
    policy was not asked, so the guard answers 403 rather than a false replay or a skipped check."""
    time.sleep(0.5)
    before = len([e for e in site.sidecar.events() if e.get("event") == "decision"])
    out = site.curl("/to-mine")
    statuses, _, _ = _parse_curl(out.stdout)
    assert statuses[-1] == 403, out.stdout
    time.sleep(0.5)
    new = [e for e in site.sidecar.events() if e.get("event") == "decision"][before:]
    # one validation (for /to-mine, without a policy), no second one that would be a replay
    assert [(e["outcome"], e.get("policy")) for e in new if e["outcome"] != "challenged"] == [("accepted", None)]


# -- the same with Active Directory tickets: Samba's AD DC -------------------------------------------------------

@pytest.fixture(scope="module")
def samba_site(samba_dc: Any) -> Iterator[Any]:
    """nginx (inside the DC's network namespace, where its KDC is) + the sidecar with the DC's HTTP keytab,
    the group map of the directory, and the policy readers = members of CORP\\fk-g1 (carol, not bob). The DC is
    the session's ``samba_dc`` (tests/conftest.py)."""
    dc = samba_dc
    work = Path(tempfile.mkdtemp(prefix="fastkrb-e2e-samba-"))   # not under pytest's 0700 tmp: www-data walks it
    spn = dc.services["svc-aes256"].spn                       # HTTP/aes256.corp.example
    host = spn.split("/", 1)[1]
    keytab = work / "http.keytab"
    shutil.copyfile(dc.keytab("svc-aes256"), keytab)
    groups = dc.search(dc.base_dn, "objectSid", "sAMAccountName", scope="sub", expr="(objectClass=group)")
    write_map(work / "groups.json", {g["objectSid"][0]: f"{dc.domain}\\{g['sAMAccountName'][0]}" for g in groups})
    config = (f'[serve]\ngroup_names = "{work / "groups.json"}"\nremote_groups = "name"\nenctypes = [18, 17]\n'
              '[policies.readers]\nallowed_groups = ["CORP\\\\fk-g1"]\n')
    try:
        with serve(work, keytab, host, config, copies=(("site", True),), netns=dc.netns_argv) as served:
            port = served.ports["site"]
            probe = (f"import socket,time\nfor _ in range(200):\n    try:\n        socket.create_connection(("
                     f"'127.0.0.1', {port}), 0.2).close()\n        break\n    except OSError:\n"
                     "        time.sleep(0.05)\n")
            dc.run([sys.executable, "-c", probe], netns=True)
            yield dc, host, port, served
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _samba_curl(dc: Any, host: str, port: int, user: str, path: str) -> tuple[list[int], dict[str, str], str]:
    cc = dc.user_ccache(user)
    out = dc.run(["curl", "-sS", "--negotiate", "-u", ":", "--resolve", f"{host}:{port}:127.0.0.1", "-D", "-",
                  "-o", "-", f"http://{host}:{port}{path}"], env={"KRB5CCNAME": f"FILE:{cc}"}, netns=True)
    return _parse_curl(out.stdout)


@pytest.mark.samba
def test_samba_group_member_gets_in_with_its_identity(samba_site: Any) -> None:
    dc, host, port, _ = samba_site
    statuses, _, body = _samba_curl(dc, host, port, "carol", "/reports/x")
    assert statuses[-1] == 200, body
    doc = json.loads(body)
    carol = dc.truth("carol")
    assert doc["principal"] == "carol@CORP.EXAMPLE" and doc["policy"] == "readers"
    assert doc["sid"] == carol.sid and doc["upn"] == "carol@corp.example"
    assert {"CORP\\fk-g1", "CORP\\fk-g2", "CORP\\Domain Users"} <= set(doc["groups"].split(","))


@pytest.mark.samba
def test_samba_non_member_gets_403(samba_site: Any) -> None:
    dc, host, port, served = samba_site
    statuses, headers, _ = _samba_curl(dc, host, port, "bob", "/reports/x")
    assert statuses[-1] == 403 and headers["x-auth-error"] == "forbidden"
    statuses, _, body = _samba_curl(dc, host, port, "bob", "/api/x")      # every authenticated user
    assert statuses[-1] == 200 and json.loads(body)["sid"] == dc.truth("bob").sid
    time.sleep(0.5)
    line = [e for e in served.sidecar.events() if e.get("outcome") == "forbidden"][-1]
    assert line["policy"] == "readers" and line["constraint"] == "groups" and line["group_count"] > 0
    assert line["user_sid"] == dc.truth("bob").sid
