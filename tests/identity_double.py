"""A stand-in for the native PAC identity (``AuthResult.identity``, ``_native.SidSet``) until the native one lands.

The interface contract (being built in native code): ``result.identity`` is a ``fastkrb._native.Identity`` or
None (no PAC with LOGON_INFO), with ``user_sid``, ``primary_group_sid``, ``group_sids`` (every granted group
SID), ``group_count``, ``logon_name``, ``logon_domain``, ``dns_domain``, ``upn``, ``upn_implicit``,
``to_dict()`` and ``member_of(sid_set)``; ``fastkrb._native.SidSet(iterable)`` validates SIDs (ValueError),
supports ``len`` and ``in``.

``install()`` does nothing when ``fastkrb._native`` has both names: then the tests run on the real thing.
Otherwise it puts a Python SidSet and Identity into ``fastkrb._native`` and makes every Validator built
afterwards return results whose ``identity`` is derived from the PAC the native core already decodes
(``result.pac.logon_info``, ``result.pac.upn_dns_info``). For a sidecar process, ``python identity_double.py
serve ...`` installs it before ``fastkrb serve`` runs (the workers are forked from that process).

Test code only: nothing in src/ knows about it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastkrb import _native

NATIVE_IDENTITY = hasattr(_native, "SidSet") and hasattr(_native, "Identity")
_SID = re.compile(r"S-1-\d{1,15}(-\d{1,10}){0,15}")


class SidSet:
    """The double of ``_native.SidSet``: a frozen set of well-formed SID strings."""

    __slots__ = ("_s",)

    def __init__(self, sids: Iterable[str] = ()) -> None:
        out = set()
        for s in sids:
            if not isinstance(s, str) or not _SID.fullmatch(s):
                raise ValueError(f"not a SID: {s!r}")
            out.add(s)
        self._s = frozenset(out)

    def __len__(self) -> int:
        return len(self._s)

    def __contains__(self, sid: object) -> bool:
        return sid in self._s


class Identity:
    """The double of ``_native.Identity``, from a decoded PAC."""

    __slots__ = ("dns_domain", "group_count", "group_sids", "logon_domain", "logon_name", "primary_group_sid",
                 "upn", "upn_implicit", "user_sid")

    def __init__(self, user_sid: str, primary_group_sid: str, group_sids: tuple[str, ...], logon_name: str,
                 logon_domain: str, dns_domain: str | None, upn: str | None, upn_implicit: bool) -> None:
        self.user_sid = user_sid
        self.primary_group_sid = primary_group_sid
        self.group_sids = group_sids
        self.group_count = len(group_sids)
        self.logon_name = logon_name
        self.logon_domain = logon_domain
        self.dns_domain = dns_domain
        self.upn = upn
        self.upn_implicit = upn_implicit

    @classmethod
    def from_pac(cls, pac: Any) -> Identity | None:
        info = pac.logon_info if pac is not None else None
        if info is None or info.user_sid is None:
            return None
        groups = [*info.group_sids, *(s.sid for s in info.extra_sids), *info.resource_group_sids]
        upn_info = pac.upn_dns_info
        return cls(info.user_sid, info.primary_group_sid, tuple(dict.fromkeys(groups)), info.effective_name,
                   info.logon_domain_name, upn_info.dns_domain if upn_info else None,
                   upn_info.upn if upn_info else None, bool(upn_info and upn_info.flags & 1))

    def member_of(self, sids: Any) -> bool:
        if self.user_sid in sids or self.primary_group_sid in sids:
            return True
        return any(s in sids for s in self.group_sids)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k in self.__slots__ for v in (getattr(self, k),)}


class ResultWithIdentity:
    """An AuthResult plus ``identity`` (the native class cannot take new attributes)."""

    __slots__ = ("_r", "identity")

    def __init__(self, r: Any) -> None:
        self._r = r
        self.identity = Identity.from_pac(r.pac)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)


def install() -> Callable[[], None]:
    """Put the double in place unless the native identity exists; returns the function that takes it out
    again (a no-op with the native identity). Other test modules must not see the double: use it from a
    fixture that calls the returned function at its end."""
    if NATIVE_IDENTITY:
        return lambda: None
    saved = {k: getattr(_native, k, None) for k in ("SidSet", "Identity", "NativeValidator")}
    base = saved["NativeValidator"]

    class NativeValidator(base):  # type: ignore[misc,valid-type]
        def validate(self, *args: Any, **kw: Any) -> Any:
            return ResultWithIdentity(super().validate(*args, **kw))

    _native.SidSet = SidSet  # type: ignore[attr-defined]
    _native.Identity = Identity  # type: ignore[attr-defined]
    _native.NativeValidator = NativeValidator  # type: ignore[misc]

    def undo() -> None:
        for k, v in saved.items():
            if v is None:
                if hasattr(_native, k):
                    delattr(_native, k)
            else:
                setattr(_native, k, v)

    return undo


def serve_command(args: list[str]) -> list[str]:
    """argv running ``fastkrb serve ARGS`` with the double installed first."""
    return [sys.executable, str(Path(__file__).resolve()), "serve", *args]


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        raise SystemExit("usage: identity_double.py serve [fastkrb serve arguments]")
    install()
    from fastkrb.tools.cli import main

    raise SystemExit(main(sys.argv[1:]))
