"""Policies in the web middleware (ASGI, FastAPI's require(), Starlette's backend, WSGI, aiohttp) on real servers:
real MIT tickets from curl --negotiate (no PAC groups: allowed_users decides, a group rule refuses), and minted
AD-like tickets with a PAC (group rules, the identity on the request); 403 + X-Auth-Error: forbidden + the JSON
reason, never 401; a request re-entering at a guarded path is checked there on its cached result.

The AD-like tickets' identity is the native ``fastkrb._native.Identity`` (or, over the sidecar, the
``RemoteIdentity`` a plain ``python -m fastkrb serve`` sends).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastkrb import Keytab, Policy, Validator
from fastkrb.client import AsyncClient
from fastkrb.testing import make_keytab, mint
from fastkrb.web.asgi import KerberosUser, NegotiateBackend, NegotiateMiddleware, require
from fastkrb.web.negotiate import PolicyRouter
from support.http_clients import aiohttp_server, curl, raw_get, uvicorn_server, wsgiref_server
from support.sidecar import Sidecar

AD_SERVICE = "HTTP/api.corp.example@CORP.EXAMPLE"
DOM = "S-1-5-21-1004336348-1177238915-682003330"
READERS, WRITERS = f"{DOM}-1200", f"{DOM}-1201"


@pytest.fixture(scope="module")
def ad_keytab() -> Keytab:
    return make_keytab((AD_SERVICE,), rng=random.Random(31))


@pytest.fixture
def validator(mit_lab: Any, ad_keytab: Keytab) -> Validator:
    """One Validator for both: the MIT lab's svc18 keys and the minted AD-like service's."""
    both = Keytab([*Keytab.load(str(mit_lab.keytabs["svc18"])).entries, *ad_keytab.entries])
    return Validator(both, cold_start=False)


def ad(keytab: Keytab, groups: tuple[int, ...] = (513, 1200), client: str = "carol@CORP.EXAMPLE") -> str:
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1107, "group_rids": groups, "logon_domain_name": "CORP"}}
    return mint(keytab, client=client, server=AD_SERVICE, pac=pac, now=time.time()).header


def policies(user: str) -> dict[str, Policy]:
    return {"/mine": Policy(allowed_users=[user, "carol@CORP.EXAMPLE"], name="mine"),
            "/admin": Policy(allowed_users=["bob"], name="admin"),
            "/reports": Policy(allowed_groups=[READERS], name="readers")}


def assert_forbidden(r: Any, policy: str, constraint: str) -> None:
    assert r.status == 403, r
    assert r.headers["x-auth-error"] == "forbidden"
    # never a challenge (a browser would authenticate again, to the same answer); a mutual-authentication
    # answer may come along when the refusal happened behind a middleware that accepted the token
    assert r.headers.get("www-authenticate", "Negotiate x").startswith("Negotiate ")
    if not r.headers["content-type"].startswith("application/json"):   # the text answer (Accept: */*)
        first = r.body.splitlines()[0]
        assert first == f"Forbidden: the policy {policy!r} does not allow this client (rule: {constraint})", r
        return
    body = json.loads(r.body)
    if "detail" in body:        # FastAPI's HTTPException
        body = body["detail"]
    assert body["error"] == "forbidden" and body["policy"] == policy and body["constraint"] == constraint


# -- ASGI -------------------------------------------------------------------------------------------------------

async def echo(request: Request) -> JSONResponse:
    res = request.scope["fastkrb"]
    ident = res.identity
    return JSONResponse({"user": request.user.display_name, "path": request.url.path,
                         "sid": request.user.sid, "groups": list(request.user.group_sids),
                         "scope_sid": ident.user_sid if ident is not None else None})


class _Redirect:
    """Re-enters the wrapped app at /admin with the same scope (an internal redirect)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app({**scope, "path": "/admin", "raw_path": b"/admin"}, receive, send)


def asgi_app(validator: Any, user: str, **kw: Any) -> Any:
    redirect = _Redirect()
    routes = [Route(p, echo) for p in ("/", "/mine", "/admin", "/reports")] + [Route("/go-admin", redirect)]
    app = NegotiateMiddleware(Starlette(routes=routes), validator, policy=policies(user), **kw)
    redirect.app = app
    return app


