"""`fastkrb bench`: how many validations per second this host does, and how many cores a load needs.

Scenarios run on the operator's own hardware, tokens and replay-cache backend, side by side with MIT
krb5 (python-gssapi) when it is installed. Each token is used once (a replay cache accepts it once), so
tokens are made in batches outside the timed sections: by default for a throwaway keytab, minted to look
like an MIT 1.20 KDC's (aes256-cts-hmac-sha1-96, minimal PAC); with ``--keytab``/``--tokens`` the
operator's own.
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastkrb.capacity.host import host_facts
from fastkrb.capacity.mit import MitAcceptor, mit_available
from fastkrb.errors import KerberosError
from fastkrb.validator import Validator

__all__ = ["Scenario", "BenchResult", "TokenSource", "run_bench", "main"]

HEADROOM = 0.7  # plan cores to run at 70 % of measured capacity
REPLAY_CAPACITY = 1 << 22  # live entries one scenario may create (4 M: ~13 s at 300k/s, all within the skew)


@dataclass
class Scenario:
    """One measured scenario: rate and latency percentiles (µs)."""

    name: str
    impl: str                       # "fastkrb" | "mit" | "fastkrb-sidecar-binary" | ...
    requests: int
    seconds: float
    errors: int = 0
    p50_us: float = 0.0
    p90_us: float = 0.0
    p99_us: float = 0.0
    concurrency: int = 1
    workers: int = 1
    notes: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def us_per_request(self) -> float:
        return 1e6 * self.seconds / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(rate=round(self.rate, 1), us_per_request=round(self.us_per_request, 3))
        return d


@dataclass
class BenchResult:
    host: dict[str, Any]
    source: dict[str, Any]
    scenarios: list[Scenario] = field(default_factory=list)
    stages_ns: dict[str, float] = field(default_factory=dict)
    sizing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "source": self.source, "scenarios": [s.to_dict() for s in self.scenarios],
                "stages_ns": self.stages_ns, "sizing": self.sizing}


# ------------------------------------------------------------------------------------------------------------
# Tokens


CHUNK = 100_000   # tokens made per batch, outside the timed sections: memory stays ~100 MB


@dataclass
class TokenSource:
    """Where a scenario's distinct tokens come from, and the keytab that validates them.

    ``chunks()`` starts a fresh stream each time: every scenario has its own validator and replay cache,
    so streams may repeat tokens across scenarios, never within one.
    """

    keytab_path: Path
    label: str
    tokens: list[bytes] = field(default_factory=list, repr=False)   # a fixed list (recorded / from a KDC)
    factory: Callable[[int, int], list[bytes]] | None = field(default=None, repr=False)  # (chunk no, n)
    recorded: bool = False          # operator's recorded tokens: their clocks are in the past

    def sample(self) -> bytes:
        return self.tokens[0] if self.tokens else self.factory(0, 1)[0]  # type: ignore[misc]

    def chunks(self, size: int = CHUNK) -> Iterator[list[bytes]]:
        if self.factory is None:
            for i in range(0, len(self.tokens), size):
                yield self.tokens[i:i + size]
            return
        i = 0
        while True:
            yield self.factory(i, size)
            i += 1

    def describe(self) -> dict[str, Any]:
        sample = self.tokens[:1000] if self.tokens else [self.sample()]
        return {"label": self.label, "tokens": len(self.tokens) if self.tokens else "generated per scenario",
                "token_bytes_median": statistics.median(len(t) for t in sample),
                "keytab": str(self.keytab_path), "recorded": self.recorded}


def embedded_source(workdir: Path, enctype: int = 18) -> TokenSource:
    """A throwaway keytab and minted tokens shaped like an MIT 1.20 KDC's (minimal PAC, krb5 mech)."""
    from fastkrb.testing import make_keytab, mint

    spn = "HTTP/api.bench.test@BENCH.TEST"
    kt = make_keytab(principals=(spn,), enctypes=(enctype,), kvno=2, rng=random.Random(7))
    path = workdir / "bench.keytab"
    kt.save(path)
    now = int(time.time())
    m = mint(kt, server=spn, client="alice@BENCH.TEST", ticket_enctype=enctype, framing="krb5",
             pac={"minimal": True}, gss_flags=("replay", "sequence", "integ", "conf"), ctime=now, cusec=500_000)

    def make(chunk: int, n: int) -> list[bytes]:
        # ctime is "now" when the batch is made (the scenario validates it right after); every token is
        # distinct anyway: its random confounder makes a distinct ciphertext, hence a distinct MAC and
        # replay identity (for MIT's file2 cache too)
        return m.variants(n, now=float(int(time.time())), offset=(chunk * n) % (900_000 - n + 1))

    return TokenSource(path, f"minted {enctype} krb5 (minimal PAC)", factory=make)


