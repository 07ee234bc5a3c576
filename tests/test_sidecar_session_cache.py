"""The sidecar answers opened session cookies in native code (native/sesscache.c, sidecar/sessions.py): byte for
byte as the Python path does, with the same decision lines and counters; never an ended session, never after
its key left the file, never a value that is not exactly the one that opened; anything else is Python's.

Two workers over one key file, one with the native request path and one without (``native_front = false``),
get the same requests at the same fixed clock, as in test_sidecar_front.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from fastkrb import testing
from fastkrb.keytab import Keytab
from fastkrb.sessions.cookie import dump_session_keys, new_session_key, new_session_key_file, parse_session_keys
from fastkrb.sessions.keyfile import write_key_file
from fastkrb.sidecar.app import make_validator
from fastkrb.sidecar.binary import WireHandler
from fastkrb.sidecar.config import ServerConfig
from fastkrb.sidecar.conn import Connection, WorkerContext
from fastkrb.sidecar.engine import Engine
from fastkrb.sidecar.http import HttpHandler
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import Stats
from fastkrb.sidecar.policies import PolicyBook
from fastkrb.sidecar.sessions import SidecarSessions
from support.fake_transport import FakeTransport

NOW = float(int(time.time()))
SPN = "HTTP/api.example.test@EXAMPLE.TEST"


class Worker:
    def __init__(self, cfg: ServerConfig, native: bool, log_path: Path) -> None:
        self.log_path = log_path
        self.log = JsonLog(str(log_path), worker=0)
        self.stats = Stats(0, None)
        self.book = PolicyBook.from_config(cfg)
        self.engine = Engine(make_validator(cfg, Keytab.load(cfg.keytab)), self.stats, self.log, policies=self.book)
        self.loop = asyncio.new_event_loop()
        self.sess = SidecarSessions.from_config(cfg)
        self.ctx = WorkerContext(dataclasses.replace(cfg, native_front=native), self.engine, self.stats, self.log,
                                 self.loop, lambda: {"ready": True}, lambda: b"", wire=WireHandler, http=HttpHandler,
                                 policies=self.book, sessions=self.sess)
        assert self.sess is not None and (self.sess.native is not None) is native
        if native:
            self.ctx.front.fixed_now = NOW

    def run(self, *chunks: bytes) -> tuple[bytes, int]:
        t = FakeTransport()
        c = Connection(self.ctx)
        c.connection_made(t)  # type: ignore[arg-type]
        for ch in chunks:
            c.data_received(ch)
        c.connection_lost(None)
        return b"".join(t.out), t.closed_at

    def records(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        assert self.sess is not None
        self.sess.fold(self.stats)
        self.log.flush()
        lines = []
        for line in self.log_path.read_text().splitlines():
            d = json.loads(line)
            if d.get("event") == "decision":
                d.pop("time")
                d.pop("latency_us")
                lines.append(d)
        return lines, dict(self.stats.via)

    def close(self) -> None:
        self.log.close()
        self.loop.close()


@pytest.fixture(autouse=True)
def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)


@pytest.fixture(scope="module")
def keytab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("sesscache") / "svc.keytab"
    p.write_bytes(testing.make_keytab((SPN,), rng=random.Random(5)).to_bytes())
    return p


@pytest.fixture
def pair(keytab: Path, tmp_path: Path) -> Any:
    made: list[Worker] = []

    def make(**kw: Any) -> tuple[Worker, Worker]:
        keys = tmp_path / "session-keys.json"
        if not keys.exists():
            new_session_key_file(keys)
        cfg = ServerConfig(keytab=str(keytab), socket=None, replay_cache="memory", cold_start=False,
                           session_keys=str(keys), reload_interval=0.001, **kw)
        n = len(made)
        ws = (Worker(cfg, True, tmp_path / f"native-{n}.log"), Worker(cfg, False, tmp_path / f"python-{n}.log"))
        made.extend(ws)
        return ws

    yield make
    for w in made:
        w.close()


_SEQ = iter(range(1, 1 << 30))


def negotiate(keytab: Path, **kw: Any) -> bytes:
    m = testing.mint(Keytab.load(keytab), now=NOW, rng=random.Random(next(_SEQ)), **kw)
    return b"GET /auth HTTP/1.1\r\nHost: sidecar\r\nAuthorization: " + m.header.encode() + b"\r\n\r\n"


def cookie_request(value: str, extra: bytes = b"", target: bytes = b"/auth", cookie: bytes | None = None) -> bytes:
    c = cookie if cookie is not None else b"theme=dark; fastkrb_session=" + value.encode() + b"; _ga=1"
    return b"GET " + target + b" HTTP/1.1\r\nHost: sidecar\r\n" + extra + b"Cookie: " + c + b"\r\n\r\n"


def session_value(w: Worker, other: Worker, keytab: Path, **kw: Any) -> str:
    """A Negotiate to both workers (each has its own replay cache): the cookie ``w`` set."""
    req = negotiate(keytab, **kw)
    out, _ = w.run(req)
    other.run(req)
    head = out.split(b"\r\n\r\n", 1)[0].decode()
    line = next(h for h in head.split("\r\n") if h.startswith("Set-Cookie: fastkrb_session="))
    return line.split("=", 1)[1].split(";", 1)[0]


def same(a: Worker, b: Worker, *chunks: bytes) -> bytes:
    out_n, closed_n = a.run(*chunks)
    out_p, closed_p = b.run(*chunks)
    assert out_n == out_p
    assert closed_n == closed_p
    return out_n


def test_a_cookie_opened_once_is_answered_in_c_alike(pair: Any, keytab: Path) -> None:
    a, b = pair()
    v = session_value(a, b, keytab)
    assert a.sess.native is not None and len(a.sess.native) == 0
    first = same(a, b, cookie_request(v))           # Python opens it, and registers its answer
    assert first.startswith(b"HTTP/1.1 200 OK\r\nX-Remote-User: ") and len(a.sess.native) == 1
    assert a.sess.native.take_hits() == 0
    for extra in (b"", b"X-Forwarded-For: 192.0.2.7, \"x\"\tz\r\n", b"Connection: close\r\n"):
        shut = b"Connection: close\r\n" if extra.startswith(b"Conn") else b""
        assert same(a, b, cookie_request(v, extra)) == first.replace(b"Content-Length", shut + b"Content-Length")
    same(a, b, cookie_request(v, target=b"/auth/some/path?x=1"), cookie_request(v, target=b"/auth?"))
    hits = a.sess.native.take_hits()
    assert hits == 5               # answered in C
    la, va = a.records()
    lb, vb = b.records()
    # the same lines (but time and latency), and counted alike (the hits taken above are folded in at a tick)
    assert la == lb and va["session|accepted|ok"] + hits == vb["session|accepted|ok"] == 6


def test_pac_identity_and_groups_and_pipelining(pair: Any, keytab: Path) -> None:
    a, b = pair(remote_groups="sid")
    v = session_value(a, b, keytab, pac=True)
    one = cookie_request(v)
    out = same(a, b, one)
    assert b"X-Remote-SID: " in out and b"X-Remote-Groups: " in out
    mix = one + cookie_request(v, cookie=b"fastkrb_session=\"" + v.encode() + b"\"") + one + \
        cookie_request(v, b"Authorization: Bearer x\r\n") + one
    for cut in range(0, len(mix), 97):
        same(a, b, mix[:cut], mix[cut:])
    assert a.records() == b.records()


def test_what_the_native_table_leaves_to_python(pair: Any, keytab: Path) -> None:
    a, b = pair()
    v = session_value(a, b, keytab)
    same(a, b, cookie_request(v))
    a.sess.native.take_hits()
    # a character in the middle: the last one may carry only padding bits, and then decodes to the same bytes
    mid = len(v) // 2
    bad = v[:mid] + ("A" if v[mid] != "A" else "B") + v[mid + 1:]
    tampered = cookie_request(bad)
    for req in (tampered,                                                             # 401, and cleared
                cookie_request(v, cookie=b"fastkrb_session=" + bad.encode() + b"; fastkrb_session=" + v.encode()),
                cookie_request(v, b"Cookie: a=b\r\n"),                                 # two Cookie headers
                cookie_request(v, b"Authorization: Negotiate AAAA\r\n"),               # a token: Python decides
                cookie_request(v, cookie=b"xfastkrb_session=" + v.encode()),           # not our name
                cookie_request(v, cookie=b"fastkrb_session =" + v.encode()),
                cookie_request(v, target=b"/auth?allowed_users=alice@EXAMPLE.TEST"),   # a policy
                cookie_request(v, target=b"/healthz"),
                negotiate(keytab)):                                                    # Negotiate: Set-Cookie
        out = same(a, b, req) if b"Negotiate" not in req else a.run(req)[0]
        assert a.sess.native.take_hits() == 0, req
        if req is tampered:
            assert out.startswith(b"HTTP/1.1 401") and b"Set-Cookie: fastkrb_session=; Max-Age=0" in out, out
    out, _ = a.run(negotiate(keytab))
    assert b"Set-Cookie: fastkrb_session=" in out   # with sessions on a Negotiate 200 still sets the cookie


def test_an_ended_session_is_not_answered(pair: Any, keytab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair(session_max_age=60)
    v = session_value(a, b, keytab)
    same(a, b, cookie_request(v))
    assert a.sess.native.end_of(v.encode()) == NOW + 60
    a.ctx.front.fixed_now = NOW + 59
    a.run(cookie_request(v))
    assert a.sess.native.take_hits() == 1
    a.ctx.front.fixed_now = NOW + 60
    out, _ = a.run(cookie_request(v))
    # the table declined it and dropped it; Python's clock (still NOW) held it open and registered it again
    assert a.sess.native.take_hits() == 0 and out.startswith(b"HTTP/1.1 200") and len(a.sess.native) == 1
    monkeypatch.setattr(time, "time", lambda: NOW + 60)
    out, _ = a.run(cookie_request(v))
    assert a.sess.native.take_hits() == 0 and a.sess.native.end_of(v.encode()) is None
    assert out.startswith(b"HTTP/1.1 401") and b"X-Auth-Error: session_expired" in out


def test_a_key_removed_from_the_file_ends_native_answers_at_the_next_tick(pair: Any, keytab: Path,
                                                                         tmp_path: Path) -> None:
    a, b = pair()
    v = session_value(a, b, keytab)
    same(a, b, cookie_request(v))
    assert len(a.sess.native) == 1
    keys = tmp_path / "session-keys.json"
    time.sleep(0.01)
    write_key_file(keys, dump_session_keys([new_session_key(), *parse_session_keys(keys.read_bytes())]))
    time.sleep(0.01)
    a.sess.watch()                   # a rotation (the old key kept): the table is emptied, the cookie still opens
    assert len(a.sess.native) == 0
    same(a, b, cookie_request(v))
    assert len(a.sess.native) == 1
    time.sleep(0.01)
    write_key_file(keys, dump_session_keys(parse_session_keys(keys.read_bytes())[:1]))   # the old key revoked
    time.sleep(0.01)
    a.sess.watch()                   # the worker's tick (app.py _tick)
    assert len(a.sess.native) == 0
    out = same(a, b, cookie_request(v))
    assert out.startswith(b"HTTP/1.1 401") and b"X-Auth-Error: session_invalid" in out
    assert a.sess.native.take_hits() == 0


def test_the_table_is_bounded(pair: Any, keytab: Path) -> None:
    a, b = pair(session_cache=4)
    assert a.sess.native.max_entries == 4
    values = [session_value(a, b, keytab, client=f"u{i}@EXAMPLE.TEST") for i in range(7)]
    for v in values:
        same(a, b, cookie_request(v))
    assert len(a.sess.native) == 4
    for v in values:   # every one answered alike, from C or (evicted) from Python
        same(a, b, cookie_request(v))
    assert len(a.sess.native) == 4
