"""`fastkrb keytab rotate` under load (issue 13's measured target): a real ``fastkrb serve`` keeps accepting a
steady stream of fresh MIT tokens while the CLI rotates the very keytab file it serves, and a reader that loads
the file as fast as it can never finds it missing or half written.

Measured and printed (``-s``) and recorded (``record_property``): requests (all, during the rotation, per
frontend and kvno), failures, reader loops and the keytab versions it saw, the rotation's time (the CLI's own
``seconds``, the subprocess's wall time, and until every worker had reloaded). Against MIT (the realm with
kadmind of test_rotate.py's ``kp_realm`` module fixture, reused as is) and Samba's AD DC (``samba_dc``; a
dedicated account, the CLI run in the DC's namespace).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_rotate
from fastkrb.client import Client
from fastkrb.keytab import Keytab
from support.sidecar import SRC, Sidecar
from test_rotate import KpasswdRealm

kp_realm = test_rotate.kp_realm       # the module fixture: MIT krb5kdc + kadmind serving kpasswd
pytestmark = test_rotate.pytestmark

WORKERS = 2
SENDERS = 2


def _wait(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """A producer thread making MIT initiator tokens (each used once) with the callables in ``sources``, and
    SENDERS threads sending them to the sidecar, alternately over HTTP /auth and the binary protocol."""

    def __init__(self, sc: Sidecar, client: str, source: Callable[[], bytes]) -> None:
        self.sc, self.client = sc, client
        self.sources: list[tuple[str, Callable[[], bytes]]] = [("before", source)]
        self.q: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=64)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.made = 0
        self.sent = 0
        self.accepted: Counter[tuple[str, int]] = Counter()    # (ticket origin, kvno) -> accepted requests
        self.by_frontend: Counter[str] = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._produce, name="tokens", daemon=True)]
        self.threads += [threading.Thread(target=self._send, args=(i,), name=f"sender{i}", daemon=True)
                         for i in range(SENDERS)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.threads[0].join(30)
        for _ in range(SENDERS):
            self.q.put(None)
        for t in self.threads[1:]:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)

    def _produce(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                origin, make = self.sources[n % len(self.sources)]
                tok = make()
                while not self.stop.is_set():
                    try:
                        self.q.put((origin, tok), timeout=0.1)
                        n += 1    # made and queued: every one of them is sent
                        break
                    except queue.Full:
                        continue
            self.made = n
        except Exception as exc:  # a broken producer is a failed run, not a quiet one
            self.made = n
            with self.lock:
                self.failures.append(f"token producer: {type(exc).__name__}: {exc}")

    def _send(self, i: int) -> None:
        client = Client(self.sc.socket)
        k = 0
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                origin, tok = item
                k += 1
                frontend = "http" if (k + i) % 2 else "binary"
                try:
                    if frontend == "http":
                        status, h, body = self.sc.http(
                            "GET", "/auth", {"Authorization": "Negotiate " + base64.b64encode(tok).decode()})
                        if status != 200 or h.get("x-remote-principal") != self.client:
                            raise AssertionError(f"HTTP {status} {h.get('x-remote-principal')}: {body[:300]!r}")
                        kvno = -1
                    else:
                        kvno = client.validate(tok).kvno
                except Exception as exc:
                    with self.lock:
                        self.sent += 1
                        self.failures.append(f"{frontend} {origin}: {type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.sent += 1
                    self.by_frontend[frontend] += 1
                    self.accepted[(origin, kvno)] += 1
        finally:
            client.close()


class Reader:
    """Loads the keytab file in a loop; any moment it is missing or does not parse is recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loops = 0
        self.kvno_sets: Counter[frozenset[int]] = Counter()
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="keytab-reader", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                kt = Keytab.load(self.path)
                if not len(kt):
                    raise AssertionError("empty keytab")
                self.kvno_sets[frozenset(e.kvno for e in kt)] += 1
            except Exception as exc:
                self.problems.append(f"{type(exc).__name__}: {exc}")
            self.loops += 1

    def __enter__(self) -> Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _reloads(sc: Sidecar, kvno: int, spn: str) -> list[dict[str, Any]]:
    return [e for e in sc.events() if e.get("event") == "keytab_reload" and e.get("result") == "ok"
            and e.get("kvnos", {}).get(spn) == kvno]


