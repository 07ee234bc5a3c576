"""Record every figure the project publishes, with the machine it was measured on.

    python benches/record.py [--out benches/results] [--report docs/performance] [--only compare,stages,...]
    python benches/record.py --summary benches/results/<dir>      # the README's figures from a result dir

Runs, one after the other, on the tree this file is in (``src/`` first on PYTHONPATH, never an installed
fastkrb):

  compare   benches/compare.py --json: fastkrb and MIT's gss_accept_sec_context on the same real MIT
            tokens in one process, best of 5 repetitions, and the ratio         -> compare.json, compare.txt
  stages    benches/bench_stages.py under pytest-benchmark: the per-stage profile, ns per stage timed in
            C (one token looped 20,000 times per round, caches hot)              -> stages.json, stages.txt
  rcache    benches/bench_rcache.py under pytest-benchmark: replay-cache insert in C at 10^3/10^5/10^6 live
            entries (memory, shm), Redis, validate() shm vs memory               -> rcache.json, rcache.txt
  planner   fastkrb bench --target-rps 100000 --report <report>: the capacity planner (in-process, MIT,
            sidecar), report and plots written to <report> and copied here      -> planner.json, planner.txt,
                                                                                   planner-report.md
  sidecar   benches/bench_sidecar.py: the daemon under load from separate processes (docs/sidecar.md)
                                                                                -> sidecar.json, sidecar.txt
  targets   benches/bench_sidecar.py --repeat 5 on the daemon-cost scenarios (wire-1w, nginx-1w, the
            transport floors, Redis beside shm): the median of five runs, as one run moves by 10%
                                                                                -> targets.json, targets.txt
  middleware  benches/bench_middleware.py: ASGI/WSGI/aiohttp cost per request beyond validate()
            (docs/integrations/); exits 1 when an overhead exceeds its 10 µs budget  -> middleware.txt
  fresh     benches/bench_fresh_validator.py: a fresh Validator in new processes (RSS added by its first
            1,000 validations, the first 2,000 against the steady state) and the Negotiate header
            against raw bytes                                                  -> fresh.json, fresh.txt

into ``<out>/<UTC date>-<short commit>/`` (a second run on the same day and commit gets ``-2``, ``-3``...;
``--into DIR --only STEP`` runs a step again into an existing directory, e.g. after a burst of load; the
earlier output moves to ``replaced/<n>/``),
with ``metadata.json``: UTC start and end, git commit and whether the tree had uncommitted changes, CPU
model, nproc, load average before and after the whole run and around each step, Python, OpenSSL, MIT
krb5 and package versions, and each step's command, duration and exit status. A step that fails is
recorded as failed and the others still run; the exit status is 1 if any failed.

The figures in README.md and docs/performance.md name the result directory and file they come from;
``--summary DIR`` prints them from a result directory, in the README's form, so a new recording is quoted
by pasting its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))   # the tree being measured, also without an installed fastkrb
from fastkrb.capacity.host import command_output, host_facts, loadavg  # noqa: E402

PY = sys.executable
DASH = "\u2013"   # an en dash: "not measured" in a table
TIMES = "\u00d7"  # the multiplication sign of a ratio
STEPS = ("compare", "stages", "rcache", "planner", "sidecar", "targets", "middleware", "fresh")
PYTEST_BENCH = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only",
                "--benchmark-disable-gc", "--benchmark-sort=name",
                "--benchmark-columns=min,median,mean,stddev,rounds", "-s")


def _out(argv: list[str], cwd: Path = REPO) -> str:
    return command_output(argv, cwd=cwd)


def _utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


MEASURED = ["src", "native", "setup.py", "benches/conftest.py", "benches/compare.py", "benches/bench_*.py"]


def _is_measured(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") for pat in MEASURED)


def _measured_code_changed(commit: str) -> list[str]:
    """Files of the measured code (package, native core, benches) that differ from ``commit``."""
    out = _out(["git", "diff", "--name-only", commit, "--", *MEASURED])
    return out.splitlines()


def git_state() -> dict[str, Any]:
    status = _out(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = _out(["git", "rev-parse", "HEAD"])
    return {"commit": commit, "short": _out(["git", "rev-parse", "--short", "HEAD"]),
            "branch": _out(["git", "rev-parse", "--abbrev-ref", "HEAD"]), "dirty": bool(status),
            "changed": status.splitlines(), "measured_code_changed": _measured_code_changed(commit)}


def machine() -> dict[str, Any]:
    facts = host_facts(("cython", "cryptography", "gssapi", "pytest", "pytest-benchmark", "uvloop", "redis",
                        "matplotlib"))
    facts.pop("loadavg")   # the load is recorded per step
    return {"cpu_model": facts.pop("cpu"), "nproc": facts.pop("cpus"), **facts,
            "redis_server": _out(["redis-server", "--version"])}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    paths = [str(REPO / "src"), str(REPO / "tests")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def step_commands(name: str, out: Path, report: Path) -> list[str]:
    out, report = Path(_rel(out)), Path(_rel(report))   # the steps run in REPO: logs name no machine path
    if name == "compare":
        return [PY, str(HERE / "compare.py"), "--json", str(out / "compare.json")]
    if name == "stages":
        return [PY, *PYTEST_BENCH, f"--benchmark-json={out / 'stages.json'}", str(HERE / "bench_stages.py")]
    if name == "rcache":
        return [PY, *PYTEST_BENCH, f"--benchmark-json={out / 'rcache.json'}", str(HERE / "bench_rcache.py")]
    if name == "planner":
        return [PY, "-m", "fastkrb", "bench", "--target-rps", "100000", "--report", str(report)]
    if name == "sidecar":
        return [PY, str(HERE / "bench_sidecar.py"), "--seconds", "5", "--json", str(out / "sidecar.json")]
    if name == "targets":
        return [PY, str(HERE / "bench_sidecar.py"), "--seconds", "5", "--repeat", "5", "--only",
                "wire-1w,nginx-1w,floor-http,floor-uvloop-http,redis-wire-1w", "--json", str(out / "targets.json")]
    if name == "middleware":
        return [PY, str(HERE / "bench_middleware.py")]
    if name == "fresh":
        return [PY, str(HERE / "bench_fresh_validator.py"), "--json", str(out / "fresh.json")]
    raise ValueError(name)


def _after_planner(out: Path, report: Path) -> None:
    shutil.copyfile(report / "report.json", out / "planner.json")
    shutil.copyfile(report / "report.md", out / "planner-report.md")


AFTER: dict[str, Callable[[Path, Path], None]] = {"planner": _after_planner}


def _result_dir(root: Path, short: str) -> Path:
    base = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}-{short}"
    d, n = root / base, 2
    while d.exists():
        d, n = root / f"{base}-{n}", n + 1
    return d


def wait_for_quiet(below: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the 1-minute load average is below ``below``; seconds waited."""
    t = time.monotonic()
    while os.getloadavg()[0] >= below and time.monotonic() - t < max_wait:
        print(f"[record] load {os.getloadavg()[0]:.2f} >= {below}: waiting", flush=True)
        time.sleep(min(15.0, max(0.0, max_wait - (time.monotonic() - t))))
    return round(time.monotonic() - t, 1)


