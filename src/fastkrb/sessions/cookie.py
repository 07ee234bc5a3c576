"""Session cookies: after one successful Negotiate, an encrypted and authenticated cookie that stands for the
ticket until it expires — no earlier than asked, never later than the ticket's end time.

    cookies = SessionCookies("/etc/fastkrb/session-keys.json", CookieSettings(max_age=3600))
    set_cookie = cookies.issue(result)                # the Set-Cookie value, after validate() and the policy
    principal = cookies.authenticate(cookie_header)   # a Principal, None without our cookie, or raises
    policy.check(principal)                           # the same Policy, the same verdict

**Format** (version 1): ``base64url(0x01 | len(kid) | kid | nonce[12] | AES-256-GCM(payload) | tag[16])``.
The additional data binds the version, the cookie's name and the key id (``"fastkrb-session" 0x01 0x00
name 0x00 kid``), so a cookie does not open under another name, and a key id cannot be swapped. The nonce
is random (96 bits, NIST SP 800-38D §8.2.2): a key seals well under 2^32 cookies before rotation is due. The
payload is deflated JSON: the client, its realm, the service principal, issue and expiry times, and the PAC
facts a Policy reads (user and group SIDs) or shows (names, UPN). The tag check is AES-GCM's own
(constant time in OpenSSL); a cookie that fails it says nothing more than ``integrity``.

**Expiry** = min(ticket end time, issue time + ``max_age``); a cookie issued before ``max_age`` was lowered
ends at the new maximum too. **Keys**: :mod:`fastkrb.sessions.keyfile`; a key removed means its sessions
are gone.

**Cost**: deflate runs with a 4 KiB window and memLevel 4 (a raw stream any ``wbits=-15`` inflater reads, so
cookies sealed with the earlier 32 KiB window open alike): zlib's setup of its default 64 KiB hash table
otherwise costs more than the rest of ``seal``. Opened cookies are remembered by their exact value (a
bounded LRU, ``cache_size``): the AES-GCM tag is what makes a value trustworthy, so the same value opens to
the same session until it expires or the key set changes, and then the memory is dropped whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastkrb.errors import ConfigurationError, SessionExpired, SessionInvalid, SessionTooLarge, utc_iso
from fastkrb.sessions.keyfile import KeyFileError, KeyRing, dump_key_file, read_key_file, write_key_file
from fastkrb.sessions.principal import IdentityFacts, Principal

__all__ = ["COOKIE_LIMIT", "CookieSettings", "SessionCookies", "SessionKey", "dump_session_keys",
           "new_session_key", "new_session_key_file", "parse_session_keys", "rotate_session_key_file"]

KIND = "session-keys"
VERSION = 1
NONCE = 12
TAG = 16
#: RFC 6265 §6.1: browsers keep at least 4096 bytes of one cookie, its name, value and attributes together.
COOKIE_LIMIT = 4096
_MAX_VALUE = 8192          # a longer cookie value is not ours: refused before any decoding
_MAX_PAYLOAD = 65536       # the inflated payload's bound
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 6265 §4.1.1 cookie-name = RFC 2616 token
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")           # av-octet: no CTL, no ';'
# deflate: raw (RFC 1951), level 9, a 4 KiB window and memLevel 4. The payload's repeats (SID prefixes) sit
# within a few hundred bytes, so the output is as small as with zlib's defaults, and the setup (whose hash
# table memLevel sizes) is cheap. Opened with a 32 KiB window, which reads any smaller one's stream.
_DEFLATE = (9, zlib.DEFLATED, -12, 4)
_INFLATE_WBITS = -15
#: Opened cookies remembered per SessionCookies (``cache_size``), by exact value.
CACHE_SIZE = 10000


# -- keys -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionKey:
    """One AES-256 key and its id (the id travels in the clear in every cookie it seals)."""

    kid: str
    key: bytes
    created: int

    def __repr__(self) -> str:   # never the key
        return f"SessionKey(kid={self.kid!r}, created={utc_iso(self.created)})"


def new_session_key(now: float | None = None) -> SessionKey:
    """A fresh random key with a random 8-character id."""
    return SessionKey(kid=secrets.token_urlsafe(6), key=secrets.token_bytes(32),
                      created=int(time.time() if now is None else now))


def parse_session_keys(data: bytes, where: str = "session key file") -> tuple[SessionKey, ...]:
    """The keys of a session key file's bytes; ``KeyFileError`` (a ``ConfigurationError``) names what is wrong."""
    out = []
    for entry in read_key_file(data, KIND, where):
        kid = entry["kid"]
        raw = entry.get("key")
        try:
            key = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
        except binascii.Error:
            key = b""
        if len(key) != 32:
            raise KeyFileError(f"{where}: key {kid!r} is not 32 bytes in base64 (AES-256).")
        out.append(SessionKey(kid, key, int(entry.get("created", 0))))
    return tuple(out)


