"""The sidecar's native request path (native/front.c, sidecar.conn's ``ctx.front``) answers byte for byte as the
Python path does: the same requests go through a worker with it and one without it (``native_front = false``),
each with its own validator and replay cache, at the same fixed clock, and the bytes written back, the decision
log lines and the counters are compared. Pipelined mixes are also cut at every byte boundary."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import random
import re
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fastkrb import testing
from fastkrb.keytab import Keytab
from fastkrb.sidecar import protocol
from fastkrb.sidecar.app import make_validator
from fastkrb.sidecar.binary import WireHandler
from fastkrb.sidecar.config import ServerConfig
from fastkrb.sidecar.conn import Connection, WorkerContext
from fastkrb.sidecar.engine import Engine
from fastkrb.sidecar.http import HttpHandler
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import Stats
from fastkrb.sidecar.policies import PolicyBook
from support.fake_transport import FakeTransport
from support.sidecar import Sidecar, recv_all

NOW = float(int(time.time()))
SPN = "HTTP/api.example.test@EXAMPLE.TEST"
CB = b"tls-server-end-point:" + bytes(range(32))


class Worker:
    """One worker's context, with or without the native path, over its own validator and replay cache."""

    def __init__(self, cfg: ServerConfig, native: bool, log_path: Path) -> None:
        self.log_path = log_path
        self.log = JsonLog(str(log_path), worker=0)
        self.stats = Stats(0, None)
        book = PolicyBook.from_config(cfg)
        self.engine = Engine(make_validator(cfg, Keytab.load(cfg.keytab)), self.stats, self.log, policies=book)
        self.decided = 0   # requests the Python path validated (engine.decide)
        decide = self.engine.decide

        def counted(*a: Any, **k: Any) -> Any:
            self.decided += 1
            return decide(*a, **k)

        self.engine.decide = counted  # type: ignore[method-assign]
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.ctx = WorkerContext(dataclasses.replace(cfg, native_front=native), self.engine, self.stats, self.log,
                                 loop, lambda: {"ready": True, "worker": 0}, lambda: b"metrics\n", wire=WireHandler,
                                 http=HttpHandler, policies=book)
        assert (self.ctx.front is not None) is native
        if native:
            self.ctx.front.fixed_now = NOW

    def run(self, chunks: list[bytes], peer: Any = ("127.0.0.1", 5555), timeout: bool = False) -> tuple[bytes, int]:
        t = FakeTransport(peer)
        c = Connection(self.ctx)
        c.connection_made(t)  # type: ignore[arg-type]
        for ch in chunks:
            c.data_received(ch)
        if timeout:
            c.timeout()
        c.connection_lost(None)
        return b"".join(t.out), t.closed_at

    def lines(self) -> list[dict[str, Any]]:
        self.log.flush()
        out = []
        for line in self.log_path.read_text().splitlines():
            d = json.loads(line)
            if d.get("event") == "decision":
                d.pop("time")
                d.pop("latency_us")
                out.append(d)
        return out

    def close(self) -> None:
        if not self.loop.is_closed():
            self.log.close()
            self.loop.close()


