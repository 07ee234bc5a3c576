"""Figures from samples, computed so that they cannot contradict each other.

Every latency figure of one measurement (min, mean, percentiles, max) comes from the same sample list
(:func:`latency_stats`), so ``min <= p50 <= p90 <= p99 <= max`` and ``min <= mean <= max`` always hold. A
figure over repeated measurements is the median of the per-run figures (:func:`across_runs`): the median
keeps those orderings, because a run-by-run ``a <= b`` makes ``median(a) <= median(b)``.

Throughput is a different quantity (requests over wall time, with concurrency and the loop's own cost in
it) and is never shown as a latency: an earlier table printed ``1 / throughput`` as "us/req", which read
like a mean and could exceed the p99 of the per-call samples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Latency", "latency_stats", "percentile", "across_runs", "spread_pct"]


@dataclass(frozen=True)
class Latency:
    """One sample set's latency figures, µs."""

    n: int = 0
    min_us: float = 0.0
    mean_us: float = 0.0
    p50_us: float = 0.0
    p90_us: float = 0.0
    p99_us: float = 0.0
    max_us: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the smallest sample with at least ``p`` of the samples at or below it) of an
    ascending sequence: always a sample, monotone in ``p``."""
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"percentile {p} outside 0..1")
    rank = max(1, math.ceil(p * len(ordered)))
    return float(ordered[rank - 1])


def latency_stats(samples: Sequence[float], to_us: float = 1e-3) -> Latency:
    """min, mean, p50, p90, p99, max of ``samples`` (multiplied by ``to_us``: 1e-3 for ns, 1e6 for s)."""
    if not samples:
        return Latency()
    s = sorted(samples)
    lo, hi = float(s[0]), float(s[-1])
    # fsum is exact up to one rounding; clamp the last ulp so the mean never leaves [min, max]
    mean = min(hi, max(lo, math.fsum(s) / len(s)))
    return Latency(n=len(s), min_us=lo * to_us, mean_us=mean * to_us, p50_us=percentile(s, 0.50) * to_us,
                   p90_us=percentile(s, 0.90) * to_us, p99_us=percentile(s, 0.99) * to_us, max_us=hi * to_us)


def across_runs(runs: Sequence[Latency]) -> Latency:
    """The median of each figure over repeated runs (the orderings of each run carry over to the medians)."""
    runs = [r for r in runs if r.n]
    if not runs:
        return Latency()

    def med(field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs))

    return Latency(n=sum(r.n for r in runs), min_us=med("min_us"), mean_us=med("mean_us"), p50_us=med("p50_us"),
                   p90_us=med("p90_us"), p99_us=med("p99_us"), max_us=med("max_us"))


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median, in percent: how far apart repeated measurements of one thing landed."""
    if not values:
        return 0.0
    mid = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / mid if mid else 0.0
