"""What the ASGI, WSGI and aiohttp middleware share: reading the header, the identity, the 401 and 403 answers
(:func:`refusal` builds them once for all three), the rejection log, which policy guards a path, and
:class:`Gate`: the session cookie, bearer token and challenge-rule options (off by default, docs/sessions.md).

Kept free of any framework import, and cheap: the success path of a request touches only
``fastkrb.krb.negotiate.negotiate_token`` and ``KerberosUser``; a refusal may cost what it likes.

The rejection log (docs/integrations/logging.md) is the logger ``fastkrb.http``. A token presented and refused
is one WARNING line (ERROR for ``internal`` and ``replay_cache_unavailable``, the server's own faults) with the
code, the request, the client principal when known, the cause and the fix, never the token; at most
``rejection_log.per_second`` lines a second, the rest counted and summed up in one line. A request without a
token (every browser's first request: the normal challenge) is a DEBUG line. WARNING is what Python's
last-resort handler prints to stderr when nothing configured the logger, so under uvicorn's, gunicorn's or
Django's default logging a refusal reaches the terminal without any set-up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastkrb.challenge import ChallengeRule, Fallback, Offer
from fastkrb.errors import Forbidden, KerberosError

if TYPE_CHECKING:
    from fastkrb.sessions.bearer import TokenVerifier
    from fastkrb.sessions.cookie import SessionCookies

__all__ = ["Gate", "KerberosUser", "KerberosCredentials", "PathMatcher", "PolicyRouter", "Refusal", "RejectionLog",
           "SCOPE_KEY", "VIA_KEY", "Via", "challenge_body", "fallback_refusal", "forbidden_body", "log",
           "log_challenge", "log_rejection", "refusal", "rejection_log", "remote_user", "wants_json"]

log = logging.getLogger("fastkrb.http")

#: Where each integration caches the AuthResult of the request (ASGI scope, WSGI environ, aiohttp request),
#: so a framework that re-enters (sub-applications, internal redirects) never validates the token twice.
#: With sessions or bearer tokens on it holds a :class:`fastkrb.sessions.principal.Principal` instead.
SCOPE_KEY = "fastkrb"
#: Where each integration says how the request was authenticated (ASGI scope, WSGI environ; aiohttp: ``VIA``).
VIA_KEY = "fastkrb.via"

Via = Literal["negotiate", "session", "bearer"]


class KerberosUser:
    """The authenticated client; also a Starlette ``BaseUser`` (is_authenticated, display_name, identity).

    ``result`` is the ``AuthResult`` of a Negotiate token, or the :class:`~fastkrb.sessions.principal.Principal`
    of a session cookie or bearer token; ``via`` says which (``negotiate``, ``session``, ``bearer``)."""

    __slots__ = ("principal", "result", "via")

    def __init__(self, result: Any, via: Via = "negotiate") -> None:
        self.result = result
        self.principal: str = result.client
        self.via: Via = via

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


# --- the answers: 401 and 403 --------------------------------------------------------------------------------

_NO_TOKEN_JSON = b'{"error":"unauthorized","detail":"Negotiate authentication required"}'
_NO_TOKEN_TEXT = b"Negotiate authentication required\n"
_JSON_TYPE = "application/json"
_TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 401 or 403 as every framework sends it: the headers include Content-Type (not Content-Length)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def wants_json(accept: str | None) -> bool:
    """Whether the request's Accept names ``application/json`` (or an ``application/*+json``) with q > 0.

    Everything else gets plain text: ``*/*`` (curl, httpx, requests), a browser's ``text/html``, no Accept.
    """
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media != _JSON_TYPE and not (media.startswith("application/") and media.endswith("+json")):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _text(first: str, exc: KerberosError, expose: bool) -> bytes:
    lines = [first]
    if expose:
        lines.append(f"Cause: {exc.cause}")
        if exc.fix:
            lines.append(f"Fix: {exc.fix}")
    else:
        lines.append("The cause is in the server's log (logger fastkrb.http).")
    return ("\n".join(lines) + "\n").encode()


def challenge_body(exc: KerberosError | None, expose: bool, as_json: bool = True) -> bytes:
    """The body of a 401: the stable code, and with ``expose`` the cause and fix (prose that names principals
    and kvnos, never a key or the token). ``exc`` None: no token was sent, the normal first challenge."""
    if exc is None:
        return _NO_TOKEN_JSON if as_json else _NO_TOKEN_TEXT
    if not as_json:
        return _text(f"Kerberos authentication failed: {exc.code}", exc, expose)
    body: dict[str, Any] = {"error": exc.code}
    if expose:
        body["cause"] = exc.cause
        body["fix"] = exc.fix
    return json.dumps(body).encode()


def forbidden_body(exc: Forbidden, expose: bool, as_json: bool = True) -> bytes:
    """The body of a 403: the code, the policy and the rule that refused; the cause and fix with ``expose``."""
    policy, constraint = exc.details.get("policy"), exc.details.get("constraint")
    if not as_json:
        which = f"the policy {policy!r}" if policy else "the policy"
        return _text(f"Forbidden: {which} does not allow this client (rule: {constraint})", exc, expose)
    body: dict[str, Any] = {"error": exc.code, "policy": policy, "constraint": constraint}
    if expose:
        body["cause"] = exc.cause
        body["fix"] = exc.fix
    return json.dumps(body).encode()


def refusal(exc: KerberosError | None, expose: bool, accept: str | None, token: str | bytes | None = None,
            extra: tuple[tuple[str, str], ...] = ()) -> Refusal:
    """The answer to a request refused with ``exc`` (None: no token), in JSON if ``accept`` asks for it.

    401 with ``WWW-Authenticate: Negotiate`` (and ``X-Auth-Error: <code>`` for a refused token); when the
    refused ``token`` asked for mutual authentication and the cause has an RFC 4120 code, the challenge
    carries the KRB-ERROR MIT's acceptor would send (``Negotiate <b64>``, fastkrb.krb.krberror), so the
    client's GSS library names the reason ("Clock skew too great") instead of a generic failure. 403 with
    ``X-Auth-Error: forbidden`` and no challenge for a client a policy refuses (it authenticated; a new token
    would not change the answer). ``nosniff``: the cause may quote names from the ticket, and the text must
    stay text. A refused bearer token is answered ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750
    §3.1). ``extra`` headers (Set-Cookie) are appended.
    """
    as_json = wants_json(accept)
    ctype = ("Content-Type", _JSON_TYPE if as_json else _TEXT_TYPE)
    nosniff = ("X-Content-Type-Options", "nosniff")
    if isinstance(exc, Forbidden):
        return Refusal(403, "Forbidden", (ctype, nosniff, ("X-Auth-Error", "forbidden"), *extra),
                       forbidden_body(exc, expose, as_json))
    scheme = 'Bearer error="invalid_token"' if exc is not None and exc.code.startswith("bearer_") \
        else _challenge(exc, token)
    headers: tuple[tuple[str, str], ...] = (("WWW-Authenticate", scheme), ctype, nosniff)
    if exc is not None:
        headers += (("X-Auth-Error", exc.code),)
    return Refusal(401, "Unauthorized", headers + extra, challenge_body(exc, expose, as_json))


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
            308: "Permanent Redirect", 401: "Unauthorized", 403: "Forbidden"}


def fallback_refusal(fb: Fallback, code: str | None = None, extra: tuple[tuple[str, str], ...] = ()) -> Refusal:
    """A :class:`~fastkrb.challenge.Fallback` as a Refusal: its status, headers and page, ``X-Auth-Error`` when a
    token was refused (``code``), and ``extra`` headers."""
    headers = fb.headers + ((("X-Auth-Error", code),) if code else ()) + extra
    return Refusal(fb.status, _REASONS.get(fb.status, "Unauthorized"), headers, fb.body)


def _challenge(exc: KerberosError | None, token: str | bytes | None) -> str:
    if exc is None or token is None:
        return "Negotiate"
    # Imported here: the KRB-ERROR reader uses the native decoder, which a middleware in front of the sidecar
    # client never loads otherwise; a refusal may cost what it likes.
    from fastkrb.krb.krberror import ANSWERED_CODES, error_header
    if exc.code not in ANSWERED_CODES:
        return "Negotiate"
    return error_header(exc, token) or "Negotiate"


# --- the rejection log ---------------------------------------------------------------------------------------

#: codes that are the server's fault, not the client's: logged at ERROR
_SERVER_FAULTS = frozenset({"internal", "replay_cache_unavailable"})


def _request(method: str | None, path: str | None, peer: str | None) -> str:
    return " ".join(x for x in (method, path, f"from {peer}" if peer else None) if x) or "request"


class RejectionLog:
    """Refused tokens on ``logger``: one line each, at most ``per_second`` lines a second (0: no limit).

    Past the limit a refusal is counted, not logged; the next line after the second is over says how many
    were left out, by code. A flood of bad tokens thus costs about ``per_second`` lines a second, and a
    single refusal is never held back. Thread-safe (WSGI servers run requests in threads).
    """

    def __init__(self, logger: logging.Logger, per_second: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1.0
        self._count = 0
        self._left_out: dict[str, int] = {}
        self._left_out_since = 0.0

    def refused(self, exc: KerberosError, where: str, *, peer: str | None = None, method: str | None = None,
                path: str | None = None) -> None:
        """Log one refusal: never the token, only the error's code, cause, fix and the client's name."""
        level = logging.ERROR if exc.code in _SERVER_FAULTS else logging.WARNING
        if not self.logger.isEnabledFor(level):
            return
        left_out: dict[str, int] = {}
        span = 0.0
        with self._lock:
            now = self._clock()
            if now - self._window >= 1.0:
                if self._left_out:
                    left_out, span = self._left_out, now - self._left_out_since
                    self._left_out = {}
                self._window, self._count = now, 0
            if self.per_second and self._count >= self.per_second:
                if not self._left_out:
                    self._left_out_since = now
                self._left_out[exc.code] = self._left_out.get(exc.code, 0) + 1
                return
            self._count += 1
        if left_out:
            self.logger.warning(
                "fastkrb: %d more refused requests in the last %.1f s were not logged (at most %d lines a "
                "second): %s", sum(left_out.values()), span, self.per_second,
                ", ".join(f"{code} {n}" for code, n in sorted(left_out.items(), key=lambda kv: -kv[1])),
                extra={"fastkrb": {"event": "suppressed", "counts": left_out}})
        status = 403 if isinstance(exc, Forbidden) else 401
        client = exc.details.get("client")
        client = client if isinstance(client, str) else None
        facts = {"event": "refused", "status": status, "code": exc.code, "where": where, "method": method,
                 "path": path, "peer": peer, "client": client, "cause": exc.cause, "fix": exc.fix}
        self.logger.log(level, "fastkrb: refused %s (%s): %d %s%s: %s%s", _request(method, path, peer), where,
                        status, exc.code, f", client {client}" if client else "", exc.cause,
                        f" Fix: {exc.fix}" if exc.fix else "", extra={"fastkrb": facts})


rejection_log = RejectionLog(log)
"""The middleware's rejection log; ``rejection_log.per_second = 100`` (or 0 for no limit) changes the limit."""


def log_rejection(exc: KerberosError, where: str, *, peer: str | None = None, method: str | None = None,
                  path: str | None = None) -> None:
    """A token presented and refused (or a client a policy refused): WARNING on ``fastkrb.http``, rate-limited."""
    rejection_log.refused(exc, where, peer=peer, method=method, path=path)


def log_challenge(where: str, *, peer: str | None = None, method: str | None = None, path: str | None = None,
                  fallback: Fallback | None = None) -> None:
    """A request without a Negotiate token, answered with the challenge: the normal first request of a browser,
    so DEBUG. With ``fallback`` the challenge rule withheld the offer, and the line says why."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    facts = {"event": "challenged", "status": 401, "where": where, "method": method, "path": path, "peer": peer}
    if fallback is None:
        log.debug("fastkrb: challenged %s (%s): no Authorization: Negotiate token; 401 WWW-Authenticate: Negotiate",
                  _request(method, path, peer), where, extra={"fastkrb": facts})
        return
    facts |= {"event": "withheld", "status": fallback.status, "reason": fallback.reason, "client": fallback.client}
    log.debug("fastkrb: withheld the Negotiate offer from %s (%s): %s%s; answered %d with the fallback",
              _request(method, path, peer), where, fallback.reason,
              f" (client {fallback.client})" if fallback.client else "", fallback.status, extra={"fastkrb": facts})


# --- sessions, bearer tokens and the challenge rule ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Before:
    """What a request carried besides a Negotiate token: a session or bearer ``result`` (a Principal) and its
    ``via``; or a refused bearer token (``error``). ``set_cookies``: the clearing of a session cookie that
    did not open, to go with whatever the answer is."""

    result: Any = None
    via: Via | None = None
    error: KerberosError | None = None
    set_cookies: tuple[str, ...] = ()


_NOTHING = Before()


class Gate:
    """The ``sessions``, ``bearer`` and ``challenge`` options of a middleware (each None: off), framework-free.

    Per request, before Negotiate: a session cookie that opens authenticates (:meth:`before`); one that does
    not is logged (DEBUG when expired, INFO otherwise) and treated as absent, and cleared in the answer; then
    ``Authorization: Bearer`` through the verifier (a refused one is a 401 like a refused ticket). After a
    Negotiate token and the policy accepted the client, :meth:`after_negotiate` seals the session cookie and
    drops the challenge rule's "tried" cookie. For a request without a token, :meth:`no_token` asks the rule.
    """

    __slots__ = ("bearer", "challenge", "sessions")

    def __init__(self, sessions: SessionCookies | None = None, bearer: TokenVerifier | None = None,
                 challenge: ChallengeRule | None = None) -> None:
        if sessions is not None and not (callable(getattr(sessions, "authenticate", None))
                                         and callable(getattr(sessions, "issue", None))):
            raise TypeError(f"sessions must be a fastkrb.SessionCookies, not {sessions!r}")
        if bearer is not None and not callable(getattr(bearer, "authenticate", None)):
            raise TypeError(f"bearer must be a fastkrb.TokenVerifier, not {bearer!r}")
        if challenge is not None and not isinstance(challenge, ChallengeRule):
            raise TypeError(f"challenge must be a fastkrb.challenge.ChallengeRule, not {challenge!r}")
        self.sessions = sessions
        self.bearer = bearer
        self.challenge = challenge

    def __bool__(self) -> bool:
        return self.sessions is not None or self.bearer is not None or self.challenge is not None

    def before(self, cookie: str | None, authorization: str | None, where: str, *, peer: str | None = None,
               method: str | None = None, path: str | None = None) -> Before:
        """The session cookie, else the bearer token, of a request (``cookie``: its Cookie header)."""
        clear: tuple[str, ...] = ()
        if self.sessions is not None and cookie:
            try:
                p = self.sessions.authenticate(cookie)
            except KerberosError as exc:   # SessionInvalid, SessionExpired: as if there were no cookie
                _log_session(exc, where, peer, method, path)
                clear = (self.sessions.clear_cookie(),)
            else:
                if p is not None:
                    return Before(p, "session")
        if self.bearer is not None and authorization:
            try:
                p = self.bearer.authenticate(authorization)
            except KerberosError as exc:   # BearerInvalid, BearerExpired
                log_rejection(exc, where, peer=peer, method=method, path=path)
                return Before(error=exc, set_cookies=clear)
            if p is not None:
                return Before(p, "bearer", set_cookies=clear)
        return Before(set_cookies=clear) if clear else _NOTHING

    def after_negotiate(self, result: Any, cookie: str | None, pending: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The Set-Cookie values for a client a Negotiate token authenticated (and the policy allowed): the new
        session cookie (a ``KerberosError`` from sealing, too large or a ticket ending too soon, means none:
        logged at DEBUG, and ``pending`` stays), and the removal of the "tried" cookie."""
        out = list(pending)
        if self.sessions is not None:
            try:
                issued = self.sessions.issue(result)
            except KerberosError as exc:
                log.debug("fastkrb: no session cookie for %s: %s %s", result.client, exc.code, exc.cause,
                          extra={"fastkrb": {"event": "session_not_issued", "code": exc.code,
                                             "client": result.client}})
            else:
                out = [issued]   # same name as a cookie that did not open: it replaces it
        if self.challenge is not None:
            tried = self.challenge.tried_clear(cookie)
            if tried is not None:
                out.append(tried)
        return tuple(out)

    def no_token(self, peer: str | None, header: Callable[[str], str | None]) -> Offer | Fallback:
        """For a request without a token that needs one: the rule's decision (no rule: offer)."""
        if self.challenge is None:
            return Offer()
        return self.challenge.decide(peer, header)

    def ntlm(self, exc: KerberosError) -> Fallback | None:
        """The rule's NTLM page for a refused ``unsupported_mechanism`` token, or None."""
        if self.challenge is None or exc.code != "unsupported_mechanism":
            return None
        return self.challenge.ntlm_answer()


def _log_session(exc: KerberosError, where: str, peer: str | None, method: str | None, path: str | None) -> None:
    level = logging.DEBUG if exc.code == "session_expired" else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "fastkrb: session cookie of %s (%s) not accepted: %s (%s); treated as absent and cleared",
                _request(method, path, peer), where, exc.code, exc.details.get("reason"),
                extra={"fastkrb": {"event": "session_refused", "code": exc.code, "reason": exc.details.get("reason"),
                                   "where": where, "method": method, "path": path, "peer": peer,
                                   "client": exc.details.get("client")}})


Predicate = Callable[[Any], bool]