@pytest.fixture(autouse=True)
def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python path reads time.time(); the native one NativeFront.fixed_now: the same instant."""
    monkeypatch.setattr(time, "time", lambda: NOW)


@pytest.fixture(scope="module")
def keytab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("front") / "svc.keytab"
    p.write_bytes(testing.make_keytab((SPN,), rng=random.Random(5)).to_bytes())
    return p


def _cfg(keytab: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(keytab=str(keytab), socket=None, replay_cache=kw.pop("replay_cache", "memory"),
                        cold_start=False, **kw)


@pytest.fixture
def pair(keytab: Path, tmp_path: Path) -> Any:
    made: list[Worker] = []

    def make(**kw: Any) -> tuple[Worker, Worker]:
        cfg = _cfg(keytab, **kw)
        n = len(made)
        ws = (Worker(cfg, True, tmp_path / f"native-{n}.log"), Worker(cfg, False, tmp_path / f"python-{n}.log"))
        made.extend(ws)
        return ws

    yield make
    for w in made:
        w.close()


_SEQ = iter(range(1, 1 << 30))


def _mint(keytab: Path, **kw: Any) -> testing.Minted:
    kw.setdefault("now", NOW)
    return testing.mint(Keytab.load(keytab), rng=random.Random(next(_SEQ)), **kw)


def tokens(keytab: Path, tmp: Path) -> dict[str, testing.Minted | bytes]:
    """One token per outcome: accepted in every framing, with and without mutual authentication and a PAC
    identity, and one of each rejection the validator decides in C."""
    other = tmp / "other.keytab"
    other.write_bytes(testing.make_keytab(("HTTP/other.example.test@EXAMPLE.TEST",), rng=random.Random(9)).to_bytes())
    return {
        "ok": _mint(keytab),
        "ok_krb5": _mint(keytab, framing="krb5"),
        "ok_raw": _mint(keytab, framing="raw"),
        "no_mutual": _mint(keytab, gss_flags=("integ",), ap_options=()),
        "delegated": _mint(keytab, gss_flags=("mutual", "deleg"), delegated=b"\x76\x03\x02\x01\x05"),
        "escaped_name": _mint(keytab, client="we\\/ird\x01name@EXAMPLE.TEST"),
        "pac_identity": _mint(keytab, pac=True),
        "bindings": _mint(keytab, channel_bindings=CB),
        "skewed": _mint(keytab, now=NOW - 3600),
        "expired": _mint(keytab, authtime=int(NOW) - 90000, endtime=int(NOW) - 7200),
        "wrong_principal": testing.mint(Keytab.load(other), now=NOW, rng=random.Random(4)),
        "malformed": b"\x60\x82\x01\x00garbage",
        "ntlm": b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(32),
        "empty": b"",
    }


def _raw(t: testing.Minted | bytes) -> bytes:
    return t if isinstance(t, bytes) else t.token_bytes


def _b64(t: testing.Minted | bytes) -> bytes:
    return (t.header if isinstance(t, testing.Minted) else "Negotiate " + base64.b64encode(t).decode()).encode()


_ACC = struct.Struct(">HHIIIBddddfHHHHBH")
_WWW = re.compile(rb"(WWW-Authenticate: Negotiate )([A-Za-z0-9+/=]+)")


def _mask_acc(acc: bytes) -> bytes:
    f = list(_ACC.unpack_from(acc))
    head = _ACC.size + sum(f[-6:-1])
    f[-1] = 1 if f[-1] else 0
    return _ACC.pack(*f) + acc[_ACC.size:head] + (b"R" if f[-1] else b"")


def _mask_wire(out: bytes) -> bytes:
    """The AP-REP in every ACCEPTED / ACCEPTED_EX replaced by one byte: its encryption has a random confounder
    and its sequence number is random (so even its DER length varies); two validations of one token never give
    the same bytes there. Whether it is there must match."""
    frames = []
    off = 0
    while len(out) - off >= 9:
        n, kind, rid = protocol.HEADER.unpack_from(out, off)
        if len(out) - off - 4 < n:
            break
        payload = out[off + 9:off + 4 + n]
        if kind == protocol.ACCEPTED:
            payload = _mask_acc(payload)
        elif kind == protocol.ACCEPTED_EX:
            (k,) = struct.unpack_from(">I", payload)
            acc = _mask_acc(payload[4:4 + k])
            payload = struct.pack(">I", len(acc)) + acc + payload[4 + k:]
        frames.append(protocol.HEADER.pack(5 + len(payload), kind, rid) + payload)
        off += 4 + n
    return b"".join(frames) + out[off:]


def _mask_http(out: bytes) -> bytes:
    return _WWW.sub(lambda m: m.group(1) + b"R", out)


def _mask(out: bytes) -> bytes:
    return _mask_wire(out) if out[:1] == b"\x00" else _mask_http(out)


def _same(a: Worker, b: Worker, chunks: list[bytes], **kw: Any) -> bytes:
    out_n, closed_n = a.run(chunks, **kw)
    out_p, closed_p = b.run(chunks, **kw)
    assert _mask(out_n) == _mask(out_p)
    # closed after the same answers, or neither
    assert (closed_n < 0) == (closed_p < 0)
    if closed_n >= 0:
        assert _mask(out_n[:closed_n]) == _mask(out_p[:closed_p])
    return out_n


def _compare_records(a: Worker, b: Worker) -> None:
    """The decision log lines (but their time and latency) and the counters are the same too."""
    assert a.lines() == b.lines()
    sa, sb = a.stats.snapshot(), b.stats.snapshot()
    assert sa["decisions"] == sb["decisions"]
    assert sa["events"] == sb["events"]
    assert sa["skew"] == sb["skew"]
    assert sum(sa["latency"]["counts"]) == sum(sb["latency"]["counts"])


# -- binary ---------------------------------------------------------------------------------------------

def test_wire_each_outcome_alone(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair()
    toks = tokens(keytab, tmp_path)
    kinds = []
    for i, (name, t) in enumerate(toks.items()):
        cb = CB if name == "bindings" else None
        out = _same(a, b, [protocol.encode_validate(i + 1, _raw(t), cb)])
        kinds.append((name, out[4]))
    ok = toks["ok"]
    assert isinstance(ok, testing.Minted)
    fresh = ok.again(now=NOW)
    rep = protocol.decode_accepted(_same(a, b, [protocol.encode_validate(98, _raw(fresh))])[9:])
    assert rep.response_token is not None
    fresh.verify_ap_rep(rep.response_token)   # the native path's AP-REP is the client's to verify
    out = _same(a, b, [protocol.encode_validate(99, _raw(toks["ok"]))])   # a replay
    assert protocol.decode_rejected(out[9:]).code == "replay"
    got = dict(kinds)
    for name in ("ok", "ok_krb5", "ok_raw", "no_mutual", "delegated", "escaped_name", "pac_identity", "bindings"):
        assert got[name] == protocol.ACCEPTED, name
    for name in ("skewed", "expired", "wrong_principal", "malformed", "ntlm", "empty"):
        assert got[name] == protocol.REJECTED, name
    assert a.decided == 0   # every one of them was validated by the native path
    _compare_records(a, b)


def test_wire_validate_ex_ping_and_policies(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair(policies={"staff": {"allowed_users": ["bob"]}})
    toks = tokens(keytab, tmp_path)
    frames = [
        protocol.encode_validate_ex(1, _raw(toks["ok"]), None, "", 0),
        protocol.encode_validate_ex(2, _raw(toks["pac_identity"]), None, "", protocol.WANT_IDENTITY),
        protocol.encode_validate_ex(3, _raw(toks["no_mutual"]), None, "", protocol.WANT_IDENTITY),
        protocol.encode_validate_ex(4, _raw(toks["bindings"]), CB, "", protocol.WANT_IDENTITY),
        protocol.encode_validate_ex(5, _raw(toks["ok_krb5"]), None, "policy=staff", protocol.WANT_IDENTITY),
        protocol.encode_validate_ex(6, _raw(toks["ok_raw"]), None, "policy=nope", 0),
        protocol.encode_validate_ex(7, _raw(toks["skewed"]), None, "", 0),
        protocol.encode_ping(8),
        protocol.encode_validate(9, _raw(toks["ok"])),   # a replay
    ]
    out = _same(a, b, [b"".join(frames)])
    kinds = [k for k, _, _ in protocol.iter_frames(out, 1 << 20)]
    assert kinds == [0x84, 0x84, 0x84, 0x84, 0x82, 0x82, 0x82, 0x83, 0x82]
    assert a.decided == 1   # the policy's frame; the unknown policy is refused before validation
    _compare_records(a, b)


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x02\x01\x00\x00\x00\x01",            # length below 5
                                 b"\x00\x00\x00\x05\x09\x00\x00\x00\x07",            # unknown kind
                                 b"\x00\x00\x00\x07\x01\x00\x00\x00\x03\x00\x09",    # bindings past the frame
                                 b"\x00\x00\x00\x06\x03\x00\x00\x00\x03\x00",        # VALIDATE_EX too short
                                 b"\x00\xff\xff\xff"])                               # partial, too long
def test_wire_protocol_errors_after_answers(pair: Any, keytab: Path, tmp_path: Path, bad: bytes) -> None:
    a, b = pair()
    toks = tokens(keytab, tmp_path)
    good = protocol.encode_validate(1, _raw(toks["ok"])) + protocol.encode_validate(2, _raw(toks["malformed"]))
    out = _same(a, b, [good + bad + protocol.encode_validate(3, _raw(toks["ok_raw"]))])
    assert [k for k, _, _ in protocol.iter_frames(out, 1 << 20)] == [0x81, 0x82, 0x8F]
    _compare_records(a, b)


def test_wire_pipelined_split_at_every_byte(pair: Any, keytab: Path, tmp_path: Path) -> None:
    """Two frames (an acceptance and a rejection) cut in two at every byte: the answers never change."""
    a, b = pair(replay_cache="none")   # the same tokens are valid on every run
    toks = tokens(keytab, tmp_path)
    stream = (protocol.encode_validate(1, _raw(toks["ok"])) + protocol.encode_validate(2, _raw(toks["malformed"]))
              + protocol.encode_validate_ex(3, _raw(toks["no_mutual"]), None, "", protocol.WANT_IDENTITY))
    want = _same(a, b, [stream])
    assert [k for k, _, _ in protocol.iter_frames(want, 1 << 20)] == [0x81, 0x82, 0x84]
    for i in range(1, len(stream)):
        out, closed = a.run([stream[:i], stream[i:]])
        assert (_mask(out), closed) == (_mask(want), -1), i   # never closed
    assert a.decided == 0


def test_wire_partial_frame_times_out_alike(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair()
    toks = tokens(keytab, tmp_path)
    frame = protocol.encode_validate(1, _raw(toks["ok"]))
    out = _same(a, b, [frame + frame[:20]], timeout=True)
    assert out.endswith(protocol.encode_protocol_error(0, "request not complete within the timeout"))


# -- HTTP -----------------------------------------------------------------------------------------------

def _get(auth: bytes | None, path: bytes = b"/auth", version: bytes = b"1.1", extra: bytes = b"",
         method: bytes = b"GET") -> bytes:
    head = method + b" " + path + b" HTTP/" + version + b"\r\nHost: sidecar\r\n" + extra
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    return head + b"\r\n"


def nginx_request(auth: bytes) -> bytes:
    """What nginx's auth_request sends for a browser's page request: its ~15 forwarded headers and the token."""
    return (b"GET /auth HTTP/1.1\r\n"
            b"Host: app.example.test\r\n"
            b"X-Original-URI: /reports/2026/q4?view=summary&sort=desc\r\n"
            b"X-Original-Method: GET\r\n"
            b"X-Forwarded-For: 192.0.2.17\r\n"
            b"X-Forwarded-Proto: https\r\n"
            b"Connection: keep-alive\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            b"Chrome/131.0.0.0 Safari/537.36\r\n"
            b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
            b"Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
            b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
            b"Referer: https://app.example.test/reports/2026/q3\r\n"
            b"Cookie: session=6f1c0b2a9e4d4f0b8a1e2d3c4b5a6978; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n"
            b"sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
            b"sec-ch-ua-mobile: ?0\r\n"
            b"sec-ch-ua-platform: \"Linux\"\r\n"
            b"Upgrade-Insecure-Requests: 1\r\n"
            b"Authorization: " + auth + b"\r\n\r\n")


def test_http_each_outcome_alone(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair()
    toks = tokens(keytab, tmp_path)
    statuses = {}
    for name, t in toks.items():
        if name == "bindings":
            continue   # HTTP has no channel bindings: the token says it wants some, the acceptor has none
        statuses[name] = _same(a, b, [_get(_b64(t))])[9:12]
    assert _same(a, b, [_get(_b64(toks["ok"]))])[9:12] == b"401"   # a replay
    for name in ("ok", "ok_krb5", "ok_raw", "no_mutual", "delegated", "escaped_name", "pac_identity"):
        assert statuses[name] == b"200", name
    for name in ("skewed", "expired", "wrong_principal", "malformed", "ntlm"):
        assert statuses[name] == b"401", name
    assert statuses["empty"] == b"401"   # "Negotiate " and nothing: no token, answered by Python's path
    assert a.decided == 0
    _compare_records(a, b)


def test_http_nginx_request_and_variants(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair()
    m = [_mint(keytab) for _ in range(10)]
    out = _same(a, b, [nginx_request(_b64(m[0]))])
    assert out.startswith(b"HTTP/1.1 200 OK\r\nX-Remote-User: alice\r\n")
    assert b"WWW-Authenticate: Negotiate " in out and b"Connection: close" not in out
    for req in (_get(_b64(m[1]), method=b"HEAD"),
                _get(_b64(m[2]), path=b"/auth/some/app/path?x=1"),          # Envoy's path_prefix, query not read
                _get(_b64(m[3]), version=b"1.0"),                           # HTTP/1.0: closes
                _get(_b64(m[4]), version=b"1.0", extra=b"Connection: keep-alive\r\n"),
                _get(_b64(m[5]), extra=b"Connection: close\r\n"),
                _get(_b64(m[6]), extra=b"X-Forwarded-For: 198.51.100.7, \xe9t\xe9\r\n"),   # obs-text: Python's
                _get(_b64(m[7]), extra=b"X-Forwarded-For: 203.0.113.9\r\nContent-Length: 0\r\n"),
                _get(b"negotiate " + _b64(m[8])[10:]),                      # the scheme is case-blind
                _get(b"Negotiate  " + _b64(m[9])[10:])):                    # two spaces: Python's reader
        _same(a, b, [req])
    assert a.decided == 2   # the obs-text head and the two-space token
    _compare_records(a, b)


def test_http_heads_left_to_python(pair: Any, keytab: Path, tmp_path: Path) -> None:
    """Every head the native reader does not take is answered by httptools exactly as before."""
    a, b = pair(policies={"staff": {"allowed_users": ["alice"]}}, max_request_size=4096)
    m = iter([_mint(keytab) for _ in range(12)])
    cases = [
        _get(None),                                                     # no token: 401 challenge
        _get(b"Basic YWxpY2U6c2VjcmV0"),
        _get(None, path=b"/healthz"),
        _get(None, path=b"/nope"),
        _get(_b64(next(m)), path=b"/auth?policy=staff"),
        _get(_b64(next(m)), path=b"/auth/policy/staff/x"),
        _get(_b64(next(m)), path=b"/auth?policy=missing"),
        _get(_b64(next(m)), extra=b"Authorization: Negotiate AAAA\r\n"),   # two Authorization headers
        _get(_b64(next(m)), method=b"POST", extra=b"Content-Length: 3\r\n") + b"abc",
        _get(_b64(next(m)), extra=b"Transfer-Encoding: chunked\r\n") + b"3\r\nabc\r\n0\r\n\r\n",
        _get(_b64(next(m)), extra=b"Expect: 100-continue\r\n"),
        _get(_b64(next(m)), extra=b"Upgrade: websocket\r\nConnection: upgrade\r\n"),
        _get(_b64(next(m)), extra=b"Bad Header : x\r\n"),
        _get(_b64(next(m)), extra=b"X-Long: " + b"a" * 5000 + b"\r\n"),
        _get(_b64(next(m)), path=b"/auth#frag"),
        b"GET /auth HTTP/1.1\nHost: x\n\n",                              # bare LF
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",                 # TLS to a plain port
        b"BREW /auth HTTP/1.1\r\n\r\n",
        b"GET /auth HTTP/2.0\r\n\r\n",
    ]
    for req in cases:
        _same(a, b, [req])
        _same(a, b, [req, _get(None, path=b"/healthz")])   # and what follows it on the connection
    _compare_records(a, b)


def test_http_pipelined_mix_split_at_every_byte(pair: Any, keytab: Path, tmp_path: Path) -> None:
    a, b = pair(replay_cache="none")
    toks = tokens(keytab, tmp_path)
    stream = (_get(_b64(toks["ok"])) + _get(_b64(toks["malformed"])) + _get(None, path=b"/healthz")
              + nginx_request(_b64(toks["no_mutual"])) + _get(_b64(toks["ok_raw"]), extra=b"Connection: close\r\n")
              + _get(_b64(toks["ok_krb5"])))   # after the close: never answered
    want = _same(a, b, [stream])
    # the fifth closes the connection; what follows it is answered 400 (llhttp: data after Connection: close)
    assert want.count(b"Content-Length: ") == 6 and want.count(b" 200 OK") == 4   # /healthz too
    for i in range(1, len(stream)):
        _same(a, b, [stream[:i], stream[i:]])
    tail = len(stream) - len(_get(_b64(toks["ok_krb5"])))
    before = a.decided
    _same(a, b, [stream[:tail], stream[tail:]])
    assert a.decided == before   # cut after the closing request: nothing went to Python's path


def test_http_partial_head_times_out_alike(pair: Any, keytab: Path) -> None:
    a, b = pair()
    out = _same(a, b, [b"GET /auth HTTP/1.1\r\nHost: x\r\n"], timeout=True)
    assert out.startswith(b"HTTP/1.1 408 ")


def test_http_draining_closes_after_the_answer(pair: Any, keytab: Path) -> None:
    a, b = pair()
    m = _mint(keytab)
    a.ctx.draining = b.ctx.draining = True
    out = _same(a, b, [_get(_b64(m)) + _get(None, path=b"/healthz")])
    assert b"Connection: close\r\n" in out and out.count(b"HTTP/1.1") == 1


def test_log_numbers_read_as_python_writes_them(pair: Any, keytab: Path) -> None:
    """front.c writes a line's skew without printf (exact binary value, rounded half to even): the text is
    Python's f"{skew:.3f}", for skews across the window, ties in binary, and the sign of a skew that rounds to
    zero (-0.000). Compared as text: json.loads would read -0.000 and 0.000 alike."""
    a, b = pair()
    rng = random.Random(11)
    offsets = [0.0, 0.0625, -0.0625, 0.03125, -0.03125, 0.0005, -0.0005, 0.0004, -0.0004, 0.0015, -0.0015,
               0.0025, 1.0005, -1.0005, 299.9995, -299.9995, 0.999999, -0.999999, 0.000001, -0.000001]
    offsets += [rng.uniform(-299, 299) for _ in range(120)] + [rng.randrange(-2**12, 2**12) / 2**13 for _ in range(60)]
    base = _mint(keytab)
    toks = []
    for off in offsets:   # the authenticator's time NOW + off, to the microsecond (ctime, cusec)
        c, u = divmod(round(off * 1e6), 1_000_000)
        toks.append(base.again(ctime=int(NOW) + c, cusec=u, rng=rng))
    frames = [protocol.encode_validate(i + 1, _raw(t)) for i, t in enumerate(toks)]
    _same(a, b, [b"".join(frames[i:i + 20]) for i in range(0, len(frames), 20)])   # each chunk within BUDGET

    def text(w: Worker) -> list[str]:
        w.log.flush()
        lines = [x for x in w.log_path.read_text().splitlines() if json.loads(x).get("event") == "decision"]
        return [re.sub(r'"latency_us":[-0-9.]+', "", re.sub(r'"time":"[^"]*"', "", x)) for x in lines]

    native, python = text(a), text(b)
    assert len(native) == len(offsets) and native == python
    skews = [re.search(r'"skew":(-?[0-9.]+)', x).group(1) for x in native]   # type: ignore[union-attr]
    assert "-0.000" in skews and "0.000" in skews and all(re.fullmatch(r"-?[0-9]+\.[0-9]{3}", x) for x in skews)


def test_native_lines_keep_their_order_and_survive_close(pair: Any, keytab: Path, tmp_path: Path) -> None:
    """Accepted lines wait in C; a rejection's line (Python's) comes after them, and close() writes them all."""
    a, _ = pair()
    toks = tokens(keytab, tmp_path)
    a.run([protocol.encode_validate(1, _raw(toks["ok"])) + protocol.encode_validate(2, _raw(toks["malformed"]))
           + protocol.encode_validate(3, _raw(toks["ok_raw"]))])
    assert a.ctx.front.log_lines == 1   # the third one; the first was taken before the rejection's line
    a.close()
    lines = [json.loads(x) for x in a.log_path.read_text().splitlines()]
    assert [(d["outcome"], d["code"]) for d in lines] == [("accepted", "ok"), ("rejected", "malformed"),
                                                          ("accepted", "ok")]
    assert lines[0]["peer"] == "127.0.0.1:5555" and lines[2]["frontend"] == "wire"


# -- a real daemon ----------------------------------------------------------------------------------------

def test_daemon_counts_logs_and_drains_native_decisions(tmp_path: Path, keytab: Path) -> None:
    """A real `fastkrb serve`: /metrics counts what the native path accepted (binary and HTTP), and SIGTERM in
    the middle of a pipelined batch loses no decision line."""
    sc = Sidecar(tmp_path, keytab).start()
    try:
        # minted once the daemon is up: an authenticator from before its replay cache started is refused for the
        # first clock_skew seconds (RFC 4120 §3.2.3), and a start on a busy machine can take more than a second.
        # time.time is this module's fixed clock; the daemon's is not
        wall = time.clock_gettime(time.CLOCK_REALTIME) + 1
        m = testing.mint(Keytab.load(keytab), now=wall, rng=random.Random(21))
        toks = m.variants(2300, now=wall)
        s = sc.connect()
        s.sendall(b"".join(protocol.encode_validate(i + 1, t) for i, t in enumerate(toks[:200])))
        got = b""
        while len(protocol.split_frames(got, 1 << 20)[0]) < 200:
            got += s.recv(65536)
        s.close()
        assert {k for k, _, _ in protocol.iter_frames(got, 1 << 20)} == {protocol.ACCEPTED}
        for t in toks[200:300]:
            status, _, _ = sc.http("GET", "/auth", {"Authorization": "Negotiate " + base64.b64encode(t).decode()})
            assert status == 200
        status, _, body = sc.http("GET", "/metrics")
        assert status == 200
        assert b'fastkrb_decisions_total{code="ok",outcome="accepted"} 300.0' in body
        assert b"fastkrb_validation_seconds_count 300.0" in body
        assert b"fastkrb_clock_skew_seconds_count 300.0" in body
        s = sc.connect()
        rest = b"".join(protocol.encode_validate(i + 1, t) for i, t in enumerate(toks[300:]))
        sender = threading.Thread(target=s.sendall, args=(rest,))   # the server pushes back: read meanwhile
        sender.start()
        first = s.recv(65536)
        sc.signal(signal.SIGTERM)   # while most of the batch is still unread or unanswered
        data = first + recv_all(s)
        sender.join(30)
        s.close()
        assert [k for k, _, _ in protocol.iter_frames(data, 1 << 20)].count(protocol.ACCEPTED) == 2000
    finally:
        assert sc.stop() == 0
    decisions = [e for e in sc.events() if e.get("event") == "decision"]
    assert len(decisions) == 2300 and all(e["outcome"] == "accepted" for e in decisions)
    assert sum(e["frontend"] == "http" for e in decisions) == 100