def test_asgi_policies_with_mit_tickets(mit_lab: Any, validator: Validator) -> None:
    with uvicorn_server(asgi_app(validator, mit_lab.realm.user)) as port:
        r = curl(mit_lab, port, "/mine")
        assert r.status == 200 and json.loads(r.body)["user"] == mit_lab.realm.user
        assert json.loads(r.body)["sid"] is None                 # an MIT ticket: no PAC identity
        assert_forbidden(curl(mit_lab, port, "/admin"), "admin", "users")
        assert_forbidden(curl(mit_lab, port, "/reports"), "readers", "groups")
        assert curl(mit_lab, port, "/").status == 200             # no policy on /
        # re-entering at /admin with the result of / is checked at /admin
        assert_forbidden(curl(mit_lab, port, "/go-admin"), "admin", "users")


def test_asgi_group_policy_and_identity_with_ad_tickets(validator: Validator, ad_keytab: Keytab) -> None:
    with uvicorn_server(asgi_app(validator, "nobody")) as port:
        r = raw_get(port, "/reports", ad(ad_keytab))
        assert r.status == 200, r
        doc = json.loads(r.body)
        assert doc["sid"] == doc["scope_sid"] == f"{DOM}-1107" and READERS in doc["groups"]
        r = raw_get(port, "/reports", ad(ad_keytab, groups=(513, 1201)), accept="application/json")
        assert_forbidden(r, "readers", "groups")
        body = json.loads(r.body)
        assert "new logon" in body["fix"] and "carol@CORP.EXAMPLE is refused" in body["cause"]
        assert raw_get(port, "/reports").status == 401           # no token on a guarded path: the challenge


def test_asgi_policy_path_needs_a_token_even_when_optional(validator: Validator) -> None:
    async def anyone(request: Request) -> JSONResponse:
        return JSONResponse({"authenticated": "fastkrb" in request.scope})

    app = NegotiateMiddleware(Starlette(routes=[Route("/", anyone), Route("/reports", anyone)]), validator,
                              required=False, policy={"/reports": Policy(allowed_groups=[READERS])})
    with uvicorn_server(app) as port:
        r = raw_get(port, "/reports")
        assert r.status == 401 and r.headers["www-authenticate"] == "Negotiate"
        assert json.loads(raw_get(port, "/").body) == {"authenticated": False}


def test_fastapi_require_dependency(mit_lab: Any, validator: Validator, ad_keytab: Keytab) -> None:
    readers = Policy(allowed_groups=[READERS], name="readers")
    mine = Policy(allowed_users=[mit_lab.realm.user], name="mine")
    api = FastAPI()

    # (a default value, not Annotated[...]: this module's annotations are strings, and these policies are local)
    @api.get("/reports")
    async def reports(user: KerberosUser = Depends(require(readers))) -> dict[str, Any]:  # noqa: B008
        return {"user": user.principal, "sid": user.sid}

    @api.get("/mine")
    async def mine_route(user: KerberosUser = Depends(require(mine))) -> dict[str, Any]:  # noqa: B008
        return {"user": user.principal}

    bare = FastAPI()   # no middleware in front: nothing authenticated the request

    @bare.get("/reports")
    async def unguarded(user: KerberosUser = Depends(require(readers))) -> dict[str, Any]:  # noqa: B008
        return {"user": user.principal}

    api.add_middleware(NegotiateMiddleware, validator=validator)
    with uvicorn_server(api) as port:
        assert json.loads(curl(mit_lab, port, "/mine").body) == {"user": mit_lab.realm.user}
        assert_forbidden(curl(mit_lab, port, "/reports"), "readers", "groups")
        r = raw_get(port, "/reports", ad(ad_keytab))
        assert r.status == 200 and json.loads(r.body) == {"user": "carol@CORP.EXAMPLE", "sid": f"{DOM}-1107"}
    with uvicorn_server(bare) as port:
        r = raw_get(port, "/reports")
        assert r.status == 401 and r.headers["www-authenticate"] == "Negotiate"


def test_starlette_backend_policy(mit_lab: Any, validator: Validator) -> None:
    backend = NegotiateBackend(validator, policy={"/admin": Policy(allowed_users=["bob"], name="admin")})

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name})

    app = Starlette(routes=[Route("/", ok), Route("/admin", ok)],
                    middleware=[Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)])
    with uvicorn_server(app) as port:
        assert curl(mit_lab, port, "/").status == 200
        assert_forbidden(curl(mit_lab, port, "/admin"), "admin", "users")


