"""`fastkrb bench`: runs end to end on the embedded default, emits JSON, a sizing line and a report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib  # noqa: F401  (the --report figures: a missing matplotlib must fail, not skip)


def test_bench_embedded_json_and_report(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastkrb", "bench", "--seconds", "0.3", "--replay", "memory", "--target-rps",
         "100000", "--workers", "1", "--json", "--report", str(tmp_path / "rep")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = [s["name"] for s in data["scenarios"]]
    assert "in-process, replay=memory" in names and "in-process, replay=none" in names
    fk = next(s for s in data["scenarios"] if s["name"] == "in-process, replay=memory")
    assert fk["requests"] > 0 and fk["errors"] == 0 and fk["rate"] > 0
    assert 0 < fk["p50_us"] <= fk["p99_us"]
    # the JSON's rate is rounded to 0.1, the sizing's from the unrounded rate
    assert data["sizing"]["cores"] >= 1 and abs(data["sizing"]["per_core_rps"] - fk["rate"]) <= 1
    assert set(data["stages_ns"]) >= {"framing", "ticket_decrypt", "replay_insert", "full_validate"}
    if any(s["impl"] == "mit" for s in data["scenarios"]):
        mit = next(s for s in data["scenarios"] if s["impl"] == "mit")
        assert mit["errors"] == 0, "MIT must accept the same minted tokens"
        assert data["sizing"]["ratio_vs_mit"] > 1
    side = [s for s in data["scenarios"] if s["impl"].startswith("fastkrb-sidecar")]
    assert {s["impl"] for s in side} == {"fastkrb-sidecar-binary", "fastkrb-sidecar-http"}
    assert all(s["requests"] > 0 and s["errors"] == 0 and s["workers"] == 1 for s in side)
    assert sorted({s["concurrency"] for s in side if s["impl"].endswith("binary")}) == [4, 32, 256]
    assert data["sizing"]["sidecar"]["rps"] > 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Sizing:" in report and "throughput.png" in report
    assert (tmp_path / "rep" / "stages.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "concurrency.png").stat().st_size > 1000
