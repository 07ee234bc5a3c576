"""The HTTP/1.1 front door for proxies: nginx ``auth_request``, Envoy ``ext_authz``, Traefik ``forwardAuth``.

``/auth`` (any method, any path below it, as Envoy's ``path_prefix`` makes) validates the request's
``Authorization: Negotiate`` header, and applies a policy when the request names one: ``/auth?policy=NAME``,
``/auth?allowed_groups=...&allowed_users=...&allowed_realms=...`` (see sidecar/policies.py), or
``/auth/policy/NAME[/...]``. The query of any other ``/auth/...`` path is the client's (Envoy appends it),
and is never read.

* 200 with ``X-Remote-User`` (short name), ``X-Remote-Principal``, ``X-Remote-Realm``; from a PAC also
  ``X-Remote-SID`` and ``X-Remote-UPN`` and, with ``remote_groups``, ``X-Remote-Groups`` (at most
  ``GROUPS_MAX_BYTES``; past that the list is cut at a comma and ``X-Remote-Groups-Truncated: <total>`` says
  how many there were); ``X-Remote-Policy`` when a policy allowed the client; and, when the client asked
  for mutual authentication, ``WWW-Authenticate: Negotiate <AP-REP>`` (RFC 4559 §5).
* 401 with ``WWW-Authenticate: Negotiate`` (always: nginx forwards a 401 without a challenge as is),
  ``X-Auth-Error: <code>`` and ``{"code", "cause"}``: no token (``no_token``) or a rejected one.
* With a challenge rule (``challenge_*``, sidecar/challenge.py): a request without a token that the rule does
  not offer Negotiate gets 401 without ``WWW-Authenticate: Negotiate``, with ``X-Auth-Fallback: <reason>``
  (and ``X-Auth-Redirect: <url>``) and the fallback page; an NTLM token, with ``ntlm_page``, gets that page the
  same way (``X-Auth-Error: unsupported_mechanism`` stays). ``GET /challenge/<reason>`` serves the pages for
  nginx's ``error_page 401``.
* 403 with ``X-Auth-Error: forbidden`` and ``{"code", "cause", "policy", "constraint"}``: a valid ticket of a
  client the policy does not allow (no challenge: authenticating again would not help).
* 503 with ``Retry-After`` when the replay cache cannot answer, 500 for the sidecar's own faults and for a
  request naming a policy that does not exist.

``/healthz`` (200 ready / 503 not) and ``/metrics`` (Prometheus text). Parsing is httptools (llhttp).
The token is never echoed: no response and no log line contains it.

With the native request path (``ctx.front``, a ``_native.NativeFront``) a chunk goes to C first: it reads the
heads of plain ``GET``/``HEAD /auth`` requests with one Negotiate token (strictly, RFC 9112: when in doubt it
leaves the head to httptools) and answers their acceptance with the same bytes as ``_answer``. It hands back,
in request order, rejections (``_native_rejected``), acceptances that need the AuthResult
(``_native_accepted``: PAC identity headers), every other complete bodiless head (``_slow_head``: httptools
answers it here, as always) and anything it does not read at all (``_slow_rest``: httptools takes the rest of
the connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from fastkrb import _native
from fastkrb.challenge import Offer
from fastkrb.errors import Forbidden, InternalError, KerberosError
from fastkrb.krb.negotiate import negotiate_token
from fastkrb.sidecar.batch import submit
from fastkrb.sidecar.challenge import SidecarChallenge
from fastkrb.sidecar.conn import Connection
from fastkrb.sidecar.policies import PolicyError

if TYPE_CHECKING:
    from fastkrb.policy import Policy
    from fastkrb.sessions.principal import Principal
    from fastkrb.sidecar.sessions import SidecarSessions

__all__ = ["GROUPS_MAX_BYTES", "HttpHandler", "groups_header", "header_value"]

#: The largest X-Remote-Groups value: with the other answer headers it fits nginx's proxy_buffer_size of 16k
#: in deploy/nginx/fastkrb.conf (and Envoy's and Traefik's defaults). About 180 SIDs or 400 short names.
GROUPS_MAX_BYTES = 8192

_STATUS = {200: b"200 OK", 302: b"302 Found", 303: b"303 See Other", 307: b"307 Temporary Redirect",
           400: b"400 Bad Request", 401: b"401 Unauthorized", 403: b"403 Forbidden",
           404: b"404 Not Found", 405: b"405 Method Not Allowed",
           408: b"408 Request Timeout", 413: b"413 Content Too Large", 431: b"431 Request Header Fields Too Large",
           500: b"500 Internal Server Error", 503: b"503 Service Unavailable"}
_KEEP = b"Cache-Control: no-store\r\n"
_JWKS_PATHS = (b"/.well-known/jwks.json", b"/jwks")
_NOT_ISSUED_LOGGED: dict[str, float] = {}   # code -> when a session_not_issued line last said it
_perf = time.perf_counter


def _bearer_token(auth: bytes) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme case-insensitive, RFC 6750 §2.1), or None."""
    scheme, _, rest = auth.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    tok = rest.strip()
    return tok.decode("latin-1") if tok else None
