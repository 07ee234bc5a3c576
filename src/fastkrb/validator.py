"""The Validator: configuration in Python, validation in native code.

A Validator prepares every keytab key once (derived keys and HMAC states for the ticket usage), then
``validate()`` is a single call into C that releases the GIL. It is stateless per call apart from the
replay cache, so one instance serves many threads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, Union

from fastkrb import _native
from fastkrb.diagnose import explain
from fastkrb.enctypes import DEFAULT as DEFAULT_ENCTYPES
from fastkrb.enctypes import SUPPORTED as SUPPORTED_ENCTYPES
from fastkrb.enctypes import label as enctype_label
from fastkrb.errors import ConfigurationError, KerberosError, replay_unavailable
from fastkrb.keytab import Keytab, NoUsableKeys
from fastkrb.krb.pac import Pac
from fastkrb.replay import AsyncReplayCache, NativeReplayBackend, ReplayCache, open_replay_cache

log = logging.getLogger("fastkrb")
_FULL_LOG_INTERVAL = 10.0   # seconds between "replay cache full" warnings of one Validator

__all__ = ["Validator", "check_configuration", "AuthResult", "AcceptPolicy", "SUPPORTED_ENCTYPES", "DEFAULT_ENCTYPES"]


AuthResult = _native.AuthResult
_native.set_pac_decoder(Pac)   # AuthResult.pac decodes with the Python PAC reader (krb/, a floor below)
DEFAULT_MAX_TOKEN = 64 * 1024


class AcceptPolicy(Protocol):
    """What ``Validator(policy=...)`` calls on every accepted token (fastkrb.Policy is one)."""

    def check(self, result: AuthResult) -> None:
        """Return to accept; raise a KerberosError subclass to refuse."""


KeytabLike = Union[str, "os.PathLike[str]", bytes, Keytab]
ReplayCacheArg = Union[str, ReplayCache, None]  # noqa: UP007 - a runtime alias, kept 3.10-safe


class Validator:
    """Validates AP-REQ tokens against a keytab; docs/architecture.md states the contract."""

    def __init__(
        self,
        keytab: KeytabLike,
        principals: Iterable[str] | None = None,
        clock_skew: float = 300.0,
        replay_cache: ReplayCacheArg = "memory",
        enctypes: Sequence[int] = DEFAULT_ENCTYPES,
        cold_start: bool = True,
        *,
        allowed_realms: Iterable[str] | None = None,
        max_token_size: int = DEFAULT_MAX_TOKEN,
        verify_pac: bool = True,
        replay_capacity: int = 1 << 20,
        policy: AcceptPolicy | None = None,
    ) -> None:
        if clock_skew < 0:
            raise ValueError("clock_skew must be >= 0")
        bad = [e for e in enctypes if e not in SUPPORTED_ENCTYPES]
        if bad:
            raise ValueError(f"unsupported enctypes {bad}; fastkrb supports {SUPPORTED_ENCTYPES}")
        self.clock_skew = float(clock_skew)
        self.enctypes = tuple(enctypes)
        self.cold_start = bool(cold_start)
        self.max_token_size = int(max_token_size)
        self.verify_pac = bool(verify_pac)
        self.principals = None if principals is None else tuple(principals)
        if policy is not None and not callable(getattr(policy, "check", None)):
            raise TypeError(f"policy must have a check(result) method, not {type(policy).__name__}")
        self._policy = policy
        self._allowed_realms_arg = None if allowed_realms is None else tuple(allowed_realms)
        self._replay = self._make_replay(replay_cache, replay_capacity)
        self._load(keytab)

    # -- configuration --------------------------------------------------------------------------

    def _make_replay(self, spec: ReplayCacheArg, capacity: int) -> ReplayCache | None:
        """A backend from a spec string ("memory", "shm:/path", "redis://...", "none") or a ReplayCache.

        Of an object only ``insert`` (and ``started``, for the cold-start rule) is required here; an
        AsyncReplayCache is also awaited by avalidate().
        """
        if spec is None:
            spec = "none"
        if isinstance(spec, str):
            return open_replay_cache(spec, capacity=capacity, clock_skew=self.clock_skew,
                                     cold_start=self.cold_start)
        if not callable(getattr(spec, "insert", None)):
            raise TypeError(f"replay_cache must be a spec string or a replay cache, not {type(spec).__name__}")
        return spec

    @property
    def policy(self) -> AcceptPolicy | None:
        """The policy every accepted token is checked against (None: the keytab decides alone)."""
        return self._policy

    @property
    def replay_cache(self) -> ReplayCache | None:
        """The replay cache in use (None for replay_cache="none"); it carries over reloads."""
        return self._replay

    def _check(self, kt: Keytab, unusable: list[tuple[Any, str]]) -> None:
        """Refuse a keytab/configuration pair that could not accept the tickets asked for (at construction and
        on reload: a reload that fails this keeps the keys in service)."""
        check_configuration(kt, self.principals, self.enctypes, unusable)

    def _load(self, keytab: KeytabLike) -> None:
        kt = keytab if isinstance(keytab, Keytab) else Keytab.load(keytab)
        unusable = kt.unusable()
        self._check(kt, unusable)
        for e, why in unusable:
            log.warning("fastkrb: keytab entry %s kvno %s %s skipped: %s", e.principal, e.kvno,
                        enctype_label(e.enctype), why)
        skipped = {id(e): why for e, why in unusable}
        accept = self._acceptor(self.principals)
        entries = []
        index: dict[str, list[tuple[int, int]]] = {}
        realms: list[str] = []
        for e in kt.entries:
            index.setdefault(e.principal, []).append((e.kvno, e.enctype))
            if id(e) in skipped:
                continue  # DES, unknown enctypes, keys of the wrong length: listed for diagnoses, never used
            ok = accept(e.principal)
            if ok and e.realm not in realms:
                realms.append(e.realm)
            entries.append(((tuple(c.encode() for c in e.components), e.realm.encode(), e.kvno, e.enctype, e.key, ok),
                            e.kvno))
        # newest kvno first within a principal, so kvno-less tickets try the current key first
        entries.sort(key=lambda t: -t[1])
        allowed = self._allowed_realms_arg
        if allowed is None:
            allowed_list: list[str] | None = realms
        elif "*" in allowed:
            allowed_list = None
        else:
            allowed_list = list(allowed)
        permitted = 0
        for etype in self.enctypes:
            permitted |= 1 << etype
        native_rc = self._replay if isinstance(self._replay, NativeReplayBackend) else None
        hook = None if native_rc is not None or self._replay is None else self._replay_hook
        started = float(getattr(self._replay, "started", time.time())) if self._replay is not None else 0.0
        unusable_map = {(e.principal, e.kvno, e.enctype): why for e, why in unusable}

        last_full = [0.0]

        def on_error(code: int, facts: dict[str, Any]) -> Any:
            verdict = _native.VERDICTS.get(code, "internal")
            if verdict == "rc_full" and time.monotonic() - last_full[0] >= _FULL_LOG_INTERVAL:
                # the cache refuses new authenticators until entries expire: an outage the operator must
                # hear about, once in a while, not once per request
                last_full[0] = time.monotonic()
                st = self.replay_stats() or {}
                log.warning("fastkrb: replay cache full (%s live entries, capacity %s): failing closed with "
                            "replay_cache_unavailable until entries expire; raise the capacity",
                            st.get("entries", "?"), st.get("capacity", "?"))
            raise explain(verdict, facts, index, self.enctypes, allowed_list, started, unusable_map)


        args = ([t for t, _ in entries], permitted, self.clock_skew, self.max_token_size,
                [r.encode() for r in allowed_list or []], self.verify_pac, native_rc,
                self.cold_start and self._replay is not None, started, on_error)
        native = _native.NativeValidator(*args, hook)
        # for avalidate(): every check but the replay insert, which the caller then awaits
        areplay = self._replay if hook is not None and isinstance(self._replay, AsyncReplayCache) else None
        deferred = _native.NativeValidator(*args, None) if areplay is not None else None
        # nothing above may fail after this point: the swap is all or nothing, so a refused reload keeps every
        # attribute of the keys in service
        self._index = index
        self.allowed_realms = allowed_list
        self.keytab = kt
        self.skipped = [(e.principal, e.kvno, e.enctype, why) for e, why in unusable]
        self._on_error = on_error
        self._native, self._areplay, self._deferred = native, areplay, deferred
        # the hot path: one attribute lookup, then C (and, with a policy, one Python call after it)
        self.validate = self._native.validate if self._policy is None else self._checked(  # type: ignore[method-assign]
            self._native.validate, self._policy)

    @staticmethod
    def _checked(native_validate: Any, policy: AcceptPolicy) -> Any:
        check = policy.check

        def validate(token: str | bytes, now: float | None = None,
                     channel_bindings: bytes | None = None) -> AuthResult:
            res: AuthResult = native_validate(token, now, channel_bindings)
            check(res)
            return res

        return validate

    @staticmethod
    def _acceptor(principals: Sequence[str] | None) -> Any:
        if principals is None:
            return lambda p: True
        full = {p for p in principals if "@" in p}
        bare = {p for p in principals if "@" not in p}
        return lambda p: p in full or p.rsplit("@", 1)[0] in bare

    def _replay_hook(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        assert self._replay is not None   # the hook is installed only with a cache
        try:
            fresh, first = self._replay.insert(key, expiry, now)
        except KerberosError:
            raise
        except Exception as exc:  # any backend failure must fail closed
            raise replay_unavailable(f"{type(exc).__name__}: {exc}") from None
        return bool(fresh), first

    def reload(self, keytab: KeytabLike) -> None:
        """Swap in a new keytab atomically; the replay cache (and its memory) carries over."""
        self._load(keytab)

    # -- the work -------------------------------------------------------------------------------

    def validate(self, token: str | bytes, now: float | None = None,
                 channel_bindings: bytes | None = None) -> AuthResult:
        """Validate one token; returns an AuthResult or raises a KerberosError subclass.

        With a policy, ``policy.check(result)`` runs on every accepted token before this returns (after the
        replay cache has recorded it); its KerberosError is the refusal.
        """
        return self._native.validate(token, now, channel_bindings)  # replaced per instance by _load

    async def avalidate(self, token: str | bytes, now: float | None = None,
                        channel_bindings: bytes | None = None) -> AuthResult:
        """validate() for event loops: a network replay cache (Redis) is awaited, never blocked on."""
        deferred, areplay = self._deferred, self._areplay
        if deferred is None or areplay is None:
            return self.validate(token, now, channel_bindings)  # with the policy, if any
        res = deferred.validate(token, now, channel_bindings)
        t = time.time() if now is None else now
        try:
            fresh, first = await areplay.ainsert(res.replay_key, res.replay_expiry, t)
        except KerberosError:
            raise
        except Exception as exc:  # any backend failure must fail closed
            raise replay_unavailable(f"{type(exc).__name__}: {exc}") from None
        if not fresh:
            facts = {"now": t, "clock_skew": self.clock_skew, "server": res.server, "client": res.client,
                     "ctime": res.ctime, "first_seen": first, "first_seen_ago": None if first is None else t - first}
            self._on_error(_native.VERDICT_CODES["replay"], facts)
        if self._policy is not None:
            self._policy.check(res)
        return res

    def profile(self, token: str | bytes, now: float | None = None, iterations: int = 20_000,
                replay: NativeReplayBackend | None = None) -> dict[str, float]:
        """Where the time goes: ns per stage of validating ``token``, each stage looped in C.

        The token must validate (the replay cache is not consulted; ``replay`` times inserts into the
        given native cache with fresh keys). For capacity planning and benches, not for requests.
        """
        tok = token.encode("ascii") if isinstance(token, str) else bytes(token)
        return _native.profile_stages(self._native, tok, time.time() if now is None else now, iterations, replay)

    def replay_stats(self) -> dict[str, int] | None:
        """The replay cache's counters (entries, inserts, hits, evictions, capacity, full, errors)."""
        if self._replay is None:
            return None
        stats = getattr(self._replay, "stats", None)
        return stats() if stats else None


