"""Resident memory stays flat over 10^6 validations, valid and invalid mixed, and the sidecar's stays
bounded under a flood while it keeps serving (issue 7: leaks and limits).

Every path that allocates is exercised at volume: accepted tokens (an AuthResult each, an AP-REP for
mutual authentication, a replay-cache entry), replays, bit-flipped copies of accepted tokens, garbage,
tokens for a key version the keytab lacks, oversized tokens, header strings. Each rejection builds a
typed KerberosError with its facts in Python, so a leaked reference there shows as well as a leaked
malloc in C. After a warm-up (the replay cache's table pages, the allocator's pools, the DRBG buffers
are touched once), the resident set must not grow by more than RSS_BOUND over the rest.

Authenticators of one batch expire before the next (`now` moves 400 s per batch, the skew is 300 s),
so a correct replay cache holds one batch at a time; a cache that never forgot would grow here too.

The sidecar test floods a real `fastkrb serve` (tests/support/sidecar.py) from several connections at
once with binary frames of garbage, HTTP requests with garbage tokens, heads over the size limit and
heads that never finish, while a legitimate client keeps validating fresh tokens over both front doors:
every legitimate request must succeed, promptly, and the daemon's resident memory after the flood must
be within SIDECAR_RSS_BOUND of before.
"""

from __future__ import annotations

import base64
import gc
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastkrb import KerberosError, Validator
from fastkrb.errors import Replay
from fastkrb.testing import make_keytab, mint