_CLOSE = b"Connection: close\r\n"


def _path_policy(path: bytes) -> bytes:
    """``/auth/policy/NAME[/...]`` -> ``policy=NAME`` (for Envoy, whose path_prefix can carry the name); any other
    path below /auth names no policy."""
    if path.startswith(b"/auth/policy/"):
        name = path[13:].split(b"/", 1)[0]
        if name:
            return b"policy=" + name
    return b""


def _policy_fault(exc: Exception, query: bytes, close: bool) -> bytes:
    """500: the request names a policy the sidecar cannot apply. The operator's fault, not the token's: fail
    closed, and say which."""
    body = json.dumps({"code": "internal", "cause": f"The /auth request names a policy this sidecar cannot apply: "
                                                    f"{exc}.", "query": query.decode("utf-8", "replace")[:500]},
                      ensure_ascii=False).encode()
    return _response(500, [b"X-Auth-Error: internal\r\n", b"Content-Type: application/json\r\n"], body, close)


class _Refuse(Exception):
    """Stop parsing: the request breaks a limit (status and reason on the handler)."""


def header_value(s: str) -> bytes:
    """UTF-8 for a response header, with control characters %-escaped: a name can never split a header."""
    b = s.encode("utf-8", "replace")
    if not s.isprintable():   # C0/C1 controls, DEL, line separators: escape every byte below 0x20 and DEL
        b = b"".join(b"%%%02X" % c if (c < 0x20 or c == 0x7F) else bytes((c,)) for c in b)
    return b


_IDENTITY: dict[str, bytes] = {}   # client principal -> its three identity header lines


def _identity(res: Any) -> bytes:
    client = res.client
    block = _IDENTITY.get(client)
    if block is None:
        if len(_IDENTITY) >= 4096:
            _IDENTITY.clear()
        block = b"".join((b"X-Remote-User: ", header_value(res.short_name), b"\r\nX-Remote-Principal: ",
                          header_value(client), b"\r\nX-Remote-Realm: ", header_value(res.client_realm), b"\r\n"))
        _IDENTITY[client] = block
    return block


_GROUPS: dict[tuple[Any, ...], bytes] = {}   # (mode, names generation, SIDs) -> the X-Remote-Groups lines


def groups_header(sids: tuple[str, ...], names: Any, limit: int = GROUPS_MAX_BYTES) -> bytes:
    """``X-Remote-Groups: a,b,c`` (SIDs, or map names when ``names`` is given; a SID the map lacks stands for
    itself), cut at the last whole item within ``limit`` bytes; then ``X-Remote-Groups-Truncated: <total>``."""
    items = names.display(sids) if names is not None else sids
    value = header_value(",".join(items))
    extra = b""
    if len(value) > limit:
        cut = value.rfind(b",", 0, limit + 1)
        value = value[:max(cut, 0)]
        extra = b"X-Remote-Groups-Truncated: %d\r\n" % len(items)
    return b"X-Remote-Groups: " + value + b"\r\n" + extra


def _pac_identity(res: Any, mode: str, names: Any) -> bytes:
    """X-Remote-SID, X-Remote-UPN and X-Remote-Groups of a ticket with a PAC identity (b"" without one)."""
    ident = res.identity
    if ident is None:
        return b""
    out = b"X-Remote-SID: " + header_value(ident.user_sid) + b"\r\n"
    if ident.upn:
        out += b"X-Remote-UPN: " + header_value(ident.upn) + b"\r\n"
    if mode != "off":
        sids = tuple(ident.group_sids)
        key = (mode, names.generation if names is not None else -1, sids)
        block = _GROUPS.get(key)
        if block is None:
            if len(_GROUPS) >= 1024:
                _GROUPS.clear()
            block = _GROUPS[key] = groups_header(sids, names if mode == "name" else None)
        out += block
    return out


