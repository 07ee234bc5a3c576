"""Operations of a real ``fastkrb serve``: keytab reload (file change, atomic rename, SIGHUP, broken file),
SIGTERM drain, worker death, limits (connections, timeouts, peer credentials), fairness under a flood."""

from __future__ import annotations

import base64
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastkrb import KerberosError
from fastkrb.client import Client
from fastkrb.keytab import Keytab
from fastkrb.sidecar import protocol
from fastkrb.testing import Minted, make_keytab, mint
from support.sidecar import Sidecar, parse_response, recv_all

CLIENT = "carol@EXAMPLE.TEST"
SERVICE = "HTTP/ops.example.test@EXAMPLE.TEST"


def keytab_v(kvno: int, seed: int) -> Keytab:
    return make_keytab((SERVICE,), kvno=kvno, rng=random.Random(seed))


def write_atomic(path: Path, kt: Keytab) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(kt.to_bytes())
    os.replace(tmp, path)


def union(*kts: Keytab) -> Keytab:
    return Keytab([e for kt in kts for e in kt.entries])


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reloads(sc: Sidecar, result: str) -> int:
    return sum(1 for e in sc.events() if e.get("event") == "keytab_reload" and e.get("result") == result)


def fresh(m: Minted, n: int = 1) -> list[bytes]:
    return m.variants(n, now=time.time() + 1)


@pytest.fixture
def kv1(tmp_path: Path) -> Path:
    p = tmp_path / "service.keytab"
    p.write_bytes(keytab_v(1, 11).to_bytes())
    return p


def test_reload_on_atomic_rename_then_in_place_rewrite(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1).start()
    try:
        old = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        new = mint(keytab_v(2, 22), client=CLIENT, server=SERVICE, now=time.time() + 1)
        with Client(sc.socket) as c:
            assert c.validate(fresh(old)[0]).kvno == 1
            with pytest.raises(KerberosError) as ei:
                c.validate(fresh(new)[0])
            assert ei.value.code == "key_version_mismatch"
            # rotation as it should be done: new file, renamed over the old one
            write_atomic(kv1, union(keytab_v(1, 11), keytab_v(2, 22)))
            wait_for(lambda: reloads(sc, "ok") >= 1, what="reload after rename")
            assert c.validate(fresh(new)[0]).kvno == 2
            assert c.validate(fresh(old)[0]).kvno == 1       # tickets from before the rotation still work
            assert c.ping()["kvnos"] == {SERVICE: 2}
            # and as ktadd does it: the same file rewritten in place, old keys dropped
            kv1.write_bytes(keytab_v(3, 33).to_bytes())
            wait_for(lambda: reloads(sc, "ok") >= 2, what="reload after rewrite")
            with pytest.raises(KerberosError) as ei:
                c.validate(fresh(old)[0])
            assert ei.value.code == "key_version_mismatch"
            assert ei.value.details["keytab_kvnos"] == [3]
    finally:
        assert sc.stop() == 0


def test_broken_keytab_is_refused_and_the_old_one_kept(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1).start()
    try:
        m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        write_atomic_bytes = kv1.with_suffix(".tmp")
        write_atomic_bytes.write_bytes(b"\x05\x02\x00\x00\x00\x30" + b"\xff" * 20)   # truncated entry
        os.replace(write_atomic_bytes, kv1)
        wait_for(lambda: reloads(sc, "refused") >= 1, what="refusal")
        refusal = [e for e in sc.events() if e.get("result") == "refused"][-1]
        assert refusal["level"] == "warning" and refusal["error"] and refusal["kept_kvnos"] == {SERVICE: 1}
        with Client(sc.socket) as c:
            assert c.validate(fresh(m)[0]).client == CLIENT      # still serving with the old keys
            assert c.ping()["ready"] is True
        # a keytab with none of the principals in service (another host's) is refused too
        write_atomic(kv1, make_keytab(("HTTP/elsewhere.example.test@EXAMPLE.TEST",), kvno=5, rng=random.Random(5)))
        wait_for(lambda: reloads(sc, "refused") >= 2, what="second refusal")
        assert "none of the principals in service" in [e for e in sc.events()
                                                        if e.get("result") == "refused"][-1]["error"]
        with Client(sc.socket) as c:
            assert c.validate(fresh(m)[0]).kvno == 1
        _status, _, body = sc.http("GET", "/metrics")
        assert b'fastkrb_keytab_reloads_total{result="error"}' in body
        # repaired: picked up on its next change
        write_atomic(kv1, keytab_v(1, 11))
        wait_for(lambda: reloads(sc, "ok") >= 1, what="reload of the repaired file")
    finally:
        assert sc.stop() == 0


