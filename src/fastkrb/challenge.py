"""Honest challenges: whom to offer ``WWW-Authenticate: Negotiate``, and what everyone else gets instead.

A browser outside the domain has no Kerberos ticket. Offered Negotiate, Windows falls back to NTLM and the
others show a password dialog that no password can satisfy (Keycloak #16981, #8989; mod_auth_gssapi #294):
the user sees a pop-up, not the page that says what to do. :class:`ChallengeRule` offers Negotiate only to
clients that can plausibly answer it:

* **networks**: the client's address in one of the given CIDRs (the domain's networks). The address is the
  TCP peer's, or, when the peer is one of ``trusted_proxies``, the right-most address of ``X-Forwarded-For``
  (or ``Forwarded: for=``) that is not itself a trusted proxy: each proxy appends the address it saw, so
  only the entries written by proxies one trusts are true, and a client can put anything to their left.
* **user agents**: regular expressions (``re.search``) a User-Agent must match to be offered
  (``offer_user_agents``) or that keep it from being offered (``never_user_agents``).
* **a "tried" cookie**: the first offer sets ``<tried_cookie>=1`` for ``tried_max_age`` seconds. A client
  that comes back without a token while it still holds the cookie was offered Negotiate and could not answer
  (no ticket: the dialog was cancelled, or nothing happened): it gets the fallback instead of a second offer
  and a second pop-up. A successful Negotiate clears the cookie, so a domain client is offered again next time.

Everyone not offered gets the **fallback**: a 401 without the Negotiate offer and a configured page (HTML by
default), or a redirect (303 by default) to a login URL. An NTLM token (``unsupported_mechanism``: the
client fell back from Kerberos) can be answered with ``ntlm_page`` the same way, its code kept in
``X-Auth-Error`` and the log. Without a rule every client gets the plain challenge, as before.

Pure logic, no framework: ``decide(peer, header)`` with ``header(name) -> value`` for a lowercase name (a
field sent several times joined with ``", "``, Cookie with ``"; "``). The middleware (fastkrb.web) uses it,
and the sidecar can.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from fastkrb.errors import ConfigurationError

__all__ = ["ChallengeRule", "DEFAULT_FALLBACK_PAGE", "DEFAULT_NTLM_PAGE", "Fallback", "Offer", "client_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
HeaderGetter = Callable[[str], "str | None"]

DEFAULT_FALLBACK_PAGE = (
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign-in needed</title></head><body>\n"
    "<h1>Sign-in needed</h1>\n<p>This service signs you in with your Windows or Kerberos domain account, which "
    "this browser cannot use from here. Use a computer joined to the domain, on the company network, or ask "
    "your help desk.</p>\n</body></html>\n")
DEFAULT_NTLM_PAGE = (
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Kerberos sign-in failed</title></head><body>\n"
    "<h1>Kerberos sign-in failed</h1>\n<p>Your computer offered NTLM instead of Kerberos: it could not get a "
    "Kerberos ticket for this service. Make sure you are signed in to the domain and on the company network, "
    "then reload. If it keeps happening, tell your help desk: <code>unsupported_mechanism</code>.</p>\n"
    "</body></html>\n")
_REDIRECTS = (301, 302, 303, 307, 308)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 6265 §4.1.1 cookie-name


@dataclass(frozen=True, slots=True)
class Offer:
    """Send the Negotiate challenge; ``set_cookie`` (the "tried" cookie, or None) goes with it."""

    set_cookie: str | None = None


@dataclass(frozen=True, slots=True)
class Fallback:
    """Answer without the Negotiate offer: ``status``, ``headers`` (Content-Type, Location, Set-Cookie...),
    ``body``. ``reason`` says why (``network``, ``user_agent``, ``tried``, ``ntlm``); ``client`` is the address
    the rule judged (None when it did not look)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reason: str
    client: str | None = None


def _networks(cidrs: Iterable[str], what: str) -> tuple[Network, ...]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except (ValueError, AttributeError):
            raise ConfigurationError(f"Challenge rule: {what} entry {c!r} is not an address or CIDR network.",
                                     "Give networks as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32.") from None
    return tuple(out)