def dump_session_keys(keys: Sequence[SessionKey]) -> bytes:
    return dump_key_file(KIND, [{"kid": k.kid, "key": base64.b64encode(k.key).decode(), "created": k.created}
                                for k in keys])


def new_session_key_file(path: str | os.PathLike[str], *, now: float | None = None) -> SessionKey:
    """Write a new key file with one key (mode 0600); an existing file is not overwritten (rotate it)."""
    if os.path.lexists(path):
        raise KeyFileError(f"Session key file {os.fspath(path)} exists already.",
                           "Rotate it (`fastkrb keys session rotate FILE`) or remove it first.")
    key = new_session_key(now)
    write_key_file(path, dump_session_keys([key]))
    return key


def rotate_session_key_file(path: str | os.PathLike[str], *, keep: int = 1, now: float | None = None) -> SessionKey:
    """Put a new key first and keep the ``keep`` newest old ones (default 1: what the previous key sealed
    stays valid until the next rotation); older keys, and their sessions, are gone."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            old = parse_session_keys(fh.read(), where)
    except OSError as exc:
        raise KeyFileError(f"Session key file {where} cannot be read ({exc.strerror or exc}).",
                           "Create it with `fastkrb keys session new FILE`.") from None
    key = new_session_key(now)
    write_key_file(where, dump_session_keys([key, *old[:max(0, keep)]]))
    return key


# -- settings -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CookieSettings:
    """The cookie's name and attributes (RFC 6265 §4.1; SameSite: RFC 6265bis) and its longest life."""

    name: str = "fastkrb_session"
    max_age: int = 3600
    secure: bool = True
    http_only: bool = True
    same_site: Literal["Strict", "Lax", "None"] | None = "Lax"
    path: str = "/"
    domain: str | None = None

    def __post_init__(self) -> None:
        bad = self.problem()
        if bad:
            raise ConfigurationError(f"Session cookie settings: {bad}", "Correct the cookie settings.")

    def problem(self) -> str | None:
        if not isinstance(self.name, str) or not _TOKEN.fullmatch(self.name):
            return f"the name {self.name!r} is not an RFC 6265 cookie name (letters, digits and !#$%&'*+-.^_`|~)."
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age <= 0:
            return f"max_age {self.max_age!r} is not a positive number of seconds."
        if self.same_site not in ("Strict", "Lax", "None", None):
            return f"SameSite {self.same_site!r} is not Strict, Lax or None."
        if self.same_site == "None" and not self.secure:
            return "SameSite=None needs Secure (browsers drop the cookie otherwise)."
        if not isinstance(self.path, str) or not _PATH.fullmatch(self.path):
            return f"the path {self.path!r} does not start with '/' or holds a control character or ';'."
        if self.domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", self.domain):
            return f"the domain {self.domain!r} is not a host name."
        if self.name.startswith("__Secure-") and not self.secure:
            return f"a {self.name.split('-')[0]}- cookie needs Secure."
        if self.name.startswith("__Host-") and (not self.secure or self.path != "/" or self.domain is not None):
            return "a __Host- cookie needs Secure, Path=/ and no Domain."
        return None


# -- the cookie -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sealed:
    """A sealed session: the cookie's value, its key id and when it expires (Unix seconds)."""

    value: str
    kid: str
    issued_at: int
    expires_at: int


def _aad(name: str, kid: str) -> bytes:
    return b"fastkrb-session" + bytes((VERSION, 0)) + name.encode() + b"\0" + kid.encode()


def _payload(result: Any, iat: int, exp: int) -> dict[str, Any]:
    d: dict[str, Any] = {"c": result.client, "r": result.client_realm, "s": result.server, "iat": iat, "exp": exp}
    ident = result.identity
    if ident is not None:
        f = ident if isinstance(ident, IdentityFacts) else IdentityFacts.of(ident)
        i: dict[str, Any] = {"u": f.user_sid, "p": f.primary_group_sid, "g": list(f.group_sids), "n": f.group_count}
        for k, v in (("ln", f.logon_name), ("ld", f.logon_domain), ("dd", f.dns_domain), ("upn", f.upn)):
            if v is not None:
                i[k] = v
        if f.upn_implicit:
            i["ui"] = 1
        d["i"] = i
    return d


