"""Reloads that never make things worse (issue 13 item 3), against a real ``fastkrb serve``: a replacement
keytab that is broken, foreign, dev-only or without a usable key is refused with a reason (log, metric), the
keys in service stay, and the next good file is taken without a restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastkrb.client import Client
from fastkrb.keytab import Keytab
from fastkrb.testing import make_keytab, mint
from fastkrb.tools.dev import dev_init
from support.sidecar import SRC, Sidecar
from test_server_ops import CLIENT, SERVICE, fresh, keytab_v, reloads, union, wait_for, write_atomic


def _refusals(sc: Sidecar) -> list[str]:
    return [e["refused"] for e in sc.events() if e.get("event") == "keytab_reload" and e.get("result") == "refused"]


def test_good_broken_foreign_dev_unusable_good(tmp_path: Path) -> None:
    kv = tmp_path / "service.keytab"
    kv.write_bytes(keytab_v(1, 11).to_bytes())
    sc = Sidecar(tmp_path, kv).start()
    try:
        m1 = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        pids = sc.worker_pids()

        def still_serving() -> None:
            with Client(sc.socket) as c:
                assert c.validate(fresh(m1)[0]).kvno == 1
                assert c.ping()["ready"] is True

        still_serving()
        steps: list[tuple[str, bytes]] = [
            ("unreadable", b"\x05\x02\x00\x00\x00\x30" + b"\xff" * 20),
            ("foreign", make_keytab(("HTTP/elsewhere.example.test@EXAMPLE.TEST",), kvno=5,
                                    rng=random.Random(5)).to_bytes()),
            ("dev_only", dev_init(SERVICE, tmp_path / "dev.keytab").to_bytes()),
        ]
        sealed = Keytab()
        sealed.add(SERVICE, os.urandom(92), enctype=18, kvno=2)    # Heimdal --keepold style: no usable key
        steps.append(("no_usable_key", sealed.to_bytes()))
        for n, (reason, data) in enumerate(steps, 1):
            tmp = kv.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, kv)
            wait_for(lambda n=n: len(_refusals(sc)) >= n, what=f"refusal {reason}")   # type: ignore[misc]
            assert _refusals(sc)[-1] == reason
            last = [e for e in sc.events() if e.get("result") == "refused"][-1]
            assert last["level"] == "warning" and last["kept_kvnos"] == {SERVICE: 1}
            still_serving()
        _status, _, body = sc.http("GET", "/metrics")
        for reason, _ in steps:
            assert f'fastkrb_keytab_reload_refused_total{{reason="{reason}"}} 1.0'.encode() in body, reason
        # good again (a rotation: kvno 2 beside kvno 1): taken on the file change, no restart
        write_atomic(kv, union(keytab_v(2, 12), keytab_v(1, 11)))
        wait_for(lambda: reloads(sc, "ok") >= 1, what="reload of the good file")
        m2 = mint(keytab_v(2, 12), client=CLIENT, server=SERVICE, now=time.time() + 1)
        with Client(sc.socket) as c:
            assert c.validate(fresh(m2)[0]).kvno == 2
        still_serving()
        assert sc.worker_pids() == pids
    finally:
        assert sc.stop() == 0


def test_sighup_after_refusal_takes_the_good_file(tmp_path: Path) -> None:
    """A refused file does not block: with file watching off, SIGHUP with a good file in place is taken, and
    so is a good file rewritten in place with the refused one's size (its signature may repeat)."""
    kv = tmp_path / "service.keytab"
    kv.write_bytes(keytab_v(1, 11).to_bytes())
    sc = Sidecar(tmp_path, kv).start()
    try:
        good = union(keytab_v(2, 12), keytab_v(1, 11)).to_bytes()
        bad = b"\x05\x02" + b"\x7f" * (len(good) - 2)    # same size, not a keytab
        for _ in range(2):
            with open(kv, "r+b") as fh:
                fh.write(bad)
            wait_for(lambda: len(_refusals(sc)) >= 1, what="refusal")
        time.sleep(1.0)   # past the retries on the refused file
        with open(kv, "r+b") as fh:
            fh.write(good)
        wait_for(lambda: reloads(sc, "ok") >= 1, what="in-place good file after a refusal")
        kv.write_bytes(b"junk")
        wait_for(lambda: len(_refusals(sc)) >= 2, what="second refusal")
        write_atomic(kv, keytab_v(3, 13))
        sc.signal(signal.SIGHUP)
        wait_for(lambda: reloads(sc, "ok") >= 2, what="SIGHUP reload")
        m3 = mint(keytab_v(3, 13), client=CLIENT, server=SERVICE, now=time.time() + 1)
        with Client(sc.socket) as c:
            assert c.validate(fresh(m3)[0]).kvno == 3
    finally:
        assert sc.stop() == 0


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    env["PYTHONPATH"] = SRC
    return subprocess.run([sys.executable, "-m", "fastkrb", "serve", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_dev_keytab_needs_a_dev_run(tmp_path: Path) -> None:
    kt = tmp_path / "dev.keytab"
    dev_init("HTTP/api.dev.test", kt)
    sock = str(tmp_path / "s.sock")
    r = _serve("--keytab", str(kt), "--socket", sock, "--check")
    assert r.returncode == 2 and "dev init" in r.stdout and "--dev" in r.stdout
    r = _serve("--keytab", str(kt), "--socket", sock, "--workers", "1")
    assert r.returncode == 2 and "dev init" in r.stderr
    r = _serve("--keytab", str(kt), "--socket", sock, "--check", "--dev")
    assert r.returncode == 0, r.stdout
    sc = Sidecar(tmp_path, kt, args=("--dev",)).start()
    assert sc.stop() == 0


def test_check_fails_fast_with_cause_and_fix(tmp_path: Path) -> None:
    kt = tmp_path / "service.keytab"
    kt.write_bytes(keytab_v(1, 11).to_bytes())
    sock = str(tmp_path / "s.sock")
    r = _serve("--keytab", str(kt), "--socket", sock, "--check", "--principals", "HTTP/typo.example.test")
    assert r.returncode == 2 and "typo" in r.stdout and "Fix:" in r.stdout
    r = _serve("--keytab", str(kt), "--socket", sock, "--check", "--enctypes", "18,17,23")
    assert r.returncode == 2 and "RC4" in r.stdout and "Fix:" in r.stdout
    r = _serve("--keytab", str(kt), "--socket", sock, "--workers", "1", "--enctypes", "23")
    assert r.returncode == 2 and "permits no enctype" in r.stderr
    r = _serve("--keytab", str(kt), "--socket", sock, "--check", "--enctypes", "20,19,18,17")
    assert r.returncode == 0, r.stdout


def test_a_broken_keytab_left_in_place_is_reported_once(tmp_path: Path) -> None:
    """One refusal per version of the file, however many ticks it stays (the silent retries of a torn write are
    not news); the log line says the previous keys keep serving; /healthz carries the refusal until a file is
    taken; the next version of the file is reported again."""
    kv = tmp_path / "service.keytab"
    kv.write_bytes(keytab_v(1, 11).to_bytes())
    sc = Sidecar(tmp_path, kv, workers=2).start()   # every worker watches the file: one line each
    try:
        kv.write_bytes(b"\x05\x02\x00\x00\x00\x40garbage")
        wait_for(lambda: len(_refusals(sc)) >= 2, what="the refusals")
        time.sleep(2.0)   # ten ticks of --reload-interval 0.2, past the retries
        lines = [e for e in sc.events() if e.get("event") == "keytab_reload" and e.get("result") == "refused"]
        assert sorted(e["worker"] for e in lines) == [0, 1], lines
        assert lines[0]["message"] == (f"keytab {kv} refused (unreadable); still serving the previous keys "
                                       f"({SERVICE} kvno 1); it is tried again when the file changes, and on SIGHUP")
        _, _, body = sc.http("GET", "/metrics")
        assert b'fastkrb_keytab_reload_refused_total{reason="unreadable"} 2.0' in body
        _, _, body = sc.http("GET", "/healthz")
        health = json.loads(body)
        assert health["ready"] is True
        assert health["keytab_refused"]["reason"] == "unreadable" and health["keytab_refused"]["path"] == str(kv)
        m1 = mint(keytab_v(1, 11), client=CLIENT, server=SERVICE, now=time.time() + 1)
        with Client(sc.socket) as c:
            assert c.validate(fresh(m1)[0]).kvno == 1
        kv.write_bytes(b"\x05\x02\x00\x00\x00\x40other garbage")   # another version: reported again
        wait_for(lambda: len(_refusals(sc)) >= 4, what="the second version's refusals")
        write_atomic(kv, union(keytab_v(2, 12), keytab_v(1, 11)))
        wait_for(lambda: reloads(sc, "ok") >= 2, what="the good file")
        for _ in range(4):   # each connection may land on either worker: both have cleared it
            _, _, body = sc.http("GET", "/healthz")
            assert "keytab_refused" not in json.loads(body)
        assert len(_refusals(sc)) == 4
    finally:
        assert sc.stop() == 0
