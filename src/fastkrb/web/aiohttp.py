"""Negotiate (SPNEGO/Kerberos) middleware for aiohttp servers.

    app = web.Application(middlewares=[negotiate_middleware(Validator("/etc/api.keytab"))])

On success ``request[RESULT]`` is the AuthResult and ``request[USER]`` a :class:`KerberosUser` (typed
``web.RequestKey``s, as aiohttp recommends; plain strings "fastkrb" and "user" on aiohttp without them); the
AP-REP of mutual authentication goes into the response's ``WWW-Authenticate``. Without a valid token:
401 with ``WWW-Authenticate: Negotiate`` (and ``X-Auth-Error: <code>`` for a bad one, the cause and fix in the
body: JSON when Accept asks for ``application/json``, else text; ``expose_errors=False`` leaves them out). The
refusal is logged on ``fastkrb.http`` (docs/integrations/logging.md). The validator's
``avalidate`` is awaited (a network replay cache or the sidecar never blocks the loop). A sub-application
behind the same middleware reuses the request's result instead of validating the token a second time.

``policy=`` (a :class:`fastkrb.Policy`, or ``{path prefix: Policy}``): a client it does not allow gets 403 with
``X-Auth-Error: forbidden`` and ``{"error": "forbidden", "policy", "constraint"}``; a sub-application's own
middleware checks its policy on the reused result. The PAC identity is ``request[IDENTITY]`` (key
``"fastkrb_identity"``; None for a ticket without PAC logon information) and ``request[RESULT].identity``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

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
)

if TYPE_CHECKING:
    from fastkrb.sessions.bearer import TokenVerifier
    from fastkrb.sessions.cookie import SessionCookies

__all__ = ["negotiate_middleware", "KerberosUser", "IDENTITY", "RESULT", "USER", "VIA"]

_RequestKey = getattr(web, "RequestKey", None)
#: request[RESULT]: the AuthResult of the request; request[USER]: its KerberosUser.
RESULT: Any = _RequestKey(SCOPE_KEY, object) if _RequestKey is not None else SCOPE_KEY
USER: Any = _RequestKey("user", KerberosUser) if _RequestKey is not None else "user"
#: request[IDENTITY]: the PAC identity of the request's ticket (None without PAC logon information).
IDENTITY: Any = _RequestKey("fastkrb_identity", object) if _RequestKey is not None else "fastkrb_identity"
#: request[VIA]: how the request was authenticated: "negotiate", "session" or "bearer".
VIA: Any = _RequestKey(VIA_KEY, str) if _RequestKey is not None else VIA_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ChannelBindings = bytes | Callable[[web.Request], bytes | None] | None
Headers = tuple[tuple[str, str], ...]


def _response(answer: Refusal) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers=CIMultiDict(answer.headers))


def _refusal(request: web.Request, exc: KerberosError | None, expose: bool,
             token: str | None = None, extra: Headers = ()) -> web.Response:
    return _response(refusal(exc, expose, request.headers.get("Accept"), token, extra))


def _log_refused(exc: KerberosError, request: web.Request) -> None:
    log_rejection(exc, "aiohttp", peer=request.remote, method=request.method, path=request.path)


def _joined(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, ())
    if not values:
        return None
    return ("; " if name == "cookie" else ", ").join(values)


def _host(request: web.Request) -> str | None:
    """The TCP peer's address (never a forwarded one); None for a Unix socket."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, (tuple, list)) and peername:
        return str(peername[0])
    return None


def _add_headers(resp: web.StreamResponse | web.HTTPException, extra: Headers) -> None:
    has_auth = "WWW-Authenticate" in resp.headers
    for k, v in extra:
        if not (has_auth and k == "WWW-Authenticate"):
            resp.headers.add(k, v)


