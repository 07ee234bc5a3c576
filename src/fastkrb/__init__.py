"""fastkrb: fast, exact Kerberos service-ticket validation with errors that name the cause.

The names below load on first use (PEP 562), so ``import fastkrb.client`` in a service that only talks
to the sidecar loads neither the native core nor a replay backend.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastkrb.challenge import ChallengeRule
    from fastkrb.errors import (
        BearerExpired,
        BearerInvalid,
        ChannelBindingsMismatch,
        ClockSkew,
        ConfigurationError,
        EnctypeNotInKeytab,
        EnctypeNotPermitted,
        Forbidden,
        IntegrityError,
        KerberosError,
        KeyUnusable,
        KeyVersionMismatch,
        MalformedToken,
        NameMismatch,
        RealmNotAllowed,
        Replay,
        ReplayCacheUnavailable,
        SessionExpired,
        SessionInvalid,
        SessionTooLarge,
        TicketExpired,
        TicketInvalid,
        TicketNotYetValid,
        UnsupportedMechanism,
        WrongPrincipal,
    )
    from fastkrb.groups import GroupNames
    from fastkrb.keytab import Keytab, KeytabEntry
    from fastkrb.policy import Policy
    from fastkrb.sessions.bearer import TokenIssuer, TokenVerifier
    from fastkrb.sessions.cookie import CookieSettings, SessionCookies
    from fastkrb.validator import AuthResult, Validator

__version__ = "0.1.0"

# public name -> the module that defines it
_WHERE = {
    **dict.fromkeys(
        ("ChannelBindingsMismatch", "ClockSkew", "EnctypeNotInKeytab", "EnctypeNotPermitted", "Forbidden",
         "IntegrityError", "KerberosError", "KeyVersionMismatch", "MalformedToken", "NameMismatch", "RealmNotAllowed",
         "Replay", "ReplayCacheUnavailable", "TicketExpired", "TicketInvalid", "TicketNotYetValid",
         "UnsupportedMechanism", "WrongPrincipal", "ConfigurationError", "KeyUnusable", "SessionInvalid",
         "SessionExpired", "SessionTooLarge", "BearerInvalid", "BearerExpired"),
        "fastkrb.errors"),
    "CookieSettings": "fastkrb.sessions.cookie",
    "SessionCookies": "fastkrb.sessions.cookie",
    "TokenIssuer": "fastkrb.sessions.bearer",
    "TokenVerifier": "fastkrb.sessions.bearer",
    "ChallengeRule": "fastkrb.challenge",
    "GroupNames": "fastkrb.groups",
    "Keytab": "fastkrb.keytab",
    "KeytabEntry": "fastkrb.keytab",
    "Policy": "fastkrb.policy",
    "AuthResult": "fastkrb.validator",
    "Validator": "fastkrb.validator",
}

__all__ = [
    "AuthResult", "ChannelBindingsMismatch", "ClockSkew", "EnctypeNotInKeytab", "EnctypeNotPermitted", "Forbidden",
    "GroupNames", "IntegrityError", "KerberosError", "KeyVersionMismatch", "Keytab", "KeytabEntry", "MalformedToken",
    "NameMismatch", "Policy", "RealmNotAllowed", "Replay", "ReplayCacheUnavailable", "TicketExpired", "TicketInvalid",
    "TicketNotYetValid", "UnsupportedMechanism", "Validator", "WrongPrincipal", "ConfigurationError", "KeyUnusable",
    "SessionInvalid", "SessionExpired", "SessionTooLarge", "BearerInvalid", "BearerExpired", "CookieSettings",
    "SessionCookies", "TokenIssuer", "TokenVerifier", "ChallengeRule",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'fastkrb' has no attribute {name!r}")
    value = getattr(import_module(where), name)
    globals()[name] = value   # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted((*globals(), *_WHERE))
