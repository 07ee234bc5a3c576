"""The fastkrb side of the interop tests: the Validator as they configure it, one validation's outcome."""

from __future__ import annotations

from typing import Any

from fastkrb import KerberosError, Validator

SKEW = 300.0
CB = b"tls-server-end-point:" + bytes(range(32))
OTHER_CB = b"tls-server-end-point:" + bytes(32)


def make_validator(keytab: Any, **kw: Any) -> Validator:
    """A Validator on ``keytab`` with a 300 s skew, a memory replay cache, every AES enctype, no cold start."""
    kw.setdefault("clock_skew", SKEW)
    kw.setdefault("replay_cache", "memory")
    kw.setdefault("enctypes", (20, 19, 18, 17))
    kw.setdefault("cold_start", False)
    return Validator(keytab=str(keytab), **kw)


def outcome(v: Any, token: bytes | str, **kw: Any) -> tuple[str | None, Any]:
    """(None, AuthResult) or (error code, KerberosError); any other exception propagates (a crash)."""
    try:
        return None, v.validate(token, **kw)
    except KerberosError as exc:
        assert exc.cause, "every rejection names a cause"
        assert isinstance(exc.details, dict)
        return exc.code, exc
