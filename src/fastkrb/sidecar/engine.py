"""The decision core both front doors share: validate, time it, count it, log it.

``decide()`` is synchronous: the validator is one C call (a few µs, GIL released) and with an in-process
or shared-memory replay cache there is nothing to await, so it runs inline on the event loop, which is
faster than any hand-off. Only a network replay cache (Redis) makes ``adecide()`` necessary: every check
runs in C at once, and the replay insert is awaited. The cache puts the inserts of one turn of the event loop
into one round trip (replay/redis.py), and nothing caps how many round trips are on the wire: a pipelining
client's requests are answered as fast as Redis answers batches (each connection bounds what it has pending,
conn.py's ``MAX_PENDING``, for memory's sake).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastkrb import _native
from fastkrb.errors import Forbidden, InternalError, KerberosError
from fastkrb.sidecar.log import JsonLog
from fastkrb.sidecar.metrics import LATENCY_BUCKETS, SKEW_BUCKETS, Stats

if TYPE_CHECKING:
    from fastkrb.policy import Policy
    from fastkrb.sidecar.policies import PolicyBook

__all__ = ["Engine"]

_perf = time.perf_counter


class Engine:
    """Holds the current Validator (swapped on reload) and reports every decision."""

    def __init__(self, validator: Any, stats: Stats, log: JsonLog, *, is_async: bool = False,
                 policies: PolicyBook | None = None) -> None:
        self.validator = validator
        self.policies = policies
        self.stats = stats
        self.log = log
        self.is_async = is_async

    def native_front(self, max_frame: int, max_head: int) -> Any:
        """The native request path (``_native.NativeFront``) for this engine, or None where every request needs
        Python anyway: a validator with its own policy, or one that is not fastkrb's. With a network replay cache
        (Redis) both front doors use it through ``_native.wire_batch`` and ``_native.http_batch``: checks in C,
        one awaited round trip per chunk. Its decisions are counted into ``stats`` and logged through ``log`` as
        this engine's are."""
        if getattr(self.validator, "policy", None) is not None:
            return None
        if not isinstance(getattr(self.validator, "_native", None), _native.NativeValidator):
            return None
        front = _native.NativeFront(self.validator, LATENCY_BUCKETS, SKEW_BUCKETS, self.log.worker,
                                    self.log.decisions, max_frame, max_head, self.log, self.log.max_batch)
        if not (_native.wire_batch_usable(front) if self.is_async else front.usable):
            return None
        self.stats.attach(front)
        self.log.attach(front)
        return front

    def decide(self, token: bytes, channel_bindings: bytes | None, peer: str, frontend: str,
               policy: Policy | None = None) -> Any:
        """An AuthResult, or the KerberosError that rejects the token (returned, not raised). With a policy, a
        valid token of a client the policy does not allow is a Forbidden (``forbidden``, HTTP 403)."""
        t0 = _perf()
        res: Any = None
        try:
            res = self.validator.validate(token, None, channel_bindings)
            if policy is not None:
                policy.check(res)
        except Forbidden as exc:
            return self._forbidden(exc, res, policy, _perf() - t0, peer, frontend)
        except KerberosError as exc:
            return self._rejected(exc, _perf() - t0, peer, frontend)
        except Exception as exc:  # our own fault: answered as 500, never as a verdict on the token
            return self._internal(exc, _perf() - t0, peer, frontend)
        return self._accepted(res, _perf() - t0, peer, frontend, policy)

    async def adecide(self, token: bytes, channel_bindings: bytes | None, peer: str, frontend: str,
                      policy: Policy | None = None) -> Any:
        """decide() with the network replay cache's insert awaited (batched with this turn's others)."""
        t0 = _perf()
        res: Any = None
        try:
            res = await self.validator.avalidate(token, None, channel_bindings)
            if policy is not None:
                policy.check(res)
        except Forbidden as exc:
            return self._forbidden(exc, res, policy, _perf() - t0, peer, frontend)
        except KerberosError as exc:
            return self._rejected(exc, _perf() - t0, peer, frontend)
        except Exception as exc:
            return self._internal(exc, _perf() - t0, peer, frontend)
        return self._accepted(res, _perf() - t0, peer, frontend, policy)

    def _accepted(self, res: Any, latency: float, peer: str, frontend: str, policy: Policy | None = None) -> Any:
        st = self.stats
        st.decision("accepted", "ok", latency)
        st.skew.observe(abs(res.skew))
        label = None
        if policy is not None:
            label = self._label(policy)
            st.policy(label, "allowed")
        if self.log.decisions:
            self.log.accepted(res, latency, peer, frontend, label)
        return res

    def _forbidden(self, exc: Forbidden, res: Any, policy: Policy | None, latency: float, peer: str,
                   frontend: str) -> Forbidden:
        """Authenticated, and not allowed: counted as outcome ``forbidden`` and per policy, logged with the rule."""
        st = self.stats
        st.decision("forbidden", "forbidden", latency)
        if res is not None:
            st.skew.observe(abs(res.skew))
        label = self._label(policy) if policy is not None else "?"
        st.policy(label, "forbidden")
        if self.log.decisions:
            d = exc.details
            self.log.forbidden(d, exc.cause, label, getattr(res, "server", None), latency, peer, frontend)
        return exc

    def _label(self, policy: Policy) -> str:
        book = self.policies
        return book.label(policy) if book is not None else (policy.name or "?")

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

    def policy_fault(self, peer: str, frontend: str, cause: str) -> None:
        """A request naming a policy that does not exist or cannot be built: the operator's fault, answered 500."""
        self.stats.decision("error", "internal", None)
        self.log.rejected("internal", cause, {}, 0.0, peer, frontend, outcome="error")

    def no_token(self, peer: str, cause: str) -> None:
        """An HTTP request without a Negotiate token: the first leg of the handshake, counted and logged."""
        self.stats.decision("challenged", "no_token", None)
        if self.log.decisions:
            self.log.rejected("no_token", cause, {}, 0.0, peer, "http", outcome="challenged")
