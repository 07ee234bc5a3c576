"""What a fresh Validator costs a new process, and what the ``Negotiate <b64>`` header costs over raw bytes.

    PYTHONPATH=src python benches/bench_fresh_validator.py [--runs 5] [--json out.json]

Each run is a new process (what every worker of an embedding application pays once), given the same
distinct tokens (a 508-byte SPNEGO AP-REQ, minted once by the parent): it makes ``Validator(keytab)`` with
the default in-memory replay cache and validates the tokens once each, in order.

- ``rss_first_1000_kib``: resident memory added by the first 1,000 validations (/proc/self/statm, measured
  after the Validator is made); ``rss_make_kib``: added by making it.
- ``first_2000_us``: mean µs per validation over the first 2,000; ``steady_us``: the median of the
  per-batch means of the following 4 batches of 2,000 (the same process, caches warm); ``ratio`` the two;
  ``best_batch_us`` the fastest batch. The in-memory table grows with its entries (4096 -> 8192 -> 16384,
  a few entries moved per insert), so two of those batches carry a move: the median includes it.
- ``raw_us`` / ``header_us``: one token validated 20,000 times per round (no replay cache, so one token
  serves every iteration) as bytes and as ``"Negotiate <b64>"``, rounds interleaved, best round each;
  ``header_minus_raw_us`` is what the header form adds (base64 decode, scheme parse, str access).

Every figure is given per run, with its median and spread (min..max) over the runs. Nothing is asserted:
the figures are for the record (benches/record.py --only fresh). FASTKRB_BENCH_SRC=<checkout>/src runs
the same measurement on another checkout's build, for a side-by-side.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# FASTKRB_BENCH_SRC=<checkout>/src measures another checkout's build (a side-by-side with main)
_SRC = Path(os.environ.get("FASTKRB_BENCH_SRC") or Path(__file__).resolve().parents[1] / "src")
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from fastkrb import Validator  # noqa: E402
from fastkrb.keytab import Keytab  # noqa: E402
from fastkrb.testing import make_keytab, mint  # noqa: E402

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_900_000_000.0   # after any process start: the cold-start rule lets these tokens through
FIRST, BATCH, BATCHES = 2000, 2000, 4
PAGE = os.sysconf("SC_PAGE_SIZE")


def _keytab() -> Keytab:
    return make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(1))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _child(tokens_path: str) -> dict[str, Any]:
    toks = [base64.b64decode(line) for line in Path(tokens_path).read_text().split()]
    kt = _keytab()
    gc.collect()
    gc.disable()
    r0 = _rss()
    v = Validator(kt)
    r1 = _rss()
    validate = v.validate
    t0 = time.perf_counter_ns()
    for t in toks[:1000]:
        validate(t, now=NOW)
    r2 = _rss()
    for t in toks[1000:FIRST]:
        validate(t, now=NOW)
    first = (time.perf_counter_ns() - t0) / FIRST / 1e3
    batches = []
    for b in range(BATCHES):
        part = toks[FIRST + b * BATCH:FIRST + (b + 1) * BATCH]
        t0 = time.perf_counter_ns()
        for t in part:
            validate(t, now=NOW)
        batches.append((time.perf_counter_ns() - t0) / len(part) / 1e3)
    steady = statistics.median(batches)
    stats = v.replay_stats() or {}
    assert stats.get("inserts") == len(toks), stats

    # the header form against raw bytes: one token, no replay cache
    nv = Validator(kt, replay_cache="none", cold_start=False)
    raw = toks[0]
    header = "Negotiate " + base64.b64encode(raw).decode()
    n = 20000
    best = {"raw": float("inf"), "header": float("inf")}
    for _ in range(7):
        for name, tok in (("raw", raw), ("header", header)):
            f = nv.validate
            t0 = time.perf_counter_ns()
            for _ in range(n):
                f(tok, now=NOW)
            best[name] = min(best[name], (time.perf_counter_ns() - t0) / n / 1e3)
    gc.enable()
    return {"rss_make_kib": (r1 - r0) // 1024, "rss_first_1000_kib": (r2 - r1) // 1024,
            "first_2000_us": round(first, 3), "steady_us": round(steady, 3), "ratio": round(first / steady, 2),
            "best_batch_us": round(min(batches), 3),
            "raw_us": round(best["raw"], 3), "header_us": round(best["header"], 3),
            "header_minus_raw_us": round(best["header"] - best["raw"], 3), "token_bytes": len(raw),
            "table_bytes": stats.get("bytes", -1)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes (default 5)")
    ap.add_argument("--json", help="write the runs and their summary here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child)))
        return 0
    kt = _keytab()
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(2))
    rng = random.Random(3)
    toks = [m.token] + [m.again(now=NOW, rng=rng).token for _ in range(FIRST + BATCH * BATCHES - 1)]
    runs = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokens"
        path.write_text("\n".join(base64.b64encode(t).decode() for t in toks))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_SRC), os.environ.get("PYTHONPATH", "")]))
        for i in range(a.runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                                 env=env, check=True).stdout
            runs.append(json.loads(out))
            print(f"run {i + 1}: {runs[-1]}", flush=True)
    summary = _summary(runs)
    print("\nover", a.runs, "fresh processes (median, min..max):")
    for k, s in summary.items():
        print(f"  {k:22} {s['median']:>10} ({s['min']} .. {s['max']})")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
