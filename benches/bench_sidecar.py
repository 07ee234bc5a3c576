"""Sidecar throughput and latency: ``fastkrb serve`` driven by fastkrb.capacity.loadgen in separate processes.

    python benches/bench_sidecar.py [--seconds 5] [--only wire,http,...] [--json out.json]

Scenarios (each against a fresh daemon on a Unix socket, keytab from fastkrb.testing, shared-memory
replay cache, decision log on, written to a file):

  wire-1w      binary protocol, pipelined (4 connections x 64 in flight), 1 worker: validations/s
  http-1w      HTTP/1.1 keep-alive, 64 connections x 1 in flight, 1 worker: requests/s
  wire-lat     binary protocol at 50% of wire-1w's rate (open loop): p50/p99
  http-lat     HTTP at 50% of http-1w's rate (open loop): p50/p99
  wire-2w      as wire-1w with 2 workers and 2 load processes: scaling factor over wire-1w
  http-2w      as http-1w with 2 workers and 2 load processes
  flood        one process floods malformed tokens (binary, pipelined, full speed) while another sends
               legitimate requests at 2,000/s: their p50/p99 and whether all were answered, next to
               the same legitimate load without the flood (legit-baseline)
  nginx-1w     HTTP as nginx's auth_request sends it from a browser request (about 15 headers besides
               Authorization), 64 connections x 1 in flight, 1 worker
  python-wire-1w, python-nginx-1w
               wire-1w and nginx-1w against a daemon with --no-native-front (the Python request path), in
               the same run: what the native path saves
  cookie-1w    sessions on (--session-keys): the nginx-shaped request carrying a session cookie and no
               Authorization; beside it sessions-nginx-1w, a Negotiate request with sessions on (it gets
               the Set-Cookie)
  redis-wire-1w, redis-shm-wire-1w
               wire-1w against a daemon whose replay cache is a local redis-server, and the same load
               against the shared-memory cache in the same run (the ratio is the issue's target)
  redis-nginx-1w, python-redis-nginx-1w
               nginx-1w against a daemon whose replay cache is the local redis-server, with the native request
               path and with the Python path alone (--no-native-front)
  floor-http, floor-uvloop-http
               nginx-1w's load against servers that do nothing but answer each request head with a
               fixed response of the size fastkrb's answer has: benches/floor/http_floor.c (one epoll
               loop in C: the kernel's share of a request at this depth, whatever the server) and
               benches/floor/uvloop_floor.py (uvloop with a Python protocol: the event loop's floor)

The shared-memory replay table is put on a memory file system (/dev/shm), as it is under /run in a
deployment (sidecar_load.Daemon). Every scenario reports the daemon's own CPU per answered request (user +
system of the daemon processes, ``daemon_cpu_us_per_request``) beside throughput and latency.

On a 2-core machine the load generator competes with the daemon for the cores; the numbers are what
this machine gives with both on it. Not run by pytest: capacity figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fastkrb.capacity.sidecar_load import Daemon, kill_children, load, measured, result  # noqa: E402


def run(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fastkrb-bench-") as tmp:   # keytab, sockets, logs, shm file
        return _run(a, Path(tmp))


def _run(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fastkrb.testing import make_keytab

    kt = work / "bench.keytab"
    kt.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(1)).to_bytes())
    s = str(a.seconds)
    only = set(a.only.split(",")) if a.only else None
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}

    def want(name: str) -> bool:
        return only is None or name in only

    d1 = Daemon(work, kt, 1, ("--replay-capacity", str(1 << 23)))
    out["machine"]["replay_file"] = d1.replay_file   # on tmpfs unless there was no room (then in the workdir)
    try:
        if want("wire-1w") or want("wire-lat") or want("wire-2w"):
            (out["wire-1w"],) = measured(d1, load(d1.sock, kt, "--mode", "wire", "--connections", "4",
                                                  "--depth", "64", "--seconds", s, "--expect", "300000"))
        if want("http-1w") or want("http-lat") or want("http-2w"):
            (out["http-1w"],) = measured(d1, load(d1.sock, kt, "--mode", "http", "--connections", "64",
                                                  "--depth", "1", "--seconds", s, "--expect", "150000"))
        if want("wire-lat"):
            rate = out["wire-1w"]["throughput"] / 2
            out["wire-lat"] = result(load(d1.sock, kt, "--mode", "wire", "--connections", "4", "--rate",
                                          str(rate), "--seconds", s))
        if want("http-lat"):
            rate = out["http-1w"]["throughput"] / 2
            out["http-lat"] = result(load(d1.sock, kt, "--mode", "http", "--connections", "64", "--rate",
                                          str(rate), "--seconds", s))
        if want("flood"):
            out["legit-baseline"] = result(load(d1.sock, kt, "--mode", "wire", "--connections", "1", "--rate",
                                                "2000", "--seconds", s))
            flood = load(d1.sock, kt, "--mode", "garbage-wire", "--connections", "1", "--depth", "256",
                         "--seconds", str(a.seconds + 2), "--warmup", "0.5", "--expect", "100000")
            time.sleep(1.5)
            legit = load(d1.sock, kt, "--mode", "wire", "--connections", "1", "--rate", "2000", "--seconds", s)
            out["flood-legit"], out["flood-garbage"] = measured(d1, legit, flood)
    finally:
        d1.stop()
    if want("wire-2w") or want("http-2w"):
        d2 = Daemon(work, kt, 2, ("--replay-capacity", str(1 << 23)))
        try:
            if want("wire-2w"):
                ps = [load(d2.sock, kt, "--mode", "wire", "--connections", "4", "--depth", "64", "--seconds", s,
                           "--expect", "200000") for _ in range(2)]
                rs = [result(p) for p in ps]
                out["wire-2w"] = {"throughput": sum(r["throughput"] for r in rs), "runs": rs}
                out["wire-2w"]["scaling"] = round(out["wire-2w"]["throughput"] / out["wire-1w"]["throughput"], 2)
            if want("http-2w"):
                ps = [load(d2.sock, kt, "--mode", "http", "--connections", "64", "--depth", "1", "--seconds", s,
                           "--expect", "100000") for _ in range(2)]
                rs = [result(p) for p in ps]
                out["http-2w"] = {"throughput": sum(r["throughput"] for r in rs), "runs": rs}
                out["http-2w"]["scaling"] = round(out["http-2w"]["throughput"] / out["http-1w"]["throughput"], 2)
        finally:
            d2.stop()
    _more(a, work, kt, s, want, out)
    out["machine"]["loadavg_after"] = os.getloadavg()
    return out


def _more(a: argparse.Namespace, work: Path, kt: Path, s: str, want: Any, out: dict[str, Any]) -> None:
    """The scenarios of issue 15 and 16: nginx-shaped HTTP, the Python path beside the native one, session
    cookies, Redis."""
    import subprocess

    wire = ("--mode", "wire", "--connections", "4", "--depth", "64", "--seconds", s, "--expect", "300000")
    nginx = ("--mode", "http", "--shape", "nginx", "--connections", "64", "--depth", "1", "--seconds", s,
             "--expect", "150000")
    for prefix, extra in (("", ()), ("python-", ("--no-native-front",))):
        names = [f"{prefix}nginx-1w"] + ([f"{prefix}wire-1w"] if prefix else ["floor-http", "floor-uvloop-http"])
        if not any(want(n) for n in names):
            continue
        d = Daemon(work, kt, 1, ("--replay-capacity", str(1 << 23), *extra))
        try:
            if prefix and want(f"{prefix}wire-1w"):
                (out[f"{prefix}wire-1w"],) = measured(d, load(d.sock, kt, *wire))
            if want(f"{prefix}nginx-1w"):
                (out[f"{prefix}nginx-1w"],) = measured(d, load(d.sock, kt, *nginx))
            if not prefix:
                _floors(work, kt, s, want, out, d)
        finally:
            d.stop()
    if want("cookie-1w") or want("sessions-nginx-1w"):
        keys = work / "session-keys.json"
        subprocess.run([sys.executable, "-m", "fastkrb", "keys", "session", "new", str(keys)], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})
        d = Daemon(work, kt, 1, ("--replay-capacity", str(1 << 23), "--session-keys", str(keys)))
        try:
            if want("sessions-nginx-1w"):
                (out["sessions-nginx-1w"],) = measured(d, load(d.sock, kt, *nginx))
            if want("cookie-1w"):
                cookie = ("--mode", "cookie-http", *nginx[2:])
                (out["cookie-1w"],) = measured(d, load(d.sock, kt, *cookie))
        finally:
            d.stop()
    redis_runs = [(name, cache, shape) for name, cache, shape in (
        ("redis-shm-wire-1w", (), wire), ("redis-wire-1w", ("--replay-cache", "@redis"), wire),
        ("redis-nginx-1w", ("--replay-cache", "@redis"), nginx),
        ("python-redis-nginx-1w", ("--replay-cache", "@redis", "--no-native-front"), nginx)) if want(name)]
    if want("redis-wire-1w") and not want("redis-shm-wire-1w"):   # the ratio needs its shm run beside it
        redis_runs.insert(0, ("redis-shm-wire-1w", (), wire))
    if redis_runs:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from support.redis_server import RedisServer

        server = RedisServer(work / "redis")
        server.start()
        try:
            for n, (name, cache, shape) in enumerate(redis_runs):
                # each run its own namespace (key prefix): a new daemon's tokens meet no earlier run's keys
                args = tuple(f"{server.url}?prefix=fastkrb:bench{n}:" if c == "@redis" else c for c in cache)
                d = Daemon(work, kt, 1, ("--replay-capacity", str(1 << 23), *args))
                try:
                    (out[name],) = measured(d, load(d.sock, kt, *shape))
                finally:
                    d.stop()
            if "redis-wire-1w" in out:
                out["redis-wire-1w"]["of_shm"] = round(out["redis-wire-1w"]["throughput"]
                                                       / max(1, out["redis-shm-wire-1w"]["throughput"]), 2)
        finally:
            server.stop()


def repeated(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: the median of each run's daemon CPU per request and throughput, their range, all runs."""
    import statistics

    med: dict[str, Any] = {}
    for name in runs[0]:
        vals = [r[name] for r in runs if isinstance(r.get(name), dict) and "daemon_cpu_us_per_request" in r[name]]
        if len(vals) != len(runs):
            continue
        cpu = [v["daemon_cpu_us_per_request"] for v in vals]
        thr = [v["throughput"] for v in vals]
        med[name] = {"daemon_cpu_us_per_request": statistics.median(cpu), "cpu_min": min(cpu), "cpu_max": max(cpu),
                     "throughput": statistics.median(thr), "throughput_min": min(thr), "throughput_max": max(thr),
                     "exhausted": any(v.get("exhausted") for v in vals)}
        if all("of_shm" in v for v in vals):   # redis-wire-1w: its throughput over the shm run beside it, per run
            ratios = [v["of_shm"] for v in vals]
            med[name].update(of_shm=statistics.median(ratios), of_shm_min=min(ratios), of_shm_max=max(ratios))
    return {"repeat": len(runs), "median": med, "runs": runs}