def _keep_replaced(out: Path, name: str, rerun: int) -> None:
    """Move a step's earlier output files to ``replaced/<rerun>/`` before it runs again."""
    old = [f for f in out.iterdir() if f.is_file() and f.name.split(".")[0] in (name, f"{name}-report")]
    if old:
        dest = out / "replaced" / str(rerun)
        dest.mkdir(parents=True, exist_ok=True)
        for f in old:
            f.rename(dest / f.name)


def record(out_root: Path, report: Path, steps: list[str], quiet: tuple[float, float] | None = None,
           into: Path | None = None) -> tuple[Path, bool]:
    """Run ``steps`` into a new result directory, or again into ``into`` (same measured code only)."""
    if into is not None:
        meta: dict[str, Any] = json.loads((into / "metadata.json").read_text())
        changed = _measured_code_changed(meta["git"]["commit"])
        if changed:
            raise SystemExit(f"{_rel(into)} measured {meta['git']['short']}; the measured code differs now: {changed}")
    waited = wait_for_quiet(*quiet) if quiet else 0.0
    git = git_state()
    if into is None:
        out = _result_dir(out_root, git["short"] or "nogit")
        out.mkdir(parents=True)
        meta = {"started_utc": _utc(), "git": git, "machine": machine(), "loadavg_before": loadavg(),
                "waited_for_quiet_s": waited, "steps": {}, "report_dir": _rel(report)}
    else:
        out = into
        meta.setdefault("reruns", []).append({"started_utc": _utc(), "steps": steps, "git": git,
                                              "loadavg_before": loadavg(), "waited_for_quiet_s": waited})
    meta_path = out / "metadata.json"
    meta_path.write_text(json.dumps(meta, indent=2))
    ok = True
    for name in steps:
        if into is not None:
            _keep_replaced(out, name, len(meta["reruns"]))
        argv = step_commands(name, out, report)
        print(f"[record] {name}: {' '.join(_rel_arg(a) for a in argv)}", flush=True)
        info: dict[str, Any] = {"command": [_rel_arg(a) for a in argv], "started_utc": _utc(),
                                "loadavg_before": loadavg()}
        t = time.monotonic()
        with open(out / f"{name}.txt", "w") as log:
            rc = subprocess.run(argv, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT).returncode
        info.update({"seconds": round(time.monotonic() - t, 1), "exit": rc, "loadavg_after": loadavg()})
        if rc == 0 and name in AFTER:
            AFTER[name](out, report)
        ok &= rc == 0
        if into is not None and name in meta["steps"]:
            info["replaces"] = meta["steps"][name]   # the earlier run of this step, kept for the record
        meta["steps"][name] = info
        meta_path.write_text(json.dumps(meta, indent=2))
        print(f"[record] {name}: exit {rc} in {info['seconds']} s, load {info['loadavg_after'][0]:.2f}", flush=True)
    if into is None:
        meta.update({"finished_utc": _utc(), "loadavg_after": loadavg(), "git_after": git_state()})
    else:
        meta["reruns"][-1].update({"finished_utc": _utc(), "loadavg_after": loadavg()})
    meta_path.write_text(json.dumps(meta, indent=2))
    return out, ok


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _rel_arg(a: str) -> str:
    """An argument as a reader would type it: ``python`` for this interpreter, paths relative to the repo."""
    return "python" if a == PY else a.replace(str(REPO) + os.sep, "")


