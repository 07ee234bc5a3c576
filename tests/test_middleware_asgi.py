"""fastkrb.web.asgi behind uvicorn, with real Negotiate clients (curl, requests-gssapi, httpx-gssapi) and real MIT
tickets: the challenge, the identity, the AP-REP, excluded paths, typed refusals, and one validation per
request when the app re-enters the middleware (a mounted sub-app, an internal redirect).
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fastkrb.web.asgi import NegotiateBackend, NegotiateMiddleware
from support.http_clients import (
    challenged,
    curl,
    httpx_get,
    load_example,
    mutually_authenticated,
    raw_get,
    replayed,
    requests_get,
    service_validator,
    uvicorn_server,
)


async def whoami(request: Request) -> PlainTextResponse:
    res = request.scope.get("fastkrb")
    return PlainTextResponse(f"{request.user.display_name} {res.kvno if res else '-'}")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("up")


class _InternalRedirect:
    """An ASGI endpoint that serves /internal by re-entering the whole (authenticated) app at /, as an
    internal redirect or a sub-request does: the scope, and so the cached result, travel along."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app({**scope, "path": "/", "raw_path": b"/", "root_path": ""}, receive, send)


def build(validator: Any) -> Any:
    redirect = _InternalRedirect()
    sub = NegotiateMiddleware(Starlette(routes=[Route("/x", whoami)]), validator)
    inner = Starlette(routes=[Route("/", whoami), Route("/health", health), Route("/internal", redirect),
                              Mount("/sub", app=sub)])
    wrapped = NegotiateMiddleware(inner, validator, exclude_paths=["/health"])
    redirect.app = wrapped
    return wrapped


@pytest.fixture
def served(mit_lab: Any) -> Any:
    v = service_validator(mit_lab)
    with uvicorn_server(build(v)) as port:
        yield port, v


def test_curl_negotiate(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = curl(mit_lab, port, "/")
    assert r.status == 200 and r.body == f"{mit_lab.realm.user} 1"
    assert v.calls == 1


def test_challenge_without_header(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = challenged(port)
    assert "x-auth-error" not in r.headers and v.calls == 0


def test_excluded_path(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = raw_get(port, "/health")
    assert r.status == 200 and r.body == "up" and v.calls == 0


@pytest.mark.parametrize("client", [requests_get, httpx_get])
def test_mutual_authentication_verified_by_the_client(mit_lab: Any, served: Any, client: Any) -> None:
    """The gssapi clients require mutual auth: they verify our AP-REP with MIT's initiator or fail."""
    port, v = served
    r = mutually_authenticated(mit_lab, port, client=client)
    assert r.body.startswith(mit_lab.realm.user)
    assert v.calls == 1


def test_replayed_token_is_refused_with_its_code(mit_lab: Any, served: Any) -> None:
    port, _ = served
    again = replayed(mit_lab, port)
    assert again.headers["www-authenticate"] == "Negotiate"
    assert again.body.startswith("Kerberos authentication failed: replay\nCause: ")  # the cause is in the body


def test_garbage_token(mit_lab: Any, served: Any) -> None:
    port, _ = served
    r = raw_get(port, "/", "Negotiate AAAAAAAA")
    assert r.status == 401 and r.headers["x-auth-error"] == "malformed"


@pytest.mark.parametrize("path", ["/sub/x", "/internal"])
def test_reentry_validates_once(mit_lab: Any, served: Any, path: str) -> None:
    """A mounted sub-app behind the same middleware, or an internal redirect into the app: one validation,
    no false replay."""
    port, v = served
    r = curl(mit_lab, port, path)
    assert r.status == 200, r
    assert r.body == f"{mit_lab.realm.user} 1"
    assert v.calls == 1


def test_starlette_authentication_backend(mit_lab: Any) -> None:
    v = service_validator(mit_lab)
    backend = NegotiateBackend(v)

    @requires("authenticated", status_code=401)
    async def private(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.user.display_name} {' '.join(request.auth.scopes)}")

    app = Starlette(routes=[Route("/", private)],
                    middleware=[Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)])
    with uvicorn_server(app) as port:
        ok = curl(mit_lab, port, "/")
        assert ok.status == 200 and ok.body == f"{mit_lab.realm.user} authenticated kerberos"
        anon = raw_get(port, "/")
        assert anon.status == 401
        bad = raw_get(port, "/", "Negotiate AAAAAAAA")
        assert bad.status == 401 and bad.headers["x-auth-error"] == "malformed"
        assert bad.headers["www-authenticate"] == "Negotiate"
    assert v.calls == 2


def test_backend_after_middleware_reuses_the_result(mit_lab: Any) -> None:
    """NegotiateMiddleware(required=False) in front sends the AP-REP; the backend reuses its validation."""
    v = service_validator(mit_lab)
    backend = NegotiateBackend(v)

    async def me(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.user.display_name if request.user.is_authenticated else "anonymous")

    app = Starlette(routes=[Route("/", me)],
                    middleware=[Middleware(NegotiateMiddleware, validator=v, required=False),
                                Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)])
    with uvicorn_server(app) as port:
        r = requests_get(mit_lab, port, "/", mutual=True)
        assert r.status == 200 and r.body == mit_lab.realm.user
        assert raw_get(port, "/").body == "anonymous"
    assert v.calls == 1


def test_fastapi_example(mit_lab: Any) -> None:
    import json

    v = service_validator(mit_lab)
    with uvicorn_server(load_example("fastapi").create_app(v)) as port:
        r = httpx_get(mit_lab, port, "/me", mutual=True)
        assert r.status == 200, r
        assert json.loads(r.body) == {"principal": mit_lab.realm.user, "name": "alice", "realm": "FASTKRB.TEST",
                                      "enctype": 18}
        assert raw_get(port, "/me").status == 401
        assert raw_get(port, "/health").status == 200
    assert v.calls == 1
