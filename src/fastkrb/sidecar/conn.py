"""One accepted connection: limits, peer credentials, timeouts, fairness, batched writes.

Both front doors share one socket: the first byte decides. A binary frame starts with the high byte of
a 32-bit length, which is 0 for every legal frame; an HTTP request starts with a method's letter. The
connection then hands its bytes to an HttpHandler or a WireHandler, which parse every complete request
in the chunk, append their answers to ``wbuf``, and the connection writes them with one ``write()``.

Fairness: a chunk is worked on in slices of at most ``BUDGET`` bytes; the rest waits (reading paused)
until the loop has served every other ready connection once, so a client flooding garbage at full speed
delays the others by one slice, not by its whole backlog. A connection whose last ``GARBAGE_RUN``
tokens were all malformed gets slices of ``SMALL_BUDGET`` until it sends a valid one again: it is still
answered, at a fraction of the share.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol, cast

from fastkrb.sidecar.challenge import SidecarChallenge
from fastkrb.sidecar.config import ServerConfig
from fastkrb.sidecar.engine import Engine
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import Stats
from fastkrb.sidecar.policies import PolicyBook

__all__ = ["BUDGET", "MAX_PENDING", "Connection", "Handler", "HandlerFactory", "WorkerContext"]

BUDGET = 64 * 1024
SMALL_BUDGET = 4 * 1024   # for a connection that sent nothing but garbage lately
GARBAGE_RUN = 256         # that many malformed tokens in a row, and no valid one, marks a connection
#: Requests of one connection awaiting the network replay cache: past this many, reading pauses until half have
#: been answered. A bound on memory (each holds its result until Redis answers), not on throughput: a client
#: pipelining deeper than this waits one round trip, and nothing limits how many round trips are on the wire.
MAX_PENDING = 4096
_QUIET = 0.05   # seconds without input before a draining connection counts as finished
_UCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid


class Handler(Protocol):
    def feed(self, data: bytes) -> None: ...
    def idle(self) -> bool: ...
    def timeout(self) -> None: ...


#: Builds a front door's handler for a connection (binary.WireHandler, http.HttpHandler). The worker
#: passes them in, so the front doors depend on this module and never the other way round.
HandlerFactory = Callable[["Connection"], Handler]


class WorkerContext:
    """What every connection of one worker shares."""

    def __init__(self, cfg: ServerConfig, engine: Engine, stats: Stats, log: JsonLog,
                 loop: asyncio.AbstractEventLoop, health: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes], wire: HandlerFactory, http: HandlerFactory,
                 policies: PolicyBook | None = None, sessions: Any = None) -> None:
        self.cfg = cfg
        self.policies = policies   # named and query-built policies, and the group map (None: no policy support)
        self.sessions = sessions   # sidecar.sessions.SidecarSessions: cookies and bearer tokens (None: off)
        self.wire = wire
        self.http = http
        self.engine = engine
        self.stats = stats
        self.log = log
        self.loop = loop
        self.health = health
        self.metrics = metrics
        self.conns: set[Connection] = set()
        self.draining = False
        self.now = loop.time()
        self.max_frame = cfg.max_request_size + 8192   # room for channel bindings and the frame header
        # the native request path (_native.NativeFront) both front doors hand their chunks to, or None
        self.front: Any = engine.native_front(self.max_frame, cfg.max_request_size) if cfg.native_front else None
        if sessions is not None and self.front is not None:
            sessions.attach(self.front)   # opened session cookies answered natively (sidecar/sessions.py)
        # whom /auth offers Negotiate (None: everyone, the rule is off); its page files are read here, once
        self.challenge: SidecarChallenge | None = SidecarChallenge.from_config(cfg)

    def sweep(self) -> None:
        """Once a second: close connections past their request or idle timeout."""
        self.now = now = self.loop.time()
        rt = self.cfg.request_timeout
        it = self.cfg.idle_timeout
        for c in list(self.conns):
            if c.partial_since and rt and now - c.partial_since > rt:
                self.stats.count("refused", "request_timeout")
                c.timeout()
            elif not c.partial_since and not c.inflight and it and now - c.last > it:
                c.close()


class Connection(asyncio.Protocol):
    """The asyncio Protocol for one connection of either front door."""

    __slots__ = ("_backlog", "_feed", "_paused_fair", "_paused_pending", "_paused_write", "_time", "bad", "budget",
                 "closing", "ctx",
                 "frontend", "handler", "inflight", "last", "partial_since", "peer", "transport", "wbuf")

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._time = ctx.loop.time   # bound once: data_received reads it per chunk
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.wbuf: list[bytes] = []
        self.handler: Handler | None = None
        self._feed: Callable[[bytes], None] = self._sniff
        self._backlog = b""
        self._paused_fair = False
        self._paused_write = False
        self._paused_pending = False
        self.closing = False
        self.inflight = 0
        self.last = ctx.now
        self.partial_since = 0.0
        self.frontend = "?"
        self.budget = BUDGET
        self.bad = 0   # malformed tokens in a row

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's transports do not subclass asyncio's
        ctx = self.ctx
        sock = transport.get_extra_info("socket")
        family = getattr(sock, "family", None)
        if family == socket.AF_UNIX:
            refused = self._check_peercred(sock)
            if refused:
                ctx.stats.count("refused", refused)
                self.transport.abort()
                return
        else:
            addr = transport.get_extra_info("peername")
            self.peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        if len(ctx.conns) >= ctx.cfg.max_connections or ctx.draining:
            ctx.stats.count("refused", "max_connections" if not ctx.draining else "draining")
            self.transport.abort()
            return
        ctx.conns.add(self)
        self.last = ctx.now

    def _check_peercred(self, sock: Any) -> str | None:
        cfg = self.ctx.cfg
        try:
            pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except (OSError, AttributeError):
            pid = uid = gid = -1
        self.peer = f"uid={uid},pid={pid}"
        if cfg.allow_uids is None and cfg.allow_gids is None:
            return None
        if uid == -1:
            return "peercred_unavailable"
        if (cfg.allow_uids and uid in cfg.allow_uids) or (cfg.allow_gids and gid in cfg.allow_gids):
            return None
        self.ctx.log.event("peer_refused", level="warning", peer=self.peer, gid=gid)
        return "peercred"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.ctx.conns.discard(self)

    def pause_writing(self) -> None:
        """The peer reads slower than it asks: stop reading until our answers have gone out."""
        self._paused_write = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused_write = False
        if not self._paused_fair and not self._paused_pending and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def track(self, n: int) -> None:
        """``n`` more (or, negative, fewer) requests awaiting the replay cache; reading pauses past MAX_PENDING
        and resumes at half of it."""
        self.inflight += n
        if n > 0:
            if self.inflight >= MAX_PENDING and not self._paused_pending and self.transport is not None:
                self._paused_pending = True
                self.transport.pause_reading()
        elif self._paused_pending and self.inflight <= MAX_PENDING // 2:
            self._paused_pending = False
            if not self._paused_fair and not self._paused_write and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        # the per-chunk path of every request (flush() inlined: one Python call fewer per chunk)
        if self.closing:
            return
        self.last = self._time()
        budget = self.budget
        if len(data) > budget:
            self._backlog = data[budget:]
            data = data[:budget]
            self._pause_fair()
        self._feed(data)
        buf = self.wbuf
        if buf and self.transport is not None:
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))
            buf.clear()

    def eof_received(self) -> bool | None:
        return None  # close our side too; answers already written are still delivered

    # -- fairness -----------------------------------------------------------------------------------

    def _pause_fair(self) -> None:
        if not self._paused_fair:
            self._paused_fair = True
            assert self.transport is not None
            self.transport.pause_reading()
            self.ctx.loop.call_soon(self._continue)

    def _continue(self) -> None:
        if self.closing:
            return
        data = self._backlog
        budget = self.budget
        if len(data) > budget:
            self._backlog = data[budget:]
            data = data[:budget]
            self.ctx.loop.call_soon(self._continue)
        else:
            self._backlog = b""
            self._paused_fair = False
            if not self._paused_write and not self._paused_pending and self.transport is not None:
                self.transport.resume_reading()
        self._feed(data)
        self.flush()

    def verdict(self, malformed: bool) -> None:
        """Called per answered token: track runs of garbage for the fairness budget."""
        if malformed:
            self.bad += 1
            if self.bad == GARBAGE_RUN:
                self.budget = SMALL_BUDGET
                self.ctx.stats.count("refused", "garbage_throttled")
        elif self.bad:
            self.bad = 0
            self.budget = BUDGET

    # -- protocol selection -------------------------------------------------------------------------

    def _sniff(self, data: bytes) -> None:
        if not data:
            return
        if data[0] == 0:
            handler = self.ctx.wire(self)
            self.frontend = "wire"
        else:
            handler = self.ctx.http(self)
            self.frontend = "http"
        self.ctx.stats.count("connections", self.frontend)
        self.handler = handler
        self._feed = handler.feed
        handler.feed(data)

    # -- output -------------------------------------------------------------------------------------

    def flush(self) -> None:
        if self.wbuf and self.transport is not None:
            buf = self.wbuf
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))
            buf.clear()

    def idle(self) -> bool:
        """Nothing half-read, nothing in flight, nothing waiting: safe to close without losing a request."""
        return (not self.partial_since and not self.inflight and not self._backlog
                and (self.handler is None or self.handler.idle()))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.ctx.conns.discard(self)
            if self.transport is not None:
                if self.wbuf:
                    self.transport.write(b"".join(self.wbuf))
                    self.wbuf.clear()
                self.transport.close()

    def timeout(self) -> None:
        if self.handler is not None:
            self.handler.timeout()
            self.flush()
        self.close()

    def drain(self) -> None:
        """SIGTERM: close once nothing is in flight and the peer has been quiet for a moment.

        The quiet period covers requests already in the kernel's buffer but not yet read: closing at the
        first idle instant would drop them. HTTP connections also close after their next answer, which
        says ``Connection: close``.
        """
        if self.idle() and self.ctx.now - self.last >= _QUIET:
            self.close()