def _response(status: int, headers: list[bytes], body: bytes, close: bool) -> bytes:
    return b"".join((b"HTTP/1.1 ", _STATUS[status], b"\r\n", *headers, _KEEP, _CLOSE if close else b"",
                     b"Content-Length: %d\r\n\r\n" % len(body), body))


_ERROR_STATUS = {"internal": 500, "replay_cache_unavailable": 503, "forbidden": 403}


def _challenge(exc: KerberosError, token: bytes | None) -> bytes:
    """The 401's challenge for a refused ``token``: ``Negotiate <KRB-ERROR>`` when the client asked for mutual
    authentication and the refusal has an RFC 4120 code (krb/krberror.py: MIT's initiator then names the
    reason), else a bare ``Negotiate``. Built on the rejection path only."""
    # imported on the rejection path (cached after the first)
    from fastkrb.krb.krberror import ANSWERED_CODES, error_header

    if token is None or exc.code not in ANSWERED_CODES:
        return b"Negotiate"
    try:
        value = error_header(exc, token)
    except Exception as exc2:   # the refusal stands whatever its answer token's fate: a bare challenge then
        logging.getLogger("fastkrb").warning("fastkrb: no KRB-ERROR answer for a refused %s token (%s); the 401 "
                                             "carries a bare Negotiate", exc.code, type(exc2).__name__)
        value = None
    return value.encode("ascii") if value else b"Negotiate"


def _rejection(exc: KerberosError, close: bool, token: bytes | None = None, extra: tuple[bytes, ...] = ()) -> bytes:
    """The answer to a refusal; ``token``: the refused Negotiate token (for the KRB-ERROR challenge)."""
    status = _ERROR_STATUS.get(exc.code, 401)
    doc: dict[str, Any] = {"code": exc.code, "cause": exc.cause}
    headers = [b"X-Auth-Error: " + exc.code.encode() + b"\r\n", b"Content-Type: application/json\r\n", *extra]
    if status == 403:   # authenticated, not allowed: no challenge (a new token would not change the answer)
        doc["policy"] = exc.details.get("policy")
        doc["constraint"] = exc.details.get("constraint")
    else:
        headers.insert(0, b"WWW-Authenticate: " + _challenge(exc, token) + b"\r\n")
    body = json.dumps(doc, ensure_ascii=False).encode()
    if status == 503:
        headers.append(b"Retry-After: 1\r\n")
    return _response(status, headers, body, close)


