"""Load generator for ``fastkrb serve``: a separate process that drives one sidecar socket.

Tokens are minted with fastkrb.testing from the sidecar's keytab before the clock starts (distinct, valid
ones: a replay cache accepts each once), so the measurement is the sidecar's, not the minter's.

    python -m fastkrb.capacity.loadgen --socket S --keytab KT --mode wire --connections 4 --depth 64 --seconds 5
    python -m fastkrb.capacity.loadgen ... --mode http --connections 64 --seconds 5    # keep-alive, 1 in flight
    python -m fastkrb.capacity.loadgen ... --mode http --shape nginx ...               # nginx's full subrequest
    python -m fastkrb.capacity.loadgen ... --mode wire --rate 25000 --seconds 5        # open loop: latency
    python -m fastkrb.capacity.loadgen ... --mode garbage-wire --seconds 5             # flood of malformed tokens
    python -m fastkrb.capacity.loadgen ... --mode cookie-http --shape nginx ...        # a session cookie, no token

Closed loop (default) keeps ``depth`` requests in flight on each connection and reports throughput; open
loop (``--rate``) sends at a fixed rate, spread over the connections, and reports latency percentiles.
Output: one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import random
import socket
import time
from typing import Any

from fastkrb.capacity.stats import latency_stats
from fastkrb.sidecar import protocol


def make_tokens(keytab: str, n: int, client: str, framing: str = "spnego") -> list[bytes]:
    """``n`` distinct valid tokens (raw bytes), minted now (+1 s, so a cold-start cache takes them)."""
    from fastkrb.keytab import Keytab
    from fastkrb.testing import mint

    kt = Keytab.load(keytab)
    out: list[bytes] = []
    t = time.time() + 1
    m = mint(kt, client=client, framing=framing, now=t)  # type: ignore[arg-type]
    while len(out) < n:
        k = min(800_000, n - len(out))
        out += m.variants(k, now=t)
        t += 1
    return out


def garbage_tokens(n: int, size: int = 600) -> list[bytes]:
    rnd = random.Random(7)
    return [bytes(rnd.getrandbits(8) for _ in range(16)) * (size // 16) for _ in range(min(n, 64))] * (n // 64 + 1)


def wire_frames(tokens: list[bytes]) -> list[tuple[int, bytes]]:
    return [(i + 1, protocol.encode_validate(i + 1, t)) for i, t in enumerate(tokens)]


#: What nginx's auth_request sends for a browser's page request (deploy/nginx/fastkrb.conf): the headers of the
#: original request it forwards (a current Chrome's), its own X-Original-URI and the browser's token.
NGINX_HEAD = (b"GET /auth HTTP/1.1\r\n"
              b"Host: app.example.test\r\n"
              b"X-Original-URI: /reports/2026/q4?view=summary&sort=desc\r\n"
              b"X-Forwarded-For: 192.0.2.17\r\n"
              b"Connection: keep-alive\r\n"
              b"sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
              b"sec-ch-ua-mobile: ?0\r\n"
              b"sec-ch-ua-platform: \"Linux\"\r\n"
              b"Upgrade-Insecure-Requests: 1\r\n"
              b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              b"Chrome/131.0.0.0 Safari/537.36\r\n"
              b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,"
              b"*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n"
              b"Sec-Fetch-Site: same-origin\r\n"
              b"Sec-Fetch-Mode: navigate\r\n"
              b"Sec-Fetch-Dest: document\r\n"
              b"Referer: https://app.example.test/reports/2026/q3\r\n"
              b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
              b"Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
              b"Cookie: session=6f1c0b2a9e4d4f0b8a1e2d3c4b5a6978; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n")


def session_cookie(a: argparse.Namespace) -> str:
    """``name=value`` of the session cookie the sidecar sets for one accepted token (it needs session_keys)."""
    token = make_tokens(a.keytab, 1, a.client)[0]
    head = b"GET /auth HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\nAuthorization: Negotiate " + \
        base64.b64encode(token) + b"\r\n\r\n"
    if a.tcp:
        host, _, port = a.tcp.rpartition(":")
        s = socket.create_connection((host, int(port)), timeout=10)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(a.socket)
    with s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            return line[11:].split(b";", 1)[0].strip().decode()
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    raise SystemExit(f"cookie-http: the sidecar at {a.socket or a.tcp} set no session cookie ({status}); start it "
                     "with --session-keys FILE")


def cookie_requests(cookie: str, n: int, shape: str = "minimal") -> list[tuple[int, bytes]]:
    """``n`` requests that carry ``cookie`` (``name=value``) and no Authorization; for ``nginx`` beside the
    browser's other cookies in NGINX_HEAD's Cookie header."""
    if shape == "nginx":
        head = NGINX_HEAD.replace(b"Cookie: ", b"Cookie: " + cookie.encode() + b"; ", 1) + b"\r\n"
    else:
        head = b"GET /auth HTTP/1.1\r\nHost: sidecar\r\nX-Original-URI: /api/things\r\nCookie: " + \
            cookie.encode() + b"\r\n\r\n"
    return [(i + 1, head) for i in range(n)]


def http_requests(tokens: list[bytes], shape: str = "minimal") -> list[tuple[int, bytes]]:
    """``minimal``: the three headers a hand-written client sends; ``nginx``: NGINX_HEAD's nineteen."""
    head = NGINX_HEAD if shape == "nginx" else b"GET /auth HTTP/1.1\r\nHost: sidecar\r\nX-Original-URI: /api/things\r\n"
    return [(i + 1, head + b"Authorization: Negotiate " + base64.b64encode(t) + b"\r\n\r\n")
            for i, t in enumerate(tokens)]


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.done = 0
        self.codes: dict[str, int] = {}
        self.lat: list[float] = []
        self.record = False
        self.first_error = ""   # the first answer that was not an acceptance, as the sidecar worded it
        self.dry = False        # a connection had nothing left to send while recording: the figures undercount


