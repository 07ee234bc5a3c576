"""One worker's life: open the validator, serve the inherited sockets, reload, drain, exit.

Reload happens between two callbacks of the event loop: the Validator swaps its keys in one step
(``Validator.reload``), so a request is validated wholly with the old keys or wholly with the new ones,
and none fails because of the swap. A new keytab that cannot be read, parses badly, or lacks a usable
key for the configured principals is refused, logged once per version of the file, and the old keys stay
in service; the same file is tried again, silently, on the next few ticks (a writer may still be writing
it) and then on its next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import time
from typing import Any

from fastkrb.errors import KerberosError, ReplayCacheUnavailable
from fastkrb.files import file_signature
from fastkrb.keytab import Keytab, KeytabError, NoUsableKeys, is_dev_only
from fastkrb.replay import AsyncReplayCache
from fastkrb.sidecar.binary import WireHandler
from fastkrb.sidecar.config import ServerConfig, keytab_problems, redact_url
from fastkrb.sidecar.conn import Connection, WorkerContext
from fastkrb.sidecar.engine import Engine
from fastkrb.sidecar.http import HttpHandler
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import Stats, render
from fastkrb.sidecar.policies import PolicyBook
from fastkrb.sidecar.sessions import SidecarSessions

__all__ = ["WorkerApp", "make_validator", "run_worker"]

_RETRIES = 3   # ticks on which a refused keytab file is tried again before waiting for its next change


class _Refused(Exception):
    """A replacement keytab refused; ``reason`` labels fastkrb_keytab_reload_refused_total."""

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(cause)
        self.reason, self.cause = reason, cause


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).digest()
    except OSError:
        return None


def _accepts(principals: list[str] | None) -> Any:
    from fastkrb.validator import Validator

    return Validator._acceptor(principals or None)


def _tick_period(cfg: ServerConfig) -> float:
    """Housekeeping period: at most 1 s (timeouts, metrics), shorter when the keytab is watched faster."""
    return min(1.0, cfg.reload_interval or 1.0)


def make_validator(cfg: ServerConfig, kt: Keytab) -> Any:
    from fastkrb.validator import Validator

    return Validator(kt, principals=cfg.principals, clock_skew=cfg.clock_skew, replay_cache=cfg.replay_spec(),
                     enctypes=tuple(cfg.enctypes), cold_start=cfg.cold_start, allowed_realms=cfg.allowed_realms,
                     max_token_size=cfg.max_request_size, replay_capacity=cfg.replay_capacity)



class WorkerApp:
    """The event-loop side of a worker process."""

    def __init__(self, cfg: ServerConfig, slot: int, metrics_dir: str | None) -> None:
        self.cfg = cfg
        self.slot = slot
        self.log = JsonLog(cfg.log_file, decisions=cfg.log_decisions, worker=slot)
        self.stats = Stats(slot, metrics_dir)
        self.servers: list[asyncio.AbstractServer] = []
        self.ctx: WorkerContext | None = None
        self.stopping: asyncio.Event | None = None
        self.keytab_sig: tuple[int, int, int, int] | None = None
        self.failed_sig: tuple[int, int, int, int] | None = None
        self.failed_digest: bytes | None = None
        self.failed_tries = 0
        self.dev_keytab = False                 # the keys in service are a `fastkrb dev init` keytab's
        self.serving: set[str] = set()          # the principals in service (usable, accepted)
        self.loaded_at = 0.0
        self.keytab_mtime = 0.0
        self.validator: Any = None
        self.last_watch = 0.0
        self.replay_ok = True          # a network replay cache is probed; the others are ready once open
        self.replay_error: str | None = None
        self.policies: PolicyBook | None = None
        self.keytab_refused: dict[str, Any] | None = None   # the newest refused file, until one is taken

    # -- keytab ----------------------------------------------------------------------------------

    def _load_keytab(self) -> Keytab:
        """The keytab file, checked against the configuration and, on a reload, against the keys in service;
        a refusal raises _Refused with its reason (the label of fastkrb_keytab_reload_refused_total)."""
        try:
            kt = Keytab.load(self.cfg.keytab)
        except KerberosError as exc:
            raise _Refused("unreadable", exc.cause) from None
        if self.validator is not None:
            # a rotation keeps the service's name: a file that shares no principal with the keys in service is
            # a wrong file (another host's keytab), not a rotation
            serving = self.serving
            new = {e.principal for e in kt.usable()}
            if serving and new and not serving & new:
                raise _Refused("foreign", f"the new keytab has none of the principals in service "
                               f"({', '.join(sorted(serving))}; it has {', '.join(sorted(new))}); set `principals` "
                               "or restart to change them")
            if is_dev_only(kt) and not self.dev_keytab:
                raise _Refused("dev_only", "the new keytab is a `fastkrb dev init` keytab (throwaway keys no KDC "
                               "knows) and would replace a production one")
        if not kt.usable():
            problems = keytab_problems(kt, self.cfg)
            raise _Refused("no_usable_key", "; ".join(problems))
        problems = keytab_problems(kt, self.cfg)
        if problems:
            raise _Refused("dev_only" if is_dev_only(kt) else "configuration", "; ".join(problems))
        return kt

    def _note_keytab(self, kt: Keytab, sig: tuple[int, int, int, int] | None) -> None:
        self.keytab_sig = sig
        self.failed_sig = None
        self.failed_digest = None
        self.failed_tries = 0
        self.loaded_at = time.time()
        self.keytab_mtime = sig[2] / 1e9 if sig else self.loaded_at
        self.dev_keytab = is_dev_only(kt)
        accepted = _accepts(self.cfg.principals)
        self.serving = {e.principal for e in kt.usable() if accepted(e.principal)}
        kv: dict[str, int] = {}
        for e in kt.entries:
            kv[e.principal] = max(kv.get(e.principal, 0), e.kvno)
        self.stats.kvnos = kv
        for e, why in kt.unusable():
            self.log.event("keytab_entry_skipped", level="warning", path=self.cfg.keytab, principal=e.principal,
                           kvno=e.kvno, enctype=e.enctype, reason=why)

    def reload(self, reason: str) -> bool:
        """Load the keytab file again; on any problem keep the keys in service and say why, once per version
        of the file (its signature and bytes): the silent retries of a refused file (a writer may still be
        writing it) are not news. A refusal never sticks: the next change of the file, and every SIGHUP, try
        again; /healthz shows it (``keytab_refused``) until a file is taken."""
        sig = file_signature(self.cfg.keytab)
        digest = _digest(self.cfg.keytab)
        try:
            kt = self._load_keytab()
            self.validator.reload(kt)
        except (_Refused, KerberosError, ValueError, OSError) as exc:
            same = sig == self.failed_sig and digest == self.failed_digest
            self.failed_tries = self.failed_tries + 1 if same else 1
            self.failed_sig, self.failed_digest = sig, digest
            if same and reason == "file changed":
                return False
            why = exc.reason if isinstance(exc, _Refused) else (
                "no_usable_key" if isinstance(exc, NoUsableKeys) else
                "unreadable" if isinstance(exc, (KeytabError, OSError)) else "configuration")
            self.stats.count("reload", "error")
            self.stats.count("reload_refused", why)
            cause = exc.cause if isinstance(exc, (KerberosError, _Refused)) else str(exc)
            kept = ", ".join(f"{p} kvno {n}" for p, n in sorted(self.stats.kvnos.items())) or "none"
            self.keytab_refused = {"path": self.cfg.keytab, "reason": why, "error": cause, "since": time.time()}
            self.log.event("keytab_reload", level="warning", result="refused", reason=reason, refused=why,
                           path=self.cfg.keytab, error=cause, kept_kvnos=self.stats.kvnos,
                           message=f"keytab {self.cfg.keytab} refused ({why}); still serving the previous keys "
                                   f"({kept}); it is tried again when the file changes, and on SIGHUP")
            return False
        self._note_keytab(kt, sig)
        self.keytab_refused = None
        self.stats.count("reload", "ok")
        self.log.event("keytab_reload", result="ok", reason=reason, path=self.cfg.keytab, kvnos=self.stats.kvnos,
                       entries=len(kt.entries), skipped=len(kt) - len(kt.usable()))
        return True

    def _watch_group_names(self) -> None:
        """The group map is reread when its file changes; a refused file leaves the map in service."""
        book = self.policies
        if book is None or book.names is None:
            return
        names = book.names
        before = names.error
        if book.reload_names():
            self.stats.count("group_names_reload", "ok")
            self.log.event("group_names_reload", result="ok", path=names.path, groups=len(names),
                           generation=names.generation)
        elif names.error is not None and names.error != before:
            self.stats.count("group_names_reload", "error")
            self.log.event("group_names_reload", level="error", result="refused", path=names.path, error=names.error,
                           kept_groups=len(names))

    def _watch(self) -> None:
        sig = file_signature(self.cfg.keytab)
        if sig is None or sig == self.keytab_sig:
            return
        if sig == self.failed_sig and self.failed_tries >= _RETRIES and _digest(self.cfg.keytab) == self.failed_digest:
            return   # the very file refused: wait for its next change (a rewrite within one timestamp tick counts)
        self.reload("file changed")

    # -- health and metrics ---------------------------------------------------------------------

    async def _probe_replay(self) -> None:
        """A network replay cache (Redis) is pinged every 2 s: /healthz is ready only while it answers."""
        cache = self.validator.replay_cache if self.validator is not None else None
        if not isinstance(cache, AsyncReplayCache):
            return
        while self.stopping is not None and not self.stopping.is_set():
            err: str | None
            try:
                await asyncio.wait_for(cache.aping(), 1.0)
                ok, err = True, None
            except ReplayCacheUnavailable as exc:
                ok, err = False, str(exc.details.get("reason", exc.cause))
            except Exception as exc:  # the wait_for timeout: not ready (validations fail closed meanwhile)
                ok, err = False, f"{type(exc).__name__}: {exc}"
            if ok != self.replay_ok:
                self.log.event("replay_cache", level="info" if ok else "error", reachable=ok, error=err)
            self.replay_ok, self.replay_error = ok, err
            await asyncio.sleep(2.0)

    def health(self) -> dict[str, Any]:
        ready = (self.validator is not None and self.replay_ok
                 and not (self.ctx is not None and self.ctx.draining))
        rc: dict[str, Any] = {"spec": redact_url(self.cfg.replay_spec()), "reachable": self.replay_ok}
        if self.replay_error:
            rc["error"] = self.replay_error
        try:
            st = self.validator.replay_stats() if self.validator is not None else None
            if st:
                rc.update(st)
        except Exception as exc:  # a backend that cannot report is not ready
            rc["error"] = str(exc)
            ready = False
        out = {"ready": ready, "worker": self.slot, "pid": os.getpid(), "keytab": self.cfg.keytab,
               "keytab_loaded": self.loaded_at, "kvnos": self.stats.kvnos, "replay_cache": rc,
               "draining": bool(self.ctx and self.ctx.draining)}
        if self.keytab_refused is not None:
            out["keytab_refused"] = self.keytab_refused
        book = self.policies
        if book is not None:
            out["policies"] = sorted(book.named)
            if book.names is not None:
                out["group_names"] = {"path": book.names.path, "groups": len(book.names),
                                      "generation": book.names.generation, "loaded": book.names.loaded_at,
                                      "error": book.names.error}
        return out

    def _gauges(self) -> None:
        if self.ctx is not None and self.ctx.sessions is not None:   # the cookies the native table answered
            self.ctx.sessions.fold(self.stats)
        g = self.stats.gauges
        g["open_connections"] = len(self.ctx.conns) if self.ctx else 0
        g["keytab_age_seconds"] = max(0.0, time.time() - self.keytab_mtime)
        g["keytab_loaded_timestamp_seconds"] = self.loaded_at
        g["ready"] = 1.0 if (self.validator is not None and self.replay_ok
                             and not (self.ctx and self.ctx.draining)) else 0.0
        try:
            st = self.validator.replay_stats() if self.validator is not None else None
        except Exception:
            st = None
        if st:
            for k_in, k_out in (("entries", "replay_cache_entries"), ("capacity", "replay_cache_capacity")):
                if k_in in st:
                    g[k_out] = float(st[k_in])

    def metrics(self) -> bytes:
        self._gauges()
        return render(self.stats)

    # -- life -----------------------------------------------------------------------------------

    def _tick(self) -> None:
        assert self.ctx is not None
        loop = self.ctx.loop
        try:
            self.ctx.sweep()
            ri = self.cfg.reload_interval
            if ri and not self.ctx.draining and self.ctx.now - self.last_watch >= ri * 0.999:
                self.last_watch = self.ctx.now
                self._watch()
                self._watch_group_names()
            if self.ctx.sessions is not None:   # a removed session key ends its sessions in the native table too
                book = self.policies
                self.ctx.sessions.watch(book.names.generation if book is not None and book.names is not None else -1)
            self._gauges()
            self.stats.write()
            self.log.flush()
        finally:
            if self.stopping is not None and not self.stopping.is_set():
                loop.call_later(_tick_period(self.cfg), self._tick)

    async def run(self, unix_sock: socket.socket | None, tcp_sock: socket.socket | None,
                  ready_fd: int | None = None) -> int:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        kt = self._load_keytab()
        self.validator = make_validator(cfg, kt)
        self._note_keytab(kt, file_signature(cfg.keytab))
        self.policies = PolicyBook.from_config(cfg)   # the tick rereads the group map (reload_interval 0 here)
        engine = Engine(self.validator, self.stats, self.log,
                        is_async=isinstance(self.validator.replay_cache, AsyncReplayCache), policies=self.policies)
        self.ctx = ctx = WorkerContext(cfg, engine, self.stats, self.log, loop, self.health, self.metrics,
                                       wire=WireHandler, http=HttpHandler, policies=self.policies,
                                       sessions=SidecarSessions.from_config(cfg))
        self.stopping = asyncio.Event()

        def factory() -> Connection:
            return Connection(ctx)

        if unix_sock is not None:
            self.servers.append(await loop.create_unix_server(factory, sock=unix_sock))
        if tcp_sock is not None:
            self.servers.append(await loop.create_server(factory, sock=tcp_sock))
        loop.add_signal_handler(signal.SIGHUP, lambda: self.reload("SIGHUP"))
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        self.log.event("worker_ready", pid=os.getpid(), replay_cache=redact_url(cfg.replay_spec()),
                       kvnos=self.stats.kvnos)
        if ready_fd is not None:
            try:
                os.write(ready_fd, b"R")
                os.close(ready_fd)
            except OSError:
                pass
        loop.call_later(_tick_period(cfg), self._tick)
        probe = asyncio.ensure_future(self._probe_replay()) if engine.is_async else None
        await self.stopping.wait()
        if probe is not None:
            probe.cancel()
        await self._drain()
        return 0

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    async def _drain(self) -> None:
        """Stop accepting, let requests in flight finish (for at most drain_timeout), then close."""
        assert self.ctx is not None
        ctx = self.ctx
        ctx.draining = True
        for s in self.servers:
            s.close()
        deadline = ctx.loop.time() + self.cfg.drain_timeout
        while ctx.conns and ctx.loop.time() < deadline:
            ctx.now = ctx.loop.time()
            for c in list(ctx.conns):
                c.drain()
            await asyncio.sleep(0.02)
        left = len(ctx.conns)
        for c in list(ctx.conns):
            c.close()
        cache = self.validator.replay_cache if self.validator is not None else None
        if isinstance(cache, AsyncReplayCache):
            with contextlib.suppress(Exception):   # a Redis that is gone already cannot be closed politely
                await asyncio.wait_for(cache.aclose(), 1.0)
        self._gauges()
        self.stats.write()
        self.log.event("worker_stopped", pid=os.getpid(), unfinished_connections=left)
        self.log.close()


def run_worker(cfg: ServerConfig, slot: int, unix_sock: socket.socket | None, tcp_sock: socket.socket | None,
               metrics_dir: str | None, ready_fd: int | None = None) -> int:
    """Entry point of a worker process (after fork): a fresh uvloop event loop, serve until told to stop."""
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = WorkerApp(cfg, slot, metrics_dir)
    try:
        return loop.run_until_complete(app.run(unix_sock, tcp_sock, ready_fd))
    finally:
        loop.close()