def _patterns(pats: Iterable[str], what: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for p in pats:
        try:
            out.append(re.compile(p))
        except (re.error, TypeError) as exc:
            raise ConfigurationError(f"Challenge rule: {what} pattern {p!r} is not a regular expression ({exc}).",
                                     "Write it as Python's re module reads it.") from None
    return tuple(out)


def _address(text: str) -> Address | None:
    """An address as a proxy writes it: ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]:4711``,
    ``"[2001:db8::1]"`` (Forwarded quotes it); None for ``unknown``, an obfuscated ``_name`` or garbage."""
    t = text.strip().strip('"')
    if t.startswith("["):
        t = t[1:].partition("]")[0]
    elif t.count(":") == 1:   # IPv4 with a port
        t = t.partition(":")[0]
    try:
        a = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of a ``Forwarded`` field (RFC 7239 §4), in order; an element without one counts
    as an unknown hop."""
    out = []
    for element in value.split(","):
        found = "unknown"
        for pair in element.split(";"):
            k, eq, v = pair.strip().partition("=")
            if eq and k.strip().lower() == "for":
                found = v.strip()
        out.append(found)
    return out


def client_address(peer: str | None, header: HeaderGetter, trusted_proxies: tuple[Network, ...],
                   forwarded: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
                   trust_unix_socket: bool = False) -> Address | None:
    """The client's address: the TCP ``peer``'s, unless the peer is a trusted proxy; then the right-most entry
    of the forwarded header that is not a trusted proxy (a client can write anything to the left of what the
    proxies append). A peer of None (a Unix socket) is a proxy only with ``trust_unix_socket``. An entry that
    is not an address (``unknown``, garbage) stops the walk: the client is then unknown (None)."""
    addr = _address(peer) if peer else None
    if peer:
        if addr is None or not any(addr in n for n in trusted_proxies):
            return addr
    elif not trust_unix_socket:
        return None
    value = header(forwarded)
    if not value:
        return addr
    hops = _forwarded_for(value) if forwarded == "forwarded" else value.split(",")
    last = addr
    for hop in reversed(hops):
        a = _address(hop)
        if a is None:
            return None
        last = a
        if not any(a in n for n in trusted_proxies):
            return a
    return last   # every hop is a trusted proxy: the left-most is the nearest to the client we know


def _cookie_present(cookie_header: str | None, name: str) -> bool:
    if not cookie_header:
        return False
    for item in cookie_header.split(";"):
        k, eq, _ = item.strip().partition("=")
        if eq and k == name:
            return True
    return False


class ChallengeRule:
    """Whom to offer ``WWW-Authenticate: Negotiate``; the others get the fallback (see the module doc).

    ``networks``: CIDRs whose clients are offered (empty: every address). ``trusted_proxies``: CIDRs of the
    proxies whose ``forwarded`` header (``x-forwarded-for`` or RFC 7239 ``forwarded``) is believed;
    ``trust_unix_socket``: a peer without an address (a Unix socket) is such a proxy.
    ``offer_user_agents`` / ``never_user_agents``: regular expressions on User-Agent. ``tried_cookie``: the
    name of the "tried" cookie (None: no such cookie), living ``tried_max_age`` seconds, ``tried_secure``.
    ``fallback_body`` (str or bytes) of type ``fallback_type``, with ``fallback_status`` (401 by default, or
    403); or ``redirect`` to a login URL with ``fallback_status`` 303 (or 301, 302, 307, 308).
    ``ntlm_page``: a page (str or bytes, ``fallback_type``) for an NTLM token, answered 401 without the
    Negotiate offer; None keeps the plain 401 Negotiate refusal.
    """

    def __init__(self, *, networks: Iterable[str] = (), trusted_proxies: Iterable[str] = (),
                 forwarded: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
                 trust_unix_socket: bool = False, offer_user_agents: Iterable[str] = (),
                 never_user_agents: Iterable[str] = (), tried_cookie: str | None = "fastkrb_tried",
                 tried_max_age: int = 600, tried_secure: bool = True, fallback_body: str | bytes | None = None,
                 fallback_type: str = "text/html; charset=utf-8", fallback_status: int | None = None,
                 redirect: str | None = None, ntlm_page: str | bytes | None = None) -> None:
        if isinstance(networks, str) or isinstance(trusted_proxies, str):
            raise ConfigurationError("Challenge rule: networks and trusted_proxies are lists of CIDRs, not a string.",
                                     'Write networks=["10.0.0.0/8"].')
        self.networks = _networks(networks, "networks")
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")
        if forwarded not in ("x-forwarded-for", "forwarded"):
            raise ConfigurationError(f"Challenge rule: forwarded={forwarded!r} is not a header the rule reads.",
                                     "Use 'x-forwarded-for' or 'forwarded' (RFC 7239).")
        self.forwarded: Literal["x-forwarded-for", "forwarded"] = forwarded
        self.trust_unix_socket = trust_unix_socket
        self.offer_user_agents = _patterns(offer_user_agents, "offer_user_agents")
        self.never_user_agents = _patterns(never_user_agents, "never_user_agents")
        if tried_cookie is not None and not _TOKEN.fullmatch(tried_cookie):
            raise ConfigurationError(f"Challenge rule: tried_cookie {tried_cookie!r} is not a cookie name.",
                                     "Use letters, digits and !#$%&'*+-.^_`|~.")
        if isinstance(tried_max_age, bool) or not isinstance(tried_max_age, int) or tried_max_age <= 0:
            raise ConfigurationError(f"Challenge rule: tried_max_age {tried_max_age!r} is not a positive number "
                                     "of seconds.", "Give it in whole seconds, e.g. 600.")
        self.tried_cookie = tried_cookie
        self.tried_max_age = tried_max_age
        self.tried_secure = tried_secure
        if redirect is not None:
            status = 303 if fallback_status is None else fallback_status
            if status not in _REDIRECTS or not redirect or any(c in redirect for c in "\r\n"):
                raise ConfigurationError(f"Challenge rule: redirect {redirect!r} with status {status} is not a "
                                         "redirect.", "Give a URL without line breaks and 301, 302, 303, 307 or 308.")
        else:
            status = 401 if fallback_status is None else fallback_status
            if status not in (401, 403):
                raise ConfigurationError(f"Challenge rule: fallback_status {status} without a redirect.",
                                         "Use 401 or 403, or give redirect= a login URL.")
        self.redirect = redirect
        self.fallback_status = status
        self.fallback_type = fallback_type
        body = DEFAULT_FALLBACK_PAGE if fallback_body is None else fallback_body
        self.fallback_body = body.encode() if isinstance(body, str) else bytes(body)
        self.ntlm_page = ntlm_page.encode() if isinstance(ntlm_page, str) else ntlm_page

    # -- the cookies ----------------------------------------------------------------------------------------

    def _cookie(self, value: str, max_age: int) -> str:
        parts = [f"{self.tried_cookie}={value}", f"Max-Age={max_age}", "Path=/"]
        if self.tried_secure:
            parts.append("Secure")
        parts += ["HttpOnly", "SameSite=Lax"]
        return "; ".join(parts)

    def tried_set_cookie(self) -> str | None:
        """The Set-Cookie of the "tried" cookie that goes with an offer (None without the cookie)."""
        return None if self.tried_cookie is None else self._cookie("1", self.tried_max_age)

    def tried_clear(self, cookie_header: str | None) -> str | None:
        """After a successful authentication: the Set-Cookie that drops the "tried" cookie, if the request
        carried it (a domain client is offered Negotiate again next time), else None."""
        if self.tried_cookie is None or not _cookie_present(cookie_header, self.tried_cookie):
            return None
        return self._cookie("", 0)

    # -- the decision ---------------------------------------------------------------------------------------

    def client(self, peer: str | None, header: HeaderGetter) -> Address | None:
        """The client's address as the rule judges it (see :func:`client_address`)."""
        return client_address(peer, header, self.trusted_proxies, self.forwarded, self.trust_unix_socket)

    def decide(self, peer: str | None, header: HeaderGetter) -> Offer | Fallback:
        """For a request without a token: offer Negotiate, or answer with the fallback.

        ``peer``: the TCP peer's address (host only, or ``host:port``; None for a Unix socket); ``header``:
        the request's header by lowercase name."""
        client: str | None = None
        if self.networks:
            addr = self.client(peer, header)
            client = None if addr is None else str(addr)
            if addr is None or not any(addr.version == n.version and addr in n for n in self.networks):
                return self.fallback("network", client)
        if self.offer_user_agents or self.never_user_agents:
            ua = header("user-agent") or ""
            if any(p.search(ua) for p in self.never_user_agents) or (
                    self.offer_user_agents and not any(p.search(ua) for p in self.offer_user_agents)):
                return self.fallback("user_agent", client)
        if self.tried_cookie is not None and _cookie_present(header("cookie"), self.tried_cookie):
            return self.fallback("tried", client)
        return Offer(self.tried_set_cookie())

    def fallback(self, reason: str, client: str | None = None) -> Fallback:
        """The answer without the Negotiate offer: the page, or the redirect."""
        headers: tuple[tuple[str, str], ...] = (("Content-Type", self.fallback_type),
                                                ("Cache-Control", "no-store"),
                                                ("X-Content-Type-Options", "nosniff"))
        if self.redirect is not None:
            headers += (("Location", self.redirect),)
        return Fallback(self.fallback_status, headers, self.fallback_body, reason, client)

    def ntlm_answer(self) -> Fallback | None:
        """The answer to an NTLM token (``unsupported_mechanism``) when ``ntlm_page`` is set: 401 with the page
        and no Negotiate offer (a new offer would only bring NTLM again, or the dialog), the "tried" cookie
        set; the caller adds ``X-Auth-Error``. None without ``ntlm_page``."""
        if self.ntlm_page is None:
            return None
        headers: tuple[tuple[str, str], ...] = (("Content-Type", self.fallback_type), ("Cache-Control", "no-store"),
                                                ("X-Content-Type-Options", "nosniff"))
        tried = self.tried_set_cookie()
        if tried is not None:
            headers += (("Set-Cookie", tried),)
        return Fallback(401, headers, self.ntlm_page, "ntlm")

    def __repr__(self) -> str:
        return (f"ChallengeRule(networks={[str(n) for n in self.networks]}, "
                f"trusted_proxies={[str(n) for n in self.trusted_proxies]}, tried_cookie={self.tried_cookie!r}, "
                f"fallback_status={self.fallback_status}, redirect={self.redirect!r})")
