"""What the ASGI, WSGI and aiohttp middleware share: reading the header, the identity, the 401 answer.

Kept free of any framework import, and cheap: the success path of a request touches only
``fastkrb.krb.negotiate.negotiate_token`` and ``KerberosUser``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastkrb.errors import KerberosError

__all__ = ["KerberosUser", "KerberosCredentials", "PathMatcher", "challenge_body", "SCOPE_KEY",
           "remote_user", "log"]

log = logging.getLogger("fastkrb.http")

#: Where each integration caches the AuthResult of the request (ASGI scope, WSGI environ, aiohttp request),
#: so a framework that re-enters (sub-applications, internal redirects) never validates the token twice.
SCOPE_KEY = "fastkrb"


class KerberosUser:
    """The authenticated client; also a Starlette ``BaseUser`` (is_authenticated, display_name, identity)."""

    __slots__ = ("principal", "result")

    def __init__(self, result: Any) -> None:
        self.result = result
        self.principal: str = result.client

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.principal

    @property
    def identity(self) -> str:
        return self.principal

    @property
    def name(self) -> str:
        """The principal without its realm."""
        return self.principal.rsplit("@", 1)[0]

    @property
    def realm(self) -> str:
        return self.principal.rsplit("@", 1)[-1]

    def __str__(self) -> str:
        return self.principal

    def __repr__(self) -> str:
        return f"KerberosUser({self.principal!r})"


class KerberosCredentials:
    """Starlette-style ``request.auth``: the scopes ``starlette.authentication.requires`` checks."""

    __slots__ = ("scopes",)

    def __init__(self, scopes: Iterable[str] = ("authenticated", "kerberos")) -> None:
        self.scopes = list(scopes)


def remote_user(result: Any, style: str) -> str:
    """REMOTE_USER: the full principal, or (``short``) the name alone when the client is of the service's realm
    (a short name from another realm would collide with a local one)."""
    client: str = result.client
    if style == "short":
        name, _, realm = client.rpartition("@")
        if realm == result.server.rpartition("@")[2]:
            return name
    return client


class PathMatcher:
    """Paths that skip authentication: exact (``/health``) or prefixes (``/static/`` or ``/public*``)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.exact = frozenset(p for p in paths if not p.endswith(("/", "*")))
        self.prefixes = tuple(p.rstrip("*") for p in paths if p.endswith(("/", "*")))

    def __call__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)


def challenge_body(exc: KerberosError | None, expose: bool) -> bytes:
    """The JSON of a 401: the stable code always; the cause and fix only when the operator allows it."""
    if exc is None:
        return b'{"error":"unauthorized","detail":"Negotiate authentication required"}'
    body: dict[str, Any] = {"error": exc.code}
    if expose:
        body["cause"] = exc.cause
        body["fix"] = exc.fix
    return json.dumps(body).encode()


def log_rejection(exc: KerberosError, where: str) -> None:
    # never the token; the code, cause and the non-secret facts
    log.info("fastkrb %s: rejected [%s] %s", where, exc.code, exc.cause)


Predicate = Callable[[Any], bool]
