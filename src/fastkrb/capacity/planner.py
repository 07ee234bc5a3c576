"""`fastkrb bench`: how many validations per second this host does, and how many cores a load needs.

Scenarios run on the operator's own hardware, tokens and replay-cache backend, side by side with MIT
krb5 (python-gssapi) when it is installed. Each token is used once (a replay cache accepts it once), so
tokens are made in batches outside the timed sections: by default for a throwaway keytab, minted to look
like an MIT 1.20 KDC's (aes256-cts-hmac-sha1-96, minimal PAC); with ``--keytab``/``--tokens`` the
operator's own.
"""

from __future__ import annotations

import atexit
import base64
import gc
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastkrb.capacity.host import cpu_snapshot, host_facts, loadavg, other_cores
from fastkrb.capacity.mit import MitAcceptor, mit_available
from fastkrb.capacity.stats import Latency, across_runs, latency_stats, spread_pct
from fastkrb.errors import KerberosError
from fastkrb.validator import Validator

__all__ = ["Run", "Scenario", "BenchResult", "TokenSource", "Workspace", "run_bench", "sizing", "sizing_line",
           "figures", "check_args", "main"]

HEADROOM = 0.7  # plan cores to run at 70 % of measured capacity
REPLAY_CAPACITY = 1 << 22  # live entries one scenario may create (4 M: ~13 s at 300k/s, all within the skew)


@dataclass
class Run:
    """One measurement of a scenario: throughput over wall time, latency from per-request samples."""

    requests: int                   # answered in the timed window, accepted or not
    seconds: float                  # timed wall time
    errors: int = 0                 # requests not accepted, of ``attempts``
    attempts: int = 0               # requests whose answer was counted (the sidecar's warm-up included)
    first_error: str = ""           # the first failure, as fastkrb (or MIT, or the sidecar) worded it
    latency: Latency = field(default_factory=Latency)
    other_cores: float | None = None  # cores other processes kept busy meanwhile (host.other_cores)
    starved: bool = False           # the load generator ran out of distinct tokens before the window closed

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 4), "rate": round(self.rate, 1),
                "errors": self.errors, "attempts": self.attempts, "first_error": self.first_error,
                "starved": self.starved, "other_cores": self.other_cores,
                **{k: round(v, 3) if isinstance(v, float) else v for k, v in self.latency.to_dict().items()}}


@dataclass
class Scenario:
    """One scenario, measured ``len(runs)`` times; its figures are medians over the runs.

    Each run's latency figures come from that run's samples and nothing else (``stats.latency_stats``), so
    min ≤ p50 ≤ p90 ≤ p99 ≤ max and min ≤ mean ≤ max; the medians keep those orderings.
    """

    name: str
    impl: str                       # "fastkrb" | "mit" | "fastkrb-sidecar-binary" | ...
    concurrency: int = 1
    workers: int = 1                # sidecar worker processes (in-process rows: the one thread)
    load_processes: int = 0         # load-generator processes on the same host (sidecar rows)
    notes: str = ""
    runs: list[Run] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [r.rate for r in self.runs]

    @property
    def rate(self) -> float:
        """Median requests per second over the runs (the figure the sizing uses)."""
        return float(statistics.median(self.rates)) if self.runs else 0.0

    @property
    def rate_best(self) -> float:
        return max(self.rates, default=0.0)

    @property
    def rate_spread_pct(self) -> float:
        return spread_pct(self.rates)

    @property
    def latency(self) -> Latency:
        return across_runs([r.latency for r in self.runs])

    @property
    def p50_us(self) -> float:
        return self.latency.p50_us

    @property
    def p90_us(self) -> float:
        return self.latency.p90_us

    @property
    def p99_us(self) -> float:
        return self.latency.p99_us

    @property
    def mean_us(self) -> float:
        return self.latency.mean_us

    @property
    def p99_runs(self) -> list[float]:
        return [r.latency.p99_us for r in self.runs if r.latency.n]

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def attempts(self) -> int:
        return sum(r.attempts for r in self.runs)

    @property
    def first_error(self) -> str:
        return next((r.first_error for r in self.runs if r.first_error), "")

    @property
    def cores(self) -> int:
        """Processes that could each keep a core busy: the thread, or the daemon's workers + load generators."""
        return self.workers + self.load_processes if self.load_processes else 1

    @property
    def cores_label(self) -> str:
        if not self.load_processes:
            return "1 core (one thread)"
        return (f"{self.workers} worker{'s' if self.workers > 1 else ''} + {self.load_processes} load "
                f"generator{'s' if self.load_processes > 1 else ''}: up to {self.cores} cores")

    @property
    def failed(self) -> bool:
        """A failed request or a starved load generator: no capacity figure from this scenario."""
        return bool(self.errors) or any(r.starved for r in self.runs)

    def no_sizing(self) -> str | None:
        """Why this scenario gives no capacity figure (any failed request, a starved load), or None."""
        if not self.errors and any(r.starved for r in self.runs):
            n = sum(r.starved for r in self.runs)
            return (f"no sizing: in {n} of {len(self.runs)} runs the load generator ran out of distinct tokens "
                    "before the window closed, so the rate undercounts what the daemon can do")
        if not self.errors:
            return None
        first = self.first_error or "not reported"
        return f"no sizing: {self.errors:,} of {self.attempts:,} requests failed (first error: {first[:200]})"

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        p99s = self.p99_runs
        return {
            "name": self.name, "impl": self.impl, "concurrency": self.concurrency, "workers": self.workers,
            "load_processes": self.load_processes, "cores": self.cores, "cores_label": self.cores_label,
            "notes": self.notes, "repeat": len(self.runs), "statistic": "median of the runs",
            "requests": self.requests, "errors": self.errors, "attempts": self.attempts,
            "first_error": self.first_error, "no_sizing": self.no_sizing(),
            "rate": round(self.rate, 1), "rate_best": round(self.rate_best, 1),
            "rate_min": round(min(self.rates, default=0.0), 1), "rate_max": round(self.rate_best, 1),
            "rate_spread_pct": round(self.rate_spread_pct, 1),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in lat.to_dict().items() if k != "n"},
            "samples": lat.n,
            "p99_best_us": round(min(p99s, default=0.0), 3), "p99_worst_us": round(max(p99s, default=0.0), 3),
            "p99_spread_pct": round(spread_pct(p99s), 1),
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass
class BenchResult:
    host: dict[str, Any]
    source: dict[str, Any]
    scenarios: list[Scenario] = field(default_factory=list)
    stages_ns: dict[str, float] = field(default_factory=dict)
    sizing: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    load: dict[str, Any] = field(default_factory=dict)   # load average before/after, other processes' CPU

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "source": self.source, "repeat": self.repeat, "load": self.load,
                "scenarios": [s.to_dict() for s in self.scenarios], "stages_ns": self.stages_ns,
                "sizing": self.sizing}


