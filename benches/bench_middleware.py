"""What the middleware costs per request beyond validate(): ASGI, WSGI and aiohttp, each against a bare handler.

For each integration the same request is handled three ways, many times over, in one process:
``validate`` (the Validator alone), ``bare`` (the handler without middleware) and ``middleware`` (the handler
behind fastkrb's middleware, which validates once). overhead = middleware - bare - validate: the header
lookup, the identity objects, the AP-REP header, the coroutine hop of avalidate(). The target is <= 10 us.

The token is minted (mutual authentication, so the AP-REP is built and sent) and the validator has no
replay cache, so one token serves every iteration; the replay cache's cost belongs to validate() and is
measured by bench_replay.py. Requests are driven in-process (no sockets): the ASGI app with a scope dict,
the WSGI app with an environ dict, aiohttp with mocked requests made before the clock starts.

    PYTHONPATH=src python benches/bench_middleware.py          # prints the table (20000 requests x 7)
    pytest benches/bench_middleware.py -s                       # a shorter run, printed against the budget

Knobs: FASTKRB_BENCH_MW_REQUESTS, FASTKRB_BENCH_MW_REPEATS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parents[1] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from fastkrb import Validator  # noqa: E402
from fastkrb.testing import make_keytab, mint  # noqa: E402

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
N = int(os.environ.get("FASTKRB_BENCH_MW_REQUESTS", "20000"))
REPEATS = int(os.environ.get("FASTKRB_BENCH_MW_REPEATS", "7"))
BUDGET_US = 10.0


def _setup() -> tuple[Validator, str]:
    logging.getLogger("fastkrb").setLevel(logging.ERROR)  # "replay cache disabled", on purpose here
    kt = make_keytab(principals=(SPN,), enctypes=(18,), rng=random.Random(7))
    v = Validator(kt, replay_cache="none", cold_start=False)
    m = mint(kt, server=SPN, framing="header", rng=random.Random(8))
    header = m.header
    assert v.validate(header).www_authenticate is not None  # mutual: the AP-REP is part of the work
    return v, header


def _interleaved(runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Minimum over repeats of the mean per-request time (ns) of each run, the runs interleaved so that a
    noisy neighbour disturbs all three alike."""
    best = {k: float("inf") for k in runs}
    gc.collect()
    gc.disable()
    try:
        for _ in range(REPEATS):
            for k, fn in runs.items():
                best[k] = min(best[k], fn())
    finally:
        gc.enable()
    return best


def _validate_run(v: Validator, header: str) -> Callable[[], float]:
    validate = v.validate

    def run() -> float:
        t = time.perf_counter_ns()
        for _ in range(N):
            validate(header)
        return (time.perf_counter_ns() - t) / N

    return run


# --- ASGI -------------------------------------------------------------------------------------------------------


def asgi_case(v: Validator, header: str) -> dict[str, float]:
    from fastkrb.web.asgi import NegotiateMiddleware

    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
    body = {"type": "http.response.body", "body": b"ok"}

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    base = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"",
            "headers": [(b"host", b"api.example.test"), (b"authorization", header.encode()),
                        (b"user-agent", b"bench")]}
    mw = NegotiateMiddleware(bare, v)

    def timed(app: Any) -> Callable[[], float]:
        async def loop() -> float:
            t = time.perf_counter_ns()
            for _ in range(N):
                await app(dict(base), receive, send)
            return (time.perf_counter_ns() - t) / N

        def run() -> float:
            return asyncio.run(loop())

        return run

    return _interleaved({"validate": _validate_run(v, header), "bare": timed(bare), "middleware": timed(mw)})


# --- WSGI -------------------------------------------------------------------------------------------------------


def wsgi_case(v: Validator, header: str) -> dict[str, float]:
    from fastkrb.web.wsgi import NegotiateMiddleware

    def bare(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        pass

    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "api.example.test",
            "SERVER_PORT": "443", "HTTP_HOST": "api.example.test", "HTTP_AUTHORIZATION": header,
            "wsgi.url_scheme": "https"}
    mw = NegotiateMiddleware(bare, v)

    def timed(app: Any) -> Callable[[], float]:
        def run() -> float:
            t = time.perf_counter_ns()
            for _ in range(N):
                for _chunk in app(dict(base), start_response):
                    pass
            return (time.perf_counter_ns() - t) / N

        return run

    return _interleaved({"validate": _validate_run(v, header), "bare": timed(bare), "middleware": timed(mw)})


