"""`fastkrb dev`: the dev keytab, minted headers accepted / replay-rejected / skew-rejected by a real server
through curl, and a throwaway MIT realm that kinit + curl --negotiate use and that stops cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.tools.dev import (
    MARKER,
    DevRealm,
    _free_port,
    dev_header,
    dev_init,
    init_instructions,
    realm_instructions,
)
from fastkrb.tools.doctor import DoctorConfig, run_doctor
from fastkrb.web.wsgi import NegotiateMiddleware
from support.http_clients import wsgiref_server
from support.mit import mit_missing

REPO = Path(__file__).resolve().parents[1]


def fastkrb(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastkrb", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})})


def whoami(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REMOTE_USER"].encode()]


def test_init_writes_a_marked_private_keytab(tmp_path: Path) -> None:
    out = fastkrb("dev", "init", "--spn", "HTTP/api.example.test", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "fastkrb-dev.keytab"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kt = Keytab.load(path)
    assert kt.principals() == ["HTTP/api.example.test@DEV.TEST", f"{MARKER}@DEV.TEST"]
    assert sorted(e.enctype for e in kt.find("HTTP/api.example.test@DEV.TEST")) == [17, 18, 19, 20]
    assert "DEV-ONLY" in out.stdout
    again = fastkrb("dev", "init", "--spn", "HTTP/api.example.test", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
    assert fastkrb("dev", "init", "--spn", "HTTP/x.test", "--force", cwd=tmp_path).returncode == 0
    assert Keytab.load(path).principals()[0] == "HTTP/x.test@DEV.TEST"


def test_header_verdicts(tmp_path: Path) -> None:
    kt = tmp_path / "dev.keytab"
    dev_init("HTTP/api.example.test", kt)
    v = Validator(str(kt))
    line = fastkrb("dev", "header", "--user", "alice", "--keytab", str(kt)).stdout.strip()
    assert line.startswith("Authorization: Negotiate ")
    value = line.split(": ", 1)[1]
    res = v.validate(value)
    assert res.client == "alice@DEV.TEST" and res.server == "HTTP/api.example.test@DEV.TEST" and res.mutual
    with pytest.raises(KerberosError) as replay:
        v.validate(value)
    assert replay.value.code == "replay"
    with pytest.raises(KerberosError) as skew:
        v.validate(dev_header("bob", kt, skew=900))
    assert skew.value.code == "clock_skew" and skew.value.details["client"] == "bob@DEV.TEST"
    with pytest.raises(KerberosError) as expired:
        v.validate(dev_header("carol", kt, expired=True))
    assert expired.value.code == "ticket_expired"


def test_header_refuses_a_real_keytab(tmp_path: Path) -> None:
    from fastkrb.testing import make_keytab

    real = tmp_path / "real.keytab"
    make_keytab().save(real)
    out = fastkrb("dev", "header", "--user", "alice", "--keytab", str(real))
    assert out.returncode == 2 and "refusing" in out.stderr


def test_curl_with_a_dev_header(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    kt = tmp_path / "dev.keytab"
    dev_init("HTTP/localhost", kt)
    app = NegotiateMiddleware(whoami, Validator(str(kt)))
    with wsgiref_server(app) as port:
        def curl(header: str) -> tuple[str, str]:
            out = subprocess.run(["curl", "-sS", "-D", "-", "-H", header, f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, timeout=30)
            head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
            return head, body

        header = fastkrb("dev", "header", "--user", "alice", "--keytab", str(kt)).stdout.strip()
        head, body = curl(header)
        assert " 200 " in head.splitlines()[0] and body == "alice@DEV.TEST"
        assert "WWW-Authenticate: Negotiate " in head  # the AP-REP
        head, _ = curl(header)
        assert " 401 " in head.splitlines()[0] and "X-Auth-Error: replay" in head
        skewed = fastkrb("dev", "header", "--user", "alice", "--keytab", str(kt), "--skew", "-900").stdout.strip()
        head, _ = curl(skewed)
        assert "X-Auth-Error: clock_skew" in head


def test_doctor_flags_a_dev_keytab(tmp_path: Path) -> None:
    kt = tmp_path / "dev.keytab"
    dev_init("HTTP/api.example.test", kt)
    rep = run_doctor(DoctorConfig(keytab=str(kt), kdcs=["127.0.0.1:9"], timeout=0.5, check_dns=False,
                                  krb5_conf=str(tmp_path / "none.conf")))
    dev = [f for f in rep.findings if f.check == "keytab.dev"]
    assert dev and dev[0].status == "error" and not rep.ok


def test_dev_realm_kinit_curl_and_clean_stop(tmp_path: Path) -> None:
    if mit_missing():
        pytest.skip(f"MIT KDC programs missing: {mit_missing()}")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proc = subprocess.Popen([sys.executable, "-m", "fastkrb", "dev", "realm", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["ready"] and info["service"] == "HTTP/localhost@DEV.TEST"
        workdir = Path(info["workdir"])
        env = {**os.environ, **info["env"]}
        kinit = subprocess.run(["kinit", "alice"], input=info["password"] + "\n", env=env, capture_output=True,
                               text=True, timeout=30)
        assert kinit.returncode == 0, kinit.stderr
        app = NegotiateMiddleware(whoami, Validator(info["keytab"], cold_start=False))
        with wsgiref_server(app) as port:
            out = subprocess.run(["curl", "-sS", "--negotiate", "-u", ":", f"http://localhost:{port}/"], env=env,
                                 capture_output=True, text=True, timeout=30)
        assert out.stdout == "alice@DEV.TEST", out.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(info["kdc_pid"], 0)
        assert not workdir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited: {proc.communicate()[1].decode(errors='replace')[-2000:]}"
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                # a person types the curl line seconds later; a script must too: an authenticator made in the
                # second the service's replay cache started is refused by the cold-start rule (RFC 4120 §3.2.3)
                time.sleep(1.1)
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within 30 s")


def _shims(tmp_path: Path) -> dict[str, str]:
    """PATH and PYTHONPATH under which `fastkrb` and `uvicorn`, as printed, are this checkout's, in this Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module in (("fastkrb", "fastkrb"), ("uvicorn", "uvicorn")):
        (bin_dir / name).write_text(f"#!/bin/sh\nexec {sys.executable} -m {module} \"$@\"\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO / "src")}


def _run_printed(text: str, env: dict[str, str], port: int) -> None:
    """Run, as printed, each service line of ``text`` in turn and the curl line that follows it: the sidecar's
    answers 200 with X-Remote-User alice, the FastAPI example's /me names alice."""
    lines = [ln.strip() for ln in text.splitlines()]
    services = [i for i, ln in enumerate(lines) if ln.startswith("fastkrb serve ") or " uvicorn " in f" {ln}"]
    assert len(services) == 2, text
    for i in services:
        curl = lines[i + 1].split("    #")[0]
        assert curl.startswith("curl "), text
        proc = subprocess.Popen(["bash", "-c", "exec env " + lines[i].split("  #")[0]], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(port, proc, lines[i])
            out = subprocess.run(["bash", "-c", curl + " -sS -i"], env=env, capture_output=True, text=True,
                                 timeout=30)
            assert " 200 " in out.stdout.splitlines()[0], (curl, out.stdout, out.stderr)
            if curl.endswith("/auth"):
                assert "X-Remote-User: alice" in out.stdout
            else:
                assert json.loads(out.stdout.split("\n\n")[-1])["principal"].startswith("alice@"), out.stdout
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_dev_init_prints_commands_that_work(tmp_path: Path) -> None:
    """Issue 14: `fastkrb dev init` says what to run with the keytab, and it works as printed."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    kt = tmp_path / "dev.keytab"
    dev_init("HTTP/api.example.test", kt)
    port = _free_port()
    text = init_instructions(kt, "HTTP/api.example.test@DEV.TEST", port=port)
    assert f"fastkrb serve --dev --keytab {kt}" in text
    _run_printed(text, {**os.environ, **_shims(tmp_path)}, port)


def test_dev_realm_prints_commands_that_work(tmp_path: Path) -> None:
    """Issue 14: the realm says what to run, and what it prints works as printed: kinit, the sidecar with its
    curl line, and the FastAPI example with its curl line."""
    if mit_missing():
        pytest.skip(f"MIT KDC programs missing: {mit_missing()}")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    r = DevRealm(tmp_path / "realm").start()
    try:
        port = _free_port()
        text = realm_instructions(r, False, port=port)
        env = {**os.environ, **r.env, **_shims(tmp_path)}
        kinit = subprocess.run(["bash", "-c", next(ln for ln in text.splitlines() if "| kinit " in ln)], env=env,
                               capture_output=True, text=True, timeout=30)
        assert kinit.returncode == 0, kinit.stderr
        assert f"fastkrb serve --keytab {r.keytab}" in text
        _run_printed(text, env, port)
    finally:
        r.stop()