# ------------------------------------------------------------------------------------------------------------
# Tokens


EXPECT_WIRE = 300_000   # sidecar load: distinct tokens minted per second of the run (binary, pipelined)
EXPECT_HTTP = 200_000
SIDECAR_REPLAY_CAPACITY = 1 << 23   # one round: six runs of a few seconds at up to ~300,000/s, under 8.4 M live
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
    for no, line in enumerate(tokens_file.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.lower().startswith("authorization:"):
            line = line.split(":", 1)[1].strip()
        if line.lower().startswith("negotiate "):
            line = line.split(None, 1)[1]
        try:
            toks.append(base64.b64decode(line, validate=True))
        except ValueError:
            raise ValueError(f"--tokens {tokens_file}: line {no} is not a token; write one per line, as base64 "
                             "or 'Negotiate <base64>'") from None
    if not toks:
        raise ValueError(f"--tokens {tokens_file}: no tokens in the file; write one per line, as base64 or "
                         "'Negotiate <base64>'")
    return TokenSource(keytab, f"recorded tokens from {tokens_file.name}", tokens=toks, recorded=True)


def kdc_source(keytab: Path, principal: str, n: int) -> TokenSource:
    """Fresh AP-REQs from the operator's own credentials (the current ccache) through MIT's initiator."""
    import gssapi
    import gssapi.raw

    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
    krb5 = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2")
    toks = []
    try:
        creds = gssapi.Credentials(usage="initiate")
        for _ in range(n):
            ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=krb5,
                                         flags=int(gssapi.RequirementFlag.replay_detection))
            toks.append(bytes(ctx.step()))
    except gssapi.raw.GSSError as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"--kdc: no ticket for {principal} from your credentials ({msg[:200]}); kinit as a "
                         "user first and check the principal") from None
    return TokenSource(keytab, f"fresh tickets from the KDC for {principal}", tokens=toks)


# ------------------------------------------------------------------------------------------------------------
# Measuring


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KerberosError):
        return f"{exc.code}: {exc.cause}"
    return f"{type(exc).__name__}: {exc}".strip()


