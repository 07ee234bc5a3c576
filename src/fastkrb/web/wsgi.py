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
from typing import TYPE_CHECKING, Any

from fastkrb.challenge import ChallengeRule, Fallback, Offer
from fastkrb.errors import Forbidden, KerberosError
from fastkrb.krb.negotiate import negotiate_token
from fastkrb.web.negotiate import (
    SCOPE_KEY,
    VIA_KEY,
    Gate,
    KerberosUser,
    PathMatcher,
    PolicyLike,
    PolicyRouter,
    Refusal,
    Via,
    fallback_refusal,
    log_challenge,
    log_rejection,
    refusal,
    remote_user,
)

if TYPE_CHECKING:
    from fastkrb.sessions.bearer import TokenVerifier
    from fastkrb.sessions.cookie import SessionCookies

__all__ = ["NegotiateMiddleware", "KerberosUser"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
ChannelBindings = bytes | Callable[[Environ], bytes | None] | None
Headers = tuple[tuple[str, str], ...]


class NegotiateMiddleware:
    """WSGI middleware around one Validator (anything with ``validate(token, now, channel_bindings)``).

    ``required`` False (or a predicate on the environ) lets requests without a header through anonymously;
    ``exclude_paths``: exact paths, or prefixes ending in ``/`` or ``*``; ``expose_errors=False`` leaves the
    cause and fix out of the 401 and 403 bodies (the log still has them); ``policy`` a Policy for every path or
    ``{path prefix: Policy}`` (checked on re-entry too, for the path re-entered).

    Off by default (docs/sessions.md): ``sessions`` (a ``SessionCookies``), ``bearer`` (a ``TokenVerifier``),
    ``challenge`` (a ``ChallengeRule``). ``environ["fastkrb.via"]`` says how the request was authenticated
    (``negotiate``, ``session``, ``bearer``); ``AUTH_TYPE`` is ``Negotiate`` for the first two (a session
    continues a Negotiate, as mod_auth_gssapi's do), ``Bearer`` for the third.
    """

    def __init__(self, app: WSGIApp, validator: Any, *, exclude_paths: Iterable[str] = (),
                 required: bool | Callable[[Environ], bool] = True, channel_bindings: ChannelBindings = None,
                 remote_user: str = "principal", expose_errors: bool = True,
                 policy: PolicyLike | Mapping[str, PolicyLike] | None = None,
                 sessions: SessionCookies | None = None, bearer: TokenVerifier | None = None,
                 challenge: ChallengeRule | None = None) -> None:
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
        self._gate = Gate(sessions, bearer, challenge)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        res = environ.get(SCOPE_KEY)
        path = environ.get("PATH_INFO", "")
        policy = self._policy(path) if self._policy else None
        extra: Headers = ()
        via: Via = environ.get(VIA_KEY, "negotiate")
        if res is None:
            if self._excluded and self._excluded(path):
                return self.app(environ, start_response)
            authorization = environ.get("HTTP_AUTHORIZATION")
            gate = self._gate
            cookie = environ.get("HTTP_COOKIE")
            if gate:
                before = gate.before(cookie, authorization, "wsgi", peer=_peer(environ),
                                     method=environ.get("REQUEST_METHOD"), path=path)
                extra = tuple(("Set-Cookie", c) for c in before.set_cookies)
                if before.error is not None:
                    return self._refuse(environ, start_response, before.error, extra=extra)
                if before.result is not None:
                    res, via = before.result, before.via or "session"
            if res is None:
                token = negotiate_token(authorization)
                if token is None:
                    req = self._required
                    if policy is not None or req is True or (req is not False and req(environ)):  # type: ignore[operator]
                        decision = gate.no_token(environ.get("REMOTE_ADDR") or None,
                                                 lambda name: _environ_header(environ, name)) if gate else None
                        fallback = decision if isinstance(decision, Fallback) else None
                        log_challenge("wsgi", peer=_peer(environ), method=environ.get("REQUEST_METHOD"), path=path,
                                      fallback=fallback)
                        if fallback is not None:
                            return self._answer(start_response, fallback_refusal(fallback, None, extra))
                        if isinstance(decision, Offer) and decision.set_cookie:
                            extra += (("Set-Cookie", decision.set_cookie),)
                        return self._refuse(environ, start_response, None, extra=extra)
                    return self._run(environ, start_response, extra)
                cb = self._cb
                if cb is not None and not isinstance(cb, bytes):
                    cb = cb(environ)
                try:
                    res = self._validate(token, None, cb)
                except KerberosError as exc:
                    _log_refused(exc, environ, path)
                    ntlm = gate.ntlm(exc) if gate else None
                    if ntlm is not None:
                        return self._answer(start_response, fallback_refusal(ntlm, exc.code, extra))
                    return self._refuse(environ, start_response, exc, token, extra)
                via = "negotiate"
                if policy is not None:   # before the session is sealed: a cookie only for a client let in
                    try:
                        policy.check(res)
                    except Forbidden as exc:
                        environ[SCOPE_KEY] = res
                        environ[VIA_KEY] = via
                        _log_refused(exc, environ, path)
                        return self._refuse(environ, start_response, exc, extra=extra)
                    policy = None
                if gate:
                    extra = tuple(("Set-Cookie", c) for c in gate.after_negotiate(res, cookie,
                                                                                  tuple(v for _, v in extra)))
            environ[SCOPE_KEY] = res
            environ[VIA_KEY] = via
        if policy is not None:
            try:
                policy.check(res)
            except Forbidden as exc:
                _log_refused(exc, environ, path)
                return self._refuse(environ, start_response, exc, extra=extra)
        environ["REMOTE_USER"] = remote_user(res, self._style)
        environ["fastkrb.identity"] = res.identity
        environ["AUTH_TYPE"] = "Bearer" if via == "bearer" else "Negotiate"
        environ["GSS_NAME"] = res.client
        environ["fastkrb.user"] = KerberosUser(res, via)
        answer = getattr(res, "www_authenticate", None)
        if answer is not None:
            extra = (("WWW-Authenticate", answer), *extra)
        return self._run(environ, start_response, extra)

    def _run(self, environ: Environ, start_response: StartResponse, extra: Headers) -> Iterable[bytes]:
        """The app, with ``extra`` headers added to its response (WWW-Authenticate unless it set one)."""
        if not extra:
            return self.app(environ, start_response)

        def start_with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            has_auth = any(k.lower() == "www-authenticate" for k, _ in headers)
            headers = [*headers, *((k, v) for k, v in extra if not (has_auth and k == "WWW-Authenticate"))]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.app(environ, start_with_headers)

    def _refuse(self, environ: Environ, start_response: StartResponse, exc: KerberosError | None,
                token: str | None = None, extra: Headers = ()) -> Iterable[bytes]:
        return self._answer(start_response, refusal(exc, self._expose, environ.get("HTTP_ACCEPT"), token, extra))

    @staticmethod
    def _answer(start_response: StartResponse, answer: Refusal) -> Iterable[bytes]:
        start_response(f"{answer.status} {answer.reason}",
                       [*answer.headers, ("Content-Length", str(len(answer.body)))])
        return [answer.body]


def _environ_header(environ: Environ, name: str) -> str | None:
    """A request header by lowercase name (WSGI servers join repeated fields)."""
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


def _peer(environ: Environ) -> str | None:
    addr, port = environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")
    return f"{addr}:{port}" if addr and port else addr


def _log_refused(exc: KerberosError, environ: Environ, path: str) -> None:
    log_rejection(exc, "wsgi", peer=_peer(environ), method=environ.get("REQUEST_METHOD"), path=path)
