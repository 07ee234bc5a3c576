"""Sessions after one Negotiate, in the sidecar (docs/sidecar.md#sessions-and-bearer-tokens): the session
cookie ``/auth`` sets and reads, and the bearer tokens ``POST /token`` issues, ``/auth`` reads and
``/.well-known/jwks.json`` publishes the keys of. Off unless a key file is configured (``session_keys``,
``signing_keys``); built once per worker from the configuration. The key files are re-read when they change,
as the keytab is (``reload_interval``).

A cookie is opened in full (AES-GCM, inflate, JSON) once; ``SessionCookies`` remembers the session by the
cookie's exact value (``session_cache``), and, with the native request path, the encoded 200 answer of a
plain ``/auth`` goes into the native table (``_native.NativeSessions``, native/sesscache.c), which answers
that cookie's next requests without Python. Both are dropped whole when the key set changes (the worker's
tick looks at the key file) or the group-name map does; an ended session is never answered from either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastkrb import _native
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
    #: opened cookies answered by the native request path (attach), or None
    native: _native.NativeSessions | None = None
    _gen: int = field(default=-1, repr=False)         # cookies.generation the native table was filled under
    _names_gen: int = field(default=-1, repr=False)   # and the group-name map's generation (X-Remote-Groups)
    _cache_size: int = field(default=0, repr=False)

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
            out.cookies = SessionCookies(cfg.session_keys, cfg.cookie_settings(), reload_interval=interval,
                                         cache_size=cfg.session_cache)
            out._cache_size = cfg.session_cache
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

    # -- the native answers to session cookies ----------------------------------------------------------

    def attach(self, front: Any) -> None:
        """Give the native request path (``_native.NativeFront``) the table of opened cookies: from then on it
        leaves Negotiate requests to Python (their 200 sets a cookie) and answers a registered cookie itself.
        Nothing with cookies off or ``session_cache`` 0."""
        if self.cookies is None or front is None or self._cache_size <= 0:
            return
        self.native = _native.NativeSessions(self.cookies.settings.name.encode("ascii"), self._cache_size)
        self._gen = self.cookies.generation
        front.sessions = self.native

    def _sync(self, names_generation: int) -> None:
        """Empty the native table when what its answers were built from changed: the key set (a key removed
        takes its sessions along) or the group-name map (X-Remote-Groups)."""
        native = self.native
        cookies = self.cookies
        if native is None or cookies is None:
            return
        if cookies.generation != self._gen or names_generation != self._names_gen:
            native.clear()
            self._gen = cookies.generation
            self._names_gen = names_generation

    def watch(self, names_generation: int = -1) -> None:
        """Each tick of the worker: the key file looked at (when due), so a removed key ends its sessions in
        the native table too, which never asks Python."""
        if self.cookies is not None:
            self.cookies.keys()
            self._sync(names_generation)

    def remember(self, value: str, principal: Any, head: bytes, worker: int | None, names_generation: int) -> None:
        """Register an opened cookie's plain /auth answer (``head``: the 200 through its Cache-Control line) and
        the constant parts of its decision line (log.py's ``session``) with the native table."""
        native = self.native
        if native is None or self.cookies is None:
            return
        self._sync(names_generation)
        key = value.encode("ascii")   # it opened: base64url
        if native.end_of(key) is not None:
            return
        mid = _dumps({"event": "decision", "via": "session", "outcome": "accepted", "code": "ok",
                      "client": principal.client, "server": principal.server, "frontend": "http",
                      "worker": worker})[1:-1] + ',"latency_us":'
        tail = "," + _dumps({"kid": principal.kid})[1:-1] + "}\n"
        native.put(key, head, float(self.cookies.end_of(principal)), mid.encode(), tail.encode())

    def fold(self, stats: Any) -> None:
        """Count the requests the native table answered since the last call into ``stats`` (a
        ``metrics.Stats``: session|accepted|ok, as the Python path counts them)."""
        hits = self.native.take_hits() if self.native is not None else 0
        if hits:
            stats.via["session|accepted|ok"] = stats.via.get("session|accepted|ok", 0) + hits


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode   # log.py's encoding