def measure_calls(call: Callable[[bytes], Any], chunks: Iterator[list[bytes]], seconds: float,
                  progress: Callable[[float], None] | None = None) -> Run:
    """Call ``call`` on successive distinct tokens until ``seconds`` of calls have been timed.

    Tokens come in chunks made between timed sections (their making is not timed). Throughput is requests
    over timed wall time (the loop and the per-call timing included); the latency figures are per call and
    all come from the same samples. The garbage collector is paused while timing, as pytest-benchmark does.
    """
    lat: list[int] = []
    errors = n = 0
    first_error = ""
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
                except Exception as exc:  # KerberosError, or MIT's GSSError: a rejection either way
                    errors += 1
                    if not first_error:
                        first_error = _error_text(exc)
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
    return Run(requests=n, seconds=timed / 1e9, errors=errors, attempts=n, first_error=first_error,
               latency=latency_stats(lat, to_us=1e-3))


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
                      workdir: Path, steps: Sequence[int] = (1, 8, 64)) -> list[Scenario]:
    """`fastkrb serve` with ``workers`` processes, driven over its Unix socket by a separate load process:
    the binary protocol (4 connections, rising depth) and HTTP keep-alive (rising connections).

    The daemon's socket, log and shared-memory replay cache live in a directory under ``workdir`` that is
    removed when the daemon has stopped; the daemon and the load generators run in their own process
    groups, which ``sidecar_load.kill_children`` ends on any way out."""
    from fastkrb.capacity.sidecar_load import Daemon, load, measured
    from fastkrb.keytab import Keytab

    realm = Keytab.load(source.keytab_path).entries[0].realm
    out: list[Scenario] = []
    runs = [("wire", 4, d) for d in steps] + [("http", c, 1) for c in steps]
    tmp = workdir / f"s{workers}"   # short (the socket's path is bounded); removed below, each round anew
    tmp.mkdir()
    try:
        # room for every token of the round (entries live 2 x clock_skew): a full cache fails closed, and a run
        # with failures gives no figure
        with Daemon(tmp, source.keytab_path, workers, ("--replay-capacity", str(SIDECAR_REPLAY_CAPACITY))) as d:
            for i, (mode, conns, depth) in enumerate(runs):
                tick(i / len(runs))
                (r,) = measured(d, load(d.sock, source.keytab_path, "--mode", mode, "--connections", str(conns),
                                        "--depth", str(depth), "--seconds", str(seconds), "--client",
                                        f"bench@{realm}", "--warmup", "0.5",
                                        # distinct tokens minted beforehand: enough for the native path's rate
                                        # (a pool that runs dry marks the run starved: no figure from it)
                                        "--expect", str(EXPECT_WIRE if mode == "wire" else EXPECT_HTTP)))
                ok = r["answers"].get("accepted" if mode == "wire" else "200", 0)
                answered = sum(r["answers"].values())
                lat = r["latency_us"]
                latency = Latency(n=lat["n"], **{f"{k}_us": lat[k] or 0.0 for k in ("min", "mean", "p50", "p90", "p99",
                                                                                    "max")})
                kind = "binary" if mode == "wire" else "HTTP"
                out.append(Scenario(
                    name=f"sidecar {kind}, {workers} worker(s), {conns * depth} in flight",
                    impl=f"fastkrb-sidecar-{kind.lower()}", concurrency=conns * depth, workers=workers,
                    load_processes=1,
                    notes=f"daemon CPU {r['daemon_cpu_us_per_request']} us/request "
                          f"(~{r['per_core_capacity'] or 0:,}/s per core); load generator on the same host",
                    runs=[Run(requests=r["measured"], seconds=r["elapsed"], errors=answered - ok, attempts=answered,
                              first_error=r.get("first_error", ""), latency=latency,
                              starved=bool(r.get("exhausted")))]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_bench(source: TokenSource, *, seconds: float = 1.0, replay: Sequence[str] = ("memory", "shm"),
              mit: bool = True, sidecar: bool = True, workers: Sequence[int] = (1,), progress: bool = False,
              repeat: int = 3, workdir: Path | None = None) -> BenchResult:
    """Run the scenario set ``repeat`` times, in rounds (every scenario once, then again), so that a passing
    load lands in one run of each scenario rather than in every run of one; every run gets its own
    validator, replay cache and slice of tokens. Temporary files go under ``workdir`` (default: a
    temporary directory removed at the end)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fastkrb-bench-") as tmp:
            return run_bench(source, seconds=seconds, replay=replay, mit=mit, sidecar=sidecar, workers=workers,
                             progress=progress, repeat=repeat, workdir=Path(tmp))
    res = BenchResult(host=_host(), source=source.describe(), repeat=repeat)
    backends = [b for b in replay if b != "none"]
    plan: list[tuple[str, Callable[[Callable[[float], None]], list[Scenario]]]] = []
    skew = 1e9 if source.recorded else 300.0   # recorded tokens are old: widen the clock window (documented)

    def fastkrb_run(backend: str) -> Callable[[Callable[[float], None]], list[Scenario]]:
        def go(tick: Callable[[float], None]) -> list[Scenario]:
            # the shm file (~265 MB at REPLAY_CAPACITY) goes when the run ends, not at the end of the bench
            with tempfile.TemporaryDirectory(prefix="rc-", dir=workdir) as rcdir:
                cache = _steady_cache(backend, skew, rcdir)
                try:
                    v = Validator(str(source.keytab_path), replay_cache=cache, cold_start=False, clock_skew=skew)
                    stream = source.chunks()
                    first = next(stream)
                    # page in code, keys and the first cache pages; a short recorded list keeps most for timing
                    nwarm = min(2000, len(first) // 10)
                    for t in first[:nwarm]:
                        _try(v.validate, t)
                    run = measure_calls(v.validate, itertools.chain([first[nwarm:]], stream), seconds, tick)
                finally:
                    if cache is not None:
                        cache.close()
            return [Scenario(f"in-process, replay={backend}", "fastkrb",
                             notes="single thread, distinct tokens, each validated once", runs=[run])]
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
            with MitAcceptor(source.keytab_path, workdir=workdir) as acceptor:
                run = measure_calls(acceptor.accept, source.chunks(20_000), seconds, tick)
            return [Scenario("in-process, MIT gss_accept_sec_context", "mit", runs=[run],
                             notes="python-gssapi raw accept_sec_context, MIT's default file replay cache")]
        if not source.recorded:
            plan.append(("MIT krb5 gss_accept_sec_context", mit_run))
    if sidecar and not source.recorded:
        for w in workers:
            def side(tick: Callable[[float], None], w: int = w) -> list[Scenario]:
                return sidecar_scenarios(source, w, min(seconds, 2.0), tick, workdir)
            plan.append((f"sidecar, {w} worker(s)", side))

    bar = Progress(len(plan) * repeat + 1, progress)
    merged: dict[str, Scenario] = {}
    load0, cpu0 = loadavg(), cpu_snapshot()
    other: list[float] = []
    try:
        for rnd in range(repeat):
            for label, run in plan:
                before = cpu_snapshot()
                got = run(bar.start(f"{label} ({rnd + 1}/{repeat})"))
                busy = other_cores(before, cpu_snapshot())   # after the item: its children are reaped
                if busy is not None:
                    other.append(busy)
                for sc in got:
                    for r in sc.runs:
                        r.other_cores = busy
                    if sc.name in merged:
                        merged[sc.name].runs.extend(sc.runs)
                    else:
                        merged[sc.name] = sc
                bar.finish_one()
        bar.start("stage breakdown")
        v = Validator(str(source.keytab_path), replay_cache="none", cold_start=False, clock_skew=skew)
        res.stages_ns = {k: round(x, 1) for k, x in v.profile(source.sample(), iterations=20_000).items()}
        bar.finish_one()
    finally:
        bar.close()
    res.scenarios = list(merged.values())
    res.load = {"loadavg_before": load0, "loadavg_after": loadavg(), "cpus": os.cpu_count(),
                "other_cores_mean": other_cores(cpu0, cpu_snapshot()),
                "other_cores_max": max(other, default=None)}
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


# ------------------------------------------------------------------------------------------------------------
# Sizing


def sizing(scenarios: Sequence[Scenario], p99_budget_ms: float | None = None,
           target_rps: float | None = None) -> dict[str, Any]:
    """Per-core capacity from the fastest in-process fastkrb scenario with a replay cache, by its median
    rate over the runs. A scenario with any failed request gives no figure (``refused`` says why): a
    rejection costs less than an acceptance, so its rate is no capacity."""
    refused = {s.name: s.no_sizing() for s in scenarios if s.failed}
    cands = [s for s in scenarios if s.impl == "fastkrb" and "replay=none" not in s.name]
    if not cands:
        cands = [s for s in scenarios if s.impl == "fastkrb"]
    if not cands:
        return {"refused": refused} if refused else {}
    ok = [s for s in cands if not s.failed]
    if not ok:
        worst = max(cands, key=lambda s: (s.errors, s.failed))
        return {"no_sizing": f"{worst.no_sizing()} in {worst.name}", "refused": refused}
    best = max(ok, key=lambda s: s.rate)
    rates = best.rates
    out: dict[str, Any] = {
        "scenario": best.name, "per_core_rps": round(best.rate), "p99_ms": best.p99_us / 1000, "headroom": HEADROOM,
        "statistic": "median", "runs": len(rates), "per_core_rps_min": round(min(rates)),
        "per_core_rps_max": round(max(rates)), "spread_pct": round(best.rate_spread_pct, 1)}
    if target_rps:
        out["target_rps"] = target_rps
        out["cores"] = math.ceil(target_rps / (best.rate * HEADROOM))
    side = [s for s in scenarios if s.impl.startswith("fastkrb-sidecar") and s.workers == 1 and not s.failed]
    if side:
        top = max(side, key=lambda s: s.rate)
        out["sidecar"] = {"scenario": top.name, "rps": round(top.rate), "p99_ms": top.p99_us / 1000,
                          "spread_pct": round(top.rate_spread_pct, 1)}
    mit = [s for s in scenarios if s.impl == "mit" and not s.failed]
    if mit:
        out["mit_per_core_rps"] = round(mit[0].rate)
        out["ratio_vs_mit"] = round(best.rate / mit[0].rate, 1) if mit[0].rate else None
    if refused:
        out["refused"] = refused
    return out


def _latency(ms: float) -> str:
    """A measured latency as measured: three significant digits (whole units from 100 on), µs below 1 ms."""
    value, unit = (ms * 1000, "µs") if ms < 1 else (ms, "ms")
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def sizing_line(sz: dict[str, Any]) -> str:
    if "no_sizing" in sz:
        return str(sz["no_sizing"])
    if "per_core_rps" not in sz:
        return "no fastkrb scenario ran"
    how = ""
    if sz.get("runs", 1) > 1:
        how = (f"; median of {sz['runs']} runs, which spread {sz['spread_pct']:g}%: "
               f"{sz['per_core_rps_min']:,}-{sz['per_core_rps_max']:,}/s")
    line = (f"this host validates {sz['per_core_rps']:,}/s per core at p99 {_latency(sz['p99_ms'])} "
            f"({sz['scenario']}{how})")
    if "cores" in sz:
        line += (f"; for {sz['target_rps']:,.0f}/s you need {sz['cores']} core(s) "
                 f"(planning at {int(100 * sz['headroom'])}% of the median capacity)")
    if "sidecar" in sz:
        sc = sz["sidecar"]
        line += (f". Through the sidecar (one worker, {sc['scenario'].split(', ', 2)[-1]}): {sc['rps']:,}/s "
                 f"at p99 {_latency(sc['p99_ms'])}")
    return line


# ------------------------------------------------------------------------------------------------------------
# Output


def _load_line(res: BenchResult) -> str:
    ld = res.load
    if not ld:
        return ""
    la = " / ".join(f"{x:g}" for x in ld.get("loadavg_before") or [])
    lb = " / ".join(f"{x:g}" for x in ld.get("loadavg_after") or [])
    line = f"host: {ld.get('cpus')} cores; load average (1/5/15 min) {la} before, {lb} after"
    if ld.get("other_cores_mean") is not None:
        line += (f"; other processes kept {ld['other_cores_mean']:.2f} cores busy on average during the run "
                 f"(at most {ld['other_cores_max']:.2f} during one scenario's run)")
    return line


def table(res: BenchResult) -> str:
    n = res.repeat
    rows = [f"figures: median of {n} run(s) per scenario; best = highest req/s of the runs; spread = (max - min) "
            "/ median over the runs; latencies per request (µs), all from the same samples",
            f"{'scenario':<44} {'impl':<14} {'req/s':>9} {'best':>9} {'spread':>7} {'mean us':>9} {'p50 us':>9} "
            f"{'p99 us':>9} {'p99 spr':>7} {'errors':>7}",
            "-" * 133]
    for s in res.scenarios:
        impl = s.impl.replace("fastkrb-sidecar-", "sidecar/")
        rows.append(f"{s.name[:44]:<44} {impl[:14]:<14} {s.rate:>9,.0f} {s.rate_best:>9,.0f} "
                    f"{s.rate_spread_pct:>6.1f}% {s.mean_us:>9,.2f} {s.p50_us:>9,.2f} {s.p99_us:>9,.2f} "
                    f"{spread_pct(s.p99_runs):>6.1f}% {s.errors:>7,}")
    tails = [s for s in res.scenarios if s.mean_us > s.p99_us]
    if tails:
        rows.append("")
        rows += [f"{s.name}: mean above p99 (max {s.latency.max_us:,.0f} us): fewer than 1% of the requests waited "
                 "far longer than the rest, which is what being descheduled looks like; see the other processes' "
                 "CPU below" for s in tails]
    refused = [(s.name, s.no_sizing()) for s in res.scenarios if s.failed]
    if refused:
        rows.append("")
        rows += [f"{name}: {why}" for name, why in refused]
    if res.stages_ns:
        rows.append("")
        rows.append("where the time goes (ns per stage, timed in C): " +
                    ", ".join(f"{k} {v:.0f}" for k, v in res.stages_ns.items() if v))
    load = _load_line(res)
    if load:
        rows += ["", load]
    return "\n".join(rows)


_COLOURS = {"fastkrb": "#37a", "mit": "#c44", "sidecar": "#6a3"}


def _colour(s: Scenario) -> str:
    return _COLOURS["mit"] if s.impl == "mit" else _COLOURS["sidecar" if s.load_processes else "fastkrb"]


def _thousands(x: float, _pos: object) -> str:
    return f"{x / 1000:g}k" if x else "0"


def figures(res: BenchResult) -> list[tuple[str, str, Any]]:
    """The report's plots as (file name, heading, matplotlib Figure): titled, axes labelled with units,
    legends; the throughput plot names the cores each row used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    out: list[tuple[str, str, Any]] = []
    sc = res.scenarios
    n = res.repeat
    runs = f"median of {n} run{'s' if n > 1 else ''}"
    legend_impl = [Patch(color=_COLOURS["fastkrb"], label="fastkrb in-process"),
                   Patch(color=_COLOURS["mit"], label="MIT krb5 in-process"),
                   Patch(color=_COLOURS["sidecar"], label="fastkrb sidecar (+ load generator)")]
    if sc:
        fig, ax = plt.subplots(figsize=(11, 1.5 + 0.45 * len(sc)))
        med = [s.rate for s in sc]
        lo = [s.rate - min(s.rates) for s in sc]
        hi = [max(s.rates) - s.rate for s in sc]
        ax.barh([f"{s.name} [{s.cores_label}]" for s in sc], med, xerr=[lo, hi], capsize=3,
                color=[_colour(s) for s in sc])
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_xlabel("validations per second (req/s; k = thousand)")
        ax.set_ylabel("scenario [cores it used]")
        ax.set_title(f"Throughput per scenario\n({runs}; whiskers: min-max of the runs)")
        ax.legend(handles=legend_impl, loc="lower right", fontsize="small")
        ax.invert_yaxis()
        out.append(("throughput.png", "Throughput per scenario", fig))

        fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * len(sc)))
        ys = list(range(len(sc)))
        for q, mk in (("mean_us", "x"), ("p50_us", "o"), ("p90_us", "s"), ("p99_us", "^")):
            ax.scatter([getattr(s, q) for s in sc], ys, marker=mk, label=q.split("_")[0])
        ax.set_yticks(ys, [s.name for s in sc])
        ax.set_xscale("log")
        ax.set_xlabel("latency per request (µs, log scale)")
        ax.set_ylabel("scenario")
        ax.set_title(f"Latency per request\n({runs}; every figure of a run from the same samples)")
        ax.invert_yaxis()
        ax.legend(title="statistic")
        out.append(("latency.png", "Latency per scenario", fig))

        conc = [s for s in sc if s.load_processes]
        if conc:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for impl, w in sorted({(s.impl, s.workers) for s in conc}):
                pts = sorted((s.concurrency, s) for s in conc if s.impl == impl and s.workers == w)
                ax.errorbar([p[0] for p in pts], [p[1].rate for p in pts], marker="o", capsize=3,
                            yerr=[[p[1].rate - min(p[1].rates) for p in pts], [max(p[1].rates) - p[1].rate
                                                                                for p in pts]],
                            label=f"{impl.replace('fastkrb-sidecar-', '')}, {w} worker(s) + 1 load generator")
            ax.set_xscale("log")
            ax.set_xlabel("requests in flight (log scale)")
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
            ax.set_ylabel("answered requests per second (req/s; k = thousand)")
            ax.set_title(f"Sidecar throughput versus concurrency ({runs}; bars: min-max)")
            ax.legend(fontsize="small")
            out.append(("concurrency.png", "Sidecar throughput versus concurrency", fig))

    if res.stages_ns:
        st = {k: v for k, v in res.stages_ns.items() if v and k != "full_validate"}
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(list(st), list(st.values()), color=_COLOURS["fastkrb"], label="ns per stage (one token, one core)")
        ax.set_xlabel("validation stage")
        ax.set_ylabel("time per token (ns)")
        ax.set_title(f"Cost per stage, timed in C (full validation {res.stages_ns.get('full_validate', 0):.0f} ns)")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
        out.append(("stages.png", "Cost per validation stage", fig))

    mit = [s for s in sc if s.impl == "mit" and not s.failed]
    name = res.sizing.get("scenario")
    fk = [s for s in sc if s.name == name]
    if mit and fk and mit[0].p50_us and fk[0].p50_us:
        # the median request, not the mean: a few descheduled requests move the mean on a busy host
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        labels = [f"fastkrb\n({fk[0].name.removeprefix('in-process, ')})", "MIT krb5\n(gss_accept_sec_context)"]
        bars = ax.bar(labels, [fk[0].p50_us, mit[0].p50_us], color=[_COLOURS["fastkrb"], _COLOURS["mit"]],
                      label=[f"fastkrb: {fk[0].rate:,.0f}/s", f"MIT krb5: {mit[0].rate:,.0f}/s"])
        ax.bar_label(bars, fmt="%.1f µs")
        ax.set_xlabel("acceptor (in-process, one thread, one core)")
        ax.set_ylabel("median time per validation, p50 (µs)")
        ratio = mit[0].p50_us / fk[0].p50_us
        ax.set_title(f"fastkrb vs MIT krb5: {ratio:.1f}x less time per validation\n(p50, {runs})")
        ax.legend(title="median rate")
        out.append(("vs_mit.png", "fastkrb versus MIT krb5", fig))
    return out


