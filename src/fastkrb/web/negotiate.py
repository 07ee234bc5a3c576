"""What the ASGI, WSGI and aiohttp middleware share: reading the header, the identity, the 401 and 403 answers,
which policy guards a path.

Kept free of any framework import, and cheap: the success path of a request touches only
``fastkrb.krb.negotiate.negotiate_token`` and ``KerberosUser``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from fastkrb.errors import Forbidden, KerberosError

__all__ = ["KerberosUser", "KerberosCredentials", "PathMatcher", "PolicyRouter", "challenge_body", "SCOPE_KEY",
           "forbidden_body", "remote_user", "log"]

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

    @property
    def pac_identity(self) -> Any:
        """The ticket's PAC identity (``result.identity``: user_sid, upn, group_sids, member_of(...)), or None
        (no PAC logon information: MIT and Heimdal tickets). ``identity`` stays Starlette's: the principal."""
        return self.result.identity

    @property
    def sid(self) -> str | None:
        ident = self.pac_identity
        return None if ident is None else str(ident.user_sid)

    @property
    def group_sids(self) -> tuple[str, ...]:
        ident = self.pac_identity
        return () if ident is None else tuple(ident.group_sids)

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


class PolicyLike(Protocol):
    name: str | None

    def check(self, result: Any) -> None: ...


class PolicyRouter:
    """The ``policy=`` of a middleware: one policy for every path, or ``{path prefix: policy}``.

    With a mapping the longest matching prefix decides; ``"/admin"`` matches ``/admin`` and ``/admin/...`` (not
    ``/administrator``); a path no prefix matches has no policy (``"/"`` catches every path). A path with a
    policy always needs a token, even with ``required=False``.
    """

    def __init__(self, policy: PolicyLike | Mapping[str, PolicyLike] | None) -> None:
        self.single: PolicyLike | None = None
        self.prefixes: tuple[tuple[str, str, PolicyLike], ...] = ()
        if policy is None:
            return
        if isinstance(policy, Mapping):
            for prefix, pol in policy.items():
                if not prefix.startswith("/") or not callable(getattr(pol, "check", None)):
                    raise TypeError("policy mapping: {'/path/prefix': Policy, ...}")
            self.prefixes = tuple(sorted(((p.rstrip("/") or "/", (p.rstrip("/") or "") + "/", pol)
                                          for p, pol in policy.items()), key=lambda t: -len(t[0])))
        elif callable(getattr(policy, "check", None)):
            self.single = policy
        else:
            raise TypeError(f"policy must be a fastkrb.Policy or a mapping of path prefixes to them, not {policy!r}")

    def __bool__(self) -> bool:
        return self.single is not None or bool(self.prefixes)

    def __call__(self, path: str) -> PolicyLike | None:
        if self.single is not None:
            return self.single
        for exact, under, pol in self.prefixes:
            if path == exact or path.startswith(under):
                return pol
        return None


def forbidden_body(exc: Forbidden, expose: bool) -> bytes:
    """The JSON of a 403: the code, the policy and the rule that refused; the cause and fix when allowed."""
    body: dict[str, Any] = {"error": exc.code, "policy": exc.details.get("policy"),
                            "constraint": exc.details.get("constraint")}
    if expose:
        body["cause"] = exc.cause
        body["fix"] = exc.fix
    return json.dumps(body).encode()


def log_rejection(exc: KerberosError, where: str) -> None:
    # never the token; the code, cause and the non-secret facts
    log.info("fastkrb %s: rejected [%s] %s", where, exc.code, exc.cause)


Predicate = Callable[[Any], bool]