# ------------------------------------------------------------------------------------------------------------
# The README's figures from a result directory


def _load(d: Path, name: str) -> Any:
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def _bench(data: Any, name: str) -> dict[str, Any] | None:
    for b in (data or {}).get("benchmarks", []):
        if b["name"] == name:
            return dict(b)
    return None


def summary(d: Path) -> str:
    """The README's performance figures, each from the file it is read from."""
    rel = _rel(d)
    meta = _load(d, "metadata.json") or {}
    m = meta.get("machine", {})
    git = meta.get("git", {})
    measured_dirty = git.get("measured_code_changed",
                             [c for c in git.get("changed", []) if _is_measured(c.split(maxsplit=1)[-1])])
    dirty = (", uncommitted changes to the measured code" if measured_dirty else
             ", uncommitted changes outside the measured code" if git.get("dirty") else "")
    lines = [f"Result directory `{rel}/` (commit {git.get('short', '?')}{dirty}; "
             f"{meta.get('started_utc', '?')} to {meta.get('finished_utc', '?')}; {m.get('cpu_model', '?')}, "
             f"{m.get('nproc', '?')} CPUs; load average {_la(meta.get('loadavg_before'))} before, "
             f"{_la(meta.get('loadavg_after'))} after; Python {m.get('python', '?')}, {m.get('python_ssl', '?')}, "
             f"MIT krb5 {m.get('mit_krb5', '?')}).", ""]
    cmp_ = _load(d, "compare.json")
    if cmp_:
        lines += [f"From `{rel}/compare.json` (`benches/compare.py`: best of {cmp_['reps']} repetitions, µs per "
                  "token, same process, same real tokens):", "",
                  "| scenario | token bytes | fastkrb µs | fastkrb tokens/s | MIT µs | MIT / fastkrb |",
                  "|---|---:|---:|---:|---:|---:|"]
        for sc in cmp_["scenarios"]:
            f, mit = sc["fastkrb"], sc["mit"]
            fk = f["us_per_token_best"]
            them = (f"{mit['us_per_token_best']:.1f} | {mit['us_per_token_best'] / fk:.1f}{TIMES} |" if mit
                    else f"{DASH} | {DASH} |")
            lines.append(f"| {sc['name']} | {sc['token_set']['token_bytes']} | {fk:.2f} | "
                         f"{f['tokens_per_s_best']:,} | {them}")
        lines.append("")
    st = _bench(_load(d, "stages.json"), "test_stage_costs_aes256")
    if st:
        ex = st["extra_info"]
        stages = ", ".join(f"{k.removesuffix('_ns')} {v:.0f}" for k, v in ex.items() if k.endswith("_ns"))
        lines += [f"From `{rel}/stages.json` (`benches/bench_stages.py`, ns per stage timed in C, one token looped, "
                  f"caches hot): {stages}.", ""]
    rc = _load(d, "rcache.json")
    if rc:
        rows = []
        for kind in ("memory", "shm"):
            for live in ("1e3", "1e5", "1e6"):
                b = _bench(rc, f"test_c_insert[{kind}-{live}]")
                if b:
                    ex = b["extra_info"]
                    rows.append(f"{kind} {live}: min {ex['ns_min']} / median {ex['ns_median']} ns")
        v = _bench(rc, "test_validate_shm_vs_memory")
        if v:
            ex = v["extra_info"]
            rows.append(f"validate() memory {ex['validate_memory_ns']} ns, shm {ex['validate_shm_ns']} ns "
                        f"(ratio {ex['ratio']})")
        for name, label in (("test_redis_unbatched", "Redis unbatched"), ("test_redis_pipelined_64",
                                                                          "Redis pipelined x64")):
            b = _bench(rc, name)
            if b and "us_per_check" in b["extra_info"]:
                rows.append(f"{label} {b['extra_info']['us_per_check']} µs per check")
        lines += [f"From `{rel}/rcache.json` (`benches/bench_rcache.py`, replay insert timed in C, live entries "
                  "expiring at the insert rate): " + "; ".join(rows) + ".", ""]
    pl = _load(d, "planner.json")
    if pl:
        sys.path.insert(0, str(REPO / "src"))
        from fastkrb.capacity.planner import sizing_line

        lines += [f"From `{rel}/planner.json` (`fastkrb bench --target-rps 100000 --report docs/performance`):", "",
                  "```", sizing_line(pl["sizing"]), "```", ""]
        for s in pl["scenarios"]:
            lines.append(f"- {s['name']} ({s['impl']}): {s['rate']:,.0f}/s, p50 {s['p50_us']:.1f} µs, "
                         f"p99 {s['p99_us']:.1f} µs")
        lines.append("")
    mw = d / "middleware.txt"
    if mw.exists():
        lines += [f"From `{rel}/middleware.txt` (`benches/bench_middleware.py`):", "", "```",
                  mw.read_text().strip(), "```", ""]
    sc = _load(d, "sidecar.json")
    if sc:
        lines += [f"From `{rel}/sidecar.json` (`benches/bench_sidecar.py --seconds 5`; load average "
                  f"{_la(sc['machine'].get('loadavg_before'))} before, {_la(sc['machine'].get('loadavg_after'))} "
                  "after):", "", "| scenario | answered/s | p50 | p99 | daemon CPU per request |",
                  "|---|---:|---:|---:|---:|"]
        for k, v in sc.items():
            if k == "machine":
                continue
            lat = v.get("latency_us") or {}
            cpu = v.get("daemon_cpu_us_per_request")
            rate = f"{v['throughput']:,}" + (f" (x{v['scaling']} of 1 worker)" if "scaling" in v else "")
            if v.get("exhausted") or any(r.get("exhausted") for r in v.get("runs", [])):
                rate += " (undercounted: the load generator ran out of distinct tokens)"
            p50 = f"{lat['p50'] / 1000:.2f} ms" if lat else DASH
            p99 = f"{lat['p99'] / 1000:.2f} ms" if lat else DASH
            lines.append(f"| {k} | {rate} | {p50} | {p99} | " + (f"{cpu} µs" if cpu is not None else DASH) + " |")
    tg = _load(d, "targets.json")
    if tg:
        lines += ["", f"From `{rel}/targets.json` (`benches/bench_sidecar.py --seconds 5 --repeat {tg['repeat']}`, "
                  "fresh daemons each run; the median run and the range):", "",
                  "| scenario | daemon CPU per request (median, range) | answered/s (median, range) |",
                  "|---|---:|---:|"]
        for k, v in tg["median"].items():
            dry = " (undercounted: the load generator ran out of distinct tokens)" if v.get("exhausted") else ""
            ratio = (f"; {v['of_shm']}{TIMES} the shm run beside it ({v['of_shm_min']}{DASH}{v['of_shm_max']})"
                     if "of_shm" in v else "")
            lines.append(f"| {k} | {v['daemon_cpu_us_per_request']} µs ({v['cpu_min']}{DASH}{v['cpu_max']}) | "
                         f"{v['throughput']:,.0f} ({v['throughput_min']:,}{DASH}{v['throughput_max']:,}){dry}{ratio} |")
    return "\n".join(lines)