def file_source(keytab: Path, tokens_file: Path) -> TokenSource:
    """The operator's keytab and recorded tokens: one per line, base64 or ``Negotiate <b64>``."""
    toks: list[bytes] = []
    for line in tokens_file.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.lower().startswith("authorization:"):
            line = line.split(":", 1)[1].strip()
        if line.lower().startswith("negotiate "):
            line = line.split(None, 1)[1]
        toks.append(base64.b64decode(line))
    if not toks:
        raise ValueError(f"{tokens_file}: no tokens")
    return TokenSource(keytab, f"recorded tokens from {tokens_file.name}", tokens=toks, recorded=True)


def kdc_source(keytab: Path, principal: str, n: int) -> TokenSource:
    """Fresh AP-REQs from the operator's own credentials (the current ccache) through MIT's initiator."""
    import gssapi

    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
    creds = gssapi.Credentials(usage="initiate")
    krb5 = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2")
    toks = []
    for _ in range(n):
        ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=krb5,
                                     flags=int(gssapi.RequirementFlag.replay_detection))
        toks.append(bytes(ctx.step()))
    return TokenSource(keytab, f"fresh tickets from the KDC for {principal}", tokens=toks)


# ------------------------------------------------------------------------------------------------------------
# Measuring


def _percentiles(lat_ns: Sequence[int]) -> tuple[float, float, float]:
    if not lat_ns:
        return 0.0, 0.0, 0.0
    s = sorted(lat_ns)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] / 1000

    return q(0.50), q(0.90), q(0.99)


def measure_calls(name: str, impl: str, call: Callable[[bytes], Any], chunks: Iterator[list[bytes]],
                  seconds: float, progress: Callable[[float], None] | None = None) -> Scenario:
    """Call ``call`` on successive distinct tokens until ``seconds`` of calls have been timed.

    Tokens come in chunks made between timed sections (their making is not timed). Throughput is requests
    over timed wall time (the per-call timing included: ~0.1 µs each); latencies are per call. The garbage
    collector is paused while timing, as pytest-benchmark does.
    """
    lat: list[int] = []
    errors = n = 0
    timed = 0
    budget = int(seconds * 1e9)
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    for tokens in chunks:
        if timed >= budget or not tokens:
            break
        part = [0] * len(tokens)
        k = 0
        gc.disable()
        try:
            t0 = clock()
            stop = t0 + budget - timed
            for tok in tokens:
                a = clock()
                try:
                    call(tok)
                except Exception:  # KerberosError, or MIT's GSSError: a rejection either way
                    errors += 1
                b = clock()
                part[k] = b - a
                k += 1
                if k & 1023 == 0 and b > stop:
                    break
            timed += clock() - t0
        finally:
            if gc_was:
                gc.enable()
        n += k
        lat += part[:k]
        if progress:
            progress(min(1.0, timed / budget))
    p50, p90, p99 = _percentiles(lat)
    return Scenario(name, impl, n, timed / 1e9, errors, p50, p90, p99)


