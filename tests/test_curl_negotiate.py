"""`kinit` + `curl --negotiate` against a small HTTP service that authenticates with fastkrb.

The client side is entirely MIT's and curl's: curl builds the SPNEGO token with the user's ticket from
the realm's ccache, sends `Authorization: Negotiate`, and (with --negotiate) checks the mutual answer.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fastkrb import KerberosError, Validator

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class _Handler(http.server.BaseHTTPRequestHandler):
    validator: Validator
    seen: list[tuple[int, str]]

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Negotiate "):
            self._reply(401, {"WWW-Authenticate": "Negotiate"}, b"no token\n")
            return
        try:
            res = self.validator.validate(auth)
        except KerberosError as exc:
            self.seen.append((401, exc.code))
            self._reply(401, {"WWW-Authenticate": "Negotiate", "X-Auth-Error": exc.code}, exc.cause.encode())
            return
        self.seen.append((200, res.client))
        headers = {"X-Remote-User": res.short_name}
        if res.www_authenticate:
            headers["WWW-Authenticate"] = res.www_authenticate
        self._reply(200, headers, f"hello {res.client}\n".encode())

    def _reply(self, code: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service(mit_lab: Any) -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("H", (_Handler,), {"validator": Validator(str(mit_lab.keytabs["svc18"]), cold_start=False),
                                      "seen": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1], handler
    finally:
        srv.shutdown()
        srv.server_close()


def _curl(mit_lab: Any, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    host = "svc18.fastkrb.test"
    env = {**os.environ, **mit_lab.realm.env, "KRB5CCNAME": f"FILE:{mit_lab.realm.ccache('default')}"}
    return subprocess.run(
        ["curl", "-sS", "--negotiate", "-u", ":", "--resolve", f"{host}:{port}:127.0.0.1",
         "-o", "-", "-w", "\n%{http_code}", *extra, f"http://{host}:{port}/"],
        env=env, capture_output=True, text=True, timeout=30)


def test_curl_negotiate_is_accepted(mit_lab: Any, service: tuple[int, type[_Handler]]) -> None:
    port, handler = service
    out = _curl(mit_lab, port)
    assert out.returncode == 0, out.stderr
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out.stdout
    assert body.strip() == f"hello {mit_lab.realm.user}"
    assert handler.seen[-1] == (200, mit_lab.realm.user)


def test_no_ticket_gets_the_challenge(mit_lab: Any, service: tuple[int, type[_Handler]]) -> None:
    port, _ = service
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=30)
    assert " 401 " in out.stdout.splitlines()[0]
    assert "WWW-Authenticate: Negotiate" in out.stdout
