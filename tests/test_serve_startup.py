"""``fastkrb serve`` start-up on a real host (issue 14 item 2): the socket's directory is created when it can
be, and every failure is one sentence on standard error naming the object (path, address, group, user) and
the fix, exit status 2, no traceback, and nothing left behind (socket file, directory, replay file).

Every case runs the daemon as a user would (``python -m fastkrb serve``). The tests run as root, for whom
every directory is writable; the permission cases therefore run the daemon with CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped (``setpriv``), so that the kernel itself refuses the write, as it would for a
service user.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fastkrb.testing import make_keytab
from support.sidecar import SRC, Sidecar

NO_DAC = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def keytab(tmp_path: Path) -> Path:
    p = tmp_path / "http.keytab"
    p.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(3)).to_bytes())
    p.chmod(0o600)
    return p


def serve(*args: str, prefix: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    env["PYTHONPATH"] = SRC
    return subprocess.run([*prefix, sys.executable, "-m", "fastkrb", "serve", "--workers", "1", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_sentence(out: subprocess.CompletedProcess[str]) -> str:
    """The failure as printed: exit 2, one line on standard error, nothing on standard output."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Errno" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastkrb serve: "), out.stderr
    return lines[0]


def without_dac_override() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to run the daemon without root's file rights"
    return (setpriv, *NO_DAC)


def test_a_missing_socket_directory_is_created(tmp_path: Path, keytab: Path) -> None:
    sock = tmp_path / "run" / "fastkrb" / "fastkrb.sock"
    (tmp_path / "run").mkdir()
    sc = Sidecar(tmp_path, keytab, socket_path=sock).start()
    try:
        st = os.stat(sock.parent)
        assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == os.geteuid()
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert sc.http("GET", "/healthz")[0] == 200
        starting = next(e for e in sc.events() if e.get("event") == "starting")
        assert starting["socket_access"].startswith(f"socket {sock} (as it is now): mode 0660, owner root")
    finally:
        assert sc.stop() == 0
    assert not sock.exists()
    assert (sock.parent / "fastkrb-replay.shm").exists()   # the replay cache outlives the daemon, by design


