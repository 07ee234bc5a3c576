"""Build, run and measure the fuzz targets (see docs/fuzzing.md).

    python fuzz/run.py build                    # libFuzzer targets (clang, ASan+UBSan) + atheris extension
    python fuzz/run.py run --seconds 600 [T..]  # each target in turn, under nice -n 19, one at a time
    python fuzz/run.py coverage                 # llvm-cov lines/branches of native/*.c reached by the corpora
    python fuzz/run.py minimize                 # merge the working corpora into fuzz/corpus/ (committed)
    python fuzz/run.py replay DIR|FILE...       # run saved inputs (crashes, regressions) through their targets

C targets link native/*.c directly; the atheris targets import an extension built with
FASTKRB_SANITIZE=fuzzer into build/atheris. Working corpora live in build/fuzz/corpus/<target>;
results append to build/fuzz/results.jsonl; crashes land in build/fuzz/artifacts/<target>/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
OUT = ROOT / "build" / "fuzz"
PY = sys.executable
NATIVE = ["native/der.c", "native/kcrypto.c", "native/pac.c", "native/validate.c", "native/rcache.c", "native/rtab.c",
          "native/shm.c"]
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-DOPENSSL_API_COMPAT=0x10101000L", "-Wall", "-Wextra", "-Werror",
          "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Inative", "-Ifuzz", "-g",
          "-fno-omit-frame-pointer"]
SAN = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined", "-O1"]
COV = ["-fsanitize=fuzzer", "-fprofile-instr-generate", "-fcoverage-mapping", "-O0"]
LIBS = ["-lcrypto", "-lpthread"]

# target -> max input length; the atheris targets are run by the interpreter
C_TARGETS = {"der": 16384, "crypto": 4096, "validate": 16384, "pac": 8192, "rcache": 4096, "shm": 4096}
PY_TARGETS = {"py_keytab": 4096, "py_pac": 8192, "py_validate": 16384, "py_wire": 16384}
DICT = {"der": "kerberos.dict", "validate": "kerberos.dict", "py_validate": "kerberos.dict"}
ALL = [*C_TARGETS, *PY_TARGETS]


def clang() -> str:
    for cc in ("clang", "clang-14", "clang-15", "clang-16"):
        if shutil.which(cc):
            return cc
    raise SystemExit("clang not found: apt-get install clang libclang-rt-14-dev (docs/fuzzing.md)")


def sh(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def build_c(cov: bool = False, targets: list[str] | None = None) -> None:
    cc = clang()
    bindir = OUT / ("cov" if cov else "bin")
    bindir.mkdir(parents=True, exist_ok=True)
    for t in targets or list(C_TARGETS):
        sh([cc, *CFLAGS, *(COV if cov else SAN), f"fuzz/fuzz_{t}.c", *NATIVE, *LIBS, "-o", str(bindir / f"fuzz_{t}")])


def build_atheris() -> None:
    """The extension with ASan+UBSan and libFuzzer edge counters, plus the Python sources beside it."""
    env = {**os.environ, "CC": clang(), "LDSHARED": f"{clang()} -shared", "FASTKRB_SANITIZE": "fuzzer"}
    sh([PY, "setup.py", "-q", "build_ext", "--force", "--build-lib", "build/atheris",
        "--build-temp", "build/atheris-tmp"], env=env, stdout=subprocess.DEVNULL)
    shutil.copytree(ROOT / "src" / "fastkrb", ROOT / "build" / "atheris" / "fastkrb", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))


def atheris_env() -> dict[str, str]:
    import atheris  # noqa: F401 - only to find its runtime

    lib = Path(sys.modules["atheris"].__file__ or "").resolve().parent.parent / "asan_with_fuzzer.so"
    if not lib.exists():
        raise SystemExit(f"atheris runtime not found at {lib}")
    return {**os.environ, "LD_PRELOAD": str(lib), "PYTHONPATH": f"{ROOT / 'build' / 'atheris'}:{FUZZ}",
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def c_env() -> dict[str, str]:
    return {**os.environ, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:check_initialization_order=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def command(t: str) -> tuple[list[str], dict[str, str]]:
    if t in C_TARGETS:
        return [str(OUT / "bin" / f"fuzz_{t}")], c_env()
    return [PY, str(FUZZ / f"{t}.py")], atheris_env()


# targets that read another's input format also start from its committed corpus
SHARED = {"py_validate": "validate"}


def corpora(t: str) -> list[str]:
    work = OUT / "corpus" / t
    work.mkdir(parents=True, exist_ok=True)
    names = [t] + ([SHARED[t]] if t in SHARED else [])
    dirs = [work] + [d for n in names for d in (FUZZ / "corpus" / n, FUZZ / "seeds" / n) if d.is_dir()]
    return [str(d) for d in dirs]


STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
PROGRESS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)


def run_one(t: str, seconds: int, extra: list[str]) -> dict[str, object]:
    cmd, env = command(t)
    art = OUT / "artifacts" / t
    art.mkdir(parents=True, exist_ok=True)
    before = set(art.iterdir())
    args = [f"-max_total_time={seconds}", f"-max_len={(C_TARGETS | PY_TARGETS)[t]}", "-timeout=10",
            "-rss_limit_mb=4096", "-print_final_stats=1", f"-artifact_prefix={art}/"]
    if t in DICT:
        args.append(f"-dict={FUZZ / DICT[t]}")
    log = OUT / "logs" / f"{t}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    full = ["nice", "-n", "19", *cmd, *args, *extra, *corpora(t)]
    print(f"== {t}: {seconds} s", flush=True)
    start = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(full, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in STAT.findall(text)}
    prog = PROGRESS.findall(text)
    crashes = sorted(str(p) for p in set(art.iterdir()) - before)
    res: dict[str, object] = {
        "target": t, "seconds": round(elapsed, 1), "execs": stats.get("number_of_executed_units"),
        "execs_per_sec": stats.get("average_exec_per_sec"), "peak_rss_mb": stats.get("peak_rss_mb"),
        "cov": int(prog[-1][1]) if prog else None, "ft": int(prog[-1][2]) if prog else None,
        "corpus": len(list((OUT / "corpus" / t).iterdir())), "returncode": proc.returncode, "crashes": crashes,
        "sanitizers": "asan+ubsan", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(OUT / "results.jsonl", "a") as fh:
        fh.write(json.dumps(res) + "\n")
    print(json.dumps(res), flush=True)
    return res


def cmd_run(args: argparse.Namespace) -> int:
    bad = 0
    results = [run_one(t, args.seconds, args.libfuzzer) for t in (args.targets or ALL)]
    print(f"\n{'target':<12} {'seconds':>8} {'execs':>12} {'exec/s':>8} {'cov':>6} {'corpus':>7}  result")
    for r in results:
        ok = r["returncode"] == 0 and not r["crashes"]
        bad += not ok
        verdict = "ok" if ok else "FINDING: " + str(r["crashes"] or r["returncode"])
        print(f"{r['target']:<12} {r['seconds']:>8} {r['execs'] or 0:>12} {r['execs_per_sec'] or 0:>8} "
              f"{r['cov'] or 0:>6} {r['corpus']:>7}  {verdict}")
    return 1 if bad else 0


def cmd_coverage(args: argparse.Namespace) -> int:
    build_c(cov=True)
    prof = OUT / "cov" / "prof"
    shutil.rmtree(prof, ignore_errors=True)
    prof.mkdir(parents=True)
    bins = []
    for t in C_TARGETS:
        b = OUT / "cov" / f"fuzz_{t}"
        bins.append(str(b))
        env = {**os.environ, "LLVM_PROFILE_FILE": str(prof / f"{t}-%p.profraw")}
        subprocess.run(["nice", "-n", "19", str(b), "-runs=0", *corpora(t)], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    llvm = {n: shutil.which(n) or shutil.which(f"{n}-14") or n for n in ("llvm-profdata", "llvm-cov")}
    data = OUT / "cov" / "merged.profdata"
    sh([llvm["llvm-profdata"], "merge", "-sparse", *map(str, prof.glob("*.profraw")), "-o", str(data)])
    objs = [bins[0], *(x for b in bins[1:] for x in ("-object", b))]
    files = [str(ROOT / f) for f in NATIVE]
    report = subprocess.run([llvm["llvm-cov"], "report", *objs, f"-instr-profile={data}", *files],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (OUT / "coverage.txt").write_text(report)
    print(report)
    exp = json.loads(subprocess.run([llvm["llvm-cov"], "export", "-summary-only", *objs, f"-instr-profile={data}",
                                     *files], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    tot = exp["data"][0]["totals"]
    summary = {k: {"covered": tot[k]["covered"], "count": tot[k]["count"], "percent": round(tot[k]["percent"], 1)}
               for k in ("lines", "branches", "functions", "regions")}
    (OUT / "coverage.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.html:
        sh([llvm["llvm-cov"], "show", *objs, f"-instr-profile={data}", "-format=html",
            f"-output-dir={OUT / 'cov' / 'html'}", *files])
    return 0


def cmd_minimize(args: argparse.Namespace) -> int:
    """libFuzzer's merge for the C targets. Atheris cannot merge (its merge re-executes argv[0], a .py
    file): its working corpus, already only inputs that added coverage, is copied as it is, except for
    targets that share another's corpus."""
    for t in args.targets or ALL:
        cmd, env = command(t)
        dest = FUZZ / "corpus" / t
        if t in PY_TARGETS:
            shutil.rmtree(dest, ignore_errors=True)
            if t not in SHARED:
                shutil.copytree(OUT / "corpus" / t, dest)
                print(f"{t}: {len(list(dest.iterdir()))} inputs (copied)")
            continue
        tmp = OUT / "minimize" / t
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        srcs = [d for d in corpora(t) if Path(d).resolve() != (FUZZ / "seeds" / t).resolve()]
        subprocess.run(["nice", "-n", "19", *cmd, "-merge=1", f"-max_len={(C_TARGETS | PY_TARGETS)[t]}",
                        str(tmp), *srcs], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tmp, dest)
        size = sum(p.stat().st_size for p in dest.iterdir())
        print(f"{t}: {len(list(dest.iterdir()))} inputs, {size} bytes")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Run saved inputs: each path is <...>/<target>/<file> or a directory <...>/<target>."""
    rc = 0
    for p in map(Path, args.paths):
        t = p.name if p.is_dir() else p.parent.name
        if t not in ALL:
            raise SystemExit(f"{p}: the parent directory must be named after a target ({', '.join(ALL)})")
        files = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
        if not files:
            continue
        cmd, env = command(t)
        proc = subprocess.run([*cmd, *map(str, files)], cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"{t}: {len(files)} inputs -> {'ok' if proc.returncode == 0 else 'FAILED'}")
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:])
            rc = 1
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description="fastkrb fuzzing")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--no-atheris", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--seconds", type=int, default=60)
    r.add_argument("targets", nargs="*", help=f"default: all of {', '.join(ALL)}")
    r.add_argument("--libfuzzer", nargs="*", default=[], help="extra libFuzzer flags (-flag=value)")
    c = sub.add_parser("coverage")
    c.add_argument("--html", action="store_true")
    m = sub.add_parser("minimize")
    m.add_argument("targets", nargs="*")
    p = sub.add_parser("replay")
    p.add_argument("paths", nargs="+")
    args = ap.parse_args()
    unknown = [t for t in getattr(args, "targets", None) or [] if t not in ALL]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {ALL}")
    if args.cmd == "build":
        build_c()
        if not args.no_atheris:
            build_atheris()
        return 0
    return {"run": cmd_run, "coverage": cmd_coverage, "minimize": cmd_minimize, "replay": cmd_replay}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
