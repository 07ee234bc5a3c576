"""Talk to ``fastkrb serve`` over its binary protocol: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both keep one connection open and reuse it, pipeline (``validate_many`` sends every frame in one write;
concurrent ``AsyncClient.validate`` calls share the connection and are paired by request id), and
return what the library returns: a :class:`RemoteAuthResult` with the AuthResult's attributes, or raise
the same :class:`~fastkrb.errors.KerberosError` subclass the sidecar's validator raised (rebuilt with
``error_for_code``). When the sidecar cannot be reached or does not answer in time they raise
:class:`SidecarUnavailable` (also a KerberosError, code ``sidecar_unavailable``): fail closed.

A request whose connection broke before its answer arrived is sent again once on a fresh connection,
but only when that connection had been reused (the sidecar closes idle connections); the rare cost is
a ``replay`` verdict for a token the dead connection had already delivered, never an acceptance.

Protocol 2 (the default) lets a call name a policy the sidecar applies (``policy="readers"``, or
``allowed_groups=[...]`` etc.: a client it does not allow raises :class:`~fastkrb.errors.Forbidden`) and
returns the PAC identity in ``result.identity`` (a :class:`RemoteIdentity`: user SID, UPN, group
SIDs and, with ``group_names=True``, the names of the sidecar's map). A sidecar older than protocol 2
refuses such requests (SidecarUnavailable saying so): upgrade the sidecar first, or use ``protocol=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import select
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from fastkrb.errors import KerberosError, error_for_code
from fastkrb.sidecar import protocol

__all__ = ["AsyncClient", "Client", "RemoteAuthResult", "RemoteIdentity", "SidecarUnavailable", "policy_query"]

DEFAULT_SOCKET = "/run/fastkrb/fastkrb.sock"
_MAX_REPLY = 1 << 20
_WANT_IDENTITY, _WANT_NAMES = protocol.WANT_IDENTITY, protocol.WANT_GROUP_NAMES


class SidecarUnavailable(KerberosError):
    """The sidecar could not be reached, broke the connection, or did not answer in time."""

    code = "sidecar_unavailable"
    default_fix = ("Check that `fastkrb serve` is running and that this process may open its socket "
                   "(socket_mode / socket_group / allow_uids); its log says why it refused or stopped.")


class _Broken(SidecarUnavailable):
    """The connection failed before any answer came back (a reused one may be retried once)."""


# An accepted token as the sidecar reports it: the AuthResult's facts (never the session key), with
# www_authenticate and to_dict() like the library's AuthResult. The wire codec decodes straight into it.
RemoteAuthResult = protocol.Accepted
#: The PAC identity of a RemoteAuthResult (protocol 2): user_sid, upn, group_sids, member_of(), ...
RemoteIdentity = protocol.RemoteIdentity
_POLICY_KEYS = ("allowed_users", "allowed_groups", "allowed_realms")


def policy_query(policy: str | None = None, allowed_users: Iterable[str] | None = None,
                 allowed_groups: Iterable[str] | None = None, allowed_realms: Iterable[str] | None = None) -> str:
    """The policy text of a request, as /auth takes it: ``policy=NAME`` or ``allowed_users=a,b&...`` ("" for none)."""
    from urllib.parse import quote

    rules = {k: list(v) for k, v in zip(_POLICY_KEYS, (allowed_users, allowed_groups, allowed_realms), strict=True)
             if v is not None}
    for k, v in rules.items():
        if isinstance(v, str) or any(not isinstance(x, str) or "," in x for x in v):
            raise ValueError(f"{k} must be a list of strings without commas")
    if policy is not None:
        if any(rules.values()):
            raise ValueError("give policy= or allowed_*=, not both")
        return "policy=" + quote(policy, safe="")
    return "&".join(k + "=" + ",".join(quote(x, safe="@/\\") for x in v) for k, v in rules.items() if v)


def _token_bytes(token: str | bytes) -> bytes:
    return token.encode("ascii") if isinstance(token, str) else bytes(token)


def _outcome(kind: int, payload: bytes) -> RemoteAuthResult | KerberosError | dict[str, Any]:
    if kind == protocol.ACCEPTED_EX:
        return protocol.decode_accepted_ex(payload)
    if kind == protocol.ACCEPTED:
        return protocol.decode_accepted(payload)
    if kind == protocol.REJECTED:
        r = protocol.decode_rejected(payload)
        return error_for_code(r.code, r.cause, r.fix, r.details)
    if kind == protocol.PONG:
        import json

        status: dict[str, Any] = json.loads(payload or b"{}")
        return status
    if kind == protocol.PROTOCOL_ERROR:
        text = payload.decode(errors="replace")
        if text == f"unknown frame kind 0x{protocol.VALIDATE_EX:02x}":
            return SidecarUnavailable("The sidecar speaks protocol 1 only (no policies, no PAC identity): upgrade it, "
                                      "or use Client(protocol=1) / AsyncClient(protocol=1).",
                                      details={"protocol_error": text})
        return SidecarUnavailable(f"The sidecar refused the request: {text}")
    return SidecarUnavailable(f"The sidecar answered with an unknown frame kind 0x{kind:02x}")


def _address(socket_path: str | None, tcp: str | tuple[str, int] | None) -> tuple[int, Any]:
    if tcp is not None:
        if isinstance(tcp, str):
            host, _, port = tcp.rpartition(":")
            tcp = (host.strip("[]") or "127.0.0.1", int(port))
        return (socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET), tcp
    return socket.AF_UNIX, socket_path or os.environ.get("FASTKRB_SOCKET", DEFAULT_SOCKET)


def _raise_or_return(out: Any) -> Any:
    if isinstance(out, KerberosError):
        raise out
    return out


class _Endpoint:
    """Where the sidecar listens, how long to wait for it, and what to ask: what both clients are configured
    with. ``protocol`` 2 (default) or 1; ``identity`` asks for the PAC identity, ``group_names`` for the names
    of the sidecar's group map beside the SIDs (protocol 2)."""

    def __init__(self, socket_path: str | None = None, *, tcp: str | tuple[str, int] | None = None,
                 timeout: float = 5.0, connect_timeout: float | None = None, protocol: int = 2,
                 identity: bool = True, group_names: bool = False) -> None:
        if protocol not in (1, 2):
            raise ValueError("protocol must be 1 or 2")
        self.family, self.address = _address(socket_path, tcp)
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.protocol = protocol
        self._flags = (_WANT_IDENTITY if identity else 0) | (_WANT_NAMES if group_names else 0)
        self._ids = itertools.count(1)   # request ids of the binary protocol

    def _frame(self, rid: int, token: str | bytes, channel_bindings: bytes | None, policy: str) -> bytes:
        if self.protocol == 1:
            if policy:
                raise ValueError("policies need protocol 2")
            return protocol.encode_validate(rid, _token_bytes(token), channel_bindings)
        return protocol.encode_validate_ex(rid, _token_bytes(token), channel_bindings, policy, self._flags)