def _rotate_under_load(label: str, sc: Sidecar, kt: Path, spn: str, client: str, old_token: Callable[[], bytes],
                       rotate_cli: Callable[[], subprocess.CompletedProcess[str]],
                       new_ticket: Callable[[int], Callable[[], bytes]],
                       record_property: Callable[[str, object], None]) -> dict[str, Any]:
    """The load (old tickets), the reader, the CLI rotation; every worker's reload; then tickets obtained after
    the rotation (``new_ticket(new_kvno)`` fetches one and returns its token maker) mixed into the load."""
    old_kvno = max(e.kvno for e in Keytab.load(kt).find(spn))
    load = Load(sc, client, old_token).start()
    try:
        _wait(lambda: load.sent >= 50, "the first requests")
        with Reader(kt) as reader:
            time.sleep(0.3)
            sent_at_rotation = load.sent
            t0 = time.monotonic()
            proc = rotate_cli()
            wall = time.monotonic() - t0
            assert proc.returncode == 0, proc.stderr + proc.stdout
            res = json.loads(proc.stdout)
            new_kvno = res["new_kvno"]
            assert res["old_kvno"] == old_kvno and new_kvno == old_kvno + 1
            # every worker takes the rewritten file (each watches it every 0.2 s)
            _wait(lambda: len({e["worker"] for e in _reloads(sc, new_kvno, spn)}) >= WORKERS,
                  "every worker's reload of the rotated keytab")
            reload_wall = time.monotonic() - t0
            sent_during = load.sent - sent_at_rotation
            time.sleep(0.3)
        new_token = new_ticket(new_kvno)      # a ticket obtained after the rotation, under the new kvno
        load.sources.append(("after", new_token))
        sent_at_switch = load.sent
        _wait(lambda: load.sent >= sent_at_switch + 200, "requests with the new tickets")
    finally:
        load.finish()

    # the direct checks, on the binary client: a ticket from before and one from after, kvnos reported
    with Client(sc.socket) as c:
        assert c.validate(old_token()).kvno == old_kvno
        assert c.validate(new_token()).kvno == new_kvno
    health = json.loads(sc.http("GET", "/healthz")[2])
    assert health["kvnos"][spn] == new_kvno and set(health["kvnos"].values()) == {new_kvno}
    _status, _, metrics = sc.http("GET", "/metrics")
    assert b'fastkrb_keytab_reloads_total{result="ok"}' in metrics
    assert {e.kvno for e in Keytab.load(kt).find(spn)} == {old_kvno, new_kvno}

    accepted_total = sum(load.accepted.values())
    summary = {
        "requests": load.sent, "accepted": accepted_total, "failures": len(load.failures),
        "requests_during_rotation": sent_during,
        "tokens_made": load.made, "http": load.by_frontend["http"], "binary": load.by_frontend["binary"],
        "binary_old_kvno": load.accepted[("before", old_kvno)] + load.accepted[("after", old_kvno)],
        "binary_new_kvno": load.accepted[("after", new_kvno)],
        "reader_loops": reader.loops, "reader_problems": len(reader.problems),
        "reader_kvno_sets": {",".join(map(str, sorted(s))): n for s, n in reader.kvno_sets.items()},
        "rotation_seconds_cli": round(res["seconds"], 4), "rotation_seconds_wall": round(wall, 4),
        "rotation_to_all_workers_reloaded_seconds": round(reload_wall, 4),
    }
    print(f"\nrotation under load ({label}): {json.dumps(summary)}\nsteps: {res['steps']}")
    for k, v in summary.items():
        record_property(k, v)

    assert load.failures == [], load.failures[:10]
    assert reader.problems == [], reader.problems[:10]
    assert accepted_total == load.sent == load.made
    assert sent_during > 0 and reader.loops > 0
    # the reader saw the file before and after, never anything else
    seen = {frozenset(k) for k in reader.kvno_sets}
    assert seen <= {frozenset({old_kvno}), frozenset({old_kvno, new_kvno})}, seen
    assert seen == {frozenset({old_kvno}), frozenset({old_kvno, new_kvno})}, seen
    # binary answers name the kvno: tickets from before accepted under the old key, from after under the new
    assert summary["binary_old_kvno"] > 0 and summary["binary_new_kvno"] > 0
    assert load.accepted[("after", -1)] > 0    # and over HTTP too
    assert load.accepted[("before", new_kvno)] == load.accepted[("after", old_kvno)] == 0
    return res