class _Base(asyncio.Protocol):
    def __init__(self, st: Stats, work: list[tuple[int, bytes]], depth: int, open_loop: bool) -> None:
        self.st = st
        self.work = work
        self.depth = depth
        self.open_loop = open_loop
        self.t: asyncio.Transport | None = None
        self.sent_at: dict[int, float] = {}
        self.fifo: list[float] = []   # HTTP: send times in order
        self.fpos = 0
        self.buf = b""
        self.inflight = 0
        self.stopped = False
        self.closed = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, k: int) -> None:
        if self.t is None or self.stopped or self.t.is_closing():
            return
        chunk = []
        now = time.perf_counter()
        for _ in range(k):
            if not self.work:   # before the window closed (stopped is set after it): every figure undercounts
                self.st.dry = True
                break
            rid, frame = self.work.pop()
            chunk.append(frame)
            self.sent_at[rid] = now
            self.fifo.append(now)
        if chunk:
            self.inflight += len(chunk)
            self.st.sent += len(chunk)
            self.t.write(b"".join(chunk))

    def answered(self, rid: int | None, code: str) -> None:
        st = self.st
        st.done += 1
        self.inflight -= 1
        st.codes[code] = st.codes.get(code, 0) + 1
        if st.record:
            t0 = self.sent_at.pop(rid, None) if rid is not None else self.fifo[self.fpos]
            if t0 is not None:
                st.lat.append(time.perf_counter() - t0)
        elif rid is not None:
            self.sent_at.pop(rid, None)
        if rid is None:
            self.fpos += 1
            if self.fpos > 4096:
                del self.fifo[:self.fpos]
                self.fpos = 0


def _wire_error(kind: int, payload: bytes) -> str:
    if kind == protocol.REJECTED:
        try:
            r = protocol.decode_rejected(payload)
        except ValueError:   # a FrameError, bad UTF-8 or JSON
            return "rejected (undecodable REJECTED frame)"
        return f"{r.code}: {r.cause}"
    return f"answer kind 0x{kind:02x}: {payload[:200].decode(errors='replace')}"


def _http_error(response: bytes, head_len: int) -> str:
    head, body = response[:head_len].decode(errors="replace"), response[head_len + 4:]
    status = head.split("\r\n", 1)[0]
    code = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
                 if ln.lower().startswith("x-auth-error:")), "")
    try:
        cause = json.loads(body).get("cause", "")
    except ValueError:
        cause = body[:200].decode(errors="replace")
    return f"{status}" + (f" {code}" if code else "") + (f": {cause}" if cause else "")


class WireLoad(_Base):
    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, used, _err = protocol.split_frames(buf, 1 << 20)
        for kind, rid, a, b in frames:
            if kind != protocol.ACCEPTED and not self.st.first_error:
                self.st.first_error = _wire_error(kind, buf[a:b])
            self.answered(rid, "accepted" if kind == protocol.ACCEPTED else ("rejected" if kind == protocol.REJECTED
                                                                          else f"kind{kind}"))
        self.buf = buf[used:]
        if not self.open_loop and frames:
            self.send(len(frames))


