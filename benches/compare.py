"""fastkrb vs MIT krb5, same process, same real tokens: the figures the project quotes.

    python benches/compare.py [--json out.json] [--tokens 3000] [--reps 5] [--quick]

Starts a real MIT realm (benches/conftest.py's BenchLab), takes distinct AP-REQs from MIT's initiator, and
for each scenario times every token once through fastkrb's Validator and through MIT's
gss_accept_sec_context (python-gssapi), alternating the two, ``--reps`` times with a fresh validator /
acceptor (fresh replay cache) each time. Reported: best and median µs per token (time.perf_counter over the
whole list, collector off), tokens/s of the best, the spread of the repetitions, and MIT/fastkrb. Then the
stage breakdown of one validation, timed in C by fastkrb._native.profile_stages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the bench lab; importing it also puts tests/ (support/) and src/ on sys.path
import conftest as labmod
from conftest import BenchLab, MitAcceptor, TokenSet, check_token_set, fastkrb_validator, no_gc
from fastkrb import _native
from fastkrb.capacity.host import command_output, host_facts


@dataclass
class Timing:
    """Seconds per whole list, one entry per repetition."""

    runs: list[float] = field(default_factory=list)
    n: int = 0

    @property
    def best_us(self) -> float:
        return min(self.runs) / self.n * 1e6

    @property
    def median_us(self) -> float:
        return statistics.median(self.runs) / self.n * 1e6

    @property
    def spread_pct(self) -> float:
        return (max(self.runs) - min(self.runs)) / min(self.runs) * 100

    def summary(self) -> dict[str, Any]:
        return {"us_per_token_best": round(self.best_us, 3), "us_per_token_median": round(self.median_us, 3),
                "tokens_per_s_best": round(1e6 / self.best_us), "spread_pct": round(self.spread_pct, 1),
                "reps_us_per_token": [round(r / self.n * 1e6, 3) for r in self.runs], "tokens": self.n}


@dataclass
class Scenario:
    name: str
    tokens: TokenSet
    fastkrb_replay: str      # "warm" | "cold" | "none"
    mit_rcache: str | None   # "dfl" | "none" | None (no MIT column)
    fastkrb: Timing = field(default_factory=Timing)
    mit: Timing = field(default_factory=Timing)


def _time_list(fn: Callable[[bytes], Any], tokens: list[bytes]) -> float:
    with no_gc():
        t = time.perf_counter()
        for tok in tokens:
            fn(tok)
        return time.perf_counter() - t


def run_scenario(sc: Scenario, reps: int) -> None:
    toks = sc.tokens.tokens
    sc.fastkrb.n = sc.mit.n = len(toks)
    for _ in range(reps):
        v = fastkrb_validator(sc.tokens.keytab, sc.fastkrb_replay)   # fresh replay cache, untimed prefill
        sc.fastkrb.runs.append(_time_list(v.validate, toks))
        stats = v.replay_stats()
        if stats is not None and stats["hits"]:
            raise RuntimeError(f"{sc.name}: fastkrb saw a replay")
        del v
        if sc.mit_rcache is not None:
            with MitAcceptor(sc.tokens.keytab, rcache=sc.mit_rcache) as mit:
                sc.mit.runs.append(_time_list(mit.accept, toks))


def stage_breakdown(ts: TokenSet, reps: int, iters: int) -> dict[str, dict[str, float]]:
    """ns per stage (profile_stages), best and median over ``reps`` distinct tokens of ``ts`` (distinct
    tokens: each repetition's replay inserts are new keys), replay inserts into a warm cache."""
    v = fastkrb_validator(ts.keytab, "none")
    rc = labmod.warm_replay_cache()
    rows: list[dict[str, float]] = []
    for tok in ts.tokens[:reps]:
        rows.append(v.profile(tok, time.time(), iters, replay=rc))
    return {k: {"best": round(min(r[k] for r in rows), 1), "median": round(statistics.median(r[k] for r in rows), 1)}
            for k in rows[0]}


def environment() -> dict[str, Any]:
    return {**host_facts(("gssapi", "pytest-benchmark")),
            "git": command_output(["git", "-C", str(labmod.REPO), "rev-parse", "--short", "HEAD"])}


def _fmt_rate(us: float) -> str:
    return f"{1e6 / us:,.0f}"


def print_table(scenarios: list[Scenario]) -> None:
    head = (f"{'scenario':<40} {'bytes':>6} | {'fastkrb µs':>10} {'med':>6} {'±%':>4} {'tok/s':>9} | "
            f"{'MIT µs':>8} {'med':>7} {'±%':>4} {'tok/s':>7} | {'MIT/fk':>6}")
    print(head)
    print("-" * len(head))
    for sc in scenarios:
        f = sc.fastkrb
        line = (f"{sc.name:<40} {sc.tokens.token_bytes:>6} | {f.best_us:>10.2f} {f.median_us:>6.2f} "
                f"{f.spread_pct:>4.0f} {_fmt_rate(f.best_us):>9} | ")
        if sc.mit.runs:
            m = sc.mit
            line += (f"{m.best_us:>8.1f} {m.median_us:>7.1f} {m.spread_pct:>4.0f} {_fmt_rate(m.best_us):>7} | "
                     f"{m.best_us / f.best_us:>5.1f}x")
        else:
            line += f"{'-':>8} {'':>7} {'':>4} {'':>7} | {'':>6}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write every number (and the environment) here")
    ap.add_argument("--tokens", type=int, default=labmod.N_TOKENS, help="headline token list (default %(default)s)")
    ap.add_argument("--variant-tokens", type=int, default=labmod.N_VARIANT)
    ap.add_argument("--pac-tokens", type=int, default=labmod.N_PAC)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--stage-iters", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 tokens, 2 reps")
    args = ap.parse_args(argv)
    if args.quick:
        args.tokens, args.variant_tokens, args.pac_tokens, args.reps, args.stage_iters = 300, 200, 100, 2, 2000

    t_start = time.perf_counter()
    env_before = environment()
    with tempfile.TemporaryDirectory(prefix="fastkrb-compare-") as tmp, BenchLab(Path(tmp)) as lab:
        t = time.perf_counter()
        head = lab.real_tokens(18, n=args.tokens)
        nv = args.variant_tokens
        sets: dict[Any, TokenSet] = {
            "aes256": head,
            17: lab.real_tokens(17, n=nv), 19: lab.real_tokens(19, n=nv), 20: lab.real_tokens(20, n=nv),
            "mutual": lab.real_tokens(18, mutual=True, n=nv), "spnego": lab.real_tokens(18, mech="spnego", n=nv),
            **{f"pac{k:g}": lab.ad_tokens(k, n=args.pac_tokens) for k in labmod.PAC_SIZES_KIB},
        }
        gen_s = time.perf_counter() - t
        checks = {ts.label: check_token_set(ts) for ts in sets.values()}
        scenarios = [
            Scenario("aes256-sha1 krb5, replay cache", head, "warm", "dfl"),
            Scenario("aes256-sha1 krb5, fresh fastkrb cache", head, "cold", None),
            Scenario("aes256-sha1 krb5, no replay cache", head, "none", "none"),
            Scenario("aes128-sha1 krb5, replay cache", sets[17], "warm", "dfl"),
            Scenario("aes128-sha256 krb5, replay cache", sets[19], "warm", "dfl"),
            Scenario("aes256-sha384 krb5, replay cache", sets[20], "warm", "dfl"),
            Scenario("aes256-sha1 krb5 mutual, replay cache", sets["mutual"], "warm", "dfl"),
            Scenario("aes256-sha1 SPNEGO, replay cache", sets["spnego"], "warm", "dfl"),
            *(Scenario(f"minted AD PAC {k:g} KiB, replay cache", sets[f"pac{k:g}"], "warm", "dfl")
              for k in labmod.PAC_SIZES_KIB),
        ]
        for sc in scenarios:
            run_scenario(sc, args.reps)
        stage_sets = {"aes256-sha1 (MIT token)": head, "aes256-sha384 (MIT token)": sets[20],
                      "PAC 8 KiB (minted)": sets["pac8"]}
        stages = {name: stage_breakdown(ts, args.reps, args.stage_iters) for name, ts in stage_sets.items()}
        realm_s = lab.start_seconds

    print(f"fastkrb vs MIT krb5 {env_before['mit_krb5']} — {env_before['cpu']}, {env_before['cpus']} CPUs, "
          f"load {env_before['loadavg'][0]:.2f}; {args.reps} reps, best and median of the reps, ±% = spread")
    print(f"realm {realm_s:.1f} s, tokens {gen_s:.1f} s (MIT initiator; minted for the PAC rows)\n")
    print_table(scenarios)
    print("\nstage breakdown (ns, timed in C by profile_stages; best / median of "
          f"{args.reps} tokens x {args.stage_iters} iterations):")
    names = list(stages)
    print(f"{'stage':<16}" + "".join(f"{n:>28}" for n in names))
    for st in _native.STAGES:
        print(f"{st:<16}" + "".join(f"{stages[n][st]['best']:>17.0f} / {stages[n][st]['median']:>7.0f}"
                                    for n in names))
    full = stages[names[0]]["full_validate"]["best"] / 1000
    py = scenarios[2].fastkrb.best_us
    print(f"\nPython boundary (Validator.validate, no replay cache) {py:.2f} µs vs C core {full:.2f} µs: "
          f"{py - full:.2f} µs for the call, AuthResult and names")
    elapsed = time.perf_counter() - t_start
    print(f"total {elapsed:.0f} s")

    if args.json:
        out = {
            "environment": env_before, "loadavg_after": os.getloadavg(), "reps": args.reps,
            "elapsed_s": round(elapsed, 1), "token_generation_s": round(gen_s, 2),
            "scenarios": [{"name": sc.name, "token_set": sc.tokens.describe(), "fastkrb_replay": sc.fastkrb_replay,
                           "mit_rcache": sc.mit_rcache, "fastkrb": sc.fastkrb.summary(),
                           "mit": sc.mit.summary() if sc.mit.runs else None,
                           "ratio_mit_over_fastkrb_best": round(sc.mit.best_us / sc.fastkrb.best_us, 2)
                           if sc.mit.runs else None}
                          for sc in scenarios],
            "stages_ns": stages, "stage_iters": args.stage_iters, "checks": checks,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
