"""The decision core both front doors share: validate, time it, count it, log it.

``decide()`` is synchronous: the validator is one C call (a few µs, GIL released) and with an in-process
or shared-memory replay cache there is nothing to await, so it runs inline on the event loop, which is
faster than any hand-off. Only a network replay cache (Redis) makes ``adecide()`` necessary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastkrb.errors import InternalError, KerberosError
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import Stats

__all__ = ["Engine"]

_perf = time.perf_counter


class Engine:
    """Holds the current Validator (swapped on reload) and reports every decision."""

    def __init__(self, validator: Any, stats: Stats, log: JsonLog, *, is_async: bool = False,
                 max_inflight: int = 16) -> None:
        self.validator = validator
        self.stats = stats
        self.log = log
        self.is_async = is_async
        # A pipelining client can put hundreds of tokens in flight at once; the network replay cache's
        # connection pool is smaller. Beyond this many concurrent round trips, requests wait their turn
        # (they are answered later, not refused).
        self._slots: asyncio.Semaphore | None = asyncio.Semaphore(max_inflight) if is_async else None

    def decide(self, token: bytes, channel_bindings: bytes | None, peer: str, frontend: str) -> Any:
        """An AuthResult, or the KerberosError that rejects the token (returned, not raised)."""
        t0 = _perf()
        try:
            res = self.validator.validate(token, None, channel_bindings)
        except KerberosError as exc:
            return self._rejected(exc, _perf() - t0, peer, frontend)
        except Exception as exc:  # our own fault: answered as 500, never as a verdict on the token
            return self._internal(exc, _perf() - t0, peer, frontend)
        return self._accepted(res, _perf() - t0, peer, frontend)

    async def adecide(self, token: bytes, channel_bindings: bytes | None, peer: str, frontend: str) -> Any:
        assert self._slots is not None
        async with self._slots:
            return await self._adecide(token, channel_bindings, peer, frontend)

    async def _adecide(self, token: bytes, channel_bindings: bytes | None, peer: str, frontend: str) -> Any:
        t0 = _perf()
        try:
            res = await self.validator.avalidate(token, None, channel_bindings)
        except KerberosError as exc:
            return self._rejected(exc, _perf() - t0, peer, frontend)
        except Exception as exc:
            return self._internal(exc, _perf() - t0, peer, frontend)
        return self._accepted(res, _perf() - t0, peer, frontend)

    def _accepted(self, res: Any, latency: float, peer: str, frontend: str) -> Any:
        st = self.stats
        st.decision("accepted", "ok", latency)
        st.skew.observe(abs(res.skew))
        if self.log.decisions:
            self.log.accepted(res, latency, peer, frontend)
        return res

    def _rejected(self, exc: KerberosError, latency: float, peer: str, frontend: str) -> KerberosError:
        code = exc.code
        self.stats.decision("rejected", code, latency)
        if code == "clock_skew":
            off = exc.details.get("skew_seconds")
            if isinstance(off, (int, float)):
                self.stats.skew.observe(abs(off))
        elif code == "replay_cache_unavailable":
            self.stats.count("replay_failure", "cold_start" if "cache_started" in exc.details else "backend")
        if self.log.decisions:
            self.log.rejected(code, exc.cause, exc.details, latency, peer, frontend)
        return exc

    def _internal(self, exc: BaseException, latency: float, peer: str, frontend: str) -> KerberosError:
        err = InternalError(f"The sidecar failed while validating ({type(exc).__name__}: {exc}).")
        self.stats.decision("error", "internal", latency)
        self.log.rejected("internal", err.cause, {}, latency, peer, frontend, outcome="error")
        return err

    def no_token(self, peer: str, cause: str) -> None:
        """An HTTP request without a Negotiate token: the first leg of the handshake, counted and logged."""
        self.stats.decision("challenged", "no_token", None)
        if self.log.decisions:
            self.log.rejected("no_token", cause, {}, 0.0, peer, "http", outcome="challenged")