def test_sighup_reloads(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1, args=("--reload-interval", "0")).start()   # no file watching: SIGHUP only
    try:
        new = mint(keytab_v(2, 22), client=CLIENT, server=SERVICE, now=time.time() + 1)
        write_atomic(kv1, union(keytab_v(1, 11), keytab_v(2, 22)))
        time.sleep(1.5)
        assert reloads(sc, "ok") == 0
        sc.signal(signal.SIGHUP)
        wait_for(lambda: reloads(sc, "ok") >= 1, what="reload on SIGHUP")
        with Client(sc.socket) as c:
            assert c.validate(fresh(new)[0]).kvno == 2
        assert [e for e in sc.events() if e.get("event") == "keytab_reload"][-1]["reason"] == "SIGHUP"
    finally:
        assert sc.stop() == 0


def test_rotation_under_load_fails_no_request(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1, workers=2).start()   # default replay cache: shared memory beside the socket
    m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
    toks = fresh(m, 40000)
    failures: list[str] = []
    done = [0]
    stop = threading.Event()

    def load(mine: list[bytes]) -> None:
        with Client(sc.socket) as c:
            i = 0
            while not stop.is_set() and i + 50 <= len(mine):
                for r in c.validate_many(mine[i:i + 50]):
                    if isinstance(r, KerberosError):
                        failures.append(r.code)
                    else:
                        done[0] += 1
                i += 50

    threads = [threading.Thread(target=load, args=(toks[k::2],)) for k in range(2)]
    try:
        for t in threads:
            t.start()
        for k in range(2, 8):   # six rotations, alternating atomic rename and in-place append
            kt = union(*(keytab_v(v, v * 11) for v in range(1, k + 1)))
            if k % 2:
                write_atomic(kv1, kt)
            else:
                data = kt.to_bytes()
                with open(kv1, "r+b") as fh:   # what `ktadd` does: append to the existing file
                    old = fh.read()
                    assert data.startswith(old)
                    rest = data[len(old):]
                    fh.write(rest[:7])
                    fh.flush()
                    time.sleep(0.3)            # a reader now sees a torn entry: it must be refused
                    fh.write(rest[7:])
            time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        assert sc.stop() == 0
    assert failures == []
    assert done[0] > 1000
    assert reloads(sc, "ok") >= 6   # both workers reloaded (several times each)


def test_sigterm_drains_requests_in_flight(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1).start()
    try:
        m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        toks = fresh(m, 3000)
        s = sc.connect()
        payload = b"".join(protocol.encode_validate(i + 1, t) for i, t in enumerate(toks))
        sender = threading.Thread(target=s.sendall, args=(payload,))   # the server pushes back: read meanwhile
        sender.start()
        first = s.recv(65536)
        assert first
        sc.signal(signal.SIGTERM)   # while most of the batch is still unread or unanswered
        data = first + recv_all(s)
        sender.join(30)
        s.close()
        kinds = [k for k, _, _ in protocol.iter_frames(data, 1 << 20)]
        assert kinds.count(protocol.ACCEPTED) == len(toks)
    finally:
        assert sc.stop() == 0
    assert not Path(sc.socket).exists()
    assert any(e.get("event") == "worker_stopped" for e in sc.events())


def test_killed_worker_is_replaced_and_the_others_serve(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1, workers=2).start()   # default: the shared-memory replay cache
    try:
        m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        used = fresh(m, 20)
        with Client(sc.socket) as c:
            assert all(not isinstance(r, KerberosError) for r in c.validate_many(used))
        pids = sc.worker_pids()
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        ok = 0
        for t in fresh(m, 200):   # a new connection each time: whichever worker is alive answers
            with Client(sc.socket) as c:
                ok += c.validate(t).client == CLIENT
        assert ok == 200
        wait_for(lambda: len(sc.worker_pids()) == 2, what="replacement worker")
        assert pids[0] not in sc.worker_pids()
        assert any(e.get("event") == "worker_exited" for e in sc.events())
        for t in used:   # whichever worker answers, and whichever saw it first: still a replay
            with Client(sc.socket) as c, pytest.raises(KerberosError) as ei:
                c.validate(t)
            assert ei.value.code == "replay"
    finally:
        assert sc.stop() == 0


def test_max_connections(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1, args=("--max-connections", "3")).start()
    try:
        held = [sc.connect() for _ in range(3)]
        for s in held:   # make sure all three are accepted and counted
            s.sendall(protocol.encode_ping(1))
            assert s.recv(65536)
        extra = sc.connect()
        try:
            extra.sendall(protocol.encode_ping(2))
            assert extra.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
        extra.close()
        held.pop().close()
        time.sleep(0.2)
        s = sc.connect()
        s.sendall(protocol.encode_ping(3))
        assert s.recv(65536)
        s.close()
        for h in held:
            h.close()
        assert b'fastkrb_connections_refused_total{reason="max_connections"}' in sc.http("GET", "/metrics")[2]
    finally:
        assert sc.stop() == 0


