"""Sessions after one Negotiate, in the sidecar (docs/sidecar.md#sessions-and-bearer-tokens): the session
cookie ``/auth`` sets and reads, and the bearer tokens ``POST /token`` issues, ``/auth`` reads and
``/.well-known/jwks.json`` publishes the keys of. Off unless a key file is configured (``session_keys``,
``signing_keys``); built once per worker from the configuration. The key files are re-read when they change,
as the keytab is (``reload_interval``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastkrb.sessions.bearer import TokenIssuer, TokenVerifier, parse_signing_keys
from fastkrb.sessions.cookie import SessionCookies
from fastkrb.sessions.keyfile import KeyRing
from fastkrb.sidecar.config import ServerConfig

__all__ = ["SidecarSessions"]


@dataclass
class SidecarSessions:
    """What the HTTP front door needs for sessions: each part None when it is off."""

    cookies: SessionCookies | None = None
    issuer: TokenIssuer | None = None
    verifier: TokenVerifier | None = None
    _jwks: tuple[Any, bytes] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> SidecarSessions | None:
        """The sessions of ``cfg``, or None when neither cookies nor bearer tokens are on. A key file that does
        not load raises ``KeyFileError`` (a ``ConfigurationError``); ``fastkrb serve`` checks them before it
        forks (config.session_problems)."""
        if not cfg.session_keys and not cfg.signing_keys:
            return None
        interval = cfg.reload_interval or 1.0   # 0 means "SIGHUP only" for the keytab; a key file is still watched
        out = cls()
        if cfg.session_keys:
            out.cookies = SessionCookies(cfg.session_keys, cfg.cookie_settings(), reload_interval=interval)
        if cfg.signing_keys:
            assert cfg.token_issuer and cfg.token_audience   # config._validate
            ring = KeyRing(parse_signing_keys, path=cfg.signing_keys, reload_interval=interval)
            out.issuer = TokenIssuer(ring, issuer=cfg.token_issuer, audience=cfg.token_audience, ttl=cfg.token_ttl)
            out.verifier = TokenVerifier(ring, issuer=cfg.token_issuer, audience=cfg.token_audience)
        return out

    def jwks_body(self) -> bytes:
        """The JWKS document (RFC 7517 §5) of the signing keys in service, encoded once per version of the file."""
        assert self.verifier is not None
        keys = self.verifier.ring.keys()
        cached = self._jwks
        if cached is None or cached[0] is not keys:
            cached = self._jwks = (keys, json.dumps(self.verifier.jwks(), separators=(",", ":")).encode())
        return cached[1]
