"""Negotiate (SPNEGO/Kerberos) for ASGI apps: raw middleware (FastAPI, Starlette, any ASGI app) and a Starlette
``AuthenticationBackend``.

One ``Validator`` (or anything with ``async avalidate(token, now=None, channel_bindings=None)``, such as the
sidecar's ``AsyncClient``) serves every request. fastkrb's validate() is a few microseconds of native code,
so it runs on the event loop; a network replay cache (Redis) or the sidecar is awaited, never blocked on.
The result is cached in ``scope["fastkrb"]``: a mounted sub-application behind the same middleware, or
the backend after the middleware, reuses it instead of validating the token again (which the replay
cache would reject).

    app = NegotiateMiddleware(app, Validator("/etc/api.keytab"), exclude_paths=["/health"])
    # FastAPI: app.add_middleware(NegotiateMiddleware, validator=v)

Authorization: ``policy=`` takes a :class:`fastkrb.Policy` for the whole app or ``{path prefix: Policy}``; a
client it does not allow gets 403 (``X-Auth-Error: forbidden``, ``{"error": "forbidden", "policy",
"constraint"}``). In FastAPI a route can instead depend on :func:`require`::

    @app.get("/reports")
    async def reports(user: Annotated[KerberosUser, Depends(require(readers))]): ...

The PAC identity: ``scope["fastkrb"].identity`` (the AuthResult's) and ``request.user.pac_identity``,
``.sid``, ``.group_sids`` (``request.user.identity`` stays Starlette's: the principal string).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from fastkrb.challenge import ChallengeRule, Fallback, Offer
from fastkrb.errors import Forbidden, KerberosError
from fastkrb.krb.negotiate import negotiate_token
from fastkrb.web.negotiate import (
    SCOPE_KEY,
    VIA_KEY,
    Gate,
    KerberosCredentials,
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
)

if TYPE_CHECKING:
    from fastkrb.sessions.bearer import TokenVerifier
    from fastkrb.sessions.cookie import SessionCookies

__all__ = ["NegotiateMiddleware", "NegotiateBackend", "KerberosUser", "KerberosCredentials", "VIA_KEY", "require"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ChannelBindings = bytes | Callable[[Scope], bytes | None] | None
Headers = tuple[tuple[str, str], ...]

def _validate_fn(validator: Any) -> Callable[..., Awaitable[Any]]:
    fn = getattr(validator, "avalidate", None)
    if fn is not None:
        return fn  # type: ignore[no-any-return]
    sync = validator.validate

    async def call(token: str, now: float | None = None, channel_bindings: bytes | None = None) -> Any:
        return sync(token, now, channel_bindings)

    return call


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")  # type: ignore[no-any-return]
    return None


def _authorization(scope: Scope) -> str | None:
    return _header(scope, b"authorization")


def _joined(scope: Scope, name: str) -> str | None:
    """A header by lowercase name, a field sent several times joined (Cookie with "; ", others with ", ")."""
    key = name.encode("latin-1")
    values = [v.decode("latin-1") for k, v in scope.get("headers") or () if k == key]
    if not values:
        return None
    return ("; " if name == "cookie" else ", ").join(values)


def _host(scope: Scope) -> str | None:
    """The TCP peer's address (no port); None for a Unix socket."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1] if len(client) > 1 else None
    return f"{host}:{port}" if port else str(host)


def _log_refused(exc: KerberosError, scope: Scope, where: str) -> None:
    log_rejection(exc, where, peer=_peer(scope), method=scope.get("method", "WEBSOCKET"), path=scope.get("path"))


async def _validate_once(validate: Any, cb: ChannelBindings, scope: Scope, token: str, where: str) -> Any:
    """Validate the request's token (bindings from the scope when given as a function), log a rejection,
    and keep the result on the scope so a re-entered request is not validated again."""
    if cb is not None and not isinstance(cb, bytes):
        cb = cb(scope)
    try:
        res = await validate(token, None, cb)
    except KerberosError as exc:
        _log_refused(exc, scope, where)
        raise
    scope[SCOPE_KEY] = res
    return res


