"""One JSON line per decision (and per lifecycle event), buffered so logging never dominates a validation.

A line carries who, for which service, with which key, the outcome, the error code and latency, and the
peer: never the token, a key, or the session key (nothing here ever receives them). Lines are collected
and written in batches (every ``flush_interval`` or ``max_batch`` lines), with one ``write()`` each.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

__all__ = ["JsonLog"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


class JsonLog:
    """A batched JSON-lines writer bound to one file descriptor."""

    def __init__(self, path: str | None = None, *, decisions: bool = True, worker: int | None = None,
                 max_batch: int = 512) -> None:
        if path:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._own = True
        else:
            self._fd = sys.stderr.fileno()
            self._own = False
        self.decisions = decisions
        self.worker = worker
        self.max_batch = max_batch
        self._buf: list[str] = []
        self._sec = -1
        self._stamp = ""
        # (client, server, enctype, kvno, frontend) -> the constant middle of an accepted line
        self._static: dict[tuple[Any, ...], str] = {}
        self._peers: dict[str, str] = {}   # peer -> its JSON string
        self._native: Any = None           # a NativeFront: decision lines it formatted, taken in order

    def attach(self, front: Any) -> None:
        """Also write the lines of the native request path (``_native.NativeFront``), which formats accepted
        decisions in C; they are taken before every line of ours, so the file keeps the order of decisions."""
        self._native = front

    def _take(self) -> None:
        front = self._native
        if front is not None and front.log_lines:
            self._buf.append(front.take_log().decode())

    def _time(self, now: float) -> str:
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp}.{int((now - sec) * 1000):03d}Z"

    def accepted(self, res: Any, latency: float, peer: str, frontend: str, policy: str | None = None) -> None:
        key = (res.client, res.server, res.enctype, res.kvno, frontend, policy)
        mid = self._static.get(key)
        if mid is None:
            if len(self._static) > 4096:
                self._static.clear()
            line: dict[str, Any] = {"event": "decision", "outcome": "accepted", "code": "ok", "client": res.client,
                                    "server": res.server, "enctype": res.enctype, "kvno": res.kvno,
                                    "frontend": frontend, "worker": self.worker}
            if policy is not None:
                line["policy"] = policy
            mid = _dumps(line)[1:-1]
            self._static[key] = mid
        now = time.time()
        self._take()
        pj = self._peers.get(peer)
        if pj is None:
            if len(self._peers) > 4096:
                self._peers.clear()
            pj = self._peers[peer] = _dumps(peer)
        self._buf.append(f'{{"time":"{self._time(now)}",{mid},"mutual":{"true" if res.mutual else "false"},'
                         f'"skew":{res.skew:.3f},"latency_us":{latency * 1e6:.1f},"peer":{pj}}}\n')
        if len(self._buf) >= self.max_batch:
            self.flush()

    def rejected(self, code: str, cause: str, details: dict[str, Any], latency: float, peer: str,
                 frontend: str, outcome: str = "rejected") -> None:
        line: dict[str, Any] = {"time": self._time(time.time()), "event": "decision", "outcome": outcome,
                                "code": code, "client": details.get("client"), "server": details.get("server"),
                                "enctype": details.get("ticket_enctype"), "kvno": details.get("ticket_kvno"),
                                "frontend": frontend, "worker": self.worker, "latency_us": round(latency * 1e6, 1),
                                "peer": peer, "cause": cause}
        if code == "replay":
            line["first_seen_ago"] = details.get("first_seen_ago")
        self._take()
        self._buf.append(_dumps(line) + "\n")
        if len(self._buf) >= self.max_batch:
            self.flush()

    def forbidden(self, details: dict[str, Any], cause: str, policy: str, server: str | None, latency: float,
                  peer: str, frontend: str) -> None:
        """A valid ticket whose client the policy refused: who, which policy, which rule, how many groups."""
        line: dict[str, Any] = {"time": self._time(time.time()), "event": "decision", "outcome": "forbidden",
                                "code": "forbidden", "client": details.get("client"), "server": server,
                                "policy": policy, "constraint": details.get("constraint"),
                                "group_count": details.get("group_count"), "frontend": frontend,
                                "worker": self.worker, "latency_us": round(latency * 1e6, 1), "peer": peer,
                                "cause": cause}
        if details.get("user_sid"):
            line["user_sid"] = details["user_sid"]
        self._take()
        self._buf.append(_dumps(line) + "\n")
        if len(self._buf) >= self.max_batch:
            self.flush()

    def session(self, via: str, outcome: str, code: str, client: str | None, server: str | None, latency: float,
                peer: str, *, policy: str | None = None, cause: str | None = None,
                details: dict[str, Any] | None = None) -> None:
        """A decision on a session cookie (``via`` session) or a bearer token (bearer): the decision line's
        fields, plus ``via``; a refusal adds ``cause`` and ``reason`` (the check that refused), a policy's
        ``constraint``. A line without ``via`` is a Negotiate validation, as before."""
        line: dict[str, Any] = {"time": self._time(time.time()), "event": "decision", "via": via, "outcome": outcome,
                                "code": code, "client": client, "server": server, "frontend": "http",
                                "worker": self.worker, "latency_us": round(latency * 1e6, 1), "peer": peer}
        if policy is not None:
            line["policy"] = policy
        if details:
            for k in ("reason", "constraint", "kid", "expired_at"):
                if details.get(k) is not None:
                    line[k] = details[k]
        if cause is not None:
            line["cause"] = cause
        self._take()
        self._buf.append(_dumps(line) + "\n")
        if len(self._buf) >= self.max_batch:
            self.flush()

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """A lifecycle line (start, reload, drain, errors); written at once."""
        self._take()
        self._buf.append(_dumps({"time": self._time(time.time()), "event": event, "level": level,
                                 "worker": self.worker, **fields}) + "\n")
        self.flush()

    def flush(self) -> None:
        front = self._native
        if not self._buf and front is not None and front.log_lines:
            front.write_log(self._fd)   # only native lines pending: written from the native buffer, no copies
            return
        self._take()
        if not self._buf:
            return
        data = "".join(self._buf).encode()
        self._buf.clear()
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except BlockingIOError:
            pass  # a full, non-blocking stderr pipe: drop rather than stall the event loop
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self._own:
            os.close(self._fd)
