"""Negotiate (SPNEGO/Kerberos) for WSGI apps (Flask, Django, any WSGI app): sets ``REMOTE_USER`` as Apache's
mod_auth_gssapi does.

    app.wsgi_app = NegotiateMiddleware(app.wsgi_app, Validator("/etc/api.keytab"))   # Flask
    application = NegotiateMiddleware(get_wsgi_application(), validator)              # Django

On success: ``REMOTE_USER`` (the full principal, or ``remote_user="short"`` for the name alone when the client
is of the service's realm), ``AUTH_TYPE=Negotiate``, ``GSS_NAME`` (the principal), ``environ["fastkrb"]`` (the
AuthResult) and, when the client asked for mutual authentication, the AP-REP in ``WWW-Authenticate``.
Without a valid token: 401 with ``WWW-Authenticate: Negotiate`` (and ``X-Auth-Error: <code>`` for a bad
one, the cause and fix in the body: JSON when Accept asks for ``application/json``, else text; the refusal is
logged on ``fastkrb.http``, docs/integrations/logging.md). The result is cached in the environ: an app that
re-enters the middleware for the same request (an internal redirect or sub-request that passes the environ on)
does not validate the token twice.

``policy=`` (a :class:`fastkrb.Policy`, or ``{path prefix: Policy}``): a client it does not allow gets 403
with ``X-Auth-Error: forbidden`` and ``{"error": "forbidden", "policy", "constraint"}``. The PAC identity is
``environ["fastkrb.identity"]`` (user_sid, upn, group_sids, member_of(...); None for a ticket without PAC
logon information) and ``environ["fastkrb"].identity``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastkrb.errors import Forbidden, KerberosError
from fastkrb.krb.negotiate import negotiate_token
from fastkrb.web.negotiate import (
    SCOPE_KEY,
    KerberosUser,
    PathMatcher,
    PolicyLike,
    PolicyRouter,
    log_challenge,
    log_rejection,
    refusal,
    remote_user,
)

__all__ = ["NegotiateMiddleware", "KerberosUser"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
ChannelBindings = bytes | Callable[[Environ], bytes | None] | None


class NegotiateMiddleware:
    """WSGI middleware around one Validator (anything with ``validate(token, now, channel_bindings)``).

    ``required`` False (or a predicate on the environ) lets requests without a header through anonymously;
    ``exclude_paths``: exact paths, or prefixes ending in ``/`` or ``*``; ``expose_errors=False`` leaves the
    cause and fix out of the 401 and 403 bodies (the log still has them); ``policy`` a Policy for every path or
    ``{path prefix: Policy}`` (checked on re-entry too, for the path re-entered).
    """

    def __init__(self, app: WSGIApp, validator: Any, *, exclude_paths: Iterable[str] = (),
                 required: bool | Callable[[Environ], bool] = True, channel_bindings: ChannelBindings = None,
                 remote_user: str = "principal", expose_errors: bool = True,
                 policy: PolicyLike | Mapping[str, PolicyLike] | None = None) -> None:
        if remote_user not in ("principal", "short"):
            raise ValueError("remote_user must be 'principal' or 'short'")
        self.app = app
        self.validator = validator
        self._validate = validator.validate
        self._excluded = PathMatcher(exclude_paths)
        self._required = required
        self._cb = channel_bindings
        self._style = remote_user
        self._expose = expose_errors
        self._policy = PolicyRouter(policy)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        res = environ.get(SCOPE_KEY)
        path = environ.get("PATH_INFO", "")
        policy = self._policy(path) if self._policy else None
        if res is None:
            if self._excluded and self._excluded(path):
                return self.app(environ, start_response)
            token = negotiate_token(environ.get("HTTP_AUTHORIZATION"))
            if token is None:
                req = self._required
                if policy is not None or req is True or (req is not False and req(environ)):  # type: ignore[operator]
                    log_challenge("wsgi", peer=_peer(environ), method=environ.get("REQUEST_METHOD"), path=path)
                    return self._refuse(environ, start_response, None)
                return self.app(environ, start_response)
            cb = self._cb
            if cb is not None and not isinstance(cb, bytes):
                cb = cb(environ)
            try:
                res = self._validate(token, None, cb)
            except KerberosError as exc:
                _log_refused(exc, environ, path)
                return self._refuse(environ, start_response, exc, token)
            environ[SCOPE_KEY] = res
        if policy is not None:
            try:
                policy.check(res)
            except Forbidden as exc:
                _log_refused(exc, environ, path)
                return self._refuse(environ, start_response, exc)
        environ["REMOTE_USER"] = remote_user(res, self._style)
        environ["fastkrb.identity"] = res.identity
        environ["AUTH_TYPE"] = "Negotiate"
        environ["GSS_NAME"] = res.client
        environ["fastkrb.user"] = KerberosUser(res)
        answer = res.www_authenticate
        if answer is None:
            return self.app(environ, start_response)

        def start_with_ap_rep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(k.lower() == "www-authenticate" for k, _ in headers):
                headers = [*headers, ("WWW-Authenticate", answer)]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.app(environ, start_with_ap_rep)

    def _refuse(self, environ: Environ, start_response: StartResponse, exc: KerberosError | None,
                token: str | None = None) -> Iterable[bytes]:
        answer = refusal(exc, self._expose, environ.get("HTTP_ACCEPT"), token)
        start_response(f"{answer.status} {answer.reason}",
                       [*answer.headers, ("Content-Length", str(len(answer.body)))])
        return [answer.body]


def _peer(environ: Environ) -> str | None:
    addr, port = environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")
    return f"{addr}:{port}" if addr and port else addr


def _log_refused(exc: KerberosError, environ: Environ, path: str) -> None:
    log_rejection(exc, "wsgi", peer=_peer(environ), method=environ.get("REQUEST_METHOD"), path=path)