# ------------------------------------------------------------------------------------------------------------
# The run


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.label = total, 0, enabled, ""

    def start(self, label: str) -> Callable[[float], None]:
        self.label = label
        self.update(0.0)
        return self.update

    def update(self, frac: float) -> None:
        if not self.enabled:
            return
        pos = (self.done + frac) / max(1, self.total)
        bar = "#" * int(30 * pos)
        sys.stderr.write(f"\r[{bar:<30}] {100 * pos:5.1f}%  {self.label[:48]:<48}")
        sys.stderr.flush()

    def finish_one(self) -> None:
        self.done += 1
        self.update(0.0)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def sidecar_scenarios(source: TokenSource, workers: int, seconds: float, tick: Callable[[float], None],
                      steps: Sequence[int] = (1, 8, 64)) -> list[Scenario]:
    """`fastkrb serve` with ``workers`` processes, driven over its Unix socket by a separate load process:
    the binary protocol (4 connections, rising depth) and HTTP keep-alive (rising connections)."""
    from fastkrb.capacity.sidecar_load import Daemon, load, measured
    from fastkrb.keytab import Keytab

    realm = Keytab.load(source.keytab_path).entries[0].realm
    out: list[Scenario] = []
    runs = [("wire", 4, d) for d in steps] + [("http", c, 1) for c in steps]
    with tempfile.TemporaryDirectory(prefix="fastkrb-bench-sidecar-") as tmp, \
            Daemon(Path(tmp), source.keytab_path, workers) as d:
        for i, (mode, conns, depth) in enumerate(runs):
            tick(i / len(runs))
            (r,) = measured(d, load(d.sock, source.keytab_path, "--mode", mode, "--connections", str(conns),
                                    "--depth", str(depth), "--seconds", str(seconds), "--client",
                                    f"bench@{realm}", "--warmup", "0.5"))
            ok = r["answers"].get("accepted" if mode == "wire" else "200", 0)
            lat = r["latency_us"]
            out.append(Scenario(
                name=f"sidecar {'binary' if mode == 'wire' else 'HTTP'}, {workers} worker(s), "
                     f"{conns * depth} in flight",
                impl=f"fastkrb-sidecar-{'binary' if mode == 'wire' else 'http'}",
                requests=int(r["throughput"] * seconds), seconds=seconds,
                errors=sum(r["answers"].values()) - ok, p50_us=lat["p50"] or 0.0, p90_us=lat["p90"] or 0.0,
                p99_us=lat["p99"] or 0.0, concurrency=conns * depth, workers=workers,
                notes=f"daemon CPU {r['daemon_cpu_us_per_request']} us/request "
                      f"(~{r['per_core_capacity'] or 0:,}/s per core); load generator on the same host"))
    return out