def write_report(res: BenchResult, directory: Path) -> Path:
    """Markdown with PNG plots: throughput per scenario, latency percentiles, stage costs, fastkrb vs MIT."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    pngs: list[tuple[str, str]] = []
    for fname, title, fig in figures(res):
        fig.tight_layout()
        fig.savefig(directory / fname, dpi=110)
        plt.close(fig)
        pngs.append((fname, title))
    load = _load_line(res)
    md = ["# fastkrb capacity report", "",
          f"Host: {res.host.get('cpu')} ({res.host.get('cpus')} cores), Python {res.host.get('python')}, "
          f"{res.host.get('date')}.",
          f"Tokens: {res.source.get('label')} ({res.source.get('tokens')} tokens, median "
          f"{res.source.get('token_bytes_median')} bytes).",
          f"Each scenario ran {res.repeat} time(s), in rounds; every figure is the median over the runs, "
          "beside the best run and the spread ((max - min) / median). Sizing uses the median rate. Latencies "
          "come from per-request samples (every figure of one run from the same samples); req/s is requests "
          "over wall time.", ""]
    if load:
        md += [load[0].upper() + load[1:] + ".", ""]
    md += ["**Sizing:** " + sizing_line(res.sizing), "", "```", table(res), "```", ""]
    for fname, title in pngs:
        md += [f"## {title}", "", f"![{title}]({fname})", ""]
    (directory / "report.md").write_text("\n".join(md))
    (directory / "report.json").write_text(json.dumps(res.to_dict(), indent=2))
    return directory / "report.md"


# ------------------------------------------------------------------------------------------------------------
# The command: its checks, its temporary directory, its way out


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so every finally block cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Workspace:
    """The run's one temporary directory (under $TMPDIR, via tempfile), with its children.

    Everything a run writes goes under it (keytab, shm replay files, MIT's replay cache, sidecar sockets,
    logs and shm files). ``close`` ends the daemons and load generators (their whole process groups) and
    removes the directory; it runs on leaving the with-block by any path (return, error, Ctrl-C, SIGTERM,
    SIGHUP: those two raise :class:`Stopped`) and at interpreter exit. Only SIGKILL escapes it.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fastkrb-bench-"))
        self._saved: dict[int, Any] = {}
        self._closed = False
        atexit.register(self.close)

    @staticmethod
    def _stop(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    def __enter__(self) -> Workspace:
        for sig in self.SIGNALS:
            self._saved[sig] = signal.signal(sig, self._stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        # a second Ctrl-C or SIGTERM must not cut the clean-up short
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *self.SIGNALS)}
        try:
            from fastkrb.capacity.sidecar_load import kill_children

            kill_children()
            shutil.rmtree(self.path, ignore_errors=True)
            self._closed = True
        finally:
            for sig, h in held.items():
                signal.signal(sig, self._saved.pop(sig, h) if sig in self.SIGNALS else h)
            atexit.unregister(self.close)


