"""`fastkrb bench`'s figures cannot contradict each other: every latency figure of a run from the same samples,
medians over runs that keep the orderings, and a scenario with failed requests gives no sizing figure."""

from __future__ import annotations

import random
from typing import Any

import matplotlib  # noqa: F401  (figures() draws with it: a missing matplotlib must fail, not skip)
import pytest

from fastkrb.capacity.planner import BenchResult, Run, Scenario, figures, sizing, sizing_line, table
from fastkrb.capacity.stats import Latency, across_runs, latency_stats, percentile, spread_pct


def _ordered(lat: Latency) -> None:
    assert lat.min_us <= lat.p50_us <= lat.p90_us <= lat.p99_us <= lat.max_us
    assert lat.min_us <= lat.mean_us <= lat.max_us


def test_crafted_samples_give_consistent_figures() -> None:
    # 1000 samples: 989 of 3 µs, 10 of 4 µs, one of 12 ms (a process descheduled for a time slice)
    ns = [3000] * 989 + [4000] * 10 + [12_000_000]
    lat = latency_stats(ns)
    assert lat == Latency(n=1000, min_us=3.0, mean_us=pytest.approx(15.007), p50_us=3.0, p90_us=3.0,
                          p99_us=4.0, max_us=12_000.0)
    _ordered(lat)
    # the mean is above the p99 here, and rightly so: the one 12 ms sample is in the mean, not in the p99
    assert lat.mean_us > lat.p99_us


