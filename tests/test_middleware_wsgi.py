"""fastkrb.web.wsgi behind wsgiref, with the Flask and Django examples, real curl --negotiate / requests-gssapi
clients and real MIT tickets: REMOTE_USER, the AP-REP, the 401 challenge, typed refusals, excluded paths and
one validation when the app re-enters the middleware (an internal redirect passing the environ on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from fastkrb.web.wsgi import NegotiateMiddleware
from support.http_clients import (
    challenged,
    curl,
    load_example,
    mutually_authenticated,
    raw_get,
    replayed,
    requests_get,
    service_validator,
    wsgiref_server,
)


def plain_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = json.dumps({"user": environ.get("REMOTE_USER"), "auth": environ.get("AUTH_TYPE"),
                       "gss": environ.get("GSS_NAME"), "path": environ.get("PATH_INFO")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def redirecting(validator: Any, **kw: Any) -> Any:
    """/internal re-enters the whole wrapped app at / with the same environ (an internal redirect)."""
    holder: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/internal":
            return holder["app"]({**environ, "PATH_INFO": "/"}, start_response)  # type: ignore[no-any-return]
        return plain_app(environ, start_response)

    holder["app"] = NegotiateMiddleware(app, validator, exclude_paths=["/public/"], **kw)
    return holder["app"]


@pytest.fixture
def served(mit_lab: Any) -> Any:
    v = service_validator(mit_lab)
    with wsgiref_server(redirecting(v)) as port:
        yield port, v


def test_remote_user_from_curl(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = curl(mit_lab, port, "/")
    assert r.status == 200
    assert json.loads(r.body) == {"user": mit_lab.realm.user, "auth": "Negotiate", "gss": mit_lab.realm.user,
                                  "path": "/"}
    assert v.calls == 1


def test_mutual_authentication(mit_lab: Any, served: Any) -> None:
    port, _ = served
    mutually_authenticated(mit_lab, port)


def test_challenge_refusal_and_exclusion(mit_lab: Any, served: Any) -> None:
    port, v = served
    assert "x-auth-error" not in challenged(port).headers
    replay = replayed(mit_lab, port)
    assert replay.body.splitlines()[0] == "Kerberos authentication failed: replay"
    public = raw_get(port, "/public/x")
    assert public.status == 200 and json.loads(public.body)["user"] is None
    assert v.calls == 2


def test_internal_redirect_validates_once(mit_lab: Any, served: Any) -> None:
    port, v = served
    r = curl(mit_lab, port, "/internal")
    assert r.status == 200 and json.loads(r.body)["path"] == "/" and json.loads(r.body)["user"] == mit_lab.realm.user
    assert v.calls == 1


def test_short_remote_user_and_hidden_errors(mit_lab: Any) -> None:
    v = service_validator(mit_lab)
    with wsgiref_server(NegotiateMiddleware(plain_app, v, remote_user="short", expose_errors=False)) as port:
        assert json.loads(curl(mit_lab, port, "/").body)["user"] == "alice"
        bad = raw_get(port, "/", "Negotiate AAAAAAAA", accept="application/json")
        assert json.loads(bad.body) == {"error": "malformed"}


def test_flask_example(mit_lab: Any) -> None:
    v = service_validator(mit_lab)
    app = load_example("flask").create_app(v)
    with wsgiref_server(app) as port:
        r = requests_get(mit_lab, port, "/", mutual=True)
        assert r.status == 200 and json.loads(r.body) == {"user": mit_lab.realm.user, "enctype": 18, "kvno": 1}
        assert raw_get(port, "/health").body == "ok"
        assert raw_get(port, "/").status == 401


def test_django_example(mit_lab: Any) -> None:
    v = service_validator(mit_lab)
    app = load_example("django").create_application(v)
    with wsgiref_server(app) as port:
        r = curl(mit_lab, port, "/")
        assert r.status == 200, r
        assert json.loads(r.body) == {"user": mit_lab.realm.user, "auth_type": "Negotiate", "enctype": 18}
        assert raw_get(port, "/health").body == "ok"
        denied = raw_get(port, "/", "Negotiate AAAAAAAA")
        assert denied.status == 401 and denied.headers["x-auth-error"] == "malformed"
