"""``fastkrb serve --check`` (issue 14 item 2, issue 15 item 4): besides errors (exit 2) it states who can connect
to the socket and warns (exit 0) about what would hurt in service: nginx's user locked out of the socket, a
dev-only keytab, a keytab others may read, a shared-memory replay file on a disk file system, a Redis that
does not answer; and it states the shared-memory replay file's size, the rate it holds and where it lives.

Each warning is held against the real thing: the socket verdict against a connection made as www-data, the
file system against findmnt, the replay file's size against the file the native code writes, Redis against
a running redis-server."""

from __future__ import annotations

import grp
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkrb.replay import ShmReplayCache
from fastkrb.sidecar.config import shm_file_size
from fastkrb.testing import make_keytab
from fastkrb.tools.dev import dev_init
from support.procs import free_port
from support.redis_server import RedisServer
from support.sidecar import SRC, Sidecar

REPO = Path(__file__).resolve().parents[1]
PROXIES = [name for name in ("www-data", "nginx") if name in {p.pw_name for p in pwd.getpwall()}]


@pytest.fixture
def keytab(tmp_path: Path) -> Path:
    p = tmp_path / "http.keytab"
    p.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(4)).to_bytes())
    p.chmod(0o600)
    return p


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh directory on /dev/shm (tmpfs, and every user may enter /dev/shm)."""
    d = Path("/dev/shm") / f"fastkrb-test-{uuid.uuid4().hex[:12]}"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check(*args: str) -> tuple[int, list[str], list[str], list[str]]:
    """(exit status, facts, warnings, errors) of ``fastkrb serve --check``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    env["PYTHONPATH"] = SRC
    out = subprocess.run([sys.executable, "-m", "fastkrb", "serve", "--check", "--workers", "1", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    tail = out.stdout.split("\n}\n", 1)[1].splitlines()   # after the JSON of the configuration
    warnings = [line[len("warning: "):] for line in tail if line.startswith("warning: ")]
    errors = [line[len("error: "):] for line in tail if line.startswith("error: ")]
    facts = [line for line in tail[:-1] if not line.startswith(("warning: ", "error: "))]
    summary = tail[-1]
    if errors:
        assert summary == f"configuration has {len(errors)} error(s) and {len(warnings)} warning(s)"
    else:
        assert summary == "configuration ok" + (f", {len(warnings)} warning(s)" if warnings else "")
    return out.returncode, facts, warnings, errors


def about(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


# -- who can connect to the socket ----------------------------------------------------------------------


def connect_as(user: str, sock: str) -> subprocess.CompletedProcess[str]:
    """GET /healthz over the socket as ``user`` (curl under setpriv: the kernel decides, as for nginx; -v for
    the reason of a failed connect)."""
    setpriv, curl = shutil.which("setpriv"), shutil.which("curl")
    assert setpriv and curl, "setpriv (util-linux) and curl are needed to connect as the proxy's user"
    return subprocess.run([setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", curl, "-sSv",
                           "--unix-socket", sock, "http://sidecar/healthz"], capture_output=True, text=True,
                          timeout=30)


def test_the_check_says_whether_nginx_can_connect_and_is_right(tmp_path: Path, keytab: Path, shm_dir: Path) -> None:
    assert PROXIES, "neither www-data nor nginx exists on this host (the nginx tests install nginx)"
    proxy = PROXIES[0]
    pgroup = grp.getgrgid(pwd.getpwnam(proxy).pw_gid).gr_name
    sock = shm_dir / "fastkrb" / "fastkrb.sock"

    code, facts, warnings, errors = check("--keytab", str(keytab), "--socket", str(sock))
    assert code == 0 and not errors
    assert f"socket directory {sock.parent} does not exist: fastkrb serve creates it (mode 0755, owner root)" in facts
    assert (f"socket {sock} (as fastkrb serve creates it): mode 0660, owner root, group root: members of group root "
            "and root can connect") in facts
    for name in PROXIES:
        w = about(warnings, f"user {name} (uid {pwd.getpwnam(name).pw_uid}; nginx runs as it) could not connect to "
                            f"{sock}: the socket's mode 0660 (owner root, group root) gives it no write permission")
        assert len(w) == 1 and "nginx would answer 500" in w[0] and "--socket-group" in w[0], warnings
    with Sidecar(tmp_path, keytab, socket_path=sock) as sc:
        refused = connect_as(proxy, sc.socket)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
        warned = [e for e in sc.events() if e.get("event") == "socket_access" and e.get("level") == "warning"]
        assert any(f"user {proxy} " in e["message"] for e in warned)
        # a running daemon's socket is judged as it is
        code, facts, warnings, _ = check("--keytab", str(keytab), "--socket", str(sock))
        assert f"socket {sock} (as it is now): mode 0660, owner root, group root" in " ".join(facts)
        assert about(warnings, f"user {proxy} ")

    code, facts, warnings, errors = check("--keytab", str(keytab), "--socket", str(sock), "--socket-group", pgroup)
    assert code == 0 and not errors and not about(warnings, f"user {proxy} ")
    assert about(facts, f"group {pgroup}: members of group {pgroup} and root can connect")
    with Sidecar(tmp_path, keytab, socket_path=sock, args=("--socket-group", pgroup), name="grouped") as sc:
        allowed = connect_as(proxy, sc.socket)
        assert allowed.returncode == 0 and '"ready": true' in allowed.stdout, allowed
        assert not [e for e in sc.events() if e.get("event") == "socket_access"]


def test_a_directory_the_proxy_cannot_enter_is_named(tmp_path: Path, keytab: Path, shm_dir: Path) -> None:
    assert PROXIES
    proxy = PROXIES[0]
    pgroup = grp.getgrgid(pwd.getpwnam(proxy).pw_gid).gr_name
    private = shm_dir / "private"
    private.mkdir()
    private.chmod(0o700)
    sock = private / "fastkrb.sock"
    code, _, warnings, _ = check("--keytab", str(keytab), "--socket", str(sock), "--socket-group", pgroup)
    assert code == 0
    w = about(warnings, f"user {proxy} ")
    assert len(w) == 1 and f"it may not enter {private} (mode 0700, owner root, group root)" in w[0], warnings
    with Sidecar(tmp_path, keytab, socket_path=sock, args=("--socket-group", pgroup)) as sc:
        refused = connect_as(proxy, sc.socket)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused


# -- the keytab -------------------------------------------------------------------------------------------


def test_keytab_warnings(tmp_path: Path, keytab: Path, shm_dir: Path) -> None:
    sock = str(shm_dir / "fastkrb.sock")
    code, _, warnings, errors = check("--keytab", str(keytab), "--socket", sock)
    assert code == 0 and not errors and not about(warnings, "keytab")
    keytab.chmod(0o644)
    code, _, warnings, _ = check("--keytab", str(keytab), "--socket", sock)
    assert code == 0
    assert about(warnings, f"keytab {keytab} is readable by every local user (mode 0644, owner root, group root): "
                           f"whoever reads it can pose as the service; chmod 600 {keytab}")
    assert PROXIES
    other = grp.getgrgid(pwd.getpwnam(PROXIES[0]).pw_gid).gr_name   # a group that is not the daemon's (root)
    os.chown(keytab, -1, grp.getgrnam(other).gr_gid)
    keytab.chmod(0o640)
    code, _, warnings, _ = check("--keytab", str(keytab), "--socket", sock)
    assert code == 0 and about(warnings, f"keytab {keytab} is readable by group {other} (mode 0640, owner root, "
                                         f"group {other}), which is not the daemon's group root")
    os.chown(keytab, -1, 0)   # 0640 with the daemon's own group: the usual way to hand a keytab to a service
    code, _, warnings, _ = check("--keytab", str(keytab), "--socket", sock)
    assert code == 0 and not about(warnings, "keytab")

    dev = tmp_path / "dev.keytab"
    dev_init("HTTP/api.dev.test", dev)
    code, _, warnings, errors = check("--keytab", str(dev), "--socket", sock)
    assert code == 2 and about(errors, "dev init") and about(errors, "--dev")
    code, _, warnings, errors = check("--keytab", str(dev), "--socket", sock, "--dev")
    assert code == 0 and not errors
    assert about(warnings, f"keytab {dev} is a `fastkrb dev init` keytab (throwaway keys no KDC knows): served "
                           "because this is a dev run (--dev); never use it in production")


# -- the replay cache -------------------------------------------------------------------------------------


def _fstype(path: Path) -> tuple[str, str]:
    out = subprocess.run(["findmnt", "-n", "-o", "TARGET,FSTYPE", "-T", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], out[1]


@pytest.mark.parametrize("capacity", [1, 1000, 65536, 131072, 300_001, 1 << 20])
def test_the_stated_size_is_the_size_of_the_file(shm_dir: Path, capacity: int) -> None:
    path = shm_dir / f"r{capacity}.shm"
    ShmReplayCache(str(path), capacity).close()
    assert os.path.getsize(path) == shm_file_size(capacity)


def test_the_shared_memory_cache_is_stated_and_a_disk_file_system_warned(keytab: Path, shm_dir: Path) -> None:
    sock = str(shm_dir / "fastkrb.sock")
    code, facts, warnings, _ = check("--keytab", str(keytab), "--socket", sock, "--clock-skew", "300")
    size = shm_file_size(1 << 20)
    assert code == 0 and not about(warnings, "tmpfs")
    assert (f"replay cache {shm_dir}/fastkrb-replay.shm: 1048576 live entries, enough for a peak of 1,747 "
            "validations/s (capacity >= peak validations/s x 2 x clock_skew 300 s; a full cache refuses tokens, fail "
            f"closed); the file takes {size} bytes ({size / 2**20:.1f} MiB) of memory on /dev/shm (tmpfs)") in facts
    assert not (shm_dir / "fastkrb-replay.shm").exists()   # --check creates nothing
    code, facts, _, _ = check("--keytab", str(keytab), "--socket", sock, "--replay-capacity", "120000",
                              "--clock-skew", "60")
    assert about(facts, f"120000 live entries, enough for a peak of 1,000 validations/s (capacity >= peak "
                        f"validations/s x 2 x clock_skew 60 s; a full cache refuses tokens, fail closed); the file "
                        f"takes {shm_file_size(120000)} bytes")

    disk = REPO / "tests" / f"never-created-{uuid.uuid4().hex[:8]}.shm"
    mnt, fstype = _fstype(disk.parent)
    assert fstype not in ("tmpfs", "ramfs"), f"the repository is on {fstype}: this test needs it on a disk"
    code, facts, warnings, errors = check("--keytab", str(keytab), "--socket", sock, "--replay-cache", f"shm:{disk}")
    assert code == 0 and not errors
    w = about(warnings, f"the replay cache file {disk} is on {mnt} ({fstype}), a disk file system, not tmpfs")
    assert len(w) == 1 and re.search(r"put it on a tmpfs such as [^;]*/dev/shm", w[0]), warnings
    assert about(facts, f"of disk and page cache on {mnt} ({fstype})")
    assert not disk.exists()


def test_a_replay_file_that_would_not_fit_is_warned(keytab: Path) -> None:
    """A tmpfs smaller than the file: the check says so before a worker fails to extend it."""
    small = Path("/dev/shm") / f"fastkrb-test-small-{uuid.uuid4().hex[:8]}"
    small.mkdir()
    try:
        # a 1 MiB tmpfs needs a mount; instead ask for more than /dev/shm can hold
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        capacity = 1 << 30   # the native maximum: about 64 GiB of table
        if shm_file_size(capacity) <= free:
            pytest.fail(f"/dev/shm has {free} bytes free, more than the largest table: cannot provoke the warning")
        code, _, warnings, _ = check("--keytab", str(keytab), "--socket", str(small / "s.sock"),
                                     "--replay-capacity", str(capacity))
        assert code == 0
        assert about(warnings, f"the replay cache file {small}/fastkrb-replay.shm needs "
                               f"{shm_file_size(capacity) / 2**20:.1f} MiB but /dev/shm has")
    finally:
        shutil.rmtree(small, ignore_errors=True)


def test_redis_that_does_not_answer_is_warned(tmp_path: Path, keytab: Path, shm_dir: Path) -> None:
    sock = str(shm_dir / "fastkrb.sock")
    port = free_port()
    code, _, warnings, errors = check("--keytab", str(keytab), "--socket", sock,
                                      "--replay-cache", f"redis://u:topsecret@127.0.0.1:{port}/0")
    assert code == 0 and not errors
    w = about(warnings, f"the Redis replay cache redis://u:***@127.0.0.1:{port}/0 does not answer (ConnectionError")
    assert len(w) == 1 and "every validation is refused (503 replay_cache_unavailable)" in w[0], warnings
    assert "topsecret" not in " ".join(warnings)
    redis = RedisServer(tmp_path / "redis", port=port)
    redis.start()
    try:
        code, _, warnings, _ = check("--keytab", str(keytab), "--socket", sock, "--replay-cache", redis.url)
        assert code == 0 and not about(warnings, "Redis")
    finally:
        redis.stop()


def test_errors_and_warnings_together_exit_2(keytab: Path, shm_dir: Path) -> None:
    keytab.chmod(0o644)
    code, _, warnings, errors = check("--keytab", str(keytab), "--socket", str(shm_dir / "s.sock"),
                                      "--socket-group", "nosuchgroup", "--replay-cache", f"shm:{keytab}")
    assert code == 2
    assert errors == [
        "there is no group named 'nosuchgroup' on this host (--socket-group); give an existing group, the proxy's "
        "(e.g. --socket-group www-data), or create it (groupadd nosuchgroup)",
        f"the replay cache file {keytab} exists and is not a fastkrb replay cache (opening it would overwrite it); "
        "choose another path with --replay-cache"]
    assert about(warnings, "readable by every local user")
