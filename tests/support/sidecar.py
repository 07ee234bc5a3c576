"""Run a real ``fastkrb serve`` (master + workers, as deployed) in a subprocess, and talk HTTP to it.

Used by the test_server_*, test_client and test_e2e_* modules. The daemon is started exactly as a user
would (``python -m fastkrb serve ...``), its JSON log goes to a file the test can read, and stop()
sends SIGTERM and checks the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.procs import stop

SRC = str(Path(__file__).resolve().parents[2] / "src")


def service_keytab(directory: Path, service: str, seed: int) -> Path:
    """A keytab file for one service, with keys drawn from a seeded generator."""
    import random

    from fastkrb.testing import make_keytab

    p = directory / "service.keytab"
    p.write_bytes(make_keytab((service,), rng=random.Random(seed)).to_bytes())
    return p


class Sidecar:
    def __init__(self, workdir: Path, keytab: str | Path, *, workers: int = 1, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, socket_path: Path | None = None, name: str = "sidecar") -> None:
        self.dir = workdir
        self.keytab = str(keytab)
        self.workers = workers
        self.socket = str(socket_path or workdir / f"{name}.sock")
        self.log = workdir / f"{name}.log"
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fastkrb", "serve", "--keytab", self.keytab, "--socket", self.socket,
                "--workers", str(self.workers), "--log-file", str(self.log), "--reload-interval", "0.2",
                *self.args]

    def start(self, wait: bool = True) -> Sidecar:
        """Start the daemon; if it does not become ready, it is stopped before the error propagates."""
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env}
        env = {k: v for k, v in env.items() if not (k.startswith("FASTKRB_") and k not in self.env)}
        self.stderr = open(self.dir / "stderr.txt", "ab")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=self.stderr, stderr=self.stderr)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float = 20.0, probe: bool = True) -> None:
        """Every worker listening and (``probe``) /healthz answering 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastkrb serve exited with {self.proc.returncode}: {self.stderr_text()}")
            if sum(1 for e in self.events() if e.get("event") == "worker_ready") >= self.workers:
                if not probe:
                    return
                try:
                    status, _, _ = self.http("GET", "/healthz")
                    if status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"fastkrb serve not ready after {timeout} s: {self.stderr_text()}")

    def stderr_text(self) -> str:
        try:
            return (self.dir / "stderr.txt").read_text()[-4000:] + self.log.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or getattr(self, "_stopped", False):
            return 0 if self.proc is None else self.proc.returncode
        code = stop(self.proc, sig, timeout)
        self.stderr.close()
        self._stopped = True
        return code

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """A clean exit (status 0) is part of every test that runs the daemon."""
        assert self.stop() == 0

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.log.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def worker_pids(self) -> list[int]:
        """Pids of the live workers, from their worker_ready lines."""
        pids = []
        for e in self.events():
            if e.get("event") == "worker_ready":
                pid = int(e["pid"])
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                pids.append(pid)
        return pids

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.socket)
        return s

    def http(self, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection (Connection: close); (status, headers lower-cased, body)."""
        s = self.connect()
        try:
            h = {"Host": "sidecar", "Connection": "close", **(headers or {})}
            if body:
                h["Content-Length"] = str(len(body))
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
            s.sendall(head.encode("latin-1") + body)
            data = recv_all(s)
        finally:
            s.close()
        return parse_response(data)


def recv_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            return b"".join(chunks)
        chunks.append(c)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Several responses on one connection (pipelined or keep-alive), split by Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status, headers, _ = parse_response(head + b"\r\n\r\n")
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out
