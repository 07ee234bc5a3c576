"""`fastkrb bench`: runs end to end on the embedded default, emits JSON, a sizing line and a report; leaves no
temporary file or process behind on any way out; checks its options before measuring anything; gives no
sizing from a scenario whose requests failed."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib  # noqa: F401  (the --report figures: a missing matplotlib must fail, not skip)
import pytest

from fastkrb.testing import make_keytab, mint


def _bench(tmpdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`fastkrb bench` with a private TMPDIR (so concurrent runs elsewhere do not interfere), and no
    Kerberos credentials of the caller's."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "KRB5CCNAME": f"FILE:{tmpdir}/no-such-ccache",
           "KRB5_CONFIG": os.devnull}
    return subprocess.run([sys.executable, "-m", "fastkrb", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _private_tmp(tmp_path: Path) -> Path:
    d = tmp_path / "tmp"
    d.mkdir()
    return d


def _processes_naming(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (a daemon's socket, a load generator's)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def _ordered(d: dict[str, float]) -> None:
    assert d["min_us"] <= d["p50_us"] <= d["p90_us"] <= d["p99_us"] <= d["max_us"]
    assert d["min_us"] <= d["mean_us"] <= d["max_us"]


def test_bench_embedded_json_and_report(tmp_path: Path) -> None:
    tmp = _private_tmp(tmp_path)
    out = _bench(tmp, "--seconds", "0.3", "--repeat", "2", "--replay", "memory", "--target-rps", "100000",
                 "--workers", "1", "--json", "--report", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr
    assert os.listdir(tmp) == [], "the run's temporary files outlived it"
    data = json.loads(out.stdout)
    assert data["repeat"] == 2
    names = [s["name"] for s in data["scenarios"]]
    assert "in-process, replay=memory" in names and "in-process, replay=none" in names
    fk = next(s for s in data["scenarios"] if s["name"] == "in-process, replay=memory")
    assert fk["requests"] > 0 and fk["errors"] == 0 and fk["rate"] > 0 and fk["no_sizing"] is None
    assert len(fk["runs"]) == 2 and fk["statistic"] == "median of the runs"
    assert fk["rate_min"] <= fk["rate"] <= fk["rate_best"] == fk["rate_max"]
    assert fk["p99_best_us"] <= fk["p99_us"] <= fk["p99_worst_us"]
    assert fk["cores"] == 1 and fk["cores_label"] == "1 core (one thread)"
    for s in data["scenarios"]:
        _ordered(s)
        for r in s["runs"]:
            _ordered(r)
            assert r["n"] > 0
    # the JSON's rate is rounded to 0.1, the sizing's from the unrounded median
    sz = data["sizing"]
    assert sz["cores"] >= 1 and abs(sz["per_core_rps"] - fk["rate"]) <= 1
    assert sz["statistic"] == "median" and sz["runs"] == 2
    assert sz["per_core_rps_min"] <= sz["per_core_rps"] <= sz["per_core_rps_max"]
    assert set(data["load"]) >= {"loadavg_before", "loadavg_after", "other_cores_mean", "cpus"}
    assert set(data["stages_ns"]) >= {"framing", "ticket_decrypt", "replay_insert", "full_validate"}
    if any(s["impl"] == "mit" for s in data["scenarios"]):
        mit = next(s for s in data["scenarios"] if s["impl"] == "mit")
        assert mit["errors"] == 0, "MIT must accept the same minted tokens"
        assert sz["ratio_vs_mit"] > 1
    side = [s for s in data["scenarios"] if s["impl"].startswith("fastkrb-sidecar")]
    assert {s["impl"] for s in side} == {"fastkrb-sidecar-binary", "fastkrb-sidecar-http"}
    assert all(s["requests"] > 0 and s["errors"] == 0 and s["workers"] == 1 and s["load_processes"] == 1
               and s["cores"] == 2 and len(s["runs"]) == 2 for s in side)
    assert sorted({s["concurrency"] for s in side if s["impl"].endswith("binary")}) == [4, 32, 256]
    assert sz["sidecar"]["rps"] > 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Sizing:" in report and "throughput.png" in report and "median" in report
    assert "load average" in report
    for png in ("throughput", "latency", "stages", "concurrency"):
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 1000


def test_bench_table_says_how_noisy(tmp_path: Path) -> None:
    tmp = _private_tmp(tmp_path)
    out = _bench(tmp, "--seconds", "0.2", "--repeat", "3", "--replay", "memory", "--no-mit", "--no-sidecar")
    assert out.returncode == 0, out.stderr
    assert os.listdir(tmp) == []
    text = out.stdout
    assert "median of 3 run(s) per scenario" in text and "spread" in text and "best" in text
    assert "load average (1/5/15 min)" in text
    sizing_line = text.strip().splitlines()[-1]
    assert sizing_line.startswith("this host validates ") and "median of 3 runs, which spread" in sizing_line


@pytest.mark.parametrize(("signum", "wait_for"), [(signal.SIGINT, "sock"), (signal.SIGTERM, "shm")])
def test_bench_interrupted_leaves_nothing(tmp_path: Path, signum: int, wait_for: str) -> None:
    """Ctrl-C while the sidecar and its load generator run, SIGTERM while a 265 MB shm replay file exists:
    the workspace, the shm files, the sockets and every child process go."""
    tmp = _private_tmp(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "fastkrb", "bench", "--seconds", "3", "--repeat", "1",
                             "--replay", "shm", "--no-mit", "--workers", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 120
        seen: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            seen = [p for p in tmp.rglob(f"*.{wait_for}")]
            loadgens = [c for c in _processes_naming(str(tmp)) if "fastkrb.capacity.loadgen" in c]
            if seen and (wait_for != "sock" or loadgens):
                break
            time.sleep(0.05)
        assert seen, f"no .{wait_for} file appeared under {tmp}"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum), err
    assert "temporary files and processes removed" in err and "Traceback" not in err
    assert os.listdir(tmp) == [], f"left behind: {list(tmp.rglob('*'))}"
    assert _processes_naming(str(tmp)) == []


@pytest.mark.parametrize(("args", "says"), [
    (["--report", "{file}/sub"], "--report {file}/sub: cannot write there"),
    (["--report", "{file}"], "--report {file}: exists and is not a directory"),
    (["--seconds", "0"], "--seconds 0: must be above 0"),
    (["--seconds", "-1"], "--seconds -1: must be above 0"),
    (["--repeat", "0"], "--repeat 0: must be 1 to 100"),
    (["--workers", "0"], "--workers 0: each sidecar worker count must be 1 to 256"),
    (["--target-rps", "-5"], "--target-rps -5.0: must be above 0"),
    (["--replay", "memcached"], "--replay memcached: unknown replay backend"),
    (["--replay", "shm:/nonexistent-dir/x.shm"], "--replay shm:/nonexistent-dir/x.shm: directory /nonexistent-dir"),
    (["--keytab", "{file}"], "the bench uses your keytab only with your tokens"),
    (["--tokens", "{file}"], "--tokens needs --keytab"),
    (["--principal", "HTTP/x"], "--principal HTTP/x: only --kdc uses it"),
    (["--kdc", "--keytab", "{kt}"], "--kdc needs --principal"),
    (["--kdc", "--keytab", "{kt}", "--principal", "HTTP/other@BENCH.TEST"],
     "--principal HTTP/other@BENCH.TEST: not in the keytab"),
    (["--tokens", "{file}", "--keytab", "{tmp}/missing.keytab"], "--keytab {tmp}/missing.keytab: no such file"),
    (["--tokens", "{file}", "--keytab", "{file}"], "not a keytab fastkrb can read"),
    (["--tokens", "{file}", "--keytab", "{kt}", "--enctype", "17"], "--enctype applies to the embedded tokens"),
    (["--tokens", "{file}", "--keytab", "{kt}"], "--tokens {file}: line 1 is not a token"),
    (["--kdc", "--keytab", "{kt}", "--principal", "HTTP/api.bench.test@BENCH.TEST"],
     "--kdc: no ticket for HTTP/api.bench.test@BENCH.TEST from your credentials"),
])
def test_bench_checks_its_options_before_measuring(tmp_path: Path, args: list[str], says: str) -> None:
    tmp = _private_tmp(tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("not a keytab, not a directory\n")
    kt = tmp_path / "svc.keytab"
    make_keytab(principals=("HTTP/api.bench.test@BENCH.TEST",), enctypes=(18,)).save(kt)
    fill = {"file": str(plain), "kt": str(kt), "tmp": str(tmp_path)}
    t0 = time.monotonic()
    out = _bench(tmp, *[a.format(**fill) for a in args], "--no-mit", timeout=60)
    assert out.returncode == 2, out
    err = out.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err   # one sentence, no traceback
    assert says.format(**fill) in err
    assert time.monotonic() - t0 < 20, "the check came after a measurement"
    assert os.listdir(tmp) == [] and out.stdout == ""


def test_bench_refuses_a_tmpdir_too_long_for_the_sidecar_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    out = _bench(deep, "--workers", "1", "--no-mit", timeout=60)
    assert out.returncode == 2 and out.stderr.startswith(f"error: TMPDIR {deep}: too long for the sidecar's Unix")
    assert os.listdir(deep) == []


def test_report_directory_is_made_up_front(tmp_path: Path) -> None:
    tmp = _private_tmp(tmp_path)
    rep = tmp_path / "a" / "b"
    out = _bench(tmp, "--seconds", "0.1", "--repeat", "1", "--replay", "memory", "--no-mit", "--no-sidecar",
                 "--report", str(rep))
    assert out.returncode == 0, out.stderr
    assert (rep / "report.md").exists() and sorted(p.name for p in rep.iterdir() if p.name.startswith(".")) == []


def test_failed_requests_give_no_sizing(tmp_path: Path) -> None:
    """Recorded tokens where the second half repeats the first: the replay cache refuses every repeat."""
    tmp = _private_tmp(tmp_path)
    spn = "HTTP/api.bench.test@BENCH.TEST"
    kt = make_keytab(principals=(spn,), enctypes=(18,), rng=random.Random(3))
    kt.save(tmp_path / "svc.keytab")
    toks = mint(kt, server=spn, client="alice@BENCH.TEST", framing="krb5").variants(100, now=time.time())
    lines = [base64.b64encode(t).decode() for t in toks]
    (tmp_path / "tokens.txt").write_text("\n".join(lines + ["Negotiate " + x for x in lines]) + "\n")
    out = _bench(tmp, "--keytab", str(tmp_path / "svc.keytab"), "--tokens", str(tmp_path / "tokens.txt"),
                 "--replay", "memory", "--repeat", "1", "--no-mit")
    assert out.returncode == 0, out.stderr
    assert os.listdir(tmp) == []
    # 200 tokens: 20 warm the validator up, 80 distinct ones are accepted, the 100 repeats are replays
    why = "no sizing: 100 of 180 requests failed (first error: replay:"
    assert f"in-process, replay=memory: {why}" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(why) and last.endswith("in in-process, replay=memory")
    assert "validates" not in last
