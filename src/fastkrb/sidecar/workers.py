"""The supervisor: bind the sockets once, fork N workers that all accept on them, keep N alive.

The master does no request work. It creates the Unix socket (mode and group applied before anyone can
connect) and the optional loopback TCP socket, or takes them from systemd socket activation
(``LISTEN_FDS``), forks the workers, forwards SIGHUP (reload) and SIGTERM (drain), and replaces a worker
that dies. A worker that dies within a second of its start five times in a row stops the daemon: that
is a configuration fault, not bad luck, and a restart loop would hide it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from fastkrb.errors import KerberosError
from fastkrb.sidecar.config import (
    ServerConfig,
    SocketAccess,
    StartupError,
    cannot_bind_in,
    cannot_create_dir,
    challenge_problems,
    keytab_problems,
    policy_problems,
    redact_url,
    replay_dir_problem,
    replay_file_problem,
    session_problems,
    socket_dir_problem,
    socket_file_problem,
    unknown_group,
    user_name,
    whoami,
)
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


def _make_socket_dir(cfg: ServerConfig) -> str | None:
    """Create the socket's directory when it is missing (socket_dir_mode, so that the proxy may enter it);
    the directory created (removed again if the start fails), or None."""
    assert cfg.socket
    d = os.path.dirname(os.path.abspath(cfg.socket))
    if os.path.isdir(d):
        return None
    if os.path.lexists(d):
        raise StartupError(f"the socket directory {d} is not a directory", "choose another --socket", {"path": d})
    try:
        os.mkdir(d, cfg.socket_dir_mode)
    except FileExistsError:
        return None
    except OSError as exc:
        raise cannot_create_dir(d, exc) from None
    os.chmod(d, cfg.socket_dir_mode)   # past the umask
    return d


def _bind_unix(path: str, mode: int, group: str | None, backlog: int) -> socket.socket:
    """The listening Unix socket, mode and group applied before anyone can connect; on any failure nothing
    is left at ``path``."""
    problem = socket_file_problem(path)   # not a socket, or a live one: never deleted
    if problem is not None:
        raise problem
    d = os.path.dirname(os.path.abspath(path))
    gid = None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise unknown_group(group) from None
    try:
        if os.path.lexists(path):
            os.unlink(path)   # a stale socket from a daemon that is gone
    except OSError as exc:
        raise cannot_bind_in(d, path, exc) from None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777)   # no window in which the socket exists with wider permissions
    try:
        s.bind(path)
    except OSError as exc:
        s.close()
        if exc.errno is None:   # "AF_UNIX path too long": sun_path holds 107 bytes and a NUL
            raise StartupError(f"the socket path {path} is too long for a Unix socket ({len(os.fsencode(path))} "
                               "bytes, at most 107)", "choose a shorter --socket", {"path": path}) from None
        raise cannot_bind_in(d, path, exc) from None
    finally:
        os.umask(old)
    try:
        if gid is not None:
            try:
                os.chown(path, -1, gid)
            except PermissionError:
                user = user_name(os.geteuid())
                raise StartupError(f"cannot give the socket {path} to group {group}: {whoami()} is not a member "
                                   f"of it", f"add it (usermod -aG {group} {user}) or run the daemon with "
                                   f"SupplementaryGroups={group}", {"path": path, "group": group}) from None
        os.chmod(path, mode)
        s.listen(backlog)
    except BaseException:
        s.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    s.setblocking(False)
    return s


def _tcp_failure(host: str, port: int, exc: OSError) -> StartupError:
    """One sentence for a TCP address that cannot be listened on, naming it."""
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    details = {"address": addr}
    if isinstance(exc, socket.gaierror):
        return StartupError(f"cannot listen on {addr}: the host name {host} does not resolve",
                            "give an IP address with --tcp", details)
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{addr} is already in use by another process",
                            "stop it, or choose another address with --tcp", details)
    if exc.errno == errno.EACCES and port < 1024:
        return StartupError(f"cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE, and "
                            f"{whoami()} has neither", "choose a port above 1023 with --tcp", details)
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"cannot listen on {addr}: no network interface of this host has the address {host}",
                            "choose a local address with --tcp (127.0.0.1)", details)
    return StartupError(f"cannot listen on {addr}: {exc.strerror or exc}", "choose another address with --tcp",
                        details)


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
    except OSError as exc:
        s.close()
        raise _tcp_failure(host, port, exc) from None
    s.setblocking(False)
    return s


def _remove_if_empty(d: str | None) -> None:
    if d is not None:
        with contextlib.suppress(OSError):
            os.rmdir(d)


def bind_sockets(cfg: ServerConfig) -> tuple[socket.socket | None, socket.socket | None, bool, str | None]:
    """(unix, tcp, activated, created_dir): ours, or systemd's when socket-activated (then the unit owns the
    file). On a failure nothing stays behind: neither socket file nor the directory made for it."""
    unix, tcp = _systemd_sockets()
    activated = unix is not None or tcp is not None
    backlog = min(4096, max(128, cfg.max_connections))
    created: str | None = None
    if not activated:
        try:
            if cfg.socket:
                created = _make_socket_dir(cfg)
                unix = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group, backlog)
            addr = cfg.tcp_address()
            if addr is not None:
                tcp = _bind_tcp(addr[0], addr[1], backlog)
        except BaseException:
            if unix is not None:
                unix.close()
                with contextlib.suppress(OSError):
                    os.unlink(cfg.socket or "")
            _remove_if_empty(created)
            raise
    for s in (unix, tcp):
        if s is not None:
            s.setblocking(False)
    return unix, tcp, activated, created


def open_replay_file(cfg: ServerConfig) -> list[str]:
    """Create (or check) the shared-memory replay file before forking, so that a file that cannot be made is
    one sentence at start rather than workers dying in a loop; the files this created (removed if the start
    fails: an shm file and its lock)."""
    from fastkrb.errors import ReplayCacheUnavailable
    from fastkrb.replay import ShmReplayCache, parse_replay_spec

    rs = parse_replay_spec(cfg.replay_spec())
    if rs.kind != "shm":
        return []
    path = rs.location
    problem = replay_dir_problem(path)
    if problem is not None:
        raise problem
    created = [p for p in (path, path + ".lock") if not os.path.lexists(p)]
    try:
        ShmReplayCache(path, cfg.replay_capacity, cfg.clock_skew, cfg.cold_start).close()
    except ReplayCacheUnavailable as exc:
        _remove(created)
        raise StartupError(f"cannot open the replay cache file {path}: {exc.details.get('reason', exc.cause)}",
                           "give the daemon's user its directory, or choose another path with --replay-cache",
                           {"path": path}) from None
    return created


def _remove(paths: list[str]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


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
        # Both pipes stay open in the master for its whole life: a replacement worker inherits write ends that
        # are still these pipes (never a closed number that its own files may have reused), and the master's
        # reads never meet an end of file, so waiting for readiness keeps handling signals. Non-blocking ends:
        # a full pipe loses a byte, never stalls a worker.
        self.ready_r, self.ready_w = os.pipe()
        self.fail_r, self.fail_w = os.pipe()    # a worker that cannot start writes its one-line reason here
        for fd in (self.ready_r, self.ready_w, self.fail_r, self.fail_w):
            os.set_blocking(fd, False)
        self.started = False
        self.ready_seen = False
        self.gave_up = False
        self.last_failure = "no reason was reported"
        self.created_dir: str | None = None      # made for the socket by this start
        self.created_files: list[str] = []      # the replay file (and its lock) made by this start

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(self.ready_r)
                os.close(self.fail_r)
                from fastkrb.sidecar.app import run_worker

                code = run_worker(self.cfg, slot, self.unix, self.tcp, self.metrics_dir, self.ready_w)
            except BaseException as exc:  # report, never return into the master's code
                why = exc.cause if isinstance(exc, KerberosError) else f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    self.log.event("worker_failed", level="error", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):   # one write below PIPE_BUF: whole, never interleaved
                    os.write(self.fail_w, (" ".join(why.split())[:1000] + "\n").encode())
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
            self._read_failures()
            if self.stopping:
                continue
            self.log.event("worker_exited", level="error", pid=pid, slot=slot, exit=code)
            self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - started < 1.0 else 0
            if self.quick_deaths >= 5:
                self.log.event("giving_up", level="error", reason="workers die right after starting")
                self.stopping = True
                self.gave_up = True
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
            self.unix, self.tcp, self.activated, self.created_dir = bind_sockets(cfg)
            self.created_files = open_replay_file(cfg)
            self.started = True
            access = self._socket_access()
            self.log.event("starting", pid=os.getpid(), workers=cfg.workers, socket=cfg.socket, tcp=cfg.tcp,
                           socket_activated=self.activated, socket_access=access.describe(cfg) if access else None,
                           replay_cache=redact_url(cfg.replay_spec()), keytab=cfg.keytab)
            for warning in access.proxy_warnings(cfg) if access else ():
                self.log.event("socket_access", level="warning", message=warning)
            for slot in range(cfg.workers):
                self._spawn(slot)
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
            if self.gave_up:
                self._read_failures()
                raise StartupError(f"the workers exit right after starting ({self.last_failure})",
                                   "fix that and start fastkrb serve again (each worker's error is in the log as "
                                   "worker_failed)")
            return 0
        finally:
            self._cleanup()

    def _socket_access(self) -> SocketAccess | None:
        """Who may connect to the socket as it is now (ours, or systemd's), for the start-up log."""
        path = self.unix.getsockname() if self.unix is not None else None
        if not isinstance(path, str) or not path:
            return None
        try:
            return SocketAccess.of_file(path)
        except OSError:
            return None

    def _read_failures(self) -> None:
        """The newest reason a worker gave for failing (the pipe is drained on every reap, so it never fills)."""
        while True:
            try:
                chunk = os.read(self.fail_r, 65536)
            except OSError:
                return
            if not chunk:
                return
            lines = [line for line in chunk.decode(errors="replace").splitlines() if line.strip()]
            if lines:
                self.last_failure = lines[-1]

    def _wait_ready(self) -> None:
        """READY=1 to systemd once every worker listens (or after 30 s, whatever happened)."""
        got = 0
        deadline = time.monotonic() + 30
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
        self.ready_seen = got > 0   # a worker listened: the daemon served, its replay file is in service
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
        # a worker that said ready before a SIGTERM the master took first (its byte still in the pipe, unread)
        # served too: the pipe keeps the bytes after the writer is gone
        with contextlib.suppress(OSError):
            self.ready_seen = self.ready_seen or bool(os.read(self.ready_r, 64))
        if not self.ready_seen:   # a start that failed leaves nothing behind; a replay file in service stays
            _remove(self.created_files)
            _remove_if_empty(self.created_dir)
        for fd in (self.ready_r, self.ready_w, self.fail_r, self.fail_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self.started:
            self.log.event("stopped", pid=os.getpid())
        self.log.close()


def preflight(cfg: ServerConfig) -> list[str]:
    """What must hold before binding and forking, each as one sentence: a readable keytab with usable keys,
    a group map and policies that load (workers would only crash-loop), the socket group, and nothing at the
    socket's or the replay file's path that fastkrb serve would have to destroy."""
    from fastkrb.keytab import Keytab
    from fastkrb.replay import parse_replay_spec

    try:
        problems = keytab_problems(Keytab.load(cfg.keytab), cfg)
    except KerberosError as exc:
        problems = [exc.cause]
    problems += policy_problems(cfg)
    problems += session_problems(cfg)
    problems += challenge_problems(cfg)
    found: list[StartupError | None] = []
    if cfg.socket and not _systemd_owns_sockets():
        found.append(socket_file_problem(cfg.socket) or socket_dir_problem(cfg))
        if cfg.socket_group and _gid(cfg.socket_group) is None:
            found.append(unknown_group(cfg.socket_group))
    rs = parse_replay_spec(cfg.replay_spec())
    if rs.kind == "shm":
        found.append(replay_file_problem(rs.location))
    return problems + [p.sentence() for p in found if p is not None]


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _systemd_owns_sockets() -> bool:
    return os.environ.get("LISTEN_PID") == str(os.getpid())


def serve(cfg: ServerConfig) -> int:
    """``fastkrb serve``: 0 after a clean shutdown, 2 when the configuration cannot work on this host (one
    sentence on standard error naming the path, address, group or user, and the fix)."""
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
    except StartupError as exc:
        print(f"fastkrb serve: {exc.sentence()}", file=sys.stderr)
        return 2
    except OSError as exc:   # not foreseen above: still one line, with the object the system named
        what = f"{exc.filename}: " if exc.filename else ""
        print(f"fastkrb serve: cannot start: {what}{exc.strerror or exc}; check that {whoami()} may use it",
              file=sys.stderr)
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
