"""Real Negotiate clients and real servers for the middleware tests (tests/test_middleware_*.py).

Clients: curl --negotiate (MIT's GSSAPI inside curl), requests-gssapi and httpx-gssapi (python-gssapi over
MIT), all as alice@FASTKRB.TEST from the realm's ccache, asking for the SPN of the lab's ``svc18`` service
while connecting to 127.0.0.1. Servers run in a thread and stop at the end of the ``with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastkrb import Validator
from support.mitgss import environment

HOST = "svc18.fastkrb.test"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> Any:
    """examples/<name>/app.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class CountingValidator:
    """A Validator that counts how often it is asked: the tests' proof of one validation per request."""

    def __init__(self, inner: Validator) -> None:
        self.inner = inner
        self.calls = 0

    def validate(self, token: Any, now: float | None = None, channel_bindings: bytes | None = None) -> Any:
        self.calls += 1
        return self.inner.validate(token, now, channel_bindings)

    async def avalidate(self, token: Any, now: float | None = None, channel_bindings: bytes | None = None) -> Any:
        self.calls += 1
        return await self.inner.avalidate(token, now, channel_bindings)


def service_validator(lab: Any) -> CountingValidator:
    return CountingValidator(Validator(str(lab.keytabs["svc18"]), cold_start=False))


def curl(lab: Any, port: int, path: str = "/", *extra: str, negotiate: bool = True) -> Reply:
    if shutil.which("curl") is None:
        import pytest

        pytest.skip("curl is not installed")
    env = {**os.environ, **lab.realm.env, "KRB5CCNAME": f"FILE:{lab.realm.ccache('default')}"}
    argv = ["curl", "-sS", "--resolve", f"{HOST}:{port}:127.0.0.1", "-D", "-", "-o", "-"]
    if negotiate:
        argv += ["--negotiate", "-u", ":"]
    out = subprocess.run([*argv, *extra, f"http://{HOST}:{port}{path}"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return _parse_curl(out.stdout)


def _parse_curl(raw: str) -> Reply:
    # with --negotiate curl may print two header blocks (the 401 then the answer); keep the last
    blocks = raw.replace("\r\n", "\n").split("\n\n")
    heads = [i for i, b in enumerate(blocks) if b.startswith("HTTP/")]
    last = heads[-1]
    lines = blocks[last].split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(status, headers, "\n\n".join(blocks[last + 1:]).strip())


def target_name(lab: Any) -> Any:
    import gssapi

    return gssapi.Name(lab.services["svc18"], gssapi.NameType.kerberos_principal)


@contextlib.contextmanager
def gss_env(lab: Any) -> Iterator[None]:
    env = {**lab.realm.env, "KRB5CCNAME": f"FILE:{lab.realm.ccache('default')}"}
    with environment(env):
        yield


def _gssapi_get(lab: Any, port: int, path: str, mutual: bool, http: Any, auth_mod: Any) -> Reply:
    with gss_env(lab):
        auth = auth_mod.HTTPSPNEGOAuth(target_name=target_name(lab), opportunistic_auth=True,
                                       mutual_authentication=auth_mod.REQUIRED if mutual else auth_mod.DISABLED)
        r = http.get(f"http://127.0.0.1:{port}{path}", auth=auth, timeout=30)
    return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text)


def requests_get(lab: Any, port: int, path: str = "/", *, mutual: bool = True) -> Reply:
    """requests + requests-gssapi; with ``mutual`` it insists on (and verifies) the server's AP-REP."""
    import requests
    import requests_gssapi

    return _gssapi_get(lab, port, path, mutual, requests, requests_gssapi)


def httpx_get(lab: Any, port: int, path: str = "/", *, mutual: bool = True) -> Reply:
    """httpx + httpx-gssapi, likewise."""
    import httpx
    import httpx_gssapi

    return _gssapi_get(lab, port, path, mutual, httpx, httpx_gssapi)


def raw_get(port: int, path: str = "/", authorization: str | None = None, *, accept: str | None = None) -> Reply:
    """A plain GET (httpx, so ``Accept: */*`` unless ``accept``), with the given Authorization if any."""
    import httpx

    headers = {"Authorization": authorization} if authorization else {}
    if accept is not None:
        headers["Accept"] = accept
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30)
    return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text)