ENCTYPES = (17, 18, 19, 20)
MAX_SECONDS = 3600.0


def check_args(args: Any) -> None:
    """Every option checked before anything is measured: one sentence naming the option, the value and the
    fix, raised as ValueError (the CLI prints it and exits 2)."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(msg)

    need(0 < args.seconds <= MAX_SECONDS,
         f"--seconds {args.seconds:g}: must be above 0 and at most {MAX_SECONDS:g} (seconds per scenario per run)")
    need(1 <= args.repeat <= 100, f"--repeat {args.repeat}: must be 1 to 100 (runs of each scenario)")
    need(args.kdc_tokens >= 1, f"--kdc-tokens {args.kdc_tokens}: must be at least 1")
    for w in args.workers or ():
        need(1 <= w <= 256, f"--workers {w}: each sidecar worker count must be 1 to 256")
    need(args.target_rps is None or args.target_rps > 0,
         f"--target-rps {args.target_rps}: must be above 0 (requests per second to size the host for)")
    if args.enctype is not None:
        need(args.enctype in ENCTYPES, f"--enctype {args.enctype}: the embedded tokens can be "
             f"{', '.join(map(str, ENCTYPES))} (17/18 aes-sha1, 19/20 aes-sha2)")
        need(not (args.tokens or args.kdc), "--enctype applies to the embedded tokens only: drop it with "
             "--tokens or --kdc (their enctype is the KDC's)")
    from fastkrb.replay import parse_replay_spec

    for spec in args.replay:
        if spec in ("memory", "shm", "none"):
            continue
        try:
            parsed = parse_replay_spec(spec)
        except ValueError:
            raise ValueError(f"--replay {spec}: unknown replay backend; use memory, shm, shm:/path/file or "
                             "redis://host:port/db") from None
        if parsed.kind == "shm":
            d = Path(parsed.location).parent
            need(d.is_dir() and os.access(d, os.W_OK | os.X_OK),
                 f"--replay {spec}: directory {d} is missing or not writable; name a file in a writable directory")
        elif parsed.kind == "redis":
            _check_redis(spec)
    if args.keytab:
        need(bool(args.tokens or args.kdc), f"--keytab {args.keytab}: the bench uses your keytab only with your "
             "tokens; add --tokens FILE (recorded tokens) or --kdc --principal SPN (fresh tickets), or drop it")
        need(os.path.isfile(args.keytab), f"--keytab {args.keytab}: no such file; give the path of your keytab")
    need(not (args.tokens and args.kdc), "--tokens and --kdc are two token sources: give one of them")
    if args.tokens or args.kdc:
        need(bool(args.keytab), f"{'--tokens' if args.tokens else '--kdc'} needs --keytab: the keytab that "
             "validates those tokens")
    if args.tokens:
        need(os.path.isfile(args.tokens) and os.access(args.tokens, os.R_OK),
             f"--tokens {args.tokens}: no readable file there; give a file of tokens, one per line")
    need(not args.principal or bool(args.kdc), f"--principal {args.principal}: only --kdc uses it; add --kdc "
         "or drop it")
    if args.kdc:
        need(bool(args.principal), "--kdc needs --principal: the service principal to get tickets for "
             "(HTTP/host@REALM)")
        need(mit_available(), "--kdc gets tickets through MIT krb5's initiator: pip install gssapi")
    if args.keytab:
        _check_keytab(Path(args.keytab), args.principal if args.kdc else None)
    if not (args.no_sidecar or args.tokens or args.kdc):
        from fastkrb.capacity.sidecar_load import SUN_PATH_MAX

        w = max(args.workers or [os.cpu_count() or 1])
        sock = os.path.join(tempfile.gettempdir(), "fastkrb-bench-xxxxxxxx", f"s{w}", f"d{w}.sock")
        need(len(os.fsencode(sock)) <= SUN_PATH_MAX, f"TMPDIR {tempfile.gettempdir()}: too long for the "
             f"sidecar's Unix socket beneath it ({len(os.fsencode(sock))} of at most {SUN_PATH_MAX} bytes); set a "
             "shorter TMPDIR or pass --no-sidecar")
    if args.report:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError(f"--report {args.report}: the plots need matplotlib; pip install "
                             "'fastkrb[report]' or drop --report") from None
        check_report_dir(Path(args.report))


def _check_keytab(path: Path, principal: str | None) -> None:
    from fastkrb.keytab import Keytab

    try:
        kt = Keytab.load(path)
    except (OSError, ValueError, KerberosError) as exc:
        raise ValueError(f"--keytab {path}: not a keytab fastkrb can read ({exc}); give an MIT-format keytab "
                         "(`fastkrb keytab list` shows what it holds)") from None
    names = kt.principals()
    if principal is not None:
        short = {n.split("@", 1)[0] for n in names}
        if principal not in names and principal not in short:
            raise ValueError(f"--principal {principal}: not in the keytab {path} (it holds "
                             f"{', '.join(names) or 'no principal'}); name one of those")
    try:
        Validator(str(path), replay_cache="none", cold_start=False)
    except KerberosError as exc:
        raise ValueError(f"--keytab {path}: {exc.cause.rstrip('.')}; {exc.fix}") from None


def _check_redis(spec: str) -> None:
    from fastkrb.replay import open_replay_cache
    from fastkrb.sidecar.config import redact_url

    try:
        cache = open_replay_cache(spec, capacity=REPLAY_CAPACITY, clock_skew=300.0, cold_start=False)
        if cache is not None:
            cache.insert(os.urandom(16), time.time() + 2, time.time())
            cache.close()
    except (KerberosError, OSError, ImportError) as exc:
        raise ValueError(f"--replay {redact_url(spec)}: the replay cache does not answer "
                         f"({getattr(exc, 'cause', exc)}); start it or drop it from --replay") from None


def check_report_dir(path: Path) -> None:
    """The report directory exists (made here if its parent allows) and takes a file, before any measurement."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--report {path}: exists and is not a directory; name a directory (it is made if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fastkrb-bench-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--report {path}: cannot write there ({exc.strerror or exc}); name a directory you "
                         "can write to") from None


