"""fastkrb.web.aiohttp on aiohttp's own server, with the example app, real clients (curl --negotiate,
requests-gssapi verifying the AP-REP) and real MIT tickets; a sub-application behind the same middleware
validates once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from fastkrb.web.aiohttp import USER, negotiate_middleware
from support.http_clients import (
    aiohttp_server,
    challenged,
    curl,
    load_example,
    mutually_authenticated,
    raw_get,
    replayed,
    service_validator,
)


@pytest.fixture
def served(mit_lab: Any) -> Any:
    v = service_validator(mit_lab)
    app = load_example("aiohttp").create_app(v)

    async def sub_whoami(request: Any) -> Any:
        return web.json_response({"principal": request[USER].principal})

    sub = web.Application(middlewares=[negotiate_middleware(v)])
    sub.router.add_get("/x", sub_whoami)
    app.add_subapp("/sub", sub)
    with aiohttp_server(app) as port:
        yield port, v


def test_curl_and_identity(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = curl(mit_lab, port, "/")
    assert r.status == 200 and json.loads(r.body) == {"principal": mit_lab.realm.user, "kvno": 1}
    assert v.calls == 1


def test_ap_rep_verified_by_client(mit_lab: Any, served: Any) -> None:
    port, _ = served
    mutually_authenticated(mit_lab, port)


def test_refusals_and_excluded_path(mit_lab: Any, served: Any) -> None:
    port, _ = served
    challenged(port)
    replayed(mit_lab, port)
    assert raw_get(port, "/health").body == "ok"


def test_subapp_validates_once(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = curl(mit_lab, port, "/sub/x")
    assert r.status == 200, r
    assert json.loads(r.body) == {"principal": mit_lab.realm.user}
    assert v.calls == 1


def test_sync_only_validator_and_optional_auth(mit_lab: Any) -> None:
    """An object with only validate() works too; required=False serves anonymous requests."""
    inner = service_validator(mit_lab)

    class SyncOnly:
        calls = 0

        def validate(self, token: Any, now: Any = None, cb: Any = None) -> Any:
            SyncOnly.calls += 1
            return inner.inner.validate(token, now, cb)

    async def me(request: Any) -> Any:
        user = request.get(USER)
        return web.Response(text=user.principal if user else "anonymous")

    app = web.Application(middlewares=[negotiate_middleware(SyncOnly(), required=False)])
    app.router.add_get("/", me)
    with aiohttp_server(app) as port:
        assert raw_get(port, "/").body == "anonymous"
        assert curl(mit_lab, port, "/").body == mit_lab.realm.user
        assert raw_get(port, "/", "Negotiate AAAA").status == 401
    assert SyncOnly.calls == 2