class HttpHandler:
    """httptools callbacks for one connection; answers in request order."""

    __slots__ = ("auth", "batched", "body_size", "buf", "chal", "collect", "collect_close", "conn", "cookies", "ctx",
                 "front", "head_raw", "head_size", "in_head", "parser", "peer_addr", "peer_json", "pending", "refuse",
                 "sess", "ua", "url", "xff")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.sess: SidecarSessions | None = conn.ctx.sessions
        self.cookies: list[bytes] | None = None   # the request's Cookie header(s), read with session cookies on
        # None: httptools reads everything (also once _slow_rest handed it over). With session cookies on, the
        # native path answers only the cookies Python opened before (sess.native; every Negotiate acceptance
        # needs a Set-Cookie, so it goes to Python); without that table this front door is httptools' alone.
        sess = self.sess
        self.front = (conn.ctx.front if sess is None or sess.cookies is None or sess.native is not None
                      else None)
        # the challenge rule (None: off). With a tried cookie every acceptance may have to clear it: Python's path.
        self.chal = conn.ctx.challenge
        self.ua: bytes | None = None
        self.peer_addr: str | None = None   # the TCP peer's host for the rule; None on the Unix socket
        if self.chal is not None:
            if self.chal.rule.tried_cookie is not None:
                self.front = None
            transport = getattr(conn, "transport", None)
            addr = transport.get_extra_info("peername") if transport is not None else None
            if isinstance(addr, tuple):
                self.peer_addr = str(addr[0])
        self.buf = b""                # the native path's partial head
        self.peer_json = json.dumps(conn.peer, ensure_ascii=False)[1:-1].encode()
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.auth: bytes | None = None
        self.xff: bytes | None = None
        self.head_size = 0
        self.head_raw = 0
        self.body_size = 0
        self.in_head = False
        self.refuse: tuple[int, str] | None = None
        self.pending: deque[list[Any]] = deque()   # [response or None, close] in request order (async only)
        # a Redis replay cache: the native path's checks, then one round trip per chunk (_native.http_batch); its
        # batches take their place in ``pending``
        self.batched = self.front is not None and conn.ctx.engine.is_async
        self.collect: list[bytes] | None = None   # while a batch is answered: where _emit puts answers
        self.collect_close = False

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        front = self.front
        if front is None:
            self._feed(data)
            return
        conn = self.conn
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.batched:
            used = _native.http_batch(front, self, data, conn, self.ctx.draining)
        else:
            used = front.http(self, data, conn.wbuf, conn, self.peer_json, self.ctx.draining)
        if used == -2:   # the validator in service needs Python (never with the sidecar's own replay caches)
            self._slow_rest(data)
        elif used >= 0:
            self.buf = data[used:] if used < len(data) else b""
            conn.partial_since = (conn.partial_since or self.ctx.now) if self.buf else 0.0

    def _replay_batch(self, batch: Any) -> None:
        """http_batch's requests: one round trip for their replay keys; their answers take this place in the
        request order (``pending``)."""
        slot: list[Any] = [None, False, None]
        self.pending.append(slot)
        submit(self.conn, batch, lambda answers: self._batch_done(slot, batch, answers))

    def _batch_done(self, slot: list[Any], batch: Any, answers: Any) -> None:
        """The batch's answers, natively encoded or emitted by the handlers below, gathered into its slot."""
        out: list[bytes] = []
        self.collect, self.collect_close = out, False
        try:
            closed = _native.http_batch_finish(self.ctx.front, self, batch, answers, out, self.conn, self.peer_json)
        finally:
            self.collect = None
        slot[1] = closed or self.collect_close
        slot[0] = b"".join(out)
        self._release()
        if not self.conn.closing:   # a connection gone meanwhile: counted and logged, nothing to write to
            self.conn.flush()

    def _slow_head(self, head: bytes) -> None:
        """One complete, bodiless request head the native path leaves to httptools (/healthz, a policy, ...)."""
        self._feed(head)

    def _slow_rest(self, data: bytes) -> None:
        """The rest of the connection is httptools' (a body, an upgrade, a head the native path does not read)."""
        self.front = None
        self._feed(data)

    def _peer(self, xff: bytes | None) -> str:
        conn = self.conn
        return conn.peer if xff is None else f"{conn.peer} for={xff.decode('latin-1')[:200]}"

    def _native_rejected(self, exc: Any, latency: float, close: bool, xff: bytes | None,
                         token: bytes | None = None) -> None:
        """A rejection the native path decided: counted, logged and answered as decide()'s would be; ``token``
        (the refused base64 text) for the KRB-ERROR challenge."""
        engine = self.ctx.engine
        peer = self._peer(xff)
        res = (engine._rejected(exc, latency, peer, "http") if isinstance(exc, KerberosError)
               else engine._internal(exc, latency, peer, "http"))
        self._emit(self._answer(res, close, None, token), close)

    def _native_accepted(self, res: Any, latency: float, close: bool, xff: bytes | None) -> None:
        """An acceptance the native path could not answer alone (PAC identity headers, a name not UTF-8)."""
        res = self.ctx.engine._accepted(res, latency, self._peer(xff), "http")
        self._emit(self._answer(res, close), close)

    def _feed(self, data: bytes) -> None:
        """httptools' path: parse ``data``, answer every complete request (callbacks below)."""
        conn = self.conn
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self.refuse is None:
                raise
            self._fail(*self.refuse)
            return
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade not supported")
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"not HTTP/1.1 ({exc})")
            return
        if self.in_head:  # a head still incomplete: bound what llhttp buffers for it
            self.head_raw += len(data)
            if self.head_raw > 2 * self.ctx.cfg.max_request_size:
                self._fail(431, "request head too large")
                return
            if not conn.partial_since:
                conn.partial_since = self.ctx.now

    def _fail(self, status: int, why: str) -> None:
        self.ctx.stats.count("protocol_error", "http")
        body = json.dumps({"code": "bad_request", "cause": why}).encode()
        self._emit(_response(status, [b"Content-Type: application/json\r\n"], body, True), True)

    def idle(self) -> bool:
        return not self.in_head and not self.pending and not self.buf

    def timeout(self) -> None:
        if self.in_head or self.conn.partial_since:
            body = b'{"code":"bad_request","cause":"request not complete within the timeout"}'
            self.conn.wbuf.append(_response(408, [b"Content-Type: application/json\r\n"], body, True))

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.auth = None
        self.xff = None
        self.cookies = None
        self.ua = None
        self.head_size = 0
        self.head_raw = 0
        self.body_size = 0
        self.in_head = True
        self.conn.partial_since = self.ctx.now

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.ctx.cfg.max_request_size:
            self.refuse = (431, "request head too large")
            raise _Refuse

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.ctx.cfg.max_request_size:
            self.refuse = (431, "request head too large")
            raise _Refuse
        n = len(name)
        if n == 13 and name.lower() == b"authorization":
            self.auth = value
        elif n == 15 and name.lower() == b"x-forwarded-for":
            self.xff = value
        elif n == 6 and name.lower() == b"cookie" and (self.sess is not None or self.chal is not None):
            if self.cookies is None:
                self.cookies = [value]
            else:
                self.cookies.append(value)
        elif n == 10 and self.chal is not None and name.lower() == b"user-agent":
            self.ua = value

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.ctx.cfg.max_request_size:
            self.refuse = (413, "request body too large")
            raise _Refuse

    def on_message_complete(self) -> None:
        conn = self.conn
        conn.partial_since = 0.0
        if conn.closing:
            return
        close = not self.parser.should_keep_alive() or self.ctx.draining
        url = self.url
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        if path == b"/auth":
            self._auth(close, url[q + 1:] if q >= 0 else b"")
        elif path.startswith(b"/auth/"):
            self._auth(close, _path_policy(path))
        elif path == b"/token" and self.sess is not None and self.sess.issuer is not None:
            if self.parser.get_method() != b"POST":
                self._not_allowed(b"POST", close)
            else:
                self._auth(close, url[q + 1:] if q >= 0 else b"", exchange=True)
        elif path in _JWKS_PATHS and self.sess is not None and self.sess.verifier is not None:
            method = self.parser.get_method()
            if method not in (b"GET", b"HEAD"):
                self._not_allowed(b"GET, HEAD", close)
            else:
                try:
                    body, status = self.sess.jwks_body(), 200
                except Exception as exc:   # a key file gone bad is logged by its ring; the keys in service stay
                    body, status = json.dumps({"code": "internal", "cause": f"JWKS: {exc}"}).encode(), 500
                out = _response(status, [b"Content-Type: application/json\r\n"], body, close)
                self._emit(out[:len(out) - len(body)] if method == b"HEAD" else out, close)   # HEAD: no body
        elif path.startswith(b"/challenge/") and self.chal is not None:
            fb = self.chal.page(path[11:].decode("latin-1"))
            self._emit(_response(fb.status, self.chal.fallback_headers(fb), fb.body, close), close)
        elif path == b"/healthz":
            h = self.ctx.health()
            body = json.dumps(h).encode()
            self._emit(_response(200 if h.get("ready") else 503, [b"Content-Type: application/json\r\n"], body,
                                 close), close)
        elif path == b"/metrics":
            try:
                body = self.ctx.metrics()
                status = 200
            except Exception as exc:  # never let a scrape take the worker down
                body, status = f"metrics failed: {exc}\n".encode(), 500
            self._emit(_response(status, [b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"], body,
                                 close), close)
        else:
            body = b'{"code":"not_found","cause":"try /auth, /healthz or /metrics"}'
            self._emit(_response(404, [b"Content-Type: application/json\r\n"], body, close), close)

    def _not_allowed(self, allow: bytes, close: bool) -> None:
        body = b'{"code":"method_not_allowed","cause":"use ' + allow.split(b",")[0] + b'"}'
        self._emit(_response(405, [b"Allow: " + allow + b"\r\n", b"Content-Type: application/json\r\n"], body,
                             close), close)

    # -- /auth --------------------------------------------------------------------------------------

    def _auth(self, close: bool, query: bytes, exchange: bool = False) -> None:
        """/auth (and, ``exchange``, POST /token): a Negotiate token, else a bearer token or a session cookie
        when they are on, else the challenge."""
        auth = self.auth
        conn = self.conn
        peer = conn.peer if self.xff is None else f"{conn.peer} for={self.xff.decode('latin-1')[:200]}"
        policy: Policy | None = None
        if query:
            book = self.ctx.policies
            try:
                if book is None:
                    raise PolicyError("this sidecar has no policies")
                policy = book.resolve(query)
            except PolicyError as exc:
                self.ctx.engine.policy_fault(peer, "http", f"policy: {exc}")
                self._emit(_policy_fault(exc, query, close), close)
                return
        token = negotiate_token(auth)
        sess = self.sess
        if token is None and sess is not None and not exchange:
            if auth is not None and sess.verifier is not None:
                bearer = _bearer_token(auth)
                if bearer is not None:
                    self._emit(self._session("bearer", bearer, peer, policy, close), close)
                    return
            if self.cookies is not None and sess.cookies is not None:
                out = self._session("session", self.cookies, peer, policy, close)
                if out:
                    self._emit(out, close)
                    return
        if token is None:
            why = ("no Authorization header" if auth is None
                   else "the Authorization header carries no Negotiate token")
            if self.chal is not None:
                self._emit(self._no_token(self.chal, why, peer, close), close)
                return
            self.ctx.engine.no_token(peer, why)
            body = json.dumps({"code": "no_token", "cause": why}).encode()
            self._emit(_response(401, [b"WWW-Authenticate: Negotiate\r\n", b"X-Auth-Error: no_token\r\n",
                                       b"Content-Type: application/json\r\n"], body, close), close)
            return
        engine = self.ctx.engine
        tried = self._tried()
        if not engine.is_async:
            self._emit(self._answer(engine.decide(token, None, peer, "http", policy), close, policy, token, exchange,
                                    tried), close)
            return
        slot: list[Any] = [None, close, policy, token, exchange, tried]
        self.pending.append(slot)
        conn.inflight += 1
        fut = asyncio.ensure_future(engine.adecide(token, None, peer, "http", policy))
        fut.add_done_callback(lambda f: self._done(slot, f))

    def _answer(self, out: Any, close: bool, policy: Policy | None = None, token: bytes | None = None,
                exchange: bool = False, tried: str | None = None) -> bytes:
        """The answer to a Negotiate decision: the rejection (with the KRB-ERROR challenge for ``token``; an
        NTLM token's page with ``ntlm_page``), or 200 with the identity (and a session cookie when they are on,
        else the removal of the tried cookie ``tried``), or for ``exchange`` (POST /token) the bearer token."""
        if isinstance(out, KerberosError):
            self.conn.verdict(out.code == "malformed")
            if out.code == "unsupported_mechanism" and self.chal is not None:
                fb = self.chal.rule.ntlm_answer()
                if fb is not None:
                    self.ctx.stats.count("challenge_fallback", "ntlm")
                    body = fb.body
                    return _response(401, [b"X-Auth-Error: unsupported_mechanism\r\n",
                                           *self.chal.fallback_headers(fb)], body, close)
            return _rejection(out, close, token)
        if self.conn.bad:
            self.conn.verdict(False)
        sess = self.sess
        if exchange:
            return self._exchange(out, close)
        headers = [_identity(out)]
        book = self.ctx.policies
        pac = _pac_identity(out, self.ctx.cfg.remote_groups, book.names if book is not None else None)
        if pac:
            headers.append(pac)
        if policy is not None and policy.name:
            headers.append(b"X-Remote-Policy: " + header_value(policy.name) + b"\r\n")
        if out.response_token is not None:
            headers.append(b"WWW-Authenticate: " + out.www_authenticate.encode() + b"\r\n")
        if sess is not None and sess.cookies is not None:
            try:
                cookie = sess.cookies.issue(out)
            except KerberosError as exc:   # too large for a browser, or the ticket ends now: Negotiate goes on
                self._not_issued("session", exc)
            else:
                self.ctx.stats.count("issued", "session")
                headers.append(b"Set-Cookie: " + cookie.encode("ascii") + b"\r\n")
                tried = None   # one Set-Cookie per answer: nginx passes one (docs/sidecar.md#honest-challenges)
        if tried is not None:
            headers.append(b"Set-Cookie: " + tried.encode("latin-1") + b"\r\n")
        return _response(200, headers, b"", close)

    def _exchange(self, res: Any, close: bool) -> bytes:
        """POST /token after an accepted ticket: ``{"access_token", "token_type", "expires_in"}`` (RFC 6749
        §5.1; Cache-Control no-store as it asks), and the AP-REP when the client asked for mutual
        authentication."""
        sess = self.sess
        assert sess is not None and sess.issuer is not None
        try:
            issued = sess.issuer.issue(res)
        except KerberosError as exc:   # the ticket ends within a second: a new ticket first (401, challenge)
            self._not_issued("bearer", exc)
            return _rejection(exc, close)
        self.ctx.stats.count("issued", "bearer")
        headers = [b"Content-Type: application/json\r\n"]
        if res.response_token is not None:
            headers.append(b"WWW-Authenticate: " + res.www_authenticate.encode() + b"\r\n")
        return _response(200, headers, json.dumps(issued.to_dict()).encode(), close)

    def _not_issued(self, via: str, exc: KerberosError) -> None:
        """An accepted ticket that gets no cookie or token: counted; logged at debug, once a minute per code (a
        user in very many groups would otherwise log on every request)."""
        stats = self.ctx.stats
        stats.count("issue_refused", exc.code)
        now = self.ctx.now
        last = _NOT_ISSUED_LOGGED.get(exc.code)
        if last is None or now - last >= 60.0:
            _NOT_ISSUED_LOGGED[exc.code] = now
            self.ctx.log.event("session_not_issued", level="debug", via=via, code=exc.code, cause=exc.cause,
                               client=exc.details.get("client"))

    # -- the challenge rule ---------------------------------------------------------------------------

    def _header(self, name: str) -> str | None:
        """The request's header ``name`` (lowercase) for the challenge rule."""
        if name == "x-forwarded-for":
            v = self.xff
        elif name == "user-agent":
            v = self.ua
        elif name == "cookie":
            v = b"; ".join(self.cookies) if self.cookies else None
        else:
            return None
        return None if v is None else v.decode("latin-1")

    def _tried(self) -> str | None:
        """The Set-Cookie that drops the tried cookie when this request carries it (a 200 sends it), else None."""
        chal = self.chal
        if chal is None or chal.rule.tried_cookie is None or not self.cookies:
            return None
        return chal.rule.tried_clear(self._header("cookie"))

    def _no_token(self, chal: SidecarChallenge, why: str, peer: str, close: bool) -> bytes:
        """A request without a token under the challenge rule: the offer (401 Negotiate, the tried cookie set),
        or the fallback (no offer; the page, or the redirect)."""
        decision = chal.rule.decide(self.peer_addr, self._header)
        if isinstance(decision, Offer):
            self.ctx.engine.no_token(peer, why)
            body = json.dumps({"code": "no_token", "cause": why}).encode()
            return _response(401, [b"WWW-Authenticate: Negotiate\r\n", b"X-Auth-Error: no_token\r\n",
                                   b"Content-Type: application/json\r\n", *chal.offer_headers(decision)], body, close)
        ctx = self.ctx
        ctx.stats.count("challenge_fallback", decision.reason)
        if ctx.log.decisions:
            ctx.log.rejected("no_token", f"{why}; no Negotiate offer: the challenge rule's {decision.reason} "
                             f"(client {decision.client or 'unknown'})", {}, 0.0, peer, "http", outcome="fallback")
        headers = [b"X-Auth-Error: no_token\r\n", *chal.fallback_headers(decision)]
        return _response(decision.status, headers, decision.body, close)

    # -- sessions and bearer tokens -------------------------------------------------------------------

    def _session(self, via: str, credential: Any, peer: str, policy: Policy | None, close: bool) -> bytes:
        """A request authenticated by a session cookie (``via`` session; ``credential``: the Cookie headers) or a
        bearer token (bearer; the token): 200 with the identity headers under the same policy, 403 when the
        policy refuses, 401 with the Negotiate challenge when the credential does not open (a cookie's 401 also
        clears it). b"" when the Cookie headers hold no cookie of ours (then: as without a cookie)."""
        sess = self.sess
        assert sess is not None
        stats = self.ctx.stats
        log = self.ctx.log
        t0 = _perf()
        principal: Principal | None = None
        label: str | None = None
        value: str | None = None
        try:
            if via == "bearer":
                assert sess.verifier is not None
                principal = sess.verifier.verify(credential)
            else:
                assert sess.cookies is not None
                value = sess.cookies.value_from([c.decode("latin-1") for c in credential])
                if value is None:
                    return b""
                principal = sess.cookies.open(value)
            if policy is not None:
                label = self.ctx.engine._label(policy)
                policy.check(principal)
        except Forbidden as exc:
            label = label or "?"
            stats.session(via, "forbidden", "forbidden")
            stats.policy(label, "forbidden")
            if log.decisions:
                server = principal.server if principal is not None else None
                log.session(via, "forbidden", "forbidden", exc.details.get("client"), server, _perf() - t0, peer,
                            policy=label, cause=exc.cause, details=exc.details)
            return _rejection(exc, close)
        except KerberosError as exc:   # session_invalid / _expired, bearer_invalid / _expired: as no credential
            stats.session(via, "rejected", exc.code)
            if log.decisions:
                log.session(via, "rejected", exc.code, exc.details.get("client"), None, _perf() - t0, peer,
                            cause=exc.cause, details=exc.details)
            if via == "bearer":   # RFC 6750 §3.1, beside the Negotiate challenge that gets a new one
                extra = (b'WWW-Authenticate: Bearer error="invalid_token"\r\n',)
            else:                 # the browser drops the cookie that does not open
                assert sess.cookies is not None
                extra = (b"Set-Cookie: " + sess.cookies.clear_cookie().encode("ascii") + b"\r\n",)
            return _rejection(exc, close, None, extra)
        except Exception as exc:   # our own fault: 500, never a verdict on the credential
            err = InternalError(f"The sidecar failed while reading a {via} credential ({type(exc).__name__}: {exc}).")
            stats.session(via, "error", "internal")
            log.session(via, "error", "internal", None, None, _perf() - t0, peer, cause=err.cause)
            return _rejection(err, close)
        stats.session(via, "accepted", "ok")
        if label is not None:
            stats.policy(label, "allowed")
        if log.decisions:
            log.session(via, "accepted", "ok", principal.client, principal.server, _perf() - t0, peer, policy=label,
                        details={"kid": principal.kid})
        headers = [_identity(principal)]
        book = self.ctx.policies
        pac = _pac_identity(principal, self.ctx.cfg.remote_groups, book.names if book is not None else None)
        if pac:
            headers.append(pac)
        if policy is not None and policy.name:
            headers.append(b"X-Remote-Policy: " + header_value(policy.name) + b"\r\n")
        if policy is None and value is not None and sess.native is not None:   # a plain /auth: C answers it next
            sess.remember(value, principal, b"".join((b"HTTP/1.1 ", _STATUS[200], b"\r\n", *headers, _KEEP)),
                          log.worker, book.names.generation if book is not None and book.names is not None else -1)
        return _response(200, headers, b"", close)

    def _done(self, slot: list[Any], fut: asyncio.Future[Any]) -> None:
        conn = self.conn
        conn.inflight -= 1
        exc = fut.exception()
        out = self.ctx.engine._internal(exc, 0.0, conn.peer, "http") if exc is not None else fut.result()
        slot[0] = self._answer(out, slot[1], slot[2], slot[3], slot[4], slot[5])
        self._release()
        if not conn.closing:   # gone meanwhile: its transport takes no more writes
            conn.flush()

    # -- ordered output -----------------------------------------------------------------------------

    def _emit(self, response: bytes, close: bool) -> None:
        if self.collect is not None:   # a batch's answer (_batch_done): its slot writes it, in order
            self.collect.append(response)
            self.collect_close = self.collect_close or close
            return
        if self.pending:
            self.pending.append([response, close, None])
            return
        self.conn.wbuf.append(response)
        if close:
            self.conn.close()

    def _release(self) -> None:
        """Write every answer at the head of the queue that is ready (HTTP answers go out in order)."""
        conn = self.conn
        pending = self.pending
        while pending and pending[0][0] is not None:
            slot = pending.popleft()
            response, close = slot[0], slot[1]
            conn.wbuf.append(response)
            if close:
                pending.clear()
                conn.close()
                return