def negotiate_middleware(validator: Any, *, exclude_paths: Iterable[str] = (),
                         required: bool | Callable[[web.Request], bool] = True,
                         channel_bindings: ChannelBindings = None, expose_errors: bool = True,
                         policy: PolicyLike | Mapping[str, PolicyLike] | None = None,
                         sessions: SessionCookies | None = None, bearer: TokenVerifier | None = None,
                         challenge: ChallengeRule | None = None) -> Any:
    """The middleware for ``web.Application(middlewares=[...])``; see the module doc for what it sets.
    ``sessions``, ``bearer``, ``challenge``: off by default (docs/sessions.md)."""
    avalidate = getattr(validator, "avalidate", None)
    sync_validate = validator.validate if avalidate is None else None
    excluded = PathMatcher(exclude_paths)
    router = PolicyRouter(policy)
    gate = Gate(sessions, bearer, challenge)

    async def run(request: web.Request, handler: Handler, extra: Headers) -> web.StreamResponse:
        if not extra:
            return await handler(request)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            _add_headers(exc, extra)
            raise
        if not resp.prepared:
            _add_headers(resp, extra)
        return resp

    @web.middleware
    async def negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
        res = request.get(RESULT)
        pol = router(request.path) if router else None
        extra: Headers = ()
        if res is None:
            if excluded and excluded(request.path):
                return await handler(request)
            authorization = request.headers.get("Authorization")
            cookie = _joined(request, "cookie") if gate else None
            via: Via = "negotiate"
            if gate:
                before = gate.before(cookie, authorization, "aiohttp", peer=request.remote, method=request.method,
                                     path=request.path)
                extra = tuple(("Set-Cookie", c) for c in before.set_cookies)
                if before.error is not None:
                    return _refusal(request, before.error, expose_errors, extra=extra)
                if before.result is not None:
                    res, via = before.result, before.via or "session"
            if res is None:
                token = negotiate_token(authorization)
                if token is None:
                    if pol is not None or required is True or (
                            required is not False and required(request)):  # type: ignore[operator]
                        decision = gate.no_token(_host(request), lambda name: _joined(request, name)) if gate else None
                        fallback = decision if isinstance(decision, Fallback) else None
                        log_challenge("aiohttp", peer=request.remote, method=request.method, path=request.path,
                                      fallback=fallback)
                        if fallback is not None:
                            return _response(fallback_refusal(fallback, None, extra))
                        if isinstance(decision, Offer) and decision.set_cookie:
                            extra += (("Set-Cookie", decision.set_cookie),)
                        return _refusal(request, None, expose_errors, extra=extra)
                    return await run(request, handler, extra)
                cb = channel_bindings
                if cb is not None and not isinstance(cb, bytes):
                    cb = cb(request)
                try:
                    if avalidate is not None:
                        res = await avalidate(token, None, cb)
                    else:
                        assert sync_validate is not None
                        res = sync_validate(token, None, cb)
                except KerberosError as exc:
                    _log_refused(exc, request)
                    ntlm = gate.ntlm(exc) if gate else None
                    if ntlm is not None:
                        return _response(fallback_refusal(ntlm, exc.code, extra))
                    return _refusal(request, exc, expose_errors, token, extra)
                request[RESULT] = res
                request[USER] = KerberosUser(res, via)
                request[IDENTITY] = res.identity
                request[VIA] = via
                if pol is not None:   # before the session is sealed: a cookie only for a client let in
                    try:
                        pol.check(res)
                    except Forbidden as exc:
                        _log_refused(exc, request)
                        return _refusal(request, exc, expose_errors, extra=extra)
                    pol = None
                if gate:
                    extra = tuple(("Set-Cookie", c) for c in gate.after_negotiate(res, cookie,
                                                                                  tuple(v for _, v in extra)))
            else:
                request[RESULT] = res
                request[USER] = KerberosUser(res, via)
                request[IDENTITY] = res.identity
                request[VIA] = via
        if pol is not None:
            try:
                pol.check(res)
            except Forbidden as exc:
                _log_refused(exc, request)
                return _refusal(request, exc, expose_errors, extra=extra)
        answer = getattr(res, "www_authenticate", None)
        if answer is not None:
            extra = (("WWW-Authenticate", answer), *extra)
        return await run(request, handler, extra)

    return negotiate