def test_rotation_under_load_mit(kp_realm: KpasswdRealm, tmp_path: Path,
                                 record_property: Callable[[str, object], None]) -> None:
    r = kp_realm.realm
    spn, kt = kp_realm.new_service(tmp_path, "loaded")
    cc_old = r.kinit(tmp_path / "cc-old")
    r.fetch_ticket(cc_old, spn)               # the ticket from before the rotation, under the old key

    def rotate_cli() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastkrb", "keytab", "rotate", str(kt), "--principal", spn,
                               "--kdc", str(kp_realm.kdc), "--kpasswd-server", str(kp_realm.kp), "--json"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **r.env, "PYTHONPATH": SRC})

    def new_ticket(new_kvno: int) -> Callable[[], bytes]:
        cc_new = r.kinit(tmp_path / "cc-new")
        out = r.run(["kvno", "-c", f"FILE:{cc_new}", spn]).stdout
        assert f"kvno = {new_kvno}" in out, out      # the KDC now issues the new kvno
        return lambda: r.get_token(spn, ccache=cc_new)[0]

    with Sidecar(tmp_path, kt, workers=WORKERS) as sc:
        res = _rotate_under_load("MIT", sc, kt, spn, r.user, lambda: r.get_token(spn, ccache=cc_old)[0],
                                 rotate_cli, new_ticket, record_property)
    assert {e.kvno for e in Keytab.load(kt)} == {res["old_kvno"], res["new_kvno"]}
    assert kp_realm.kdc_kvno(spn) == res["new_kvno"]


def test_rotation_under_load_samba(samba_dc: Any, tmp_path: Path,
                                   record_property: Callable[[str, object], None]) -> None:
    """The same against Samba's AD DC: a user service account with an SPN, rotated by the CLI in the DC's
    namespace; the sidecar outside it (it needs no KDC), tokens from MIT's initiator with the cached tickets."""
    from support import mitgss
    from support import samba_dc as sdc

    dc = samba_dc
    acct, spn = "fk-rotload", f"HTTP/fk-rotload.{sdc.DNS_DOMAIN}"
    db = ["-s", str(dc.smb_conf), "-H", str(dc.sam_ldb)]
    dc.run(["samba-tool", "user", "create", acct, "Fk-RotLoad-Init-1-Passw0rd!", *db])
    dn = f"CN={acct},CN=Users,{sdc.BASE_DN}"
    dc.run(["ldbmodify", "-H", str(dc.sam_ldb)],
           input=f"dn: {dn}\nchangetype: modify\nadd: servicePrincipalName\nservicePrincipalName: {spn}\n-\n"
                 "replace: msDS-SupportedEncryptionTypes\nmsDS-SupportedEncryptionTypes: 24\n")   # AES tickets
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "create", "fk-rotload-pso", "3", "--min-pwd-age=0",
            *db])
    dc.run(["samba-tool", "domain", "passwordsettings", "pso", "apply", "fk-rotload-pso", acct, *db])
    principal = f"{acct}@{sdc.REALM}"
    kt = dc.export_keytab(tmp_path / "rotload.keytab", principal, spn)
    full_spn = f"{spn}@{sdc.REALM}"

    def token_maker(cc: Path) -> Callable[[], bytes]:
        return lambda: mitgss.initiate(full_spn, cc, dc.env)[0]

    cc_old = dc.kinit("bob", ccache=dc.ccache("rotload-old"))
    dc.service_ticket(cc_old, spn)

    def rotate_cli() -> subprocess.CompletedProcess[str]:
        return dc.run([sys.executable, "-m", "fastkrb", "keytab", "rotate", str(kt), "--principal", principal,
                       "--kdc", "127.0.0.1", "--json"], netns=True, env={"PYTHONPATH": SRC}, check=False)

    def new_ticket(new_kvno: int) -> Callable[[], bytes]:
        cc_new = dc.kinit("bob", ccache=dc.ccache("rotload-new"))
        out = dc.run(["kvno", "-c", f"FILE:{cc_new}", spn], netns=True).stdout
        assert f"kvno = {new_kvno}" in out, out
        return token_maker(cc_new)

    with Sidecar(tmp_path, kt, workers=WORKERS) as sc:
        res = _rotate_under_load("Samba AD", sc, kt, full_spn, f"bob@{sdc.REALM}", token_maker(cc_old),
                                 rotate_cli, new_ticket, record_property)
    assert dc.kvno(acct) == res["new_kvno"]