def test_request_and_idle_timeouts(tmp_path: Path, kv1: Path) -> None:
    sc = Sidecar(tmp_path, kv1, args=("--request-timeout", "0.5", "--idle-timeout", "1")).start()
    try:
        slow = sc.connect()
        slow.sendall(b"GET /auth HTTP/1.1\r\nHost: s\r\nAuthorization: Negoti")    # and then nothing
        t0 = time.monotonic()
        data = recv_all(slow)
        assert data.startswith(b"HTTP/1.1 408 ") and 0.4 < time.monotonic() - t0 < 5
        slow.close()
        partial = sc.connect()
        partial.sendall(protocol.encode_validate(1, b"x" * 100)[:50])
        frames = list(protocol.iter_frames(recv_all(partial), 1 << 20))
        assert frames and frames[-1][0] == protocol.PROTOCOL_ERROR
        partial.close()
        idle = sc.connect()
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n")
        t0 = time.monotonic()
        assert parse_response(recv_all(idle))[0] == 200   # answered, then closed once idle for 1 s
        assert 0.8 < time.monotonic() - t0 < 5
        idle.close()
    finally:
        assert sc.stop() == 0


def test_peer_credentials_allow_list(tmp_path: Path, kv1: Path) -> None:
    me = os.getuid()
    deny = Sidecar(tmp_path, kv1, name="deny", args=("--allow-uids", str(me + 4242)))
    allow = Sidecar(tmp_path, kv1, name="allow", args=("--allow-uids", str(me + 4242),
                                                       "--allow-gids", str(os.getgid())))
    try:
        deny.start(wait=False)
        deny.wait_ready(probe=False)   # its /healthz refuses us too
        allow.start()
        s = deny.connect()
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n")
            assert s.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
        s.close()
        time.sleep(0.3)
        refused = [e for e in deny.events() if e.get("event") == "peer_refused"]
        assert refused and refused[-1]["peer"].startswith(f"uid={me},")
        assert allow.http("GET", "/healthz")[0] == 200
    finally:
        assert deny.stop() == 0
        assert allow.stop() == 0


def test_garbage_flood_does_not_starve_legitimate_requests(tmp_path: Path, kv1: Path) -> None:
    """One client floods malformed tokens as fast as it can; another's requests are all answered correctly."""
    sc = Sidecar(tmp_path, kv1, args=("--no-log-decisions",)).start()
    m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
    junk = protocol.encode_validate(0, os.urandom(700)) * 2000
    stop = threading.Event()
    flooded = [0]

    def flood() -> None:
        s = sc.connect()
        reader = threading.Thread(target=lambda: flooded.__setitem__(0, len(recv_all(s))), daemon=True)
        reader.start()
        try:
            while not stop.is_set():
                s.sendall(junk)
        except OSError:
            pass
        s.shutdown(socket.SHUT_WR)
        reader.join(10)
        s.close()

    th = threading.Thread(target=flood)
    th.start()
    try:
        time.sleep(0.3)
        with Client(sc.socket) as c:
            results = [c.validate(t) for t in fresh(m, 300)]
        assert all(r.client == CLIENT for r in results)
        # the flooding connection was recognised and given a smaller share
        assert b'fastkrb_connections_refused_total{reason="garbage_throttled"} 1.0' in sc.http("GET", "/metrics")[2]
    finally:
        stop.set()
        th.join(30)
        assert sc.stop() == 0
    assert flooded[0] > 0   # the flood really was being answered meanwhile


def test_http_over_loopback_tcp(tmp_path: Path, kv1: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sc = Sidecar(tmp_path, kv1, args=("--tcp", f"127.0.0.1:{port}")).start()
    try:
        m = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        hdr = "Negotiate " + base64.b64encode(fresh(m)[0]).decode()
        s.sendall(f"GET /auth HTTP/1.1\r\nHost: s\r\nConnection: close\r\nAuthorization: {hdr}\r\n\r\n".encode())
        status, h, _ = parse_response(recv_all(s))
        s.close()
        assert status == 200 and h["x-remote-user"] == "carol"
        with Client(tcp=f"127.0.0.1:{port}") as c:
            assert c.validate(fresh(m)[0]).client == CLIENT
        time.sleep(0.5)
        peers = [e["peer"] for e in sc.events() if e.get("event") == "decision"]
        assert any(p.startswith("127.0.0.1:") for p in peers)
    finally:
        assert sc.stop() == 0
