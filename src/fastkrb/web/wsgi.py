"""Negotiate (SPNEGO/Kerberos) for WSGI apps (Flask, Django, any WSGI app): sets ``REMOTE_USER`` as Apache's
mod_auth_gssapi does.

    app.wsgi_app = NegotiateMiddleware(app.wsgi_app, Validator("/etc/api.keytab"))   # Flask
    application = NegotiateMiddleware(get_wsgi_application(), validator)              # Django

On success: ``REMOTE_USER`` (the full principal, or ``remote_user="short"`` for the name alone when the client
is of the service's realm), ``AUTH_TYPE=Negotiate``, ``GSS_NAME`` (the principal), ``environ["fastkrb"]`` (the
AuthResult) and, when the client asked for mutual authentication, the AP-REP in ``WWW-Authenticate``.
Without a valid token: 401 with ``WWW-Authenticate: Negotiate`` (and ``X-Auth-Error: <code>`` for a bad
one). The result is cached in the environ: an app that re-enters the middleware for the same request
(an internal redirect or sub-request that passes the environ on) does not validate the token twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastkrb.errors import KerberosError
from fastkrb.krb.negotiate import negotiate_token
from fastkrb.web.negotiate import (
    SCOPE_KEY,
    KerberosUser,
    PathMatcher,
    challenge_body,
    log_rejection,
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
    ``exclude_paths``: exact paths, or prefixes ending in ``/`` or ``*``; ``expose_errors`` adds the cause and
    fix to the 401 body.
    """

    def __init__(self, app: WSGIApp, validator: Any, *, exclude_paths: Iterable[str] = (),
                 required: bool | Callable[[Environ], bool] = True, channel_bindings: ChannelBindings = None,
                 remote_user: str = "principal", expose_errors: bool = False) -> None:
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        res = environ.get(SCOPE_KEY)
        if res is None:
            if self._excluded and self._excluded(environ.get("PATH_INFO", "")):
                return self.app(environ, start_response)
            token = negotiate_token(environ.get("HTTP_AUTHORIZATION"))
            if token is None:
                req = self._required
                if req is True or (req is not False and req(environ)):  # type: ignore[operator]
                    return self._refuse(start_response, None)
                return self.app(environ, start_response)
            cb = self._cb
            if cb is not None and not isinstance(cb, bytes):
                cb = cb(environ)
            try:
                res = self._validate(token, None, cb)
            except KerberosError as exc:
                log_rejection(exc, "wsgi")
                return self._refuse(start_response, exc)
            environ[SCOPE_KEY] = res
        environ["REMOTE_USER"] = remote_user(res, self._style)
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

    def _refuse(self, start_response: StartResponse, exc: KerberosError | None) -> Iterable[bytes]:
        body = challenge_body(exc, self._expose)
        headers = [("WWW-Authenticate", "Negotiate"), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body)))]
        if exc is not None:
            headers.append(("X-Auth-Error", exc.code))
        start_response("401 Unauthorized", headers)
        return [body]
