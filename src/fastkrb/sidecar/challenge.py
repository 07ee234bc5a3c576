"""Honest challenges in the sidecar (docs/sidecar.md#honest-challenges): the ``challenge_*`` options as one
:class:`fastkrb.challenge.ChallengeRule` per worker, and its answers in the form a proxy can pass.

nginx's ``auth_request`` honours only 2xx, 401 and 403 from the sidecar (anything else becomes a 500) and
discards the body, copying nothing but ``WWW-Authenticate`` into its own 401. So a client the rule does not
offer Negotiate gets, at ``/auth``, a **401 without** ``WWW-Authenticate: Negotiate`` (no password dialog)
that says what to show: ``X-Auth-Fallback: <reason>`` (``network``, ``user_agent``, ``tried``, ``ntlm``), and
``X-Auth-Redirect: <url>`` when the fallback is a login URL; nginx's ``error_page 401`` then redirects, or
fetches the page from the sidecar's ``GET /challenge/<reason>``. Proxies that pass the sidecar's answer as
it is (Envoy ``ext_authz``, Traefik ``forwardAuth``) or a direct client get the page in the body, or, with
``challenge_fallback_status`` 302/303/307, the redirect itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from fastkrb.challenge import DEFAULT_FALLBACK_PAGE, DEFAULT_NTLM_PAGE, ChallengeRule, Fallback, Offer
from fastkrb.errors import ConfigurationError

#: A ``fastkrb.sidecar.config.ServerConfig`` (not imported: config imports this module to check the options).
ServerConfig = Any

__all__ = ["SidecarChallenge", "rule_facts", "rule_problem", "rule_warnings"]

_PAGE_STATUSES = (401, 403)
_REDIRECT_STATUSES = (401, 302, 303, 307)


def _is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _read_page(opt: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read((1 << 20) + 1)
    except OSError as exc:
        fix = "Give an HTML file the sidecar's user can read" + (", or an http(s):// URL to redirect to."
                                                                 if opt == "challenge_fallback" else ".")
        raise ConfigurationError(f"{opt} {path}: cannot read the page file ({exc.strerror or exc}).", fix) from None
    if len(data) > 1 << 20:
        raise ConfigurationError(f"{opt} {path}: the page is larger than 1 MiB.", "Give a smaller HTML page.")
    return data


def _redirect_page(url: str) -> bytes:
    """The body of the 401 form of a redirect: a browser that is shown it (a proxy that passes the body) goes
    on to the login URL by itself."""
    u = html.escape(url, quote=True)
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={u}">'
            f'<title>Sign-in needed</title></head><body>\n<p><a href="{u}">Sign in</a></p>\n</body></html>\n').encode()


@dataclass(frozen=True, slots=True)
class SidecarChallenge:
    """The rule and what the sidecar's answers add to it: the redirect URL of the 401 form (``redirect``,
    None otherwise) and the NTLM page (None: the plain refusal)."""

    rule: ChallengeRule
    redirect: str | None

    @classmethod
    def from_config(cls, cfg: ServerConfig, *, files: bool = True) -> SidecarChallenge | None:
        """The rule of ``cfg``, None when no ``challenge_*`` option is on. Page files are read here once (a
        worker's start); ``files=False`` checks the options without reading them. Raises
        ``ConfigurationError``."""
        if not cfg.challenge_on():
            return None
        fallback = cfg.challenge_fallback
        status = cfg.challenge_fallback_status
        redirect: str | None = None
        rule_redirect: str | None = None
        body: bytes | None = None
        if fallback is not None and _is_url(fallback):
            if status not in _REDIRECT_STATUSES:
                raise ConfigurationError(f"challenge_fallback_status {status} does not go with the redirect "
                                         f"challenge_fallback {fallback}.",
                                         "Use 401 (behind nginx auth_request), or 302, 303 or 307.")
            if status == 401:
                redirect, body = fallback, _redirect_page(fallback)
            else:
                rule_redirect = fallback
        else:
            if status not in _PAGE_STATUSES:
                raise ConfigurationError(f"challenge_fallback_status {status} needs a redirect URL as "
                                         "challenge_fallback.", "Use 401 or 403 with a page, or give an "
                                         "http(s):// URL as challenge_fallback.")
            if fallback is not None and fallback != "default":
                body = _read_page("challenge_fallback", fallback) if files else DEFAULT_FALLBACK_PAGE.encode()
        ntlm: bytes | None = None
        if cfg.ntlm_page:
            if cfg.ntlm_page == "default":
                ntlm = DEFAULT_NTLM_PAGE.encode()
            else:
                ntlm = _read_page("ntlm_page", cfg.ntlm_page) if files else DEFAULT_NTLM_PAGE.encode()
        proxies = list(cfg.trusted_proxies or ())
        unix = "unix" in proxies
        rule = ChallengeRule(networks=cfg.challenge_networks or (), trusted_proxies=[p for p in proxies if p != "unix"],
                             trust_unix_socket=unix, offer_user_agents=cfg.challenge_user_agents or (),
                             never_user_agents=cfg.never_challenge_user_agents or (),
                             tried_cookie=cfg.challenge_tried_cookie, tried_max_age=cfg.challenge_tried_max_age,
                             tried_secure=cfg.challenge_tried_secure, fallback_body=body,
                             fallback_status=None if status == 401 else status, redirect=rule_redirect,
                             ntlm_page=ntlm)
        return cls(rule, redirect)

    # -- the answers, as header lines for sidecar/http.py --------------------------------------------------

    def fallback_headers(self, fb: Fallback) -> list[bytes]:
        """The header lines of a fallback (the rule's, plus what nginx reads); never a Negotiate offer."""
        out = [b"X-Auth-Fallback: " + fb.reason.encode("ascii") + b"\r\n"]
        if self.redirect is not None and fb.reason != "ntlm":
            out.append(b"X-Auth-Redirect: " + self.redirect.encode("latin-1") + b"\r\n")
        for name, value in fb.headers:
            if name != "Cache-Control":   # http.py adds its own
                out.append(name.encode("ascii") + b": " + value.encode("latin-1") + b"\r\n")
        return out

    def offer_headers(self, offer: Offer) -> list[bytes]:
        """The tried cookie that goes with a Negotiate offer (none without the cookie)."""
        return [] if offer.set_cookie is None else [b"Set-Cookie: " + offer.set_cookie.encode("latin-1") + b"\r\n"]

    def page(self, reason: str) -> Fallback:
        """``GET /challenge/<reason>``: the page nginx's error_page shows (the NTLM page for ``ntlm``), 401, no
        offer, no cookie."""
        if reason == "ntlm":
            fb = self.rule.ntlm_answer()
            if fb is not None:
                return Fallback(401, tuple(h for h in fb.headers if h[0] != "Set-Cookie"), fb.body, "ntlm")
        return self.rule.fallback(reason if reason in ("network", "user_agent", "tried") else "page")


_OPTION_NAMES = (("Challenge rule: networks", "challenge_networks"), ("Challenge rule: trusted_proxies",
                  "trusted_proxies"), ("Challenge rule: offer_user_agents", "challenge_user_agents"),
                 ("Challenge rule: never_user_agents", "never_challenge_user_agents"),
                 ("Challenge rule: tried_cookie", "challenge_tried_cookie"),
                 ("Challenge rule: tried_max_age", "challenge_tried_max_age"), ("Challenge rule: ", ""))


def rule_problem(cfg: ServerConfig, *, files: bool) -> str | None:
    """One sentence (the cause and its fix) when the challenge options cannot make a rule, else None."""
    if not cfg.challenge_on():
        if cfg.challenge_fallback:
            return ("challenge_fallback is set but no challenge option withholds the offer from anyone; set "
                    "challenge_networks, challenge_user_agents, never_challenge_user_agents or "
                    "challenge_tried_cookie, or drop challenge_fallback")
        return None
    if cfg.challenge_tried_cookie and cfg.session_keys and cfg.challenge_tried_cookie == cfg.session_cookie_name:
        return (f"challenge_tried_cookie {cfg.challenge_tried_cookie} is also the session cookie's name; give the "
                "tried cookie another name (e.g. fastkrb_tried)")
    try:
        SidecarChallenge.from_config(cfg, files=files)
    except ConfigurationError as exc:
        cause = exc.cause.rstrip(".")
        for rule_word, option in _OPTION_NAMES:   # the rule's words -> the sidecar's option names
            cause = cause.replace(rule_word, option)
        fix = exc.fix[:1].lower() + exc.fix[1:] if exc.fix else ""
        return f"{cause}; {fix.rstrip('.')}" if fix else cause
    return None


def rule_facts(cfg: ServerConfig) -> list[str]:
    """What --check says about the rule."""
    nets = ", ".join(cfg.challenge_networks) if cfg.challenge_networks else "every client network"
    proxies = ", ".join(cfg.trusted_proxies) if cfg.trusted_proxies else "none (the TCP peer is the client)"
    fb = cfg.challenge_fallback or "the built-in page"
    out = [f"challenge rule on: Negotiate offered to {nets}; trusted proxies: {proxies}; the others get {fb} "
           f"({cfg.challenge_fallback_status}, no WWW-Authenticate: Negotiate)"]
    if cfg.challenge_tried_cookie:
        out.append(f"tried cookie {cfg.challenge_tried_cookie}: set with each offer for "
                   f"{cfg.challenge_tried_max_age} s, cleared by a successful Negotiate; the HTTP front door answers "
                   "in Python")
    if cfg.ntlm_page:
        out.append(f"an NTLM token is answered with {cfg.ntlm_page} (401, no new offer, X-Auth-Error: "
                   "unsupported_mechanism)")
    return out


def rule_warnings(cfg: ServerConfig) -> list[str]:
    """Settings that work but probably not as meant."""
    out = []
    if cfg.challenge_networks and not cfg.trusted_proxies and cfg.socket:
        out.append("challenge_networks without trusted_proxies: behind nginx on the Unix socket no client has an "
                   "address, so nobody is offered Negotiate; add trusted_proxies = [\"unix\"] (nginx sets "
                   "X-Forwarded-For $remote_addr in its auth location)")
    if cfg.challenge_tried_cookie and cfg.session_keys and cfg.session_max_age < cfg.challenge_tried_max_age:
        out.append(f"session_max_age {cfg.session_max_age} s is shorter than challenge_tried_max_age "
                   f"{cfg.challenge_tried_max_age} s: a 200 that sets the session cookie keeps the tried cookie, so "
                   "a client whose session ends first gets the fallback instead of an offer until it expires")
    return out