def _floors(work: Path, kt: Path, s: str, want: Any, out: dict[str, Any], d: Daemon) -> None:
    """floor-http and floor-uvloop-http: nginx-1w's load against do-nothing servers answering with as many
    bytes as ``d``, the real daemon, answers one such request."""
    import subprocess

    size = _answer_size(d, kt)
    nginx = ("--mode", "http", "--shape", "nginx", "--connections", "64", "--depth", "1", "--seconds", s,
             "--expect", "150000")
    binary = work / "http_floor"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    str(HERE / "floor" / "http_floor.c")], check=True)
    for name, cmd in (("floor-http", [str(binary)]),
                      ("floor-uvloop-http", [sys.executable, str(HERE / "floor" / "uvloop_floor.py")])):
        if not want(name):
            continue
        sock = work / f"{name}.sock"
        srv = subprocess.Popen([*cmd, str(sock), str(size)], stdout=subprocess.PIPE)
        try:
            assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready", name
            c0 = _cpu(srv.pid)
            r = result(load(sock, kt, *nginx))
            answered = sum(r["answers"].values())
            r["daemon_cpu_us_per_request"] = round((_cpu(srv.pid) - c0) / max(1, answered) * 1e6, 2)
            r["answer_bytes"] = size
            out[name] = r
        finally:
            srv.kill()
            srv.wait()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answer_size(d: Daemon, kt: Path) -> int:
    """Bytes of the daemon's answer to one nginx-shaped request with a fresh token."""
    import socket

    from fastkrb import Keytab
    from fastkrb.capacity.loadgen import http_requests
    from fastkrb.testing import mint

    tok = mint(Keytab.load(kt), rng=random.Random(7)).token_bytes
    ((_, req),) = http_requests([tok], "nginx")
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(d.sock))
        c.sendall(req)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the daemon did not accept the probe request: {got[:200]!r}")
    return got.index(b"\r\n\r\n") + 4


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--only", default="", help="comma list of scenarios")
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the scenarios this many times (fresh daemons each time) and report each scenario's "
                        "median run beside all runs: one run's daemon CPU per request moved by up to 30%% on a "
                        "shared 2-core machine")
    a = p.parse_args()
    # SIGTERM as Ctrl-C: the daemons, load generators and tmpfs replay files go on every way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        res = run(a) if a.repeat <= 1 else repeated([run(a) for _ in range(a.repeat)])
    finally:
        kill_children()
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