def _str(d: dict[str, Any], k: str) -> str:
    v = d[k]
    if not isinstance(v, str):
        raise TypeError(k)
    return v


def _opt(d: dict[str, Any], k: str) -> str | None:
    v = d.get(k)
    if v is not None and not isinstance(v, str):
        raise TypeError(k)
    return v


def _int(d: dict[str, Any], k: str) -> int:
    v = d[k]
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(k)
    return v


def _identity(i: Any) -> IdentityFacts | None:
    if i is None:
        return None
    if not isinstance(i, dict) or not isinstance(i.get("g"), list) or not all(isinstance(s, str) for s in i["g"]):
        raise TypeError("i")
    return IdentityFacts(user_sid=_str(i, "u"), primary_group_sid=_str(i, "p"), group_sids=tuple(i["g"]),
                         group_count=_int(i, "n"), logon_name=_opt(i, "ln"), logon_domain=_opt(i, "ld"),
                         dns_domain=_opt(i, "dd"), upn=_opt(i, "upn"), upn_implicit=bool(i.get("ui")))


class SessionCookies:
    """Seal an accepted ticket's client into a cookie, and open the cookie again.

    ``keys``: a key file's path (re-read when it changes, every ``reload_interval`` seconds at most), or
    :class:`SessionKey` objects. ``clock`` (Unix seconds) replaces ``time.time`` where no ``now`` is given.
    ``cache_size``: how many opened cookies to remember (0: none); each costs its value and a Principal.
    """

    def __init__(self, keys: str | os.PathLike[str] | Sequence[SessionKey] | KeyRing[SessionKey],
                 settings: CookieSettings | None = None, *, reload_interval: float = 1.0,
                 cache_size: int = CACHE_SIZE) -> None:
        self.settings = settings or CookieSettings()
        if isinstance(keys, KeyRing):
            self.ring = keys
        elif isinstance(keys, (str, os.PathLike)):
            self.ring = KeyRing(parse_session_keys, path=keys, reload_interval=reload_interval)
        else:
            self.ring = KeyRing(parse_session_keys, keys=tuple(keys))
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError(f"Session cookie cache size {cache_size!r} is not a count of 0 or more.",
                                     "Give the number of opened cookies to remember (0 turns the memory off).")
        self.cache_size = cache_size
        #: Bumped whenever the remembered sessions are dropped (the key set changed): a copy elsewhere (the
        #: sidecar's native answer table) compares it and drops its own.
        self.generation = 0
        self._opened: OrderedDict[str, tuple[Principal, float]] = OrderedDict()   # value -> (session, its end)
        self._opened_keys: tuple[SessionKey, ...] = self.ring.keys()
        self._aead: dict[bytes, AESGCM] = {}
        self._aad: dict[str, bytes] = {}
        s = self.settings
        attrs = [f"Path={s.path}"]
        if s.domain:
            attrs.append(f"Domain={s.domain}")
        if s.secure:
            attrs.append("Secure")
        if s.http_only:
            attrs.append("HttpOnly")
        if s.same_site:
            attrs.append(f"SameSite={s.same_site}")
        self._attrs = "; " + "; ".join(attrs)

    def _cipher(self, key: SessionKey) -> AESGCM:
        c = self._aead.get(key.key)
        if c is None:
            if len(self._aead) > 64:
                self._aead.clear()
            c = self._aead[key.key] = AESGCM(key.key)
        return c

    def _ad(self, kid: str) -> bytes:
        ad = self._aad.get(kid)
        if ad is None:
            if len(self._aad) > 64:
                self._aad.clear()
            ad = self._aad[kid] = _aad(self.settings.name, kid)
        return ad

    def keys(self) -> tuple[SessionKey, ...]:
        """The keys in service (the file looked at when due); a changed key set drops every remembered
        session at once, so a key removed from the file takes its sessions with it here too."""
        keys = self.ring.keys()
        if keys is not self._opened_keys:
            self._opened_keys = keys
            self._opened.clear()
            self.generation += 1
        return keys

    def forget(self) -> None:
        """Drop every remembered session (they are opened again, in full, on their next use)."""
        self._opened.clear()
        self.generation += 1

    @property
    def remembered(self) -> int:
        """How many opened cookies are remembered now."""
        return len(self._opened)

    # -- seal ---------------------------------------------------------------------------------------------

    def _seal(self, result: Any, t: float) -> tuple[Sealed, str]:
        iat = int(t)
        exp = int(min(float(result.end_time), t + self.settings.max_age))
        if exp <= iat:
            raise SessionExpired(f"The ticket of {result.client} ends at {utc_iso(result.end_time)}: too soon for a "
                                 "session cookie.", details={"client": result.client, "end_time": result.end_time})
        key = self.keys()[0]
        body = json.dumps(_payload(result, iat, exp), separators=(",", ":"), ensure_ascii=False).encode()
        comp = zlib.compressobj(*_DEFLATE)
        packed = comp.compress(body) + comp.flush()
        nonce = secrets.token_bytes(NONCE)
        kid = key.kid.encode()
        sealed = self._cipher(key).encrypt(nonce, packed, self._ad(key.kid))
        value = base64.urlsafe_b64encode(bytes((VERSION, len(kid))) + kid + nonce + sealed).rstrip(b"=").decode()
        s = Sealed(value, key.kid, iat, exp)
        header = self.set_cookie(s, now=t)
        size = len(header)
        if size > COOKIE_LIMIT:
            groups = len(result.identity.group_sids) if result.identity is not None else 0
            raise SessionTooLarge(f"The session cookie of {result.client} would take {size} bytes ({groups} group "
                                  f"SIDs), over the {COOKIE_LIMIT} bytes a browser keeps of one cookie.",
                                  details={"client": result.client, "bytes": size, "group_sids": groups})
        return s, header

    def seal(self, result: Any, now: float | None = None) -> Sealed:
        """Seal ``result`` (an ``AuthResult`` the validator and the policy accepted: ``client``,
        ``client_realm``, ``server``, ``end_time``, ``identity``) with the newest key.

        Raises ``SessionExpired`` when the ticket ends within a second, ``SessionTooLarge`` when the cookie
        would not fit a browser's 4096 bytes: then set no cookie; the client keeps using Negotiate."""
        return self._seal(result, time.time() if now is None else now)[0]

    def set_cookie(self, sealed: Sealed, now: float | None = None) -> str:
        """The ``Set-Cookie`` header value: Max-Age until the session's expiry, and the configured attributes."""
        t = time.time() if now is None else now
        return f"{self.settings.name}={sealed.value}; Max-Age={max(1, int(sealed.expires_at - t))}{self._attrs}"

    def issue(self, result: Any, now: float | None = None) -> str:
        """``seal`` then ``set_cookie``: the Set-Cookie value for an accepted ticket."""
        return self._seal(result, time.time() if now is None else now)[1]

    def clear_cookie(self) -> str:
        """A ``Set-Cookie`` value that makes the browser drop the cookie (logout, or after a refused one)."""
        return f"{self.settings.name}=; Max-Age=0{self._attrs}"

    # -- open ---------------------------------------------------------------------------------------------

    def value_from(self, cookie_headers: str | Iterable[str] | None) -> str | None:
        """The value of this cookie in ``Cookie`` request header(s), or None when it is not there."""
        if cookie_headers is None:
            return None
        if isinstance(cookie_headers, str):
            cookie_headers = (cookie_headers,)
        name = self.settings.name
        for header in cookie_headers:
            if name not in header:
                continue
            for item in header.split(";"):
                k, eq, v = item.strip().partition("=")
                if eq and k == name:
                    return v.strip().strip('"')
        return None

    def authenticate(self, cookie_headers: str | Iterable[str] | None, now: float | None = None) -> Principal | None:
        """The session in the request's ``Cookie`` header(s): None when it has none of ours; a refusal raises
        ``SessionInvalid`` / ``SessionExpired`` (answer as without a cookie: 401 with a Negotiate challenge)."""
        value = self.value_from(cookie_headers)
        return None if value is None else self.open(value, now)

    def end_of(self, principal: Principal) -> int:
        """When the session ends (Unix seconds): its expiry, or its issue time + ``max_age`` when sooner."""
        return min(principal.expires_at, principal.issued_at + self.settings.max_age)

    def open(self, value: str, now: float | None = None) -> Principal:
        """Open a cookie's value: the :class:`Principal` it holds, or ``SessionInvalid`` / ``SessionExpired``."""
        keys = self.keys()
        hit = self._opened.get(value) if type(value) is str else None
        if hit is not None:
            t = time.time() if now is None else now
            if t < hit[1]:
                self._opened.move_to_end(value)
                return hit[0]
            del self._opened[value]   # ended: opened in full below, which says why
        p = self._open(value, keys, now)
        if self.cache_size:
            opened = self._opened
            opened[value] = (p, self.end_of(p))
            if len(opened) > self.cache_size:
                opened.popitem(last=False)
        return p

    def _open(self, value: str, keys: tuple[SessionKey, ...], now: float | None) -> Principal:
        name = self.settings.name
        facts: dict[str, Any] = {"cookie": name}
        if not isinstance(value, str) or not value or len(value) > _MAX_VALUE or not _B64URL.fullmatch(value):
            raise self._invalid("malformed", "is not a fastkrb session cookie (not base64url, or too long)", facts)
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except binascii.Error:   # a length no encoding produces (4n + 1)
            raise self._invalid("malformed", "is not a fastkrb session cookie (not base64url)", facts) from None
        # One spelling per cookie: a last character whose unused low bits are set decodes to the same bytes, so
        # without this a sealed cookie would have several accepted values (each a miss of the memory of opened ones).
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != value:
            raise self._invalid("malformed", "is not in canonical base64url (its last character carries bits no "
                                "encoder writes)", facts)
        if len(raw) < 2 or raw[0] != VERSION:
            raise self._invalid("version", f"has format version {raw[0] if raw else None}, not {VERSION}", facts)
        n = raw[1]
        if len(raw) < 2 + n + NONCE + TAG:
            raise self._invalid("malformed", "is too short to be a fastkrb session cookie", facts)
        try:
            kid = raw[2:2 + n].decode("ascii")
        except UnicodeDecodeError:
            raise self._invalid("malformed", "has a key id that is not ASCII", facts) from None
        facts["kid"] = kid
        key = next((k for k in keys if k.kid == kid), None)
        if key is None:
            where = f" of {self.ring.path}" if self.ring.path else ""
            raise SessionInvalid(
                f"The session cookie {name} was sealed with key {kid!r}, which the session key file{where} no "
                "longer holds (rotated out or revoked): its session is over.",
                "The client authenticates with Negotiate again and gets a new cookie. If only some replicas "
                "refuse it, they read different key files: give them all the same one.",
                {**facts, "reason": "unknown_kid"})
        body = raw[2 + n:]
        try:
            packed = self._cipher(key).decrypt(body[:NONCE], body[NONCE:], self._ad(kid))
        except InvalidTag:
            raise self._invalid("integrity", "does not verify: it was altered, or sealed for another cookie name "
                                "or with another key under the same id", facts) from None
        try:
            inflate = zlib.decompressobj(_INFLATE_WBITS)
            text = inflate.decompress(packed, _MAX_PAYLOAD)
            if inflate.unconsumed_tail or not inflate.eof:
                raise ValueError("payload too large or truncated")
            d = json.loads(text)
            if not isinstance(d, dict):
                raise TypeError("payload")
            p = Principal(client=_str(d, "c"), client_realm=_str(d, "r"), server=_str(d, "s"),
                          identity=_identity(d.get("i")), issued_at=_int(d, "iat"), expires_at=_int(d, "exp"),
                          via="cookie", kid=kid)
        except (ValueError, TypeError, KeyError, zlib.error):
            # authenticated, so sealed by a holder of the key: a fastkrb that wrote another layout
            raise self._invalid("payload", "opens but its contents are not this fastkrb's layout", facts) from None
        t = time.time() if now is None else now
        end = self.end_of(p)
        if t >= end:
            why = "its expiry" if end == p.expires_at else f"the maximum age of {self.settings.max_age} s"
            raise SessionExpired(f"The session cookie {name} of {p.client} ended at {utc_iso(end)} ({why}).",
                                 details={**facts, "client": p.client, "expired_at": end,
                                          "reason": "expiry" if end == p.expires_at else "max_age"})
        return p

    def _invalid(self, reason: str, what: str, facts: dict[str, Any]) -> SessionInvalid:
        return SessionInvalid(f"The session cookie {self.settings.name} {what}.", None, {**facts, "reason": reason})