def run_bench(source: TokenSource, *, seconds: float = 3.0, replay: Sequence[str] = ("memory", "shm"),
              mit: bool = True, sidecar: bool = True, workers: Sequence[int] = (1,),
              progress: bool = False) -> BenchResult:
    """Run the scenario set; every scenario gets its own validator and its own slice of tokens."""
    res = BenchResult(host=_host(), source=source.describe())
    backends = list(replay)
    plan: list[tuple[str, Callable[[Callable[[float], None]], list[Scenario]]]] = []
    skew = 1e9 if source.recorded else 300.0   # recorded tokens are old: widen the clock window (documented)

    def fastkrb_run(backend: str) -> Callable[[Callable[[float], None]], list[Scenario]]:
        def go(tick: Callable[[float], None]) -> list[Scenario]:
            with tempfile.TemporaryDirectory(prefix="fastkrb-bench-") as workdir:   # the shm file goes too
                cache = _steady_cache(backend, skew, workdir)
                v = Validator(str(source.keytab_path), replay_cache=cache, cold_start=False, clock_skew=skew)
                stream = source.chunks()
                first = next(stream)
                warm, rest = first[:2000], first[2000:]
                for t in warm:                   # page in code, keys and the first cache pages
                    _try(v.validate, t)
                sc = measure_calls(f"in-process, replay={backend}", "fastkrb", v.validate,
                                   itertools.chain([rest], stream), seconds, tick)
                if cache is not None:
                    cache.close()
            sc.notes = "single thread, distinct tokens, each validated once"
            return [sc]
        return go

    plan.append(("fastkrb in-process (no replay cache: crypto path)", fastkrb_run("none")))
    for b in backends:
        plan.append((f"fastkrb in-process, replay={b}", fastkrb_run(b)))
    if mit and not mit_available():
        # said, not silently dropped: the sizing then has no MIT ratio
        print("fastkrb bench: python-gssapi is not installed, so MIT krb5 is not measured beside fastkrb "
              "(pip install gssapi; --no-mit to silence this)", file=sys.stderr)
    elif mit:
        def mit_run(tick: Callable[[float], None]) -> list[Scenario]:
            with MitAcceptor(source.keytab_path) as acceptor:
                accept = acceptor.accept
                sc = measure_calls("in-process, MIT gss_accept_sec_context", "mit", accept,
                                   source.chunks(20_000), seconds, tick)
            sc.notes = "python-gssapi raw accept_sec_context, MIT's default file replay cache"
            return [sc]
        if not source.recorded:
            plan.append(("MIT krb5 gss_accept_sec_context", mit_run))
    if sidecar and not source.recorded:
        for w in workers:
            def side(tick: Callable[[float], None], w: int = w) -> list[Scenario]:
                return sidecar_scenarios(source, w, min(seconds, 2.0), tick)
            plan.append((f"sidecar, {w} worker(s)", side))

    bar = Progress(len(plan) + 1, progress)
    try:
        for label, run in plan:
            res.scenarios.extend(run(bar.start(label)))
            bar.finish_one()
        bar.start("stage breakdown")
        v = Validator(str(source.keytab_path), replay_cache="none", cold_start=False, clock_skew=skew)
        res.stages_ns = {k: round(x, 1) for k, x in v.profile(source.sample(), iterations=20_000).items()}
        bar.finish_one()
    finally:
        bar.close()
    res.sizing = sizing(res.scenarios)
    return res


def _try(fn: Callable[[bytes], Any], tok: bytes) -> None:
    try:
        fn(tok)
    except KerberosError:
        pass


STEADY_LIVE = 100_000     # live entries of a cache in service (~330 validations/s over a 300 s window)
TOUCH_INSERTS = 1 << 18   # short-lived inserts that fault in the table's pages before the run


def _steady_cache(name: str, skew: float, workdir: str) -> Any:
    """The replay cache as after a while in service: its pages faulted in and STEADY_LIVE live entries,
    so a scenario measures the steady state (as benches/ does), not a table being populated."""
    from fastkrb.replay import open_replay_cache

    spec = f"shm:{workdir}/replay.shm" if name == "shm" else name
    cache = open_replay_cache(spec, capacity=REPLAY_CAPACITY, clock_skew=skew, cold_start=False)
    if cache is None or name not in ("memory", "shm"):
        return cache   # a network cache has no pages to fault in, and its namespace is the operator's
    now = time.time()
    keys = os.urandom(16 * (TOUCH_INSERTS + STEADY_LIVE))
    short = [(keys[i:i + 16], now - 5.0) for i in range(0, 16 * TOUCH_INSERTS, 16)]
    live = [(keys[i:i + 16], now + 3600.0) for i in range(16 * TOUCH_INSERTS, len(keys), 16)]
    cache.insert_many(short, now - 10.0)
    cache.insert_many(live, now - 1.0)   # the first of these sweeps the short ones out
    return cache