# --- aiohttp ----------------------------------------------------------------------------------------------------


def aiohttp_case(v: Validator, header: str) -> dict[str, float]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from fastkrb.web.aiohttp import negotiate_middleware

    n = N // 4  # mocked requests are made ahead of the clock; keep the memory modest
    ok = web.Response(text="ok")

    async def handler(request: Any) -> Any:
        return ok

    mw = negotiate_middleware(v)

    async def build() -> list[Any]:
        return [make_mocked_request("GET", "/", headers={"Authorization": header, "Host": "api.example.test"})
                for _ in range(n)]

    # one shared response: the middleware adds the AP-REP header to it, so each iteration removes it again
    # (and the bare loop does the same header work, so it cancels out)
    def timed_mw() -> float:
        async def loop() -> float:
            reqs = await build()
            t = time.perf_counter_ns()
            for r in reqs:
                await mw(r, handler)
                del ok.headers["WWW-Authenticate"]
            return (time.perf_counter_ns() - t) / n

        return asyncio.run(loop())

    def timed_bare_pop() -> float:
        async def loop() -> float:
            reqs = await build()
            t = time.perf_counter_ns()
            for r in reqs:
                await handler(r)
                ok.headers["WWW-Authenticate"] = "x"
                del ok.headers["WWW-Authenticate"]
            return (time.perf_counter_ns() - t) / n

        return asyncio.run(loop())

    return _interleaved({"validate": _validate_run(v, header), "bare": timed_bare_pop, "middleware": timed_mw})


CASES: dict[str, Callable[[Validator, str], dict[str, float]]] = {
    "asgi": asgi_case, "wsgi": wsgi_case, "aiohttp": aiohttp_case,
}


def overhead(r: dict[str, float]) -> float:
    return r["middleware"] - r["bare"] - r["validate"]


def main() -> int:
    v, header = _setup()
    print(f"{'integration':<12}{'validate us':>12}{'bare us':>10}{'middleware us':>15}{'overhead us':>13}")
    worst = 0.0
    for name, case in CASES.items():
        try:
            r = case(v, header)
        except ImportError as exc:
            print(f"{name:<12}skipped ({exc.name} not installed)")
            continue
        o = overhead(r) / 1000
        worst = max(worst, o)
        print(f"{name:<12}{r['validate'] / 1000:>12.2f}{r['bare'] / 1000:>10.2f}{r['middleware'] / 1000:>15.2f}"
              f"{o:>13.2f}")
    print(f"worst overhead {worst:.2f} us (budget {BUDGET_US:g} us); python {sys.version.split()[0]}, "
          f"{N} requests x {REPEATS} repeats, min of means")
    return 0 if worst <= BUDGET_US else 1


# --- as tests (pytest benches): the budget holds ------------------------------------------------------------


def _check(name: str) -> None:
    """Under pytest a shorter run (4000 requests x 3 repeats) unless the environment asks for more."""
    import pytest

    global N, REPEATS
    saved = N, REPEATS
    if "FASTKRB_BENCH_MW_REQUESTS" not in os.environ:
        N, REPEATS = 4000, 3
    v, header = _setup()
    try:
        r = CASES[name](v, header)
    except ImportError as exc:
        pytest.skip(f"{exc.name} not installed")
    finally:
        N, REPEATS = saved
    o = overhead(r)
    # Reported against the budget, never asserted: a timing assertion fails on a busy machine
    # without saying anything about the code.
    print(f"\n{name}: middleware overhead {o / 1000:.2f} us beyond validate() (budget {BUDGET_US} us): {r}")
    assert r, "the run produced no measurements"


def test_asgi_middleware_overhead() -> None:
    _check("asgi")


def test_wsgi_middleware_overhead() -> None:
    _check("wsgi")


def test_aiohttp_middleware_overhead() -> None:
    _check("aiohttp")


if __name__ == "__main__":
    raise SystemExit(main())