def check_configuration(kt: Keytab, principals: Sequence[str] | None, enctypes: Sequence[int],
                        unusable: list[tuple[Any, str]] | None = None) -> None:
    """Raise NoUsableKeys or ConfigurationError when a Validator of this keytab and configuration could not
    accept the tickets it is asked to (the sidecar's --check and start-up use it too)."""
    if unusable is None:
        unusable = kt.unusable()
    usable = kt.usable()
    if not usable:
        listed = [f"{e.principal} kvno {e.kvno} {enctype_label(e.enctype)}: {why}" for e, why in unusable]
        raise NoUsableKeys(
            "The keytab has no entry fastkrb can use"
            + (f" ({'; '.join(listed)})." if listed else " (it is empty)."),
            details={"unusable": listed, "entries": len(kt)})
    held = sorted({e.principal for e in usable})
    if principals is not None:
        accept1 = Validator._acceptor
        missing = [p for p in principals if not any(accept1((p,))(e.principal) for e in usable)]
        if missing:
            raise ConfigurationError(
                f"principals= names {', '.join(missing)}, which the keytab has no usable key for (it has "
                f"{', '.join(held)}).",
                "Fix the name in principals= (name@REALM, or name alone for any realm), or export that "
                "principal's key into the keytab.",
                {"missing_principals": missing, "keytab_principals": held})
    accept = Validator._acceptor(principals)
    mine = [e for e in usable if accept(e.principal)]
    have = sorted({e.enctype for e in mine})
    if not any(e.enctype in enctypes for e in mine):
        raise ConfigurationError(
            f"enctypes={list(enctypes)} permits no enctype the keytab has a usable key of (it has "
            f"{', '.join(enctype_label(e) for e in have)}): every ticket would be refused.",
            "Permit the enctype of the keytab's keys in enctypes=, or export keys of a permitted enctype.",
            {"enctypes": list(enctypes), "keytab_enctypes": have})
    if 23 in enctypes and 23 not in have:
        raise ConfigurationError(
            "enctypes= lists RC4 (arcfour-hmac, 23), but the keytab has no usable RC4 key: permitting RC4 "
            "could only weaken, never help.",
            "Remove 23 from enctypes=, or export the account's RC4 key if RC4 tickets must be accepted.",
            {"enctypes": list(enctypes), "keytab_enctypes": have})