def main(args: Any) -> int:
    """Entry point of `fastkrb bench` (argparse namespace from fastkrb.tools.cli)."""
    import logging

    # the "none" scenario's warning is expected here; the level is put back on the way out, so a caller that
    # runs the bench in its own process (tests, notebooks) keeps its logging as it was
    quiet = logging.getLogger("fastkrb")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _main(args)
    finally:
        quiet.setLevel(level)


def _main(args: Any) -> int:
    check_args(args)
    try:
        with Workspace() as ws:
            if args.kdc:
                source = kdc_source(Path(args.keytab), args.principal, args.kdc_tokens)
            elif args.tokens:
                source = file_source(Path(args.keytab), Path(args.tokens))
            else:
                source = embedded_source(ws.path, enctype=args.enctype or 18)
            workers = args.workers or sorted({1, os.cpu_count() or 1})
            try:
                res = run_bench(source, seconds=args.seconds, replay=args.replay, mit=not args.no_mit,
                                sidecar=not args.no_sidecar, workers=workers, repeat=args.repeat,
                                progress=not args.json and (sys.stderr.isatty() or args.progress),
                                workdir=ws.path)
            except RuntimeError as exc:   # the sidecar did not start, a load generator failed
                print(f"fastkrb bench: {exc}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        print("fastkrb bench: interrupted; nothing reported, temporary files and processes removed",
              file=sys.stderr)
        return 130
    except Stopped as exc:
        print(f"fastkrb bench: stopped by {signal.Signals(exc.signum).name}; nothing reported, temporary files "
              "and processes removed", file=sys.stderr)
        return 128 + exc.signum
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
