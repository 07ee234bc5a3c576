"""The supervisor: bind the sockets once, fork N workers that all accept on them, keep N alive.

The master does no request work. It creates the Unix socket (mode and group applied before anyone can
connect) and the optional loopback TCP socket, or takes them from systemd socket activation
(``LISTEN_FDS``), forks the workers, forwards SIGHUP (reload) and SIGTERM (drain), and replaces a worker
that dies. A worker that dies within a second of its start five times in a row stops the daemon: that
is a configuration fault, not bad luck, and a restart loop would hide it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from fastkrb.sidecar.config import ServerConfig, keytab_problems, policy_problems, redact_url
from fastkrb.sidecar.log import JsonLog

__all__ = ["Supervisor", "bind_sockets", "serve"]

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_SD_LISTEN_FDS_START = 3


def _systemd_sockets() -> tuple[socket.socket | None, socket.socket | None]:
    """Sockets passed by systemd (fastkrb.socket), if this process is their addressee."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None, None
    n = int(os.environ.get("LISTEN_FDS", "0"))
    unix = tcp = None
    for fd in range(_SD_LISTEN_FDS_START, _SD_LISTEN_FDS_START + n):
        s = socket.socket(fileno=fd)
        if s.family == socket.AF_UNIX and unix is None:
            unix = s
        elif s.family in (socket.AF_INET, socket.AF_INET6) and tcp is None:
            tcp = s
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    return unix, tcp


def _bind_unix(path: str, mode: int, group: str | None, backlog: int) -> socket.socket:
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)   # a stale socket from a daemon that is gone
        else:
            probe.close()
            raise OSError(f"{path} is in use by a running process (another fastkrb serve?)")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777)   # no window in which the socket exists with wider permissions
    try:
        s.bind(path)
    finally:
        os.umask(old)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    os.chmod(path, mode)
    s.listen(backlog)
    s.setblocking(False)
    return s


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


def bind_sockets(cfg: ServerConfig) -> tuple[socket.socket | None, socket.socket | None, bool]:
    """(unix, tcp, activated): ours, or systemd's when socket-activated (then the unit owns the file)."""
    unix, tcp = _systemd_sockets()
    activated = unix is not None or tcp is not None
    backlog = min(4096, max(128, cfg.max_connections))
    if not activated:
        if cfg.socket:
            unix = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group, backlog)
        addr = cfg.tcp_address()
        if addr is not None:
            tcp = _bind_tcp(addr[0], addr[1], backlog)
    for s in (unix, tcp):
        if s is not None:
            s.setblocking(False)
    return unix, tcp, activated


