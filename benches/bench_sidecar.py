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

On a 2-core machine the load generator competes with the daemon for the cores; the numbers are what
this machine gives with both on it. Not run by pytest: capacity figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fastkrb.capacity.sidecar_load import Daemon, load, measured, result  # noqa: E402


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
    try:
        if want("wire-1w") or want("wire-lat") or want("wire-2w"):
            (out["wire-1w"],) = measured(d1, load(d1.sock, kt, "--mode", "wire", "--connections", "4",
                                                  "--depth", "64", "--seconds", s, "--expect", "300000"))
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
                ps = [load(d2.sock, kt, "--mode", "wire", "--connections", "4", "--depth", "64", "--seconds", s,
                           "--expect", "200000") for _ in range(2)]
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