def negotiate_header(lab: Any, *, mutual: bool = False) -> str:
    """A fresh real token from MIT's initiator for svc18, as a header value."""
    import base64

    token, _ = lab.get_token("svc18", mech="spnego", mutual=mutual)
    return "Negotiate " + base64.b64encode(token).decode()


def mutually_authenticated(lab: Any, port: int, path: str = "/", client: Any = None) -> Reply:
    """A gssapi client (requests-gssapi unless ``client``) that insists on mutual authentication: it verifies the
    server's AP-REP with MIT's initiator or fails. 200, with the answer in WWW-Authenticate."""
    r = (client or requests_get)(lab, port, path, mutual=True)
    assert r.status == 200 and r.headers["www-authenticate"].startswith("Negotiate "), r
    return r


def challenged(port: int, path: str = "/") -> Reply:
    """A request without Authorization: 401 with the bare ``Negotiate`` challenge (every middleware's contract)."""
    r = raw_get(port, path)
    assert r.status == 401 and r.headers["www-authenticate"] == "Negotiate", r
    return r


def replayed(lab: Any, port: int, path: str = "/") -> Reply:
    """The same real token twice: served once, then refused as a replay (401, X-Auth-Error: replay)."""
    header = negotiate_header(lab)
    assert raw_get(port, path, header).status == 200
    again = raw_get(port, path, header)
    assert again.status == 401 and again.headers["x-auth-error"] == "replay", again
    return again


# --- servers --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def uvicorn_server(app: Any, *, proxy_headers: bool = True) -> Iterator[int]:
    """``proxy_headers=False``: uvicorn's X-Forwarded-For rewrite off (by default it trusts 127.0.0.1 and
    rewrites ``scope["client"]`` before any middleware sees the TCP peer)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False,
                            proxy_headers=proxy_headers)
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield int(port)
    finally:
        server.should_exit = True
        t.join(10)


@contextlib.contextmanager
def wsgiref_server(app: Any) -> Iterator[int]:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    srv = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_port
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def aiohttp_server(app: Any) -> Iterator[int]:
    """aiohttp's own server (AppRunner + TCPSite) on a loop in a thread."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    if not ready.wait(10):
        raise RuntimeError("aiohttp did not start")
    try:
        yield int(box["port"])
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()


# --- one small app per framework behind fastkrb's middleware -----------------------------------------------------

async def _asgi_hello(request: Any) -> Any:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(request.user.display_name)


def _wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REMOTE_USER"].encode()]


async def _aiohttp_hello(request: Any) -> Any:
    from aiohttp import web

    from fastkrb.web import aiohttp as fk_aiohttp

    return web.Response(text=request[fk_aiohttp.USER].principal)


@dataclass(frozen=True)
class Apps:
    """The app each framework serves at ``/`` behind the middleware (default: the client's name)."""

    asgi: Any = _asgi_hello
    wsgi: Any = _wsgi_hello
    aiohttp: Any = _aiohttp_hello


@contextlib.contextmanager
def behind_middleware(kind: str, validator: Any, apps: Apps = Apps(), *, proxy_headers: bool = True,
                      **kw: Any) -> Iterator[int]:
    """``kind``'s server (uvicorn, wsgiref, aiohttp) with fastkrb's middleware (``**kw`` its options) in front of
    ``apps``, on a free port."""
    if kind == "asgi":
        from starlette.applications import Starlette
        from starlette.routing import Route

        from fastkrb.web import asgi as fk_asgi

        app = fk_asgi.NegotiateMiddleware(Starlette(routes=[Route("/", apps.asgi)]), validator, **kw)
        with uvicorn_server(app, proxy_headers=proxy_headers) as port:
            yield port
    elif kind == "wsgi":
        from fastkrb.web import wsgi as fk_wsgi

        with wsgiref_server(fk_wsgi.NegotiateMiddleware(apps.wsgi, validator, **kw)) as port:
            yield port
    else:
        from aiohttp import web

        from fastkrb.web import aiohttp as fk_aiohttp

        aio = web.Application(middlewares=[fk_aiohttp.negotiate_middleware(validator, **kw)])
        aio.router.add_get("/", apps.aiohttp)
        with aiohttp_server(aio) as port:
            yield port
