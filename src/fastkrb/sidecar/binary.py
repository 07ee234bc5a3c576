"""The binary front door for services (``fastkrb.client``): pipelined frames, answered by request id.

Every complete frame in a chunk is validated in turn and the answers go out in one write. VALIDATE (version
1) is answered ACCEPTED / REJECTED as always; VALIDATE_EX (version 2) may name a policy (the /auth query
text) and is answered ACCEPTED_EX, with the PAC identity when asked for, or REJECTED (``forbidden`` when
the policy refuses the client). With a network
replay cache (Redis) a frame's answer may come later than the next one's: the request id pairs them.
Bytes that are not this protocol get one PROTOCOL_ERROR frame, then the connection is closed.

With the native request path (``ctx.front``, a ``_native.NativeFront``) a chunk goes to C first: it answers
VALIDATE and policy-less VALIDATE_EX frames itself, with the same bytes as below, and hands back, in frame
order, what needs this module: a rejection (``_native_rejected``), an acceptance whose answer needs the
AuthResult (``_native_accepted``: a PAC identity to send), and every other frame (``_feed``, this module's
own parser and answers).

With a Redis replay cache the native path runs in two calls around one round trip (``_native.wire_batch``):
every frame of the chunk is checked in C, the replay keys of those that passed go to Redis together
(``_replay_batch``: one ``ainsert_many``, batched with whatever else this turn of the event loop inserts), and
``_native.wire_batch_finish`` answers the chunk's frames in order: accepted, replay, or, when the round trip
fails, ``replay_cache_unavailable`` for every one of them (fail closed).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from fastkrb import _native
from fastkrb.errors import InternalError, KerberosError
from fastkrb.sidecar import protocol
from fastkrb.sidecar.batch import submit
from fastkrb.sidecar.conn import Connection
from fastkrb.sidecar.policies import PolicyError

if TYPE_CHECKING:
    from fastkrb.policy import Policy

__all__ = ["WireHandler"]


class WireHandler:
    """Splits frames, answers them; keeps at most one partial frame."""

    __slots__ = ("batched", "batches", "buf", "conn", "ctx", "front", "peer_json")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.buf = b""
        self.front = conn.ctx.front
        # a Redis replay cache: the native path's checks, then one round trip per chunk (wire_batch)
        self.batched = self.front is not None and conn.ctx.engine.is_async
        # this connection's batches awaiting Redis, oldest first: [batch, answers or None]; answered in this order
        self.batches: deque[list[Any]] = deque()
        # the peer as the decision log writes it (a JSON string body), for the native path's log lines
        self.peer_json = json.dumps(conn.peer, ensure_ascii=False)[1:-1].encode()

    def idle(self) -> bool:
        return not self.buf and not self.batches

    def timeout(self) -> None:
        self.conn.wbuf.append(protocol.encode_protocol_error(0, "request not complete within the timeout"))

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
            used = _native.wire_batch(front, self, data, conn)
        else:
            used = front.wire(self, data, conn.wbuf, conn, self.peer_json)
        if used == -2:   # the validator in service needs Python (never with the sidecar's own replay caches)
            self._feed(data)
            return
        if used >= 0:
            self.buf = data[used:] if used < len(data) else b""
            conn.partial_since = (conn.partial_since or self.ctx.now) if self.buf else 0.0

    def _replay_batch(self, batch: Any) -> None:
        """wire_batch's requests (a ``_native.ReplayBatch``): their replay keys in one round trip, then their
        answers, in frame order, after those of this connection's earlier batches."""
        slot: list[Any] = [batch, None]
        self.batches.append(slot)
        submit(self.conn, batch, lambda answers: self._batch_done(slot, answers))

    def _batch_done(self, slot: list[Any], answers: Any) -> None:
        slot[1] = answers
        self._release()

    def _release(self) -> None:
        """Answer the batches at the head of the queue whose replay answers are in. Counted and logged even when
        the connection has gone: Redis has recorded these authenticators."""
        conn = self.conn
        batches = self.batches
        while batches and batches[0][1] is not None:
            batch, answers = batches.popleft()
            _native.wire_batch_finish(self.front, self, batch, answers, conn.wbuf, conn, self.peer_json)
        if not conn.closing:
            conn.flush()

    def _native_rejected(self, rid: int, exc: Any, latency: float, flags: int) -> None:
        """A rejection the native path decided: counted, logged and answered as decide()'s would be."""
        engine = self.ctx.engine
        peer = self.conn.peer
        res = (engine._rejected(exc, latency, peer, "wire") if isinstance(exc, KerberosError)
               else engine._internal(exc, latency, peer, "wire"))
        if flags < 0:
            self._answer_v1(rid, res)
        else:
            self._answer(rid, res, None, flags)

    def _native_accepted(self, rid: int, res: Any, latency: float, flags: int) -> None:
        """An acceptance the native path could not answer alone (the identity block, a name not UTF-8)."""
        res = self.ctx.engine._accepted(res, latency, self.conn.peer, "wire")
        if flags < 0:
            self._answer_v1(rid, res)
        else:
            self._answer(rid, res, None, flags)

    def _answer_v1(self, rid: int, res: Any) -> None:
        """The answer to a VALIDATE: ACCEPTED or REJECTED."""
        conn = self.conn
        if isinstance(res, KerberosError):
            conn.wbuf.append(protocol.encode_rejected(rid, res.code, res.cause, res.fix, res.to_dict()["details"]))
            conn.verdict(res.code == "malformed")
        else:
            conn.wbuf.append(protocol.encode_accepted(rid, res))
            if conn.bad:
                conn.verdict(False)

    def _feed(self, data: bytes) -> None:
        """Python's path: every complete frame of ``data`` (after a partial one kept from before)."""
        conn = self.conn
        ctx = self.ctx
        if self.buf:
            data = self.buf + data
        frames, used, err = protocol.split_frames(data, ctx.max_frame)
        self.buf = data[used:] if used < len(data) else b""
        out = conn.wbuf
        engine = ctx.engine
        peer = conn.peer
        for kind, rid, a, b in frames:
            if kind == protocol.VALIDATE:
                if b - a < 2:
                    err = "VALIDATE frame without a channel-bindings length"
                    break
                ncb = (data[a] << 8) | data[a + 1]
                if a + 2 + ncb > b:
                    err = "channel bindings run past the frame"
                    break
                cb = data[a + 2:a + 2 + ncb] if ncb else None
                token = data[a + 2 + ncb:b]
                if engine.is_async:
                    self._later(rid, token, cb)
                    continue
                self._answer_v1(rid, engine.decide(token, cb, peer, "wire"))
            elif kind == protocol.VALIDATE_EX:
                try:
                    req = protocol.decode_validate_ex(data[a:b])
                except protocol.FrameError as exc:
                    err = str(exc)
                    break
                try:
                    policy = ctx.policies.resolve(req.policy) if req.policy and ctx.policies else None
                    if req.policy and ctx.policies is None:
                        raise PolicyError("this sidecar has no policies")
                except PolicyError as exc:
                    engine.policy_fault(peer, "wire", f"policy: {exc}")
                    bad = InternalError(f"The request names a policy this sidecar cannot apply: {exc}.",
                                        "Fix the policy in the caller, or define it ([policies.NAME]) in the sidecar's "
                                        "configuration.", {"policy": req.policy.decode("utf-8", "replace")})
                    out.append(protocol.encode_rejected(rid, bad.code, bad.cause, bad.fix, bad.details))
                    continue
                if engine.is_async:
                    self._later(rid, req.token, req.channel_bindings, policy, req.flags)
                    continue
                self._answer(rid, engine.decide(req.token, req.channel_bindings, peer, "wire", policy), policy,
                             req.flags)
            elif kind == protocol.PING:
                out.append(protocol.encode_pong(rid, ctx.health()))
            else:
                err = f"unknown frame kind 0x{kind:02x}"
                break
        if err is not None:
            ctx.stats.count("protocol_error", "wire")
            out.append(protocol.encode_protocol_error(0, err))
            self.buf = b""
            conn.close()
            return
        conn.partial_since = (conn.partial_since or ctx.now) if self.buf else 0.0

    def _answer(self, rid: int, res: Any, policy: Policy | None, flags: int) -> None:
        """The answer to a VALIDATE_EX: REJECTED, or ACCEPTED_EX with the policy's name and the identity."""
        conn = self.conn
        if isinstance(res, KerberosError):
            conn.wbuf.append(protocol.encode_rejected(rid, res.code, res.cause, res.fix, res.to_dict()["details"]))
            conn.verdict(res.code == "malformed")
            return
        book = self.ctx.policies
        names = book.names if book is not None and flags & protocol.WANT_GROUP_NAMES else None
        conn.wbuf.append(protocol.encode_accepted_ex(rid, res, policy.name if policy is not None else None,
                                                     bool(flags & protocol.WANT_IDENTITY), names))
        if conn.bad:
            conn.verdict(False)

    def _later(self, rid: int, token: bytes, cb: bytes | None, policy: Policy | None = None,
               flags: int | None = None) -> None:
        conn = self.conn
        conn.track(1)
        fut = asyncio.ensure_future(self.ctx.engine.adecide(token, cb, conn.peer, "wire", policy))
        fut.add_done_callback(lambda f: self._done(rid, f, policy, flags))

    def _done(self, rid: int, fut: asyncio.Future[Any], policy: Policy | None = None, flags: int | None = None) -> None:
        conn = self.conn
        conn.track(-1)
        if conn.closing and conn.transport is None:
            return
        exc = fut.exception()
        res = self.ctx.engine._internal(exc, 0.0, conn.peer, "wire") if exc is not None else fut.result()
        if flags is not None:   # VALIDATE_EX
            self._answer(rid, res, policy, flags)
        elif isinstance(res, KerberosError):
            conn.wbuf.append(protocol.encode_rejected(rid, res.code, res.cause, res.fix, res.to_dict()["details"]))
        else:
            conn.wbuf.append(protocol.encode_accepted(rid, res))
        if not conn.closing:
            conn.flush()