class Client(_Endpoint):
    """Blocking client; one connection, reused. Safe to share between threads (calls are serialised)."""

    def __init__(self, socket_path: str | None = None, *, tcp: str | tuple[str, int] | None = None,
                 timeout: float = 5.0, connect_timeout: float | None = None, protocol: int = 2,
                 identity: bool = True, group_names: bool = False) -> None:
        super().__init__(socket_path, tcp=tcp, timeout=timeout, connect_timeout=connect_timeout, protocol=protocol,
                         identity=identity, group_names=group_names)
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._buf.clear()

    def _connection(self) -> tuple[socket.socket, bool]:
        """The open connection (checked: a peer that closed it shows as readable) or a new one."""
        s = self._sock
        if s is not None:
            r, _, _ = select.select([s], [], [], 0)
            if not r:
                return s, True
            self._drop()
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.settimeout(self.connect_timeout)
        try:
            s.connect(self.address)
        except OSError as exc:
            s.close()
            raise SidecarUnavailable(f"Cannot connect to the sidecar at {self.address}: {exc}",
                                     details={"address": str(self.address)}) from None
        if self.family != socket.AF_UNIX:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = s
        return s, False

    def _roundtrip(self, frames: Sequence[bytes], ids: Sequence[int]) -> dict[int, Any]:
        with self._lock:
            for attempt in (0, 1):
                s, reused = self._connection()
                try:
                    return self._exchange(s, frames, ids)
                except _Broken:
                    self._drop()
                    if not (reused and attempt == 0):
                        raise
                except SidecarUnavailable:
                    self._drop()
                    raise
            raise AssertionError("unreachable")

    def _exchange(self, s: socket.socket, frames: Sequence[bytes], ids: Sequence[int]) -> dict[int, Any]:
        deadline = time.monotonic() + self.timeout
        try:
            s.settimeout(self.timeout)
            s.sendall(frames[0] if len(frames) == 1 else b"".join(frames))
        except OSError as exc:
            raise _Broken(f"The sidecar connection broke while sending: {exc}") from None
        want = set(ids)
        got: dict[int, Any] = {}
        buf = self._buf
        while want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SidecarUnavailable(f"The sidecar did not answer within {self.timeout} s",
                                         details={"timeout": self.timeout})
            s.settimeout(left)
            try:
                chunk = s.recv(262144)
            except TimeoutError:
                continue
            except OSError as exc:
                raise (SidecarUnavailable if got else _Broken)(f"The sidecar connection broke: {exc}") from None
            if not chunk:
                raise (SidecarUnavailable if got else _Broken)("The sidecar closed the connection before answering")
            buf += chunk
            frames_in, used, err = protocol.split_frames(buf, _MAX_REPLY)
            for kind, rid, a, b in frames_in:
                out = _outcome(kind, bytes(buf[a:b]))
                if kind == protocol.PROTOCOL_ERROR:
                    assert isinstance(out, KerberosError)
                    raise out
                if rid in want:
                    want.discard(rid)
                    got[rid] = out
            del buf[:used]
            if err:
                raise SidecarUnavailable(f"The sidecar's answer is not the fastkrb protocol ({err})")
        return got

    def _next_id(self) -> int:
        return next(self._ids) & protocol.MAX_ID

    def validate(self, token: str | bytes, channel_bindings: bytes | None = None, *, policy: str | None = None,
                 allowed_users: Iterable[str] | None = None, allowed_groups: Iterable[str] | None = None,
                 allowed_realms: Iterable[str] | None = None) -> RemoteAuthResult:
        """Validate one token (header value, base64 or raw); raises the validator's KerberosError subclass.

        ``policy`` names a ``[policies.NAME]`` of the sidecar; ``allowed_*`` make one for this call (as the /auth
        query does). A client the policy does not allow raises Forbidden (code ``forbidden``)."""
        query = policy_query(policy, allowed_users, allowed_groups, allowed_realms)
        rid = self._next_id()
        out = self._roundtrip([self._frame(rid, token, channel_bindings, query)], [rid])[rid]
        result: RemoteAuthResult = _raise_or_return(out)
        return result

    def validate_many(self, tokens: Iterable[str | bytes], channel_bindings: bytes | None = None, *,
                      policy: str | None = None, allowed_users: Iterable[str] | None = None,
                      allowed_groups: Iterable[str] | None = None,
                      allowed_realms: Iterable[str] | None = None) -> list[RemoteAuthResult | KerberosError]:
        """Pipelined: every token in one write, answers in the tokens' order (errors returned, not raised)."""
        query = policy_query(policy, allowed_users, allowed_groups, allowed_realms)
        ids: list[int] = []
        frames: list[bytes] = []
        for t in tokens:
            rid = self._next_id()
            ids.append(rid)
            frames.append(self._frame(rid, t, channel_bindings, query))
        if not frames:
            return []
        got = self._roundtrip(frames, ids)
        return [got[i] for i in ids]

    def ping(self) -> dict[str, Any]:
        """The answering worker's health (``ready``, keytab kvnos, replay cache)."""
        rid = self._next_id()
        out: dict[str, Any] = _raise_or_return(self._roundtrip([protocol.encode_ping(rid)], [rid])[rid])
        return out