def test_nearest_rank_percentiles() -> None:
    s = [float(x) for x in range(1, 101)]     # 1..100
    assert [percentile(s, p) for p in (0.0, 0.01, 0.5, 0.9, 0.99, 1.0)] == [1.0, 1.0, 50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile(s, 1.5)


@pytest.mark.parametrize("seed", range(20))
def test_random_sample_sets_and_their_medians_stay_ordered(seed: int) -> None:
    rnd = random.Random(seed)
    runs = []
    for _ in range(rnd.choice((1, 2, 3, 4, 5))):
        n = rnd.randint(1, 3000)
        samples = [rnd.lognormvariate(8, rnd.uniform(0.1, 3)) for _ in range(n)]
        if rnd.random() < 0.5:
            samples[rnd.randrange(n)] = 5e7   # a stall
        lat = latency_stats(samples)
        _ordered(lat)
        assert lat.n == n and lat.min_us == min(samples) * 1e-3 and lat.max_us == max(samples) * 1e-3
        runs.append(lat)
    _ordered(across_runs(runs))
    assert across_runs(runs).n == sum(r.n for r in runs)


def test_all_equal_samples_mean_is_the_value() -> None:
    lat = latency_stats([0.1] * 7, to_us=1e6)
    assert lat.min_us == lat.mean_us == lat.p50_us == lat.p99_us == lat.max_us == pytest.approx(1e5)
    _ordered(lat)


def test_spread() -> None:
    assert spread_pct([100.0, 110.0, 90.0]) == pytest.approx(20.0)
    assert spread_pct([5.0]) == 0.0


def _run(rate: float, p99: float, errors: int = 0, first: str = "") -> Run:
    lat = latency_stats([3000] * 98 + [int(p99 * 1000)] * 2)
    return Run(requests=int(rate), seconds=1.0, errors=errors, attempts=int(rate), first_error=first, latency=lat)


def test_sizing_uses_the_median_and_states_the_spread() -> None:
    mem = Scenario("in-process, replay=memory", "fastkrb", runs=[_run(200_000, 5), _run(250_000, 6),
                                                                   _run(100_000, 9)])
    sz = sizing([mem], target_rps=300_000)
    assert sz["per_core_rps"] == 200_000 and sz["statistic"] == "median" and sz["runs"] == 3
    assert (sz["per_core_rps_min"], sz["per_core_rps_max"]) == (100_000, 250_000)
    assert sz["spread_pct"] == 75.0
    assert sz["cores"] == 3      # 300k / (200k * 0.7)
    line = sizing_line(sz)
    assert "200,000/s per core" in line and "median of 3 runs" in line and "100,000-250,000/s" in line
    assert mem.rate_best == 250_000


def test_a_scenario_with_failures_gets_no_sizing() -> None:
    bad = Scenario("in-process, replay=memory", "fastkrb",
                   runs=[_run(5_000, 5, errors=1_234, first="replay: the authenticator was accepted before")])
    good = Scenario("in-process, replay=shm", "fastkrb", runs=[_run(4_000, 5)])
    none = Scenario("in-process, replay=none", "fastkrb", runs=[_run(9_000, 5)])
    why = "no sizing: 1,234 of 5,000 requests failed (first error: replay: the authenticator was accepted before)"
    assert bad.no_sizing() == why and good.no_sizing() is None
    sz = sizing([none, bad, good])
    assert sz["scenario"] == "in-process, replay=shm"          # not the faster one that failed
    assert sz["refused"] == {"in-process, replay=memory": why}
    # every in-process scenario with a replay cache failed: no sizing at all, and why
    sz = sizing([none, bad])
    assert "per_core_rps" not in sz
    assert sizing_line(sz) == f"{why} in in-process, replay=memory"
    text = table(BenchResult(host={}, source={}, scenarios=[none, bad], repeat=1, sizing=sz))
    assert f"in-process, replay=memory: {why}" in text
    # a failing sidecar or MIT row gives no sidecar figure and no MIT ratio either
    side = Scenario("sidecar binary, 1 worker(s), 4 in flight", "fastkrb-sidecar-binary", load_processes=1,
                    runs=[_run(30_000, 900, errors=10, first="401 replay")])
    mit = Scenario("in-process, MIT gss_accept_sec_context", "mit", runs=[_run(5_000, 200, errors=5, first="x")])
    sz = sizing([good, side, mit])
    assert "sidecar" not in sz and "ratio_vs_mit" not in sz and set(sz["refused"]) == {side.name, mit.name}


def test_plots_have_titles_labels_legends_and_cores() -> None:
    fk = Scenario("in-process, replay=memory", "fastkrb", runs=[_run(200_000, 5), _run(210_000, 5)])
    mit = Scenario("in-process, MIT gss_accept_sec_context", "mit", runs=[_run(5_000, 300), _run(5_200, 310)])
    side = [Scenario(f"sidecar binary, 2 worker(s), {c} in flight", "fastkrb-sidecar-binary", concurrency=c,
                     workers=2, load_processes=1, runs=[_run(10_000 * c, 900)]) for c in (4, 32)]
    res = BenchResult(host={}, source={}, scenarios=[fk, mit, *side], repeat=2,
                      stages_ns={"framing": 20.0, "ticket_decrypt": 500.0, "full_validate": 2200.0})
    res.sizing = sizing(res.scenarios)
    figs = {name: fig for name, _, fig in figures(res)}
    assert set(figs) == {"throughput.png", "latency.png", "concurrency.png", "stages.png", "vs_mit.png"}
    for name, fig in figs.items():
        ax = fig.axes[0]
        assert ax.get_title(), name
        assert ax.get_xlabel() and ax.get_ylabel(), name
        assert ax.get_legend() is not None, name
    for name in ("throughput.png", "latency.png", "concurrency.png"):
        assert "(" in figs[name].axes[0].get_xlabel() or "(" in figs[name].axes[0].get_ylabel()  # units
    rows = [t.get_text() for t in figs["throughput.png"].axes[0].get_yticklabels()]
    assert rows[0] == "in-process, replay=memory [1 core (one thread)]"
    assert rows[2].endswith("[2 workers + 1 load generator: up to 3 cores]")
    assert not any("one core unless" in r for r in rows)
    mit_ax = figs["vs_mit.png"].axes[0]
    assert [t.get_text().split("\n")[0] for t in mit_ax.get_xticklabels()] == ["fastkrb", "MIT krb5"]
    assert "MIT" in mit_ax.get_title() and "µs" in mit_ax.get_ylabel()
    assert len(mit_ax.texts) == 2      # each bar carries its value


def test_bench_leaves_the_callers_logging_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    """`fastkrb bench` quiets the "fastkrb" logger while it runs; run in-process (tests, notebooks), it must put
    the level back, or every later refusal of the process is silently dropped."""
    import logging

    from fastkrb.tools.cli import main

    logger = logging.getLogger("fastkrb")
    before = logger.level
    assert main(["bench", "--seconds", "-1"]) == 2       # refused by the up-front checks
    assert "error: " in capsys.readouterr().err
    assert logger.level == before


def test_a_starved_load_generator_gives_no_figure() -> None:
    """A sidecar run whose load generator ran out of distinct tokens before the window closed undercounts: its
    scenario names that, and gives no sidecar figure."""
    good = Scenario("in-process, replay=shm", "fastkrb", runs=[_run(4_000, 5)])
    run = _run(90_000, 900)
    run.starved = True
    side = Scenario("sidecar binary, 1 worker(s), 256 in flight", "fastkrb-sidecar-binary", load_processes=1,
                    runs=[_run(95_000, 800), run])
    assert side.failed and side.errors == 0
    assert side.no_sizing() == ("no sizing: in 1 of 2 runs the load generator ran out of distinct tokens before "
                                "the window closed, so the rate undercounts what the daemon can do")
    sz = sizing([good, side])
    assert "sidecar" not in sz and set(sz["refused"]) == {side.name}


def test_the_load_generator_says_when_it_ran_dry(tmp_path: Any) -> None:
    """loadgen's "exhausted": a pool minted for 200 requests/s against a daemon that answers far more."""
    import json
    import os
    import random
    import subprocess
    import sys

    from fastkrb.capacity.sidecar_load import Daemon
    from fastkrb.testing import make_keytab

    kt = tmp_path / "kt"
    kt.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(1)).to_bytes())
    with Daemon(tmp_path, kt, 1) as d:
        def go(expect: str) -> dict[str, Any]:
            out = subprocess.run([sys.executable, "-m", "fastkrb.capacity.loadgen", "--socket", str(d.sock),
                                  "--keytab", str(kt), "--client", "a@EXAMPLE.TEST", "--mode", "wire",
                                  "--seconds", "0.5", "--warmup", "0.2", "--expect", expect],
                                 capture_output=True, text=True, timeout=120, check=True)
            return json.loads(out.stdout)  # type: ignore[no-any-return]
        assert go("200")["exhausted"] is True
        assert go("400000")["exhausted"] is False
        # the replay table on a memory file system, as under /run in a deployment, not in the workdir
        assert d.shm is not None and d.shm.startswith("/dev/shm/") and os.path.exists(d.shm)
    assert not os.path.exists(d.shm) and not os.path.exists(d.shm + ".lock")


def test_kill_children_leaves_no_daemon_and_no_tmpfs_replay_file(tmp_path: Any) -> None:
    """The way out of `fastkrb bench` and benches/bench_sidecar.py on a signal: the daemon's process group ends
    and the replay table it was given on /dev/shm (hundreds of MiB of memory) is deleted, with no stop()."""
    import os
    import random

    from fastkrb.capacity.sidecar_load import Daemon, kill_children
    from fastkrb.testing import make_keytab

    kt = tmp_path / "kt"
    kt.write_bytes(make_keytab(("HTTP/api.example.test@EXAMPLE.TEST",), rng=random.Random(1)).to_bytes())
    d = Daemon(tmp_path, kt, 1)
    assert d.shm is not None and os.path.exists(d.shm)
    kill_children()
    assert d.proc.poll() is not None
    assert not os.path.exists(d.shm) and not os.path.exists(d.shm + ".lock")