TOTAL = 1_000_000
BATCH = 10_000
WARMUP_BATCHES = 5
RSS_BOUND = 4 * 1024 * 1024   # 4 MiB over ~950,000 validations: a leak of 5 bytes per call would show
BASE = 1_700_000_000
STEP = 400                    # seconds between batches: more than clock_skew + 1


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def setup() -> tuple[Validator, object, object]:
    rng = random.Random(7)
    kt = make_keytab(rng=rng)
    life = BASE + (TOTAL // BATCH + 2) * STEP + 3600
    good = mint(kt, now=BASE, endtime=life, framing="krb5", rng=rng)           # mutual: an AP-REP each
    other = mint(make_keytab(rng=rng, kvno=9), now=BASE, endtime=life, framing="raw", rng=rng)
    v = Validator(kt, cold_start=False, replay_capacity=1 << 15, max_token_size=16 * 1024)
    return v, good, other


def run_batch(v: Validator, good: object, other: object, i: int, rng: random.Random) -> dict[str, int]:
    now = BASE + i * STEP
    valid = good.variants(7000, now=now)  # type: ignore[attr-defined]
    headers = {j for j in range(0, 7000, 14)}          # 500 of them sent as "Negotiate <b64>" strings
    counts = {"accepted": 0, "replay": 0, "mutated_rejected": 0, "garbage_rejected": 0, "kvno": 0,
              "too_large": 0}
    for j, tok in enumerate(valid):
        t = "Negotiate " + base64.b64encode(tok).decode() if j in headers else tok
        res = v.validate(t, now=now)
        counts["accepted"] += res.response_token is not None
    for tok in rng.sample(valid, 500):
        try:
            v.validate(tok, now=now)
        except Replay:
            counts["replay"] += 1
    for tok in rng.sample(valid, 1000):
        b = bytearray(tok)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        try:
            v.validate(bytes(b), now=now)
        except KerberosError:
            counts["mutated_rejected"] += 1
    for _ in range(1000):
        junk = rng.randbytes(rng.randrange(600))
        if rng.random() < 0.3:
            junk = b"\x60" + junk            # looks like a GSS token
        try:
            v.validate(junk, now=now)
        except KerberosError:
            counts["garbage_rejected"] += 1
    for tok in other.variants(490, now=now):  # type: ignore[attr-defined]
        try:
            v.validate(tok, now=now)
        except KerberosError as exc:
            counts["kvno"] += exc.code == "key_version_mismatch"
    for n in range(10):
        try:
            v.validate(b"\x60" + bytes(20_000 + n), now=now)
        except KerberosError as exc:
            counts["too_large"] += 1
            assert exc.code == "malformed"
    return counts


def test_rss_flat_over_a_million_validations(setup: tuple[Validator, object, object]) -> None:
    v, good, other = setup
    rng = random.Random(11)
    nbatches = TOTAL // BATCH
    start = time.monotonic()
    totals: dict[str, int] = {}
    rss_start = 0
    for i in range(nbatches):
        if i == WARMUP_BATCHES:
            gc.collect()
            rss_start = rss()
        c = run_batch(v, good, other, i, rng)
        for k, n in c.items():
            totals[k] = totals.get(k, 0) + n
        # every batch: all valid tokens accepted once, every replay and mutation refused
        assert c == {"accepted": 7000, "replay": 500, "mutated_rejected": 1000, "garbage_rejected": 1000,
                     "kvno": 490, "too_large": 10}, c
    gc.collect()
    rss_end = rss()
    elapsed = time.monotonic() - start
    validations = sum(totals.values())
    assert validations == TOTAL
    print(f"\n{validations} validations in {elapsed:.1f} s; RSS after warm-up {rss_start / 2**20:.1f} MiB, "
          f"at end {rss_end / 2**20:.1f} MiB, growth {(rss_end - rss_start) / 1024:.0f} KiB; {totals}")
    stats = v.replay_stats()
    assert stats is not None and stats["entries"] <= 2 * 7000, stats   # one batch (+ the one expiring)
    assert rss_end - rss_start <= RSS_BOUND, (rss_start, rss_end)


# Master + worker, over a flood of ~2.5 x 10^5 bad frames and ~10^4 bad, oversized and unfinished HTTP
# requests after a warm-up of the same: about 50 bytes per bad request. Measured: +2-5 MiB. Heads over
# the limit are what moves it (the daemon's allocator; the HTTP handler itself stays flat in-process over
# 10^5 of them): docs/security.md "Oversized and deeply nested input".
SIDECAR_RSS_BOUND = 16 * 1024 * 1024
WARMUP_SECONDS = 5.0
FLOOD_SECONDS = 12.0


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_sidecar_memory_bounded_and_serving_under_a_flood(tmp_path: Path) -> None:
    from fastkrb.client import Client
    from fastkrb.sidecar import protocol
    from support.sidecar import Sidecar, parse_response, recv_all

    rng = random.Random(13)
    kt = make_keytab(rng=rng)
    ktp = tmp_path / "service.keytab"
    ktp.write_bytes(kt.to_bytes())
    # a replay table small enough to be fully touched during the warm-up (pages of a large one would
    # be faulted in by each new legitimate token and look like growth)
    sc = Sidecar(tmp_path, ktp, workers=1, args=("--no-log-decisions", "--replay-capacity", "4096")).start()
    m = mint(kt, now=time.time() + 1, framing="spnego", rng=rng)

    def pids() -> list[int]:
        assert sc.proc is not None
        return [sc.proc.pid, *sc.worker_pids()]

    def rss_all() -> int:
        return sum(proc_rss(p) for p in pids())

    stop = threading.Event()
    counts = {"frames": 0, "http_garbage": 0, "oversized": 0, "partial": 0}
    errors: list[str] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                while not stop.is_set():
                    fn()
            except Exception as exc:  # a flood thread dying would silently weaken the flood
                errors.append(f"{fn.__name__}: {exc!r}")
        return run

    junk = b"".join(protocol.encode_validate(i, os.urandom(rng.randrange(1, 900))) for i in range(500))

    def frames() -> None:
        s = sc.connect()
        reader = threading.Thread(target=lambda: recv_all(s), daemon=True)
        reader.start()
        try:
            for _ in range(20):
                s.sendall(junk)
                counts["frames"] += 500
        finally:
            s.shutdown(socket.SHUT_WR)
            reader.join(10)
            s.close()

    def http_garbage() -> None:
        tok = base64.b64encode(os.urandom(rng.randrange(1, 3000))).decode()
        status, _, _ = sc.http("GET", "/auth", {"Authorization": "Negotiate " + tok})
        assert status == 401, status
        counts["http_garbage"] += 1

    def oversized() -> None:
        s = sc.connect()
        try:
            s.sendall(b"GET /auth HTTP/1.1\r\nHost: s\r\nAuthorization: Negotiate " + b"A" * 300_000 + b"\r\n\r\n")
            data = recv_all(s)
            assert not data or parse_response(data)[0] == 431, data[:40]
        except (BrokenPipeError, ConnectionResetError):
            pass   # refused and closed before the whole head was read: what a limit looks like
        s.close()
        counts["oversized"] += 1

    def partial() -> None:
        held = []
        for _ in range(50):
            s = sc.connect()
            s.sendall(b"GET /auth HTTP/1.1\r\nHost: s\r\nAuthoriz")
            held.append(s)
        counts["partial"] += 50
        stop.wait(2.0)
        for s in held:
            s.close()

    def flood(seconds: float) -> list[float]:
        """Every flood thread at once for `seconds` while the legitimate client works; its latencies."""
        stop.clear()
        threads = [threading.Thread(target=guarded(f), daemon=True) for f in (frames, http_garbage, oversized,
                                                                                partial)]
        for th in threads:
            th.start()
        latencies: list[float] = []
        try:
            deadline = time.monotonic() + seconds
            with Client(sc.socket) as c:
                while time.monotonic() < deadline:
                    tok = m.variants(1, now=time.time() + 1 + rng.random())[0]
                    t0 = time.monotonic()
                    if len(latencies) % 2:
                        hdr = "Negotiate " + base64.b64encode(tok).decode()
                        status, h, _ = sc.http("GET", "/auth", {"Authorization": hdr})
                        assert status == 200 and h["x-remote-user"] == "alice", status
                    else:
                        assert c.validate(tok).client == m.client
                    latencies.append(time.monotonic() - t0)
                    time.sleep(0.01)
        finally:
            stop.set()
            for th in threads:
                th.join(30)
        time.sleep(1.0)
        return sorted(latencies)

    try:
        # warm-up: a short flood, so the allocator's arenas, buffers and the replay table's pages exist
        flood(WARMUP_SECONDS)
        before = rss_all()
        warm = dict(counts)
        latencies = flood(FLOOD_SECONDS)
        after = rss_all()
        assert not errors, errors
        done = {k: counts[k] - warm[k] for k in counts}
        print(f"\nflood after warm-up: {done}; legitimate requests {len(latencies)}, all accepted, p50 "
              f"{latencies[len(latencies) // 2] * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms; "
              f"sidecar RSS (master + worker) {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
        assert done["frames"] >= 10_000 and done["oversized"] >= 20 and done["http_garbage"] >= 100
        assert len(latencies) >= 100 and latencies[-1] < 2.0
        assert after - before <= SIDECAR_RSS_BOUND, (before, after)
    finally:
        assert sc.stop() == 0