class _Conn(asyncio.Protocol):
    def __init__(self, owner: AsyncClient) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.out: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, used, err = protocol.split_frames(buf, _MAX_REPLY)
        for kind, rid, a, b in frames:
            out = _outcome(kind, buf[a:b])
            if kind == protocol.PROTOCOL_ERROR:
                self._fail(out)  # type: ignore[arg-type]
                return
            fut = self.waiting.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(out)
        self.buf = buf[used:]
        if err:
            self._fail(SidecarUnavailable(f"The sidecar's answer is not the fastkrb protocol ({err})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(SidecarUnavailable("The sidecar closed the connection before answering"), close=False)

    def _fail(self, err: KerberosError, close: bool = True) -> None:
        self.closed = True
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self.waiting.clear()
        if close and self.transport is not None:
            self.transport.close()

    def send(self, frame: bytes) -> None:
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(frame)

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()


class AsyncClient(_Endpoint):
    """asyncio client: one pipelined connection shared by every concurrent call on its loop."""

    def __init__(self, socket_path: str | None = None, *, tcp: str | tuple[str, int] | None = None,
                 timeout: float = 5.0, connect_timeout: float | None = None, protocol: int = 2,
                 identity: bool = True, group_names: bool = False) -> None:
        super().__init__(socket_path, tcp=tcp, timeout=timeout, connect_timeout=connect_timeout, protocol=protocol,
                         identity=identity, group_names=group_names)
        self._conn: _Conn | None = None
        self._connecting: asyncio.Lock | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None and c.transport is not None:
            c.transport.close()

    async def _connection(self) -> tuple[_Conn, bool]:
        c = self._conn
        if c is not None and not c.closed:
            return c, True
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            c = self._conn
            if c is not None and not c.closed:
                return c, True
            loop = asyncio.get_running_loop()
            try:
                if self.family == socket.AF_UNIX:
                    coro = loop.create_unix_connection(lambda: _Conn(self), self.address)
                else:
                    coro = loop.create_connection(lambda: _Conn(self), *self.address)
                _, proto = await asyncio.wait_for(coro, self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise SidecarUnavailable(f"Cannot connect to the sidecar at {self.address}: {exc or 'timeout'}",
                                         details={"address": str(self.address)}) from None
            self._conn = proto
            return proto, False

    async def _call(self, frames: list[tuple[int, bytes]]) -> list[Any]:
        for attempt in (0, 1):
            conn, reused = await self._connection()
            loop = asyncio.get_running_loop()
            futs = []
            for rid, frame in frames:
                fut = loop.create_future()
                conn.waiting[rid] = fut
                futs.append(fut)
                conn.send(frame)
            try:
                return list(await asyncio.wait_for(asyncio.gather(*futs), self.timeout))
            except asyncio.TimeoutError:
                for rid, _ in frames:
                    conn.waiting.pop(rid, None)
                raise SidecarUnavailable(f"The sidecar did not answer within {self.timeout} s",
                                         details={"timeout": self.timeout}) from None
            except SidecarUnavailable:
                if not (reused and attempt == 0 and conn.closed):
                    raise
        raise AssertionError("unreachable")

    def _next_id(self) -> int:
        return next(self._ids) & protocol.MAX_ID

    async def validate(self, token: str | bytes, channel_bindings: bytes | None = None, *,
                       policy: str | None = None, allowed_users: Iterable[str] | None = None,
                       allowed_groups: Iterable[str] | None = None,
                       allowed_realms: Iterable[str] | None = None) -> RemoteAuthResult:
        """As Client.validate, awaited."""
        query = policy_query(policy, allowed_users, allowed_groups, allowed_realms)
        rid = self._next_id()
        (out,) = await self._call([(rid, self._frame(rid, token, channel_bindings, query))])
        result: RemoteAuthResult = _raise_or_return(out)
        return result

    async def avalidate(self, token: str | bytes, now: float | None = None,
                        channel_bindings: bytes | None = None) -> RemoteAuthResult:
        """The Validator.avalidate signature, for the web middleware (``now`` must be None: the sidecar's clock)."""
        if now is not None:
            raise ValueError("the sidecar validates at its own time: now must be None")
        return await self.validate(token, channel_bindings)

    async def validate_many(self, tokens: Iterable[str | bytes], channel_bindings: bytes | None = None, *,
                            policy: str | None = None, allowed_users: Iterable[str] | None = None,
                            allowed_groups: Iterable[str] | None = None,
                            allowed_realms: Iterable[str] | None = None) -> list[RemoteAuthResult | KerberosError]:
        query = policy_query(policy, allowed_users, allowed_groups, allowed_realms)
        frames = []
        for t in tokens:
            rid = self._next_id()
            frames.append((rid, self._frame(rid, t, channel_bindings, query)))
        return await self._call(frames) if frames else []

    async def ping(self) -> dict[str, Any]:
        rid = self._next_id()
        (out,) = await self._call([(rid, protocol.encode_ping(rid))])
        status: dict[str, Any] = _raise_or_return(out)
        return status


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastkrb.client ping [--socket PATH | --tcp HOST:PORT]``: exit 0 when ready (probes)."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m fastkrb.client")
    p.add_argument("command", choices=["ping"])
    p.add_argument("--socket", default=None)
    p.add_argument("--tcp", default=None)
    p.add_argument("--timeout", type=float, default=2.0)
    a = p.parse_args(argv)
    try:
        with Client(a.socket, tcp=a.tcp, timeout=a.timeout) as c:
            status = c.ping()
    except KerberosError as exc:
        print(f"not ready: {exc.cause}", file=sys.stderr)
        return 1
    print(json.dumps(status))
    return 0 if status.get("ready") else 1


if __name__ == "__main__":
    raise SystemExit(_main())
