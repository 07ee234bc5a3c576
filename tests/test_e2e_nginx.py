"""End to end with real parts: MIT KDC, kinit + curl --negotiate, Debian nginx running the shipped
deploy/nginx/fastkrb.conf (auth_request to the sidecar's Unix socket), fastkrb serve, a small backend.

nginx's workers run as www-data (as on Debian); the sidecar's socket belongs to that group and its
SO_PEERCRED allow-list admits that group (and root, for the test's own probes).
"""

from __future__ import annotations

import base64
import grp
import http.client
import http.server
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.mitgss import finish_initiator
from support.procs import free_port, stop, wait_listening
from support.sidecar import Sidecar

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "nginx" / "fastkrb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (apt-get install nginx-light)"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def render(text: str, *, socket_path: str, app_port: int, port: int, www: Path, host: str,
           guard: bool = True) -> str:
    """The shipped file with its ADAPT values replaced (each must be found: the file is what we test)."""
    subs = {"unix:/run/fastkrb/fastkrb.sock": f"unix:{socket_path}", "127.0.0.1:8080": f"127.0.0.1:{app_port}",
            "listen 80;": f"listen 127.0.0.1:{port};", "/srv/www": str(www), "api.example.com": host}
    for old, new in subs.items():
        assert old in text, f"{old!r} no longer in {SHIPPED.name}: update this test"
        text = text.replace(old, new)
    if not guard:  # the negative control: the same file without the internal-redirect guard
        text, n = re.subn(r"if \(\$fastkrb_user\) \{.*?\}", "", text, flags=re.S)
        assert n == 1
    return text


class _Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"user": self.headers.get("X-Remote-User"),
                           "principal": self.headers.get("X-Remote-Principal"),
                           "realm": self.headers.get("X-Remote-Realm"),
                           "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


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


@pytest.fixture(scope="module")
def site(mit_lab: Any) -> Iterator[Site]:
    realm = mit_lab.realm
    principal = realm.add_service(realm.service("sidecar"))
    host = f"sidecar.{realm.domain}"
    work = Path(tempfile.mkdtemp(prefix="fastkrb-e2e-"))
    os.chmod(work, 0o755)   # nginx's workers (www-data) reach the socket and the files through it
    keytab = realm.export(work / "http.keytab", principal)
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>protected index</h1>\n")
    (www / "index.html").chmod(0o644)
    try:
        nginx_user = pwd.getpwnam("www-data").pw_name
        nginx_group = grp.getgrnam("www-data").gr_name
    except KeyError:
        nginx_user = nginx_group = "root"
    replay = ["--replay-cache", f"shm:{work / 'replay.shm'}"]   # shared by the two workers
    sc = Sidecar(work, keytab, workers=2, args=(*replay, "--socket-group", nginx_group, "--allow-gids", nginx_group,
                                                "--allow-uids", "0"))
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    tmp = work / "nginx-tmp"
    tmp.mkdir()
    shutil.chown(tmp, nginx_user, nginx_group)
    port, bare_port = free_port(), free_port()
    shipped = SHIPPED.read_text()
    includes = []
    for name, p, guard in (("site", port, True), ("bare", bare_port, False)):
        conf = render(shipped, socket_path=sc.socket, app_port=backend.server_address[1], port=p, www=www,
                      host=host, guard=guard)
        if not guard:   # a second copy needs its own upstream names
            conf = conf.replace("fastkrb_sidecar", "fastkrb_sidecar_bare").replace("fastkrb_app", "fastkrb_app_bare")
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
    ngx = subprocess.Popen([NGINX, "-c", str(main), "-p", str(work)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        wait_listening(port, ngx, work / "nginx-error.log", "nginx")
        wait_listening(bare_port, ngx, work / "nginx-error.log", "nginx")
        yield Site(mit_lab, principal, host, port, bare_port, sc, keytab, work)
    finally:
        stop(ngx, signal.SIGQUIT, 10)
        assert sc.stop() == 0
        backend.shutdown()
        backend.server_close()
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
    token, _ = site.token()
    status, headers, _ = site.get("/", "Negotiate " + base64.b64encode(token).decode(), port=site.bare_port)
    assert status == 401
    assert headers["x-auth-error"] == "replay"
    assert headers["www-authenticate"] == "Negotiate"
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


def test_the_same_header_twice_is_a_replay(site: Site) -> None:
    token, _ = site.token()
    value = "Negotiate " + base64.b64encode(token).decode()
    assert site.get("/api/whoami", value)[0] == 200
    status, headers, _ = site.get("/api/whoami", value)
    assert status == 401
    assert headers["x-auth-error"] == "replay"
    assert headers["www-authenticate"] == "Negotiate"


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