class NegotiateMiddleware:
    """Raw ASGI middleware: 401 + ``WWW-Authenticate: Negotiate`` without a valid token; on success the
    AuthResult in ``scope["fastkrb"]``, a :class:`KerberosUser` in ``scope["user"]`` (Starlette's
    ``request.user``), scopes in ``scope["auth"]``, how in ``scope["fastkrb.via"]`` (``negotiate``,
    ``session``, ``bearer``), and the AP-REP in ``WWW-Authenticate`` when the client asked for mutual
    authentication.

    ``required`` False (or a predicate on the scope) lets requests without a header through unauthenticated
    (a bad token is still refused). ``exclude_paths``: exact paths, or prefixes ending in ``/`` or ``*``.
    ``channel_bindings``: bytes, or a function of the scope, e.g. TLS ``tls-server-end-point``.
    The 401 and 403 bodies carry the code, the cause and the fix (JSON when the request's Accept asks for
    ``application/json``, else plain text); ``expose_errors=False`` leaves only the code (the cause names
    principals and keytab entries: a public service may prefer its log to say it). The code is always in
    ``X-Auth-Error``; every refused token is logged on ``fastkrb.http`` (docs/integrations/logging.md).
    ``policy``: a Policy for every path, or ``{path prefix: Policy}`` (see PolicyRouter); checked again when a
    request re-enters at another path (a mounted sub-app, an internal redirect), on the cached result.

    Off by default (docs/sessions.md): ``sessions`` (a ``SessionCookies``: a valid cookie authenticates, a
    Negotiate success sets one), ``bearer`` (a ``TokenVerifier``: ``Authorization: Bearer`` of this service's
    tokens), ``challenge`` (a ``ChallengeRule``: whom to offer Negotiate). Behind uvicorn, its proxy-headers
    option rewrites ``scope["client"]`` before the rule sees it: run ``--no-proxy-headers`` (or keep its
    ``--forwarded-allow-ips`` equal to the rule's ``trusted_proxies``).
    """

    def __init__(self, app: ASGIApp, validator: Any, *, exclude_paths: Iterable[str] = (),
                 required: bool | Callable[[Scope], bool] = True, channel_bindings: ChannelBindings = None,
                 expose_errors: bool = True, policy: PolicyLike | Mapping[str, PolicyLike] | None = None,
                 sessions: SessionCookies | None = None, bearer: TokenVerifier | None = None,
                 challenge: ChallengeRule | None = None) -> None:
        self.app = app
        self.validator = validator
        self._validate = _validate_fn(validator)
        self._excluded = PathMatcher(exclude_paths)
        self._required = required
        self._cb = channel_bindings
        self._expose = expose_errors
        self._policy = PolicyRouter(policy)
        self._gate = Gate(sessions, bearer, challenge)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":   # lifespan
            await self.app(scope, receive, send)
            return
        policy = self._policy(scope["path"]) if self._policy else None
        cached = scope.get(SCOPE_KEY)
        if cached is not None:   # re-entry of a request already authenticated: its result, this path's policy
            if policy is not None and not await self._allowed(policy, cached, scope, send):
                return
            await self.app(scope, receive, send)
            return
        if self._excluded and self._excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = _authorization(scope)
        gate = self._gate
        extra: Headers = ()
        cookie: str | None = None
        if gate:
            cookie = _joined(scope, "cookie")
            before = gate.before(cookie, authorization, "asgi", peer=_peer(scope),
                                 method=scope.get("method", "WEBSOCKET"), path=scope["path"])
            extra = tuple(("Set-Cookie", c) for c in before.set_cookies)
            if before.error is not None:
                await self._refuse(scope, send, before.error, extra=extra)
                return
            if before.result is not None:
                assert before.via is not None
                await self._pass(before.result, before.via, policy, scope, receive, send, extra)
                return
        token = negotiate_token(authorization)
        if token is None:
            req = self._required
            if policy is not None or req is True or (req is not False and req(scope)):  # type: ignore[operator]
                decision = gate.no_token(_host(scope), lambda name: _joined(scope, name)) if gate else None
                fallback = decision if isinstance(decision, Fallback) else None
                log_challenge("asgi", peer=_peer(scope), method=scope.get("method", "WEBSOCKET"),
                              path=scope["path"], fallback=fallback)
                if fallback is not None:
                    await self._answer(scope, send, fallback_refusal(fallback, None, extra))
                    return
                if isinstance(decision, Offer) and decision.set_cookie:
                    extra += (("Set-Cookie", decision.set_cookie),)
                await self._refuse(scope, send, None, extra=extra)
                return
            await self._run(scope, receive, send, extra)
            return
        try:
            res = await _validate_once(self._validate, self._cb, scope, token, "asgi")
        except KerberosError as exc:
            ntlm = gate.ntlm(exc) if gate else None
            if ntlm is not None:
                await self._answer(scope, send, fallback_refusal(ntlm, exc.code, extra))
                return
            await self._refuse(scope, send, exc, token, extra)
            return
        await self._pass(res, "negotiate", policy, scope, receive, send, extra, cookie)

    async def _pass(self, res: Any, via: Via, policy: PolicyLike | None, scope: Scope, receive: Receive,
                    send: Send, extra: Headers, cookie: str | None = None) -> None:
        """An authenticated client: the policy, then the app with the result on the scope."""
        if policy is not None and not await self._allowed(policy, res, scope, send, extra):
            return
        if via == "negotiate" and self._gate:
            extra = tuple(("Set-Cookie", c) for c in self._gate.after_negotiate(
                res, cookie, tuple(v for _, v in extra)))
        scope[SCOPE_KEY] = res
        scope[VIA_KEY] = via
        scope["user"] = KerberosUser(res, via)
        scope["auth"] = KerberosCredentials()
        answer = getattr(res, "www_authenticate", None)
        if answer is not None:
            extra = (("WWW-Authenticate", answer), *extra)
        await self._run(scope, receive, send, extra)

    async def _run(self, scope: Scope, receive: Receive, send: Send, extra: Headers) -> None:
        """The app, with ``extra`` headers added to its response: WWW-Authenticate (the AP-REP) unless the app
        set one, every Set-Cookie."""
        if not extra:
            await self.app(scope, receive, send)
            return
        add = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                has_auth = any(k.lower() == b"www-authenticate" for k, _ in headers)
                headers += [(k, v) for k, v in add if not (has_auth and k == b"www-authenticate")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _allowed(self, policy: PolicyLike, res: Any, scope: Scope, send: Send, extra: Headers = ()) -> bool:
        try:
            policy.check(res)
        except Forbidden as exc:
            _log_refused(exc, scope, "asgi")
            await self._refuse(scope, send, exc, extra=extra)
            return False
        return True

    async def _refuse(self, scope: Scope, send: Send, exc: KerberosError | None,
                      token: str | None = None, extra: Headers = ()) -> None:
        await self._answer(scope, send, refusal(exc, self._expose, _header(scope, b"accept"), token, extra))

    async def _answer(self, scope: Scope, send: Send, answer: Refusal) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


class NegotiateBackend:
    """Starlette ``AuthenticationBackend``: ``AuthenticationMiddleware(app, backend=b, on_error=b.on_error)``.

    ``request.user`` becomes a :class:`KerberosUser`, ``request.auth.scopes`` ``["authenticated", "kerberos"]``;
    without a header the user is anonymous (protect routes with ``@requires("authenticated")``). A backend
    cannot add response headers, so the AP-REP of mutual authentication is not sent: put
    :class:`NegotiateMiddleware` with ``required=False`` in front when clients require it (the backend then
    reuses its result).
    """

    def __init__(self, validator: Any, *, channel_bindings: ChannelBindings = None,
                 expose_errors: bool = True, policy: PolicyLike | Mapping[str, PolicyLike] | None = None) -> None:
        self.validator = validator
        self._validate = _validate_fn(validator)
        self._cb = channel_bindings
        self._expose = expose_errors
        self._policy = PolicyRouter(policy)

    async def authenticate(self, conn: Any) -> tuple[Any, Any] | None:
        from starlette.authentication import AuthCredentials, AuthenticationError

        scope = conn.scope
        res = scope.get(SCOPE_KEY)
        if res is None:
            token = negotiate_token(conn.headers.get("authorization"))
            if token is None:
                return None
            try:
                res = await _validate_once(self._validate, self._cb, scope, token, "starlette")
            except KerberosError as exc:
                raise AuthenticationError(exc.code) from exc
        policy = self._policy(scope["path"]) if self._policy else None
        if policy is not None:
            try:
                policy.check(res)
            except Forbidden as exc:
                _log_refused(exc, scope, "starlette")
                raise AuthenticationError(exc.code) from exc
        return AuthCredentials(["authenticated", "kerberos"]), KerberosUser(res, scope.get(VIA_KEY, "negotiate"))

    def on_error(self, conn: Any, exc: Exception) -> Any:
        """The 401 Negotiate answer for ``AuthenticationMiddleware(on_error=...)``."""
        from starlette.responses import Response

        cause = exc.__cause__ if isinstance(exc.__cause__, KerberosError) else None
        answer = refusal(cause, self._expose, conn.headers.get("accept"),
                         negotiate_token(conn.headers.get("authorization")))
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


def require(policy: PolicyLike) -> Callable[..., Awaitable[KerberosUser]]:
    """A FastAPI dependency: the request's :class:`KerberosUser` if ``policy`` allows it, else 403.

    Needs NegotiateMiddleware (or NegotiateBackend) in front, which authenticates; without a result on the
    request the answer is 401 Negotiate. The 403 is FastAPI's HTTPException: ``{"detail": {"error": "forbidden",
    "policy", "constraint"}}`` with ``X-Auth-Error: forbidden``::

        readers = Policy(allowed_groups=["CORP\\api-readers"], group_names=names, name="readers")

        @app.get("/reports")
        async def reports(user: Annotated[KerberosUser, Depends(require(readers))]) -> ...
    """
    import inspect

    from fastapi import HTTPException
    from starlette.requests import Request

    async def dependency(request: Request) -> KerberosUser:
        res = request.scope.get(SCOPE_KEY)
        if res is None:
            raise HTTPException(401, detail={"error": "unauthorized"}, headers={"WWW-Authenticate": "Negotiate"})
        try:
            policy.check(res)
        except Forbidden as exc:
            _log_refused(exc, request.scope, "fastapi")
            raise HTTPException(403, detail={"error": exc.code, "policy": exc.details.get("policy"),
                                             "constraint": exc.details.get("constraint")},
                                headers={"X-Auth-Error": exc.code}) from exc
        return KerberosUser(res, request.scope.get(VIA_KEY, "negotiate"))

    # FastAPI reads the parameter's class from the signature; the annotations of this module are strings
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
        return_annotation=KerberosUser)
    return dependency