def _host() -> dict[str, Any]:
    return {**host_facts(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def sizing(scenarios: Sequence[Scenario], p99_budget_ms: float | None = None,
           target_rps: float | None = None) -> dict[str, Any]:
    """Per-core capacity from the best in-process fastkrb scenario with a replay cache."""
    cands = [s for s in scenarios if s.impl == "fastkrb" and "replay=none" not in s.name]
    if not cands:
        cands = [s for s in scenarios if s.impl == "fastkrb"]
    if not cands:
        return {}
    best = max(cands, key=lambda s: s.rate)
    out: dict[str, Any] = {"scenario": best.name, "per_core_rps": round(best.rate), "p99_ms": best.p99_us / 1000,
                           "headroom": HEADROOM}
    if target_rps:
        out["target_rps"] = target_rps
        out["cores"] = math.ceil(target_rps / (best.rate * HEADROOM))
    side = [s for s in scenarios if s.impl.startswith("fastkrb-sidecar") and s.workers == 1 and not s.errors]
    if side:
        top = max(side, key=lambda s: s.rate)
        out["sidecar"] = {"scenario": top.name, "rps": round(top.rate), "p99_ms": top.p99_us / 1000}
    mit = [s for s in scenarios if s.impl == "mit"]
    if mit:
        out["mit_per_core_rps"] = round(mit[0].rate)
        out["ratio_vs_mit"] = round(best.rate / mit[0].rate, 1) if mit[0].rate else None
    return out


def _latency(ms: float) -> str:
    """A measured latency as measured: three significant digits (whole units from 100 on), µs below 1 ms."""
    value, unit = (ms * 1000, "µs") if ms < 1 else (ms, "ms")
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def sizing_line(sz: dict[str, Any]) -> str:
    if not sz:
        return "no fastkrb scenario ran"
    line = (f"this host validates {sz['per_core_rps']:,}/s per core at p99 {_latency(sz['p99_ms'])} "
            f"({sz['scenario']})")
    if "cores" in sz:
        line += (f"; for {sz['target_rps']:,.0f}/s you need {sz['cores']} core(s) "
                 f"(planning at {int(100 * sz['headroom'])}% of capacity)")
    if "sidecar" in sz:
        sc = sz["sidecar"]
        line += (f". Through the sidecar (one worker, {sc['scenario'].split(', ', 2)[-1]}): {sc['rps']:,}/s "
                 f"at p99 {_latency(sc['p99_ms'])}")
    return line


# ------------------------------------------------------------------------------------------------------------
# Output


def table(res: BenchResult) -> str:
    rows = [f"{'scenario':<46} {'impl':<15} {'req/s':>10} {'us/req':>9} {'p50 us':>9} {'p99 us':>9} {'errors':>7}",
            "-" * 110]
    for s in res.scenarios:
        impl = s.impl.replace("fastkrb-sidecar-", "sidecar/")
        rows.append(f"{s.name[:46]:<46} {impl[:15]:<15} {s.rate:>10,.0f} {s.us_per_request:>9.2f} "
                    f"{s.p50_us:>9.2f} {s.p99_us:>9.2f} {s.errors:>7}")
    if res.stages_ns:
        rows.append("")
        rows.append("where the time goes (ns per stage, timed in C): " +
                    ", ".join(f"{k} {v:.0f}" for k, v in res.stages_ns.items() if v))
    return "\n".join(rows)


def write_report(res: BenchResult, directory: Path) -> Path:
    """Markdown with PNG plots: throughput per scenario, latency percentiles, stage costs, fastkrb vs MIT."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError("--report draws its plots with matplotlib: pip install 'fastkrb[report]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    pngs: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(directory / name, dpi=110)
        plt.close(fig)
        pngs.append((name, title))

    sc = res.scenarios
    if sc:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(sc)))
        ax.barh([s.name for s in sc], [s.rate for s in sc],
                color=["#c44" if s.impl == "mit" else "#37a" for s in sc])
        ax.set_xlabel("validations per second (one core unless noted)")
        ax.invert_yaxis()
        save(fig, "throughput.png", "Throughput per scenario (red: MIT krb5)")

        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(sc)))
        ys = range(len(sc))
        for q, mk in (("p50_us", "o"), ("p90_us", "s"), ("p99_us", "^")):
            ax.scatter([getattr(s, q) for s in sc], list(ys), marker=mk, label=q.split("_")[0])
        ax.set_yticks(list(ys), [s.name for s in sc])
        ax.set_xscale("log")
        ax.set_xlabel("latency per validation (µs, log scale)")
        ax.invert_yaxis()
        ax.legend()
        save(fig, "latency.png", "Latency percentiles per scenario")

        conc = [s for s in sc if s.concurrency > 1 or s.impl.startswith("fastkrb-sidecar")]
        if conc:
            fig, ax = plt.subplots(figsize=(7, 4))
            for impl, w in sorted({(s.impl, s.workers) for s in conc}):
                pts = sorted((s.concurrency, s.rate) for s in conc if s.impl == impl and s.workers == w)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{impl.replace('fastkrb-sidecar-', '')}, {w} worker(s)")
            ax.set_xscale("log")
            ax.set_xlabel("concurrency (requests in flight, log scale)")
            ax.set_ylabel("validations per second")
            ax.legend()
            save(fig, "concurrency.png", "Throughput versus concurrency (sidecar)")

    if res.stages_ns:
        st = {k: v for k, v in res.stages_ns.items() if v and k != "full_validate"}
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(list(st), list(st.values()), color="#37a")
        ax.set_ylabel("ns per token")
        ax.tick_params(axis="x", rotation=30)
        save(fig, "stages.png", f"Cost per stage (full validation {res.stages_ns.get('full_validate', 0):.0f} ns)")

    mit = [s for s in sc if s.impl == "mit"]
    fk = [s for s in sc if s.impl == "fastkrb" and "replay=none" not in s.name]
    if mit and fk:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(["fastkrb", "MIT krb5"], [fk[0].us_per_request, mit[0].us_per_request], color=["#37a", "#c44"])
        ax.set_ylabel("µs per validation")
        save(fig, "vs_mit.png", f"fastkrb vs MIT krb5 ({mit[0].us_per_request / fk[0].us_per_request:.1f}x)")

    md = ["# fastkrb capacity report", "",
          f"Host: {res.host.get('cpu')} ({res.host.get('cpus')} cores), Python {res.host.get('python')}, "
          f"{res.host.get('date')}.",
          f"Tokens: {res.source.get('label')} ({res.source.get('tokens')} tokens, median "
          f"{res.source.get('token_bytes_median')} bytes).", "",
          "**Sizing:** " + sizing_line(res.sizing), "", "```", table(res), "```", ""]
    for name, title in pngs:
        md += [f"## {title}", "", f"![{title}]({name})", ""]
    (directory / "report.md").write_text("\n".join(md))
    (directory / "report.json").write_text(json.dumps(res.to_dict(), indent=2))
    return directory / "report.md"


def main(args: Any) -> int:
    """Entry point of `fastkrb bench` (argparse namespace from fastkrb.tools.cli)."""
    import logging

    logging.getLogger("fastkrb").setLevel(logging.ERROR)  # the "none" scenario's warning is expected here
    with tempfile.TemporaryDirectory(prefix="fastkrb-bench-") as tmp:
        if args.tokens or args.kdc:
            if not args.keytab:
                raise ValueError("--tokens and --kdc need --keytab")
            if args.kdc:
                if not args.principal:
                    raise ValueError("--kdc needs --principal (the service principal to get tickets for)")
                source = kdc_source(Path(args.keytab), args.principal, args.kdc_tokens)
            else:
                source = file_source(Path(args.keytab), Path(args.tokens))
        else:
            source = embedded_source(Path(tmp), enctype=args.enctype)
        workers = args.workers or sorted({1, os.cpu_count() or 1})
        res = run_bench(source, seconds=args.seconds, replay=args.replay, mit=not args.no_mit,
                        sidecar=not args.no_sidecar, workers=workers,
                        progress=not args.json and (sys.stderr.isatty() or args.progress))
        res.sizing = sizing(res.scenarios, target_rps=args.target_rps)
        if args.report:
            path = write_report(res, Path(args.report))
            if not args.json:
                print(f"report: {path}")
        if args.json:
            print(json.dumps(res.to_dict(), indent=2))
        else:
            print(table(res))
            print("\n" + sizing_line(res.sizing))
    return 0