def _la(v: Any) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, default=HERE / "results",
                    help="where the result directory is made (default benches/results)")
    ap.add_argument("--report", type=Path, default=REPO / "docs" / "performance",
                    help="where `fastkrb bench --report` writes its report and plots (default docs/performance)")
    ap.add_argument("--only", default="", help=f"comma list of steps to run (default all: {','.join(STEPS)})")
    ap.add_argument("--quiet-below", type=float, metavar="LOAD",
                    help="first wait until the 1-minute load average is below LOAD (a shared machine)")
    ap.add_argument("--max-wait", type=float, default=900.0,
                    help="give up waiting for --quiet-below after this many seconds (default %(default)s)")
    ap.add_argument("--into", type=Path, metavar="DIR",
                    help="run the steps again into this existing result directory (refused when the measured "
                         "code differs from its commit); the step's earlier run stays in metadata.json")
    ap.add_argument("--summary", type=Path, metavar="DIR",
                    help="print the README's figures from a result directory instead of measuring")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary(a.summary))
        return 0
    steps = [s for s in a.only.split(",") if s] or list(STEPS)
    unknown = set(steps) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; choose from {','.join(STEPS)}")
    quiet = (a.quiet_below, a.max_wait) if a.quiet_below is not None else None
    out, ok = record(a.out, a.report, steps, quiet, a.into)
    print(f"[record] results in {_rel(out)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
