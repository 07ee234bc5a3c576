"""Drive a real `fastkrb serve` with the load generator, from another process: for `fastkrb bench` and benches/.

The daemon and each load generator are separate processes (as proxies are), so what is measured is the
sidecar over its Unix socket. The daemon's own CPU time per answered request is reported too: a figure
that other jobs on the machine do not distort (they take cores away, not CPU time per request).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PY = sys.executable
SUN_PATH_MAX = 107   # bytes of a Unix socket's path (sockaddr_un.sun_path, 108 with its NUL, on Linux)

# every daemon and load generator started here and not yet reaped: kill_children() ends them (with their
# own children: each runs in its own process group), whatever way the caller is leaving
_children: set[subprocess.Popen[bytes]] = set()
# the replay files Daemon put on tmpfs and not yet removed: in memory until someone deletes them
_tmpfs_files: set[str] = set()


def _spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """A child in its own session: Ctrl-C in the terminal reaches only the planner, which then ends the
    child's whole process group (a daemon's workers too) instead of racing it."""
    p = subprocess.Popen(cmd, env=_env(), start_new_session=True, **kw)
    _children.add(p)
    return p


def _end_group(p: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the child, SIGKILL it after ``grace`` seconds, then SIGKILL whatever is left of its group."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)   # the group id is the child's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    _children.discard(p)


def kill_children() -> None:
    """End every daemon and load generator this process started and has not reaped (and their groups)."""
    for p in list(_children):
        _end_group(p, grace=5.0)
    for path in list(_tmpfs_files):
        _remove_replay_file(path)


def _remove_replay_file(path: str) -> None:
    for p in (path, path + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    _tmpfs_files.discard(path)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    src = str(Path(__file__).resolve().parents[2])   # the tree this fastkrb is imported from
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _tmpfs_replay_file(capacity: int) -> str | None:
    """A path for the shared-memory replay file on a memory file system with room for it, as a deployment has
    it (the default beside the socket in /run/fastkrb): a workdir under $TMPDIR is often on disk, where the
    table's pages fault into the file system and are written back (`fastkrb serve --check` warns of that),
    which no production daemon pays. None: no such tmpfs here (a container's /dev/shm is often 64 MiB), the
    default beside the socket is used; ``Daemon.replay_file`` says which."""
    from fastkrb.sidecar.config import MEMORY_FS, mount_of, shm_file_size

    need = shm_file_size(capacity) * 11 // 10
    for d in ("/dev/shm", "/run"):
        if os.path.isdir(d) and os.access(d, os.W_OK) and mount_of(d)[1] in MEMORY_FS:
            vfs = os.statvfs(d)
            if vfs.f_bavail * vfs.f_frsize >= need:
                return os.path.join(d, f"fastkrb-bench-{os.getpid()}-{next(_serial)}.shm")
    return None


_serial = itertools.count()


class Daemon:
    """`fastkrb serve` with ``workers`` processes on a Unix socket in ``workdir``; ready when every worker is."""

    def __init__(self, workdir: Path, keytab: Path, workers: int, extra: Sequence[str] = ()) -> None:
        self.sock = workdir / f"d{workers}.sock"   # short: a Unix socket's path holds at most 107 bytes
        self.log = workdir / f"bench-{workers}.log"
        if len(os.fsencode(self.sock)) > SUN_PATH_MAX:
            raise RuntimeError(f"the sidecar's socket path {self.sock} is longer than a Unix socket allows "
                               f"({SUN_PATH_MAX} bytes): use a shorter TMPDIR")
        metrics = workdir / f"bench-{workers}.metrics"   # not a private dir in $TMPDIR: all under workdir
        metrics.mkdir(exist_ok=True)
        capacity = int(extra[extra.index("--replay-capacity") + 1]) if "--replay-capacity" in extra else 1 << 20
        self.shm = _tmpfs_replay_file(capacity) if "--replay-cache" not in extra else None
        if self.shm:
            _tmpfs_files.add(self.shm)
        cache = ("--replay-cache", f"shm:{self.shm}") if self.shm else ()
        # where the replay table is, for the results: a tmpfs file, the default beside the socket, or extra's
        self.replay_file = self.shm or ("(--replay-cache given)" if "--replay-cache" in extra
                                        else str(workdir / "fastkrb-replay.shm"))
        cmd = [PY, "-m", "fastkrb", "serve", "--keytab", str(keytab), "--socket", str(self.sock), "--workers",
               str(workers), "--log-file", str(self.log), "--metrics-dir", str(metrics), *cache, *extra]
        self.proc = _spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log.exists() and self.log.read_text().count('"worker_ready"') >= workers:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        last = self.log.read_text().strip().splitlines()[-1:] if self.log.exists() else []
        raise RuntimeError(f"fastkrb serve did not start within 30 s ({last[0][:300] if last else 'no log'})")

    def cpu(self) -> float:
        """CPU seconds (user + system) the workers have used so far."""
        total = 0.0
        for line in self.log.read_text().splitlines():
            if '"worker_ready"' in line:
                pid = json.loads(line)["pid"]
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        _end_group(self.proc, grace=30.0)
        if self.shm:
            _remove_replay_file(self.shm)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load(sock: Path, keytab: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start one load generator process (see fastkrb.capacity.loadgen for its options)."""
    return _spawn([PY, "-m", "fastkrb.capacity.loadgen", "--socket", str(sock), "--keytab", str(keytab), *args],
                  stdout=subprocess.PIPE)


def result(p: subprocess.Popen[bytes]) -> dict[str, Any]:
    try:
        out, _ = p.communicate(timeout=600)
    finally:
        _end_group(p)
    if p.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {p.returncode})")
    return json.loads(out)  # type: ignore[no-any-return]


def measured(d: Daemon, *procs: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """Results of load processes started just before, with the daemon's CPU cost per answered request."""
    c0 = d.cpu()
    rs = [result(p) for p in procs]
    dcpu = d.cpu() - c0
    answered = sum(sum(r["answers"].values()) for r in rs)
    for r in rs:
        r["daemon_cpu_us_per_request"] = round(dcpu / max(1, answered) * 1e6, 2)
        r["per_core_capacity"] = round(answered / dcpu) if dcpu else None
    return rs