class HttpLoad(_Base):
    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        n = 0
        while True:
            he = buf.find(b"\r\n\r\n", pos)
            if he < 0:
                break
            cl = buf.find(b"Content-Length: ", pos, he)
            clen = int(buf[cl + 16:buf.find(b"\r\n", cl, he + 2)]) if cl >= 0 else 0
            end = he + 4 + clen
            if end > len(buf):
                break
            status = buf[pos + 9:pos + 12].decode()
            if status != "200" and not self.st.first_error:
                self.st.first_error = _http_error(buf[pos:end], he - pos)
            self.answered(None, status)
            pos = end
            n += 1
        self.buf = buf[pos:]
        if not self.open_loop and n:
            self.send(n)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    total = int((a.rate or a.expect) * (a.seconds + a.warmup) * 1.2) + a.connections * a.depth
    t_mint = time.perf_counter()
    if a.mode == "cookie-http":   # one session, sent again and again (a cookie is no one-time token)
        work = cookie_requests(session_cookie(a), total, a.shape)
    else:
        if a.mode.startswith("garbage"):
            tokens = garbage_tokens(total)[:total]
        else:
            tokens = make_tokens(a.keytab, total, a.client)
        work = http_requests(tokens, a.shape) if a.mode.endswith("http") else wire_frames(tokens)
        del tokens
    t_mint = time.perf_counter() - t_mint
    per = [work[i::a.connections] for i in range(a.connections)]
    for w in per:
        w.reverse()  # pop() from the end = in order
    st = Stats()
    cls = HttpLoad if a.mode.endswith("http") else WireLoad
    conns: list[_Base] = []
    for i in range(a.connections):
        factory = functools.partial(cls, st, per[i], a.depth, bool(a.rate))
        p: _Base
        if a.tcp:
            host, _, port = a.tcp.rpartition(":")
            _, p = await loop.create_connection(factory, host, int(port))
            p.t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        else:
            _, p = await loop.create_unix_connection(factory, a.socket)
        conns.append(p)
    if a.rate:
        # open loop: every millisecond, send what the schedule says is due, spread over the connections
        # (one write per connection per tick, as a busy proxy batches)
        tick = 0.001
        t_start = time.perf_counter()
        t_end = t_start + a.warmup + a.seconds
        t_rec = t_start + a.warmup
        sent = 0
        ci = 0
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if not st.record and now >= t_rec:
                st.record = True
                st.lat.clear()
                done0, t0 = st.done, now
            due = int((now - t_start) * a.rate) - sent
            if due > 0:
                each, extra = divmod(due, len(conns))
                for j in range(len(conns)):
                    n = each + (1 if (ci + j) % len(conns) < extra else 0)
                    if n:
                        conns[j].send(n)
                ci += extra
                sent += due
            await asyncio.sleep(tick)
        await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - t0
        done = st.done - done0
    else:
        for c in conns:
            c.send(a.depth)
        await asyncio.sleep(a.warmup)
        done0, t0 = st.done, time.perf_counter()
        st.record = True
        await asyncio.sleep(a.seconds)
        done, elapsed = st.done - done0, time.perf_counter() - t0
        st.record = False
    for c in conns:
        c.stopped = True
        if c.t is not None:
            c.t.close()
    # every latency figure from the same samples (the measured window), so they agree with each other;
    # rounding is monotone, so it keeps their order
    lat = latency_stats(st.lat, to_us=1e6)

    def us(x: float) -> float | None:
        return round(x, 1) if lat.n else None

    return {"mode": a.mode, "connections": a.connections, "depth": a.depth, "rate": a.rate, "seconds": a.seconds,
            "throughput": round(done / elapsed), "measured": done, "elapsed": round(elapsed, 4), "answers": st.codes,
            "sent": st.sent, "first_error": st.first_error, "exhausted": st.dry,
            "latency_us": {"min": us(lat.min_us), "mean": us(lat.mean_us), "p50": us(lat.p50_us),
                           "p90": us(lat.p90_us), "p99": us(lat.p99_us), "max": us(lat.max_us), "n": lat.n},
            "mint_seconds": round(t_mint, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket")
    p.add_argument("--tcp")
    p.add_argument("--keytab", help="the sidecar's keytab (to mint valid tokens)")
    p.add_argument("--client", default="alice@EXAMPLE.TEST")
    p.add_argument("--mode", choices=["wire", "http", "garbage-wire", "garbage-http", "cookie-http"], default="wire",
                   help="cookie-http: requests with the session cookie the sidecar set for one token, and no "
                        "Authorization (the sidecar needs --session-keys)")
    p.add_argument("--shape", choices=["minimal", "nginx"], default="minimal",
                   help="HTTP: the request head (nginx: the headers auth_request forwards from a browser)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--depth", type=int, default=32, help="requests in flight per connection (closed loop)")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    p.add_argument("--expect", type=float, default=80000, help="closed loop: tokens to mint per second")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    a = p.parse_args(argv)
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(run(a))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
