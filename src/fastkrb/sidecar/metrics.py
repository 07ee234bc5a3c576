"""Prometheus metrics for the sidecar, summed over its worker processes.

The hot path only bumps plain ints (a dict entry and a histogram bucket: well under a microsecond).
Each worker writes a snapshot of its counters to ``<dir>/worker-<slot>.json`` every second (atomic
rename); whichever worker answers ``/metrics`` refreshes its own snapshot, sums all of them and renders
the text format with prometheus-client. A worker restarted in the same slot starts from its
predecessor's snapshot, so counters never go backwards.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["LATENCY_BUCKETS", "SKEW_BUCKETS", "Stats", "render"]

LATENCY_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 1.0)
SKEW_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _Hist:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one is +Inf
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v

    def add(self, counts: list[int], total: float) -> None:
        """Counts observed elsewhere (the native path) over the same bounds."""
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.sum += total

    def dump(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.sum}

    def load(self, d: dict[str, Any]) -> None:
        if len(d.get("counts", ())) == len(self.counts):
            self.counts = [int(x) for x in d["counts"]]
            self.sum = float(d.get("sum", 0.0))


class Stats:
    """One worker's counters; gauges are filled in by the app at snapshot time."""

    def __init__(self, slot: int, directory: str | None) -> None:
        self.slot = slot
        self.dir = directory
        self.decisions: dict[str, int] = {}      # "outcome|code" -> count
        self.latency = _Hist(LATENCY_BUCKETS)
        self.skew = _Hist(SKEW_BUCKETS)
        self.events: dict[str, int] = {}         # "name|label" -> count (connections, reloads, limits)
        self.policies: dict[str, int] = {}       # "policy|outcome" -> count (allowed, forbidden)
        self.via: dict[str, int] = {}            # "via|outcome|code" -> count: session and bearer decisions
        self.gauges: dict[str, float] = {}       # set by the app before each snapshot
        self.kvnos: dict[str, int] = {}          # principal -> newest kvno in the loaded keytab
        self._native: Any = None                 # a NativeFront: its counters are folded in at snapshot time
        if directory:
            self._resume()

    def _path(self, slot: int | None = None) -> str:
        return os.path.join(self.dir or ".", f"worker-{self.slot if slot is None else slot}.json")

    def _resume(self) -> None:
        try:
            with open(self._path()) as fh:
                d = json.load(fh)
        except (OSError, ValueError):
            return
        self.decisions = {str(k): int(v) for k, v in d.get("decisions", {}).items()}
        self.events = {str(k): int(v) for k, v in d.get("events", {}).items()}
        self.policies = {str(k): int(v) for k, v in d.get("policies", {}).items()}
        self.via = {str(k): int(v) for k, v in d.get("via", {}).items()}
        self.latency.load(d.get("latency", {}))
        self.skew.load(d.get("skew", {}))

    def attach(self, front: Any) -> None:
        """Count the native request path's decisions too (``_native.NativeFront``: it keeps its counters in C
        and hands them over here, at every snapshot, so no per-request Python runs for them)."""
        self._native = front

    def fold(self) -> None:
        """Move the native path's counters into these (before anything reads them)."""
        if self._native is None:
            return
        accepted, lat, lat_sum, skew, skew_sum = self._native.take_stats()
        if accepted:
            self.decisions["accepted|ok"] = self.decisions.get("accepted|ok", 0) + accepted
            self.latency.add(lat, lat_sum)
            self.skew.add(skew, skew_sum)

    def decision(self, outcome: str, code: str, latency: float | None) -> None:
        k = outcome + "|" + code
        self.decisions[k] = self.decisions.get(k, 0) + 1
        if latency is not None:
            self.latency.observe(latency)

    def session(self, via: str, outcome: str, code: str) -> None:
        """A decision on a session cookie (``via`` session) or a bearer token (bearer): no Kerberos token was
        validated, so fastkrb_decisions does not count it."""
        k = via + "|" + outcome + "|" + code
        self.via[k] = self.via.get(k, 0) + 1

    def policy(self, label: str, outcome: str) -> None:
        k = label + "|" + outcome
        self.policies[k] = self.policies.get(k, 0) + 1

    def count(self, name: str, label: str = "") -> None:
        k = name + "|" + label
        self.events[k] = self.events.get(k, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        self.fold()
        return {"slot": self.slot, "pid": os.getpid(), "time": time.time(), "decisions": self.decisions,
                "events": self.events, "policies": self.policies, "via": self.via, "latency": self.latency.dump(),
                "skew": self.skew.dump(), "gauges": self.gauges, "kvnos": self.kvnos}

    def write(self) -> None:
        """Publish this worker's snapshot for the others (atomic: write a temp file, rename it)."""
        if not self.dir:
            return
        tmp = self._path() + f".{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self.snapshot(), fh, separators=(",", ":"))
            os.replace(tmp, self._path())
        except OSError:
            pass

    def gather(self) -> list[dict[str, Any]]:
        """Every worker's latest snapshot (this one fresh)."""
        snaps = [self.snapshot()]
        if self.dir:
            self.write()
            try:
                names = sorted(os.listdir(self.dir))
            except OSError:
                names = []
            for name in names:
                if not (name.startswith("worker-") and name.endswith(".json")) or name == f"worker-{self.slot}.json":
                    continue
                try:
                    with open(os.path.join(self.dir, name)) as fh:
                        snaps.append(json.load(fh))
                except (OSError, ValueError):
                    continue
        return snaps


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Collector(Collector):
    def __init__(self, snaps: list[dict[str, Any]]) -> None:
        self.snaps = snaps

    def collect(self) -> Iterator[Metric]:
        snaps = self.snaps
        dec = CounterMetricFamily("fastkrb_decisions", "Validation decisions by outcome and error code",
                                  labels=["outcome", "code"])
        totals: dict[str, int] = {}
        for s in snaps:
            for k, v in s.get("decisions", {}).items():
                totals[k] = totals.get(k, 0) + int(v)
        for k, v in sorted(totals.items()):
            outcome, code = k.split("|", 1)
            dec.add_metric([outcome, code], v)
        yield dec
        pol = CounterMetricFamily("fastkrb_policy_decisions", "Policy decisions on valid tickets, by policy and "
                                  "outcome (allowed, forbidden)", labels=["policy", "outcome"])
        ptotals: dict[str, int] = {}
        for s in snaps:
            for k, v in s.get("policies", {}).items():
                ptotals[k] = ptotals.get(k, 0) + int(v)
        for k, v in sorted(ptotals.items()):
            name, _, outcome = k.rpartition("|")
            pol.add_metric([name, outcome], v)
        yield pol
        auth = CounterMetricFamily("fastkrb_authentications", "Authentication decisions by how the client "
                                   "authenticated: negotiate (a Kerberos token: fastkrb_decisions but the challenges), "
                                   "session (a session cookie), bearer (a bearer token)",
                                   labels=["via", "outcome", "code"])
        vtotals: dict[str, int] = {}
        for k, v in totals.items():
            if not k.startswith("challenged|"):
                vtotals["negotiate|" + k] = v
        for s in snaps:
            for k, v in s.get("via", {}).items():
                vtotals[k] = vtotals.get(k, 0) + int(v)
        for k, v in sorted(vtotals.items()):
            via, outcome, code = k.split("|", 2)
            auth.add_metric([via, outcome, code], v)
        yield auth
        yield _hist("fastkrb_validation_seconds", "Time to validate one token (server side)", snaps, "latency",
                    LATENCY_BUCKETS)
        yield _hist("fastkrb_clock_skew_seconds", "Absolute client clock offset seen in authenticators", snaps,
                    "skew", SKEW_BUCKETS)
        ev: dict[str, int] = {}
        for s in snaps:
            for k, v in s.get("events", {}).items():
                ev[k] = ev.get(k, 0) + int(v)
        families = {
            "connections": ("fastkrb_connections_accepted", "Connections accepted", "frontend"),
            "refused": ("fastkrb_connections_refused", "Connections refused (limits, peer credentials)", "reason"),
            "reload": ("fastkrb_keytab_reloads", "Keytab reload attempts by result", "result"),
            "reload_refused": ("fastkrb_keytab_reload_refused", "Replacement keytabs refused (keys in service kept), "
                               "by reason", "reason"),
            "group_names_reload": ("fastkrb_group_names_reloads", "Group map reloads by result", "result"),
            "replay_failure": ("fastkrb_replay_cache_failures", "Replay cache could not answer", "kind"),
            "protocol_error": ("fastkrb_protocol_errors", "Requests that were not HTTP or protocol frames", "frontend"),
            "issued": ("fastkrb_sessions_issued", "Session cookies (via session) and bearer tokens (via bearer) "
                       "issued after a Negotiate", "via"),
            "issue_refused": ("fastkrb_session_issue_refused", "Accepted tickets that got no session cookie or bearer "
                              "token (session_too_large, session_expired, bearer_expired)", "code"),
            "challenge_fallback": ("fastkrb_challenge_fallbacks", "Answers without the Negotiate offer (the challenge "
                                   "rule): requests without a token by reason, and NTLM tokens (ntlm)", "reason"),
        }
        for key, (name, help_, label) in families.items():
            fam = CounterMetricFamily(name, help_, labels=[label])
            for k, v in sorted(ev.items()):
                n, lab = k.split("|", 1)
                if n == key:
                    fam.add_metric([lab], v)
            yield fam
        me = snaps[0]
        g = me.get("gauges", {})
        live = [s for s in snaps if s is me or _alive(int(s.get("pid", 0)))]
        gauges = [
            ("fastkrb_workers", "Worker processes answering", float(len(live))),
            ("fastkrb_open_connections", "Open connections over all live workers",
             float(sum(s.get("gauges", {}).get("open_connections", 0) for s in live))),
        ]
        for key, help_ in (("replay_cache_entries", "Entries in the replay cache"),
                           ("replay_cache_capacity", "Capacity of the replay cache"),
                           ("keytab_age_seconds", "Seconds since the loaded keytab file was modified"),
                           ("keytab_loaded_timestamp_seconds", "When the current keytab was loaded"),
                           ("ready", "1 when the keytab and the replay cache are usable")):
            if key in g:
                gauges.append(("fastkrb_" + key, help_, float(g[key])))
        for name, help_, value in gauges:
            gm = GaugeMetricFamily(name, help_)
            gm.add_metric([], value)
            yield gm
        kv = GaugeMetricFamily("fastkrb_keytab_kvno", "Newest key version in the keytab, per principal",
                               labels=["principal"])
        for p, n in sorted(me.get("kvnos", {}).items()):
            kv.add_metric([p], float(n))
        yield kv


def _hist(name: str, help_: str, snaps: list[dict[str, Any]], key: str,
          bounds: tuple[float, ...]) -> HistogramMetricFamily:
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for s in snaps:
        h = s.get(key, {})
        c = h.get("counts", ())
        if len(c) == len(counts):
            counts = [a + int(b) for a, b in zip(counts, c, strict=True)]
            total += float(h.get("sum", 0.0))
    buckets = []
    acc = 0
    for bound, c in zip((*[repr(b) for b in bounds], "+Inf"), counts, strict=True):
        acc += c
        buckets.append((bound, float(acc)))
    return HistogramMetricFamily(name, help_, buckets=buckets, sum_value=total)


def render(stats: Stats) -> bytes:
    """The Prometheus text exposition of every worker's counters."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(stats.gather()))
    return generate_latest(reg)
