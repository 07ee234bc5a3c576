"""Sidecar throughput and latency: ``fastkrb serve`` driven by benches/loadgen.py in separate processes.

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

On a 2-core machine the load generator competes with the daemon for the cores; the numbers are what
this machine gives with both on it. Not run by pytest: capacity figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
PY = sys.executable


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    env["PYTHONPATH"] = str(SRC)
    return env


class Daemon:
    def __init__(self, workdir: Path, keytab: Path, workers: int, extra: tuple[str, ...] = ()) -> None:
        self.sock = workdir / f"bench-{workers}.sock"
        self.log = workdir / f"bench-{workers}.log"
        cmd = [PY, "-m", "fastkrb", "serve", "--keytab", str(keytab), "--socket", str(self.sock), "--workers",
               str(workers), "--log-file", str(self.log), *extra]
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.log.exists() and self.log.read_text().count('"worker_ready"') >= workers:
                return
            time.sleep(0.05)
        raise RuntimeError("daemon did not start")

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
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def load(sock: Path, keytab: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PY, str(HERE / "loadgen.py"), "--socket", str(sock), "--keytab", str(keytab), *args],
                            env=_env(), stdout=subprocess.PIPE)


def result(p: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = p.communicate(timeout=600)
    return json.loads(out)  # type: ignore[no-any-return]


def measured(d: Daemon, *procs: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """Results of load processes started just before, with the daemon's CPU cost per answered request:
    a figure other jobs on the machine do not distort (they take cores away, not CPU time per request)."""
    c0 = d.cpu()
    rs = [result(p) for p in procs]
    dcpu = d.cpu() - c0
    answered = sum(sum(r["answers"].values()) for r in rs)
    for r in rs:
        r["daemon_cpu_us_per_request"] = round(dcpu / max(1, answered) * 1e6, 2)
        r["per_core_capacity"] = round(answered / dcpu) if dcpu else None
    return rs


def run(a: argparse.Namespace) -> dict[str, Any]:
    from fastkrb.testing import make_keytab

    work = Path(tempfile.mkdtemp(prefix="fastkrb-bench-"))
    kt = work / "bench.keytab"
    kt.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(1)).to_bytes())
    s = str(a.seconds)
    only = set(a.only.split(",")) if a.only else None
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}

    def want(name: str) -> bool:
        return only is None or name in only

    d1 = Daemon(work, kt, 1, ("--replay-capacity", str(1 << 23)))
    try:
        if want("wire-1w") or want("wire-lat") or want("wire-2w"):
            (out["wire-1w"],) = measured(d1, load(d1.sock, kt, "--mode", "wire", "--connections", "4",
                                                  "--depth", "64", "--seconds", s))
        if want("http-1w") or want("http-lat") or want("http-2w"):
            (out["http-1w"],) = measured(d1, load(d1.sock, kt, "--mode", "http", "--connections", "64",
                                                  "--depth", "1", "--seconds", s, "--expect", "50000"))
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
                ps = [load(d2.sock, kt, "--mode", "wire", "--connections", "4", "--depth", "64", "--seconds", s)
                      for _ in range(2)]
                rs = [result(p) for p in ps]
                out["wire-2w"] = {"throughput": sum(r["throughput"] for r in rs), "runs": rs}
                out["wire-2w"]["scaling"] = round(out["wire-2w"]["throughput"] / out["wire-1w"]["throughput"], 2)
            if want("http-2w"):
                ps = [load(d2.sock, kt, "--mode", "http", "--connections", "64", "--depth", "1", "--seconds", s,
                           "--expect", "40000") for _ in range(2)]
                rs = [result(p) for p in ps]
                out["http-2w"] = {"throughput": sum(r["throughput"] for r in rs), "runs": rs}
                out["http-2w"]["scaling"] = round(out["http-2w"]["throughput"] / out["http-1w"]["throughput"], 2)
        finally:
            d2.stop()
    out["machine"]["loadavg_after"] = os.getloadavg()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--only", default="", help="comma list of scenarios")
    p.add_argument("--json", default="", help="also write the results here")
    a = p.parse_args()
    res = run(a)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