# -- WSGI ------------------------------------------------------------------------------------------------------

def wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ident = environ.get("fastkrb.identity")
    body = json.dumps({"user": environ.get("REMOTE_USER"), "sid": ident.user_sid if ident else None,
                       "groups": list(ident.group_sids) if ident else []}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def test_wsgi_policies(mit_lab: Any, validator: Validator, ad_keytab: Keytab) -> None:
    from fastkrb.web.wsgi import NegotiateMiddleware as WsgiNegotiate

    with wsgiref_server(WsgiNegotiate(wsgi_echo, validator, policy=policies(mit_lab.realm.user))) as port:
        r = curl(mit_lab, port, "/mine")
        assert r.status == 200 and json.loads(r.body) == {"user": mit_lab.realm.user, "sid": None, "groups": []}
        assert_forbidden(curl(mit_lab, port, "/admin"), "admin", "users")
        assert_forbidden(curl(mit_lab, port, "/reports/q"), "readers", "groups")
        r = raw_get(port, "/reports/q", ad(ad_keytab))
        assert r.status == 200 and json.loads(r.body)["sid"] == f"{DOM}-1107"
        assert_forbidden(raw_get(port, "/reports", ad(ad_keytab, groups=(513,))), "readers", "groups")


# -- aiohttp ---------------------------------------------------------------------------------------------------

def test_aiohttp_policies(mit_lab: Any, validator: Validator, ad_keytab: Keytab) -> None:
    from aiohttp import web

    from fastkrb.web.aiohttp import IDENTITY, USER, negotiate_middleware

    async def handler(request: web.Request) -> web.Response:
        ident = request[IDENTITY]
        return web.json_response({"user": request[USER].principal, "sid": ident.user_sid if ident else None})

    app = web.Application(middlewares=[negotiate_middleware(validator, policy=policies(mit_lab.realm.user))])
    for p in ("/mine", "/admin", "/reports"):
        app.router.add_get(p, handler)
    with aiohttp_server(app) as port:
        assert json.loads(curl(mit_lab, port, "/mine").body) == {"user": mit_lab.realm.user, "sid": None}
        assert_forbidden(curl(mit_lab, port, "/admin"), "admin", "users")
        assert_forbidden(curl(mit_lab, port, "/reports"), "readers", "groups")
        r = raw_get(port, "/reports", ad(ad_keytab))
        assert r.status == 200 and json.loads(r.body)["sid"] == f"{DOM}-1107"


# -- the sidecar as the validator ------------------------------------------------------------------------------

def test_asgi_policy_over_the_sidecar_client(tmp_path: Path, ad_keytab: Keytab) -> None:
    """AsyncClient as the middleware's validator: the policy runs here, on the identity the sidecar sent."""
    kt = tmp_path / "ad.keytab"
    kt.write_bytes(ad_keytab.to_bytes())
    with Sidecar(tmp_path, kt, args=("--replay-cache", "memory")) as sc:
        app = NegotiateMiddleware(Starlette(routes=[Route("/reports", echo)]), AsyncClient(sc.socket),
                                  policy=Policy(allowed_groups=[READERS], name="readers"))
        with uvicorn_server(app) as port:
            r = raw_get(port, "/reports", ad(ad_keytab))
            assert r.status == 200 and json.loads(r.body)["sid"] == f"{DOM}-1107"
            assert_forbidden(raw_get(port, "/reports", ad(ad_keytab, groups=(513, 1201))), "readers", "groups")


def test_policy_router() -> None:
    a, b, c = Policy(name="a"), Policy(name="b"), Policy(name="c")
    r = PolicyRouter({"/admin": a, "/admin/keys/": b, "/": c})
    assert [r(p) for p in ("/admin", "/admin/x", "/admin/keys/1", "/administrator", "/x", "/")] == [a, a, b, c, c, c]
    only = PolicyRouter({"/api": a})
    assert only("/api/v1") is a and only("/apix") is None and only("/") is None
    assert PolicyRouter(a)("/anything") is a and not PolicyRouter(None)
    with pytest.raises(TypeError):
        PolicyRouter({"api": a})
    with pytest.raises(TypeError):
        PolicyRouter("readers")  # type: ignore[arg-type]
