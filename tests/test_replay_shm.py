"""The shared-memory replay cache with real processes (spawn): every token accepted exactly once across
processes, SIGKILL mid-run and mid-insert, restart, damaged and replaced files, capacity, expiry."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import signal
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.errors import ReplayCacheUnavailable
from fastkrb.replay import ShmReplayCache
from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_800_000_000.0
CTX = mp.get_context("spawn")
HEADER = 4096
LOCK_OFFSET = 4096   # native/shm.c: shard 0's lock word (one shard below 131,072 entries)


def keys(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


@pytest.fixture(scope="module")
def kt() -> Keytab:
    return make_keytab(principals=(SPN,), enctypes=(18, 20), kvno=2, rng=random.Random(11))


@pytest.fixture(scope="module")
def tokens(kt: Keytab) -> list[bytes]:
    out = []
    for i in range(300):
        t = mint(kt, server=SPN, now=NOW, ticket_enctype=18 if i % 2 else 20, framing="krb5",
                 rng=random.Random(1000 + i)).token
        assert isinstance(t, bytes)
        out.append(t)
    return out


# -- workers (run in spawned processes) ---------------------------------------------------------------

def _validate_worker(path: str, kt_bytes: bytes, tokens: list[bytes], order: list[int], barrier: Any,
                     out: Any, log_path: str | None = None, delay: float = 0.0) -> None:
    v = Validator(Keytab.from_bytes(kt_bytes), replay_cache=f"shm:{path}", cold_start=False)
    accepted: list[int] = []
    codes: Counter[str] = Counter()
    log = open(log_path, "a") if log_path else None  # line by line: must survive SIGKILL
    if barrier is not None:
        barrier.wait()
    for i in order:
        try:
            v.validate(tokens[i], now=NOW + 1)
            accepted.append(i)
            if log:
                log.write(f"{i}\n")
                log.flush()
        except KerberosError as e:
            codes[e.code] += 1
        if delay:
            time.sleep(delay)
    out.put((os.getpid(), accepted, dict(codes)))


def _insert_worker(path: str, n: int, seed: int, barrier: Any, out: Any) -> None:
    c = ShmReplayCache(path, 1 << 18, 300.0, False)   # four shards
    ks = keys(n, seed)
    barrier.wait()
    out.put([i for i, k in enumerate(ks) if c.insert(k, NOW + 300, NOW)[0]])


def _hammer_worker(path: str, n: int, seed: int, ready: Any) -> None:
    c = ShmReplayCache(path, 1 << 19, 300.0, False)
    ks = keys(n, seed)
    ready.set()
    for k in ks:
        c.insert(k, NOW + 300, NOW)


def _collect(out: Any, n: int) -> list[Any]:
    return [out.get(timeout=60) for _ in range(n)]


# -- across processes ---------------------------------------------------------------------------------

def test_processes_accept_every_token_exactly_once(tmp_path: Path, kt: Keytab, tokens: list[bytes]) -> None:
    path = str(tmp_path / "rc")
    nproc = 4
    barrier, out = CTX.Barrier(nproc), CTX.Queue()
    orders = [list(range(len(tokens))) for _ in range(nproc)]
    random.Random(3).shuffle(orders[2])
    orders[3].reverse()   # two in the same order: the tightest race on each token
    ps = [CTX.Process(target=_validate_worker, args=(path, kt.to_bytes(), tokens, o, barrier, out)) for o in orders]
    for p in ps:
        p.start()
    results = _collect(out, nproc)
    for p in ps:
        p.join(30)
    counts = Counter(i for _, acc, _ in results for i in acc)
    assert sorted(counts) == list(range(len(tokens))) and set(counts.values()) == {1}
    codes = Counter()
    for _, _, c in results:
        codes.update(c)
    assert codes == {"replay": (nproc - 1) * len(tokens)}
    stats = ShmReplayCache(path).stats()
    assert stats["inserts"] == len(tokens) and stats["hits"] >= (nproc - 1) * len(tokens)


def test_raw_inserts_race_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "raw")
    nproc, n = 4, 20000
    barrier, out = CTX.Barrier(nproc), CTX.Queue()
    ps = [CTX.Process(target=_insert_worker, args=(path, n, 7, barrier, out)) for _ in range(nproc)]
    for p in ps:
        p.start()
    results = _collect(out, nproc)
    for p in ps:
        p.join(30)
    counts = Counter(i for r in results for i in r)
    assert len(counts) == n and set(counts.values()) == {1}
    assert ShmReplayCache(path).stats()["shards"] == 4


def test_sigkill_mid_run_then_restart_still_rejects(tmp_path: Path, kt: Keytab, tokens: list[bytes]) -> None:
    path = str(tmp_path / "rc")
    # The three start validating together (a spawned process can take a second to import): one that started
    # late would find most tokens claimed by the others, accept too few, and finish before the kill.
    barrier, out = CTX.Barrier(3), CTX.Queue()
    logs = [str(tmp_path / f"acc{i}.log") for i in range(3)]
    orders = [list(range(len(tokens))) for _ in range(3)]
    for i, o in enumerate(orders):
        random.Random(i).shuffle(o)
    ps = [CTX.Process(target=_validate_worker, args=(path, kt.to_bytes(), tokens, o, barrier, out, lg, 0.002))
          for o, lg in zip(orders, logs, strict=True)]
    for p in ps:
        p.start()
    # kill the first once it has accepted some tokens
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not os.path.exists(logs[0]) or os.path.getsize(logs[0]) < 40):
        assert ps[0].is_alive(), f"worker 0 ended before the kill, having accepted: {Path(logs[0]).read_text()!r}"
        time.sleep(0.005)
    os.kill(ps[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
    ps[0].join(10)
    assert ps[0].exitcode == -signal.SIGKILL
    survivors = _collect(out, 2)
    for p in ps[1:]:
        p.join(30)
    killed_acc = [int(x) for x in Path(logs[0]).read_text().split()]
    assert 0 < len(killed_acc) < len(tokens)
    counts = Counter(killed_acc + [i for _, acc, _ in survivors for i in acc])
    assert max(counts.values()) == 1, "a token was accepted twice"
    # at most the one token in flight at the kill is accepted by nobody (claimed, answer lost)
    assert len(tokens) - len(counts) <= 1
    # a restarted process (same file) still rejects every one of them
    ShmReplayCache(path)  # opening must not re-create it
    p = CTX.Process(target=_validate_worker, args=(path, kt.to_bytes(), tokens, list(range(len(tokens))), None, out))
    p.start()
    (_, acc, codes) = _collect(out, 1)[0]
    p.join(30)
    assert acc == [] and codes == {"replay": len(tokens)}


def test_sigkill_mid_insert_never_corrupts_or_lets_a_replay_through(tmp_path: Path) -> None:
    for round_ in range(3):
        path = str(tmp_path / f"k{round_}")
        started = ShmReplayCache(path, 1 << 19).started
        ready = CTX.Event()
        p = CTX.Process(target=_hammer_worker, args=(path, 400_000, round_, ready))
        p.start()
        assert ready.wait(30)
        time.sleep(0.01 + 0.02 * round_)
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        c = ShmReplayCache(path, 1 << 19, 300.0, False)
        assert not c.created and c.started == started, "a killed writer must not make the file look damaged"
        # the killed process inserted keys in order: a prefix of them is present, the rest are not;
        # the key in flight may be either (kept if its insert committed, dropped if not)
        res = "".join("R" if not c.insert(k, NOW + 300, NOW + 1)[0] else "F" for k in keys(400_000, round_))
        assert re.fullmatch(r"R+F+", res), res[:80]


# -- in one process --------------------------------------------------------------------------------------

def test_insert_expiry_first_seen_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "rc")
    c = ShmReplayCache(path, 1000, 300.0, False)
    assert c.created and abs(c.started - time.time()) < 5 and c.capacity == 1000
    k, k2 = keys(2)
    assert c.insert(k, NOW + 301, NOW) == (True, None)
    fresh, first = c.insert(k, NOW + 301, NOW + 5)
    assert not fresh and first == pytest.approx(NOW, abs=1e-4)
    assert c.insert(k, NOW + 301, NOW + 300.9)[0] is False
    assert c.insert(k, NOW + 602, NOW + 301) == (True, None)   # expired: taken again
    assert c.insert_many([(k2, NOW + 400), (k2, NOW + 400)], NOW) == [(True, None), (False, pytest.approx(NOW))]
    started = c.started
    c.close()
    with pytest.raises(ReplayCacheUnavailable):
        c.insert(keys(3)[2], NOW + 10, NOW)
    del c
    # restart: same table, same start, entries kept
    c = ShmReplayCache(path, 5000, 300.0, False)
    assert not c.created and c.started == started and c.capacity == 1000
    assert c.insert(k2, NOW + 400, NOW + 10)[0] is False
    st = c.stats()
    assert st["entries"] == 2 and st["inserts"] == 3 and st["hits"] == 4 and st["evictions"] >= 1


def _die_inside_lock_worker(path: str, stage: int, stop: bool, capacity: int = 1000) -> None:
    c = ShmReplayCache(path, capacity, 300.0, False)
    for k in keys(50, seed=30):
        assert c.insert(k, NOW + 300, NOW) == (True, None)
    c._die_in_insert(keys(1, seed=31)[0], NOW + 300, NOW, stage)
    if stop:
        os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)   # holding the lock, as SIGKILL inside the insert would leave it


@pytest.mark.parametrize(("stage", "capacity"), [(1, 1000), (2, 1000), (3, 1000), (4, 1000), (5, 1000),
                                               (3, 1 << 18), (5, 1 << 18)])
def test_writer_dead_inside_the_lock_is_recovered_at_every_stage(tmp_path: Path, stage: int, capacity: int) -> None:
    """A process dies holding a lock at each point of an insert: the next process takes the lock over,
    re-derives that shard, keeps every committed entry (stage 5: the dead insert had committed) and
    drops the uncommitted one. 1000 entries: one shard; 2^18: four."""
    path = str(tmp_path / "rc")
    p = CTX.Process(target=_die_inside_lock_worker, args=(path, stage, False, capacity))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    c = ShmReplayCache(path, capacity, 300.0, False)   # opening takes the lock over and rebuilds
    assert not c.created
    st = c.stats()
    assert st["recoveries"] == 1 and st["entries"] == 50 + (stage == 5)
    assert st["shards"] == (1 if capacity < 1 << 17 else 4)
    assert all(c.insert(k, NOW + 300, NOW + 1)[0] is False for k in keys(50, seed=30))
    k = keys(1, seed=31)[0]
    assert c.insert(k, NOW + 300, NOW + 1) == ((False, NOW) if stage == 5 else (True, None))
    assert c.insert(k, NOW + 300, NOW + 2)[0] is False


def test_wedged_lock_fails_closed_then_the_table_is_replaced(tmp_path: Path) -> None:
    """An owner stopped inside the lock (SIGSTOP, a debugger) holds it: after 2 s the waiter fails closed
    and replaces the table; every process moves to the new one, under the cold-start rule."""
    path = str(tmp_path / "rc")
    c = ShmReplayCache(path, 1000, 300.0, True)
    old_started = c.started
    p = CTX.Process(target=_die_inside_lock_worker, args=(path, 3, True))
    p.start()
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(ReplayCacheUnavailable):
            c.insert(keys(1, seed=32)[0], NOW + 300, NOW)
        assert 1.5 < time.monotonic() - t0 < 15, "wait about 2 s for a wedged lock, then fail closed"
        assert c.stats()["errors"] == 1
        t = time.time() + 1
        assert c.insert(keys(1, seed=34)[0], t + 300, t) == (True, None)   # the new table
        assert c.started > old_started and c.stats()["remaps"] == 1
        with pytest.raises(ReplayCacheUnavailable) as ei:   # made before the new table: cold start
            c.insert(keys(1, seed=35)[0], t - 10 + 301, t)
        assert ei.value.details["reason"] == "cold_start"
    finally:
        p.kill()
        p.join(10)


def test_lock_of_a_reused_pid_is_taken_over(tmp_path: Path) -> None:
    """The lock word names pid 1 with another start time: pid 1 lives, but it is not the owner."""
    path = str(tmp_path / "rc")
    c = ShmReplayCache(path, 1000, 300.0, False)
    assert c.insert(keys(1, seed=33)[0], NOW + 300, NOW) == (True, None)
    _corrupt(path, LOCK_OFFSET, struct.pack("<Q", 1 | (0xFFFFFFF0 << 32)))
    assert c.insert(keys(2, seed=33)[1], NOW + 300, NOW) == (True, None)
    assert c.insert(keys(1, seed=33)[0], NOW + 300, NOW)[0] is False
    assert c.stats()["recoveries"] == 1


def test_full_fails_closed_then_expiry_frees_room(tmp_path: Path) -> None:
    c = ShmReplayCache(str(tmp_path / "rc"), 16, 300.0, False)
    ks = keys(40, seed=4)
    assert all(c.insert(k, NOW + 50, NOW) == (True, None) for k in ks[:16])
    with pytest.raises(ReplayCacheUnavailable) as ei:
        c.insert(ks[16], NOW + 50, NOW)
    assert "full" in ei.value.cause and ei.value.details["reason"] == "full"
    # every accepted key is still recognised while live, even when full
    assert all(not c.insert(k, NOW + 50, NOW + 1)[0] for k in ks[:16])
    assert c.stats()["full"] == 1
    # expired entries leave at the next insert: room again without any sweep
    assert all(c.insert(k, NOW + 400, NOW + 50)[0] for k in ks[16:32])
    assert c.stats()["entries"] == 16


def _corrupt(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("damage", ["header", "version", "tags", "truncated", "garbage"])
def test_damaged_file_is_recreated_and_cold_start_applies(tmp_path: Path, kt: Keytab, damage: str) -> None:
    path = str(tmp_path / "rc")
    c = ShmReplayCache(path, 1000, 300.0, False)
    old_started = c.started
    k = keys(1)[0]
    c.insert(k, NOW + 300, NOW)
    del c
    if damage == "header":
        _corrupt(path, 40, b"\x01")             # inside the seed: checksum fails
    elif damage == "version":
        _corrupt(path, 8, struct.pack("<I", 99))
    elif damage == "tags":
        # the first bucket's tags (after the header and the one shard's block): more held than the ring holds
        _corrupt(path, 2 * HEADER, b"\x07" * 64)
    elif damage == "truncated":
        os.truncate(path, HEADER + 100)
    else:
        Path(path).write_bytes(os.urandom(9000))
    time.sleep(0.01)
    c = ShmReplayCache(path, 1000, 300.0, False)
    assert c.created and c.started > old_started
    assert c.insert(k, NOW + 300, NOW) == (True, None)   # the old table is gone
    # the cold-start rule from the new creation time, through the validator
    v = Validator(kt, replay_cache=f"shm:{path}")
    before = mint(kt, server=SPN, ctime=int(c.started) - 5, rng=random.Random(5))
    with pytest.raises(KerberosError) as ei:
        v.validate(before.token, now=c.started + 1)
    assert ei.value.code == "replay_cache_unavailable" and "RFC 4120" in ei.value.cause
    after = mint(kt, server=SPN, ctime=int(c.started) + 2, rng=random.Random(6))
    v.validate(after.token, now=c.started + 3)


def test_replaced_file_is_remapped_and_cold_start_applies(tmp_path: Path) -> None:
    path = str(tmp_path / "rc")
    a = ShmReplayCache(path, 1000, 300.0, True)
    k1, k2, k3 = keys(3, seed=8)
    assert a.insert(k1, NOW + 300, NOW)[0]
    os.unlink(path)
    b = ShmReplayCache(path, 1000, 300.0, True)   # another process re-creates it
    assert b.created and b.started >= a.started
    time.sleep(1.1)   # processes re-check the path about once a second
    t = b.started
    # an authenticator older than the new table: refused while the skew window lasts
    with pytest.raises(ReplayCacheUnavailable) as ei:
        a.insert(k2, t - 10 + 301, t + 1)
    assert ei.value.details["reason"] == "cold_start"
    assert a.started == b.started and a.stats()["remaps"] == 1
    # one table again: what a inserts, b sees
    assert a.insert(k3, t + 2 + 301, t + 2) == (True, None)
    assert b.insert(k3, t + 2 + 301, t + 3)[0] is False


def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ReplayCacheUnavailable) as ei:
        ShmReplayCache(str(tmp_path / "no" / "such" / "dir" / "rc"))
    assert "cannot open" in ei.value.cause


def test_opening_while_others_insert_never_replaces_the_table(tmp_path: Path) -> None:
    """A process that opens the file while others insert must map the live table, never judge it
    damaged and replace it (which would split the processes onto two tables: double accepts).

    Regression: the open-time scan read a slot's state (EMPTY), then its second word after another
    process had claimed the slot and written it, and took the pair for damage (CI, 2026-11-28)."""
    path = str(tmp_path / "rc")
    first = ShmReplayCache(path, 1 << 20, 300.0, False)
    ready = CTX.Event()
    ps = [CTX.Process(target=_hammer_worker, args=(path, 400_000, 20 + i, ready)) for i in range(2)]
    for p in ps:
        p.start()
    ready.wait(30)
    try:
        for _ in range(60):
            c = ShmReplayCache(path, 1 << 18, 300.0, False)
            assert not c.created and c.started == first.started, "a live table was replaced"
    finally:
        for p in ps:
            p.kill()
            p.join(10)


def _mapping_kib(path: str, field: str) -> int:
    """``field`` (Rss, Size, ...) in KiB of this process's mapping of ``path``, from /proc/self/smaps."""
    cur = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 6 and "-" in head[0] and ":" not in head[0]:
            cur = head[5] if len(head) >= 6 else None
        elif cur == path and line.startswith(field + ":"):
            return int(head[1])
    raise AssertionError(f"{path} is not mapped")