def test_a_socket_directory_that_cannot_be_created_names_the_permission(tmp_path: Path, keytab: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    d = parent / "fastkrb"
    out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"), prefix=without_dac_override())
    assert one_sentence(out) == (
        f"fastkrb serve: cannot create {d}: {parent} is not writable by user root (uid 0) (mode 0555, owner root, "
        f"group root); create it as root: install -d -o root {d}")
    assert os.listdir(parent) == []
    # the directory exists but the socket cannot be made in it
    out = serve("--keytab", str(keytab), "--socket", str(parent / "fastkrb.sock"), prefix=without_dac_override())
    assert one_sentence(out) == (
        f"fastkrb serve: cannot create the socket {parent / 'fastkrb.sock'}: {parent} is not writable by user root "
        f"(uid 0) (mode 0555, owner root, group root); give the directory to that user (chown root {parent}), or "
        "choose another --socket")
    assert os.listdir(parent) == []
    # control: with root's rights the same command starts (the refusal above was the permission, nothing else)
    with Sidecar(tmp_path, keytab, socket_path=parent / "fastkrb.sock"):
        pass


def test_a_socket_directory_that_is_a_file_or_has_no_parent(tmp_path: Path, keytab: Path) -> None:
    out = serve("--keytab", str(keytab), "--socket", str(keytab / "fastkrb.sock"))
    assert one_sentence(out) == (f"fastkrb serve: the socket directory {keytab} is not a directory; choose another "
                                 "--socket")
    d = tmp_path / "nowhere" / "fastkrb"
    out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"))
    assert one_sentence(out) == (f"fastkrb serve: cannot create {d}: its parent {d.parent} does not exist; create "
                                 "it, or choose another --socket")
    assert not d.parent.exists()


def test_a_busy_port_names_the_address_and_leaves_nothing(tmp_path: Path, keytab: Path) -> None:
    d = tmp_path / "fastkrb"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"), "--tcp", f"127.0.0.1:{port}")
    assert one_sentence(out) == (f"fastkrb serve: 127.0.0.1:{port} is already in use by another process; stop it, "
                                 "or choose another address with --tcp")
    assert not d.exists()   # the socket it had bound and the directory it had made are gone again


def test_an_unknown_group_or_user_is_a_sentence(tmp_path: Path, keytab: Path) -> None:
    d = tmp_path / "fastkrb"
    d.mkdir()
    out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"), "--socket-group", "nosuchgroup")
    assert one_sentence(out) == (
        "fastkrb serve: there is no group named 'nosuchgroup' on this host (--socket-group); give an existing group, "
        "the proxy's (e.g. --socket-group www-data), or create it (groupadd nosuchgroup)")
    assert os.listdir(d) == []
    out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"), "--allow-uids", "nosuchuser")
    assert one_sentence(out) == (
        "fastkrb serve: flag: bad value for --allow-uids: ['nosuchuser'] (there is no user named 'nosuchuser' on "
        "this host; give an existing user or a uid)")
    out = serve("--keytab", str(keytab), "--socket", str(d / "fastkrb.sock"), "--allow-gids", "nosuchgroup")
    assert "there is no group named 'nosuchgroup' on this host" in one_sentence(out)
    assert os.listdir(d) == []


def test_files_in_the_way_are_never_deleted_or_overwritten(tmp_path: Path, keytab: Path) -> None:
    """A --socket or replay path that names another file (a typo, a keytab) stops the start; the file stays."""
    before = keytab.read_bytes()
    out = serve("--keytab", str(keytab), "--socket", str(keytab))
    assert one_sentence(out) == (f"fastkrb serve: {keytab} exists and is not a socket (fastkrb serve would have to "
                                 "delete it); remove it, or choose another --socket")
    out = serve("--keytab", str(keytab), "--socket", str(tmp_path / "s.sock"), "--replay-cache", f"shm:{keytab}")
    assert one_sentence(out) == (f"fastkrb serve: the replay cache file {keytab} exists and is not a fastkrb replay "
                                 "cache (opening it would overwrite it); choose another path with --replay-cache")
    assert keytab.read_bytes() == before
    assert not (tmp_path / "s.sock").exists()


def test_a_socket_in_use_is_refused(tmp_path: Path, keytab: Path) -> None:
    with Sidecar(tmp_path, keytab) as sc:
        out = serve("--keytab", str(keytab), "--socket", sc.socket)
        assert one_sentence(out) == (
            f"fastkrb serve: {sc.socket} is in use by a running process (another fastkrb serve, or systemd's "
            "fastkrb.socket); stop it, or choose another --socket")
        assert sc.http("GET", "/healthz")[0] == 200   # the running daemon kept its socket


def test_a_replay_file_that_cannot_be_made_is_a_sentence(tmp_path: Path, keytab: Path) -> None:
    d = tmp_path / "fastkrb"
    out = serve("--keytab", str(keytab), "--socket", str(d / "s.sock"), "--replay-cache", "shm:/nonexistent/r.shm")
    assert one_sentence(out) == ("fastkrb serve: the directory /nonexistent of the replay cache file does not exist; "
                                 "create it, or choose another path with --replay-cache")
    # over the native limit: refused when the master creates the file, before any worker runs
    out = serve("--keytab", str(keytab), "--socket", str(d / "s.sock"), "--replay-capacity", str(1 << 31))
    assert one_sentence(out) == (
        f"fastkrb serve: cannot open the replay cache file {d / 'fastkrb-replay.shm'}: cannot open "
        f"{d / 'fastkrb-replay.shm'}: capacity {1 << 31} is over the limit; give the daemon's user its directory, or "
        "choose another path with --replay-cache")
    assert not d.exists()


def test_workers_that_die_at_start_stop_the_daemon_with_their_reason(tmp_path: Path, keytab: Path) -> None:
    """A worker that cannot start (here: an in-process replay table over the native limit) is replaced; five
    quick deaths in a row stop the daemon with exit 2 and the worker's own reason, within seconds."""
    d = tmp_path / "fastkrb"
    log = tmp_path / "serve.log"
    out = serve("--keytab", str(keytab), "--socket", str(d / "s.sock"), "--replay-cache", "memory",
                "--replay-capacity", str(1 << 40), "--log-file", str(log), timeout=20)
    assert one_sentence(out) == (
        "fastkrb serve: the workers exit right after starting (MemoryError: replay cache allocation failed); fix that "
        "and start fastkrb serve again (each worker's error is in the log as worker_failed)")
    assert "giving_up" in log.read_text()
    assert not d.exists()