def _sd_notify(msg: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


class Supervisor:
    """The master process."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.log = JsonLog(cfg.log_file, decisions=False, worker=None)
        self.children: dict[int, tuple[int, float]] = {}   # pid -> (slot, start time)
        self.quick_deaths = 0
        self.stopping = False
        self.unix: socket.socket | None = None
        self.tcp: socket.socket | None = None
        self.activated = False
        self.own_metrics_dir = cfg.metrics_dir is None
        self.metrics_dir = cfg.metrics_dir or tempfile.mkdtemp(prefix="fastkrb-metrics-")
        self.ready_r, self.ready_w = os.pipe()

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(self.ready_r)
                from fastkrb.sidecar.app import run_worker

                code = run_worker(self.cfg, slot, self.unix, self.tcp, self.metrics_dir, self.ready_w)
            except BaseException as exc:  # report, never return into the master's code
                with contextlib.suppress(Exception):
                    self.log.event("worker_failed", level="error", error=f"{type(exc).__name__}: {exc}")
            finally:
                os._exit(code)
        self.children[pid] = (slot, time.monotonic())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot, started = self.children.pop(pid, (-1, 0.0))
            if slot < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            self.log.event("worker_exited", level="error", pid=pid, slot=slot, exit=code)
            self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - started < 1.0 else 0
            if self.quick_deaths >= 5:
                self.log.event("giving_up", level="error", reason="workers die right after starting")
                self.stopping = True
                self._signal_all(signal.SIGTERM)
                return
            self._spawn(slot)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def run(self) -> int:
        cfg = self.cfg
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.unix, self.tcp, self.activated = bind_sockets(cfg)
            self.log.event("starting", pid=os.getpid(), workers=cfg.workers, socket=cfg.socket, tcp=cfg.tcp,
                           socket_activated=self.activated,
                           replay_cache=redact_url(cfg.replay_spec()), keytab=cfg.keytab)
            for slot in range(cfg.workers):
                self._spawn(slot)
            os.close(self.ready_w)
            self._wait_ready()
            while self.children:
                info = signal.sigtimedwait(_SIGNALS, 1.0)
                if info is None:
                    continue
                if info.si_signo == signal.SIGCHLD:
                    self._reap()
                elif info.si_signo == signal.SIGHUP:
                    self.log.event("reload_requested", signal="SIGHUP")
                    self._signal_all(signal.SIGHUP)
                elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    self._shutdown()
            return 0
        finally:
            self._cleanup()

    def _wait_ready(self) -> None:
        """READY=1 to systemd once every worker listens (or after 30 s, whatever happened)."""
        got = 0
        deadline = time.monotonic() + 30
        os.set_blocking(self.ready_r, False)
        while got < self.cfg.workers and time.monotonic() < deadline and self.children:
            try:
                got += len(os.read(self.ready_r, 64))
            except BlockingIOError:
                info = signal.sigtimedwait(_SIGNALS, 0.02)
                if info is not None and info.si_signo == signal.SIGCHLD:
                    self._reap()
                elif info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    self._shutdown()
                    return
        if got >= self.cfg.workers:
            _sd_notify("READY=1")
            self.log.event("ready", workers=got)

    def _shutdown(self) -> None:
        """SIGTERM: every worker drains; whoever has not exited after drain_timeout + 5 s is killed."""
        _sd_notify("STOPPING=1")
        self.log.event("stopping", workers=len(self.children))
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.drain_timeout + 5
        while self.children and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            self._reap()
        if self.children:
            self._signal_all(signal.SIGKILL)
            while self.children:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
                self._reap()

    def _cleanup(self) -> None:
        for s in (self.unix, self.tcp):
            if s is not None:
                s.close()
        if self.cfg.socket and self.unix is not None and not self.activated:
            with contextlib.suppress(OSError):
                os.unlink(self.cfg.socket)
        with contextlib.suppress(OSError):
            os.close(self.ready_r)
        if self.own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log.event("stopped", pid=os.getpid())
        self.log.close()


def preflight(cfg: ServerConfig) -> list[str]:
    """What must hold before forking: a readable keytab with usable keys, a group map and policies that load
    (workers would only crash-loop)."""
    from fastkrb.errors import KerberosError
    from fastkrb.keytab import Keytab

    try:
        problems = keytab_problems(Keytab.load(cfg.keytab), cfg)
    except KerberosError as exc:
        problems = [exc.cause]
    return problems + policy_problems(cfg)


def serve(cfg: ServerConfig) -> int:
    """``fastkrb serve``: 0 after a clean shutdown, 2 when the configuration cannot work."""
    from fastkrb.replay import parse_replay_spec

    problems = preflight(cfg)
    if problems:
        for p in problems:
            print(f"fastkrb serve: {p}", file=sys.stderr)
        return 2
    if parse_replay_spec(cfg.replay_spec()).kind == "memory" and cfg.workers > 1:
        print(f"fastkrb serve: warning: replay_cache=memory with {cfg.workers} workers: each worker has its own "
              "cache (a token replayed to another worker is accepted); use shm:/path", file=sys.stderr)
    try:
        return Supervisor(cfg).run()
    except OSError as exc:
        print(f"fastkrb serve: {exc}", file=sys.stderr)
        return 2


def main(args: Any) -> int:
    """The CLI's entry: merge the configuration, then --check or serve."""
    from fastkrb.sidecar.config import ConfigError, load_config, main_check

    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"fastkrb serve: {exc}", file=sys.stderr)
        return 2
    if cfg.check:
        return main_check(cfg)
    return serve(cfg)