def test_a_table_on_tmpfs_is_mapped_in_whole_at_open() -> None:
    """native/shm.c prefaults a memory file system's table when a process maps it: the first insert into each
    page no longer faults (a fault every few inserts for minutes after a worker starts, in a big table)."""
    path = f"/dev/shm/fastkrb-test-{os.getpid()}.shm"
    try:
        c = ShmReplayCache(path, 200_000, 300.0, False)
        size, rss = _mapping_kib(path, "Size"), _mapping_kib(path, "Rss")
        assert size * 1024 == os.path.getsize(path)
        assert rss == size, (rss, size)
        c.close()
    finally:
        for p in (path, path + ".lock"):
            if os.path.exists(p):
                os.unlink(p)


def test_a_table_on_a_disk_file_system_is_not_prefaulted(tmp_path: Path) -> None:
    """On a disk file system prefaulting would dirty the whole file for writeback (and --check says the file
    belongs on tmpfs): the pages come in as they are used."""
    from fastkrb.sidecar.config import MEMORY_FS, mount_of

    if mount_of(str(tmp_path))[1] in MEMORY_FS:
        pytest.skip("this host's temporary directory is itself on a memory file system")
    path = str(tmp_path / "r.shm")
    c = ShmReplayCache(path, 200_000, 300.0, False)
    assert _mapping_kib(path, "Rss") < _mapping_kib(path, "Size") // 2
    c.close()
