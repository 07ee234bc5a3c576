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
from typing import Any

from aiohttp import web

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
)

__all__ = ["negotiate_middleware", "KerberosUser", "IDENTITY", "RESULT", "USER"]

_RequestKey = getattr(web, "RequestKey", None)
#: request[RESULT]: the AuthResult of the request; request[USER]: its KerberosUser.
RESULT: Any = _RequestKey(SCOPE_KEY, object) if _RequestKey is not None else SCOPE_KEY
USER: Any = _RequestKey("user", KerberosUser) if _RequestKey is not None else "user"
#: request[IDENTITY]: the PAC identity of the request's ticket (None without PAC logon information).
IDENTITY: Any = _RequestKey("fastkrb_identity", object) if _RequestKey is not None else "fastkrb_identity"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ChannelBindings = bytes | Callable[[web.Request], bytes | None] | None


def _refusal(request: web.Request, exc: KerberosError | None, expose: bool,
             token: str | None = None) -> web.Response:
    answer = refusal(exc, expose, request.headers.get("Accept"), token)
    return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))


def _log_refused(exc: KerberosError, request: web.Request) -> None:
    log_rejection(exc, "aiohttp", peer=request.remote, method=request.method, path=request.path)


def negotiate_middleware(validator: Any, *, exclude_paths: Iterable[str] = (),
                         required: bool | Callable[[web.Request], bool] = True,
                         channel_bindings: ChannelBindings = None, expose_errors: bool = True,
                         policy: PolicyLike | Mapping[str, PolicyLike] | None = None) -> Any:
    """The middleware for ``web.Application(middlewares=[...])``; see the module doc for what it sets."""
    avalidate = getattr(validator, "avalidate", None)
    sync_validate = validator.validate if avalidate is None else None
    excluded = PathMatcher(exclude_paths)
    router = PolicyRouter(policy)

    @web.middleware
    async def negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
        res = request.get(RESULT)
        pol = router(request.path) if router else None
        if res is None:
            if excluded and excluded(request.path):
                return await handler(request)
            token = negotiate_token(request.headers.get("Authorization"))
            if token is None:
                if pol is not None or required is True or (
                        required is not False and required(request)):  # type: ignore[operator]
                    log_challenge("aiohttp", peer=request.remote, method=request.method, path=request.path)
                    return _refusal(request, None, expose_errors)
                return await handler(request)
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
                return _refusal(request, exc, expose_errors, token)
            request[RESULT] = res
            request[USER] = KerberosUser(res)
            request[IDENTITY] = res.identity
        if pol is not None:
            try:
                pol.check(res)
            except Forbidden as exc:
                _log_refused(exc, request)
                return _refusal(request, exc, expose_errors)
        answer = res.www_authenticate
        if answer is None:
            return await handler(request)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            if "WWW-Authenticate" not in exc.headers:
                exc.headers["WWW-Authenticate"] = answer
            raise
        if not resp.prepared and "WWW-Authenticate" not in resp.headers:
            resp.headers["WWW-Authenticate"] = answer
        return resp

    return negotiate
