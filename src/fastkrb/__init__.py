"""fastkrb: fast, exact Kerberos service-ticket validation with errors that name the cause."""

from fastkrb.errors import (
    ChannelBindingsMismatch,
    ClockSkew,
    EnctypeNotInKeytab,
    EnctypeNotPermitted,
    IntegrityError,
    KerberosError,
    KeyVersionMismatch,
    MalformedToken,
    NameMismatch,
    RealmNotAllowed,
    Replay,
    ReplayCacheUnavailable,
    TicketExpired,
    TicketInvalid,
    TicketNotYetValid,
    UnsupportedMechanism,
    WrongPrincipal,
)
from fastkrb.keytab import Keytab, KeytabEntry
from fastkrb.validator import AuthResult, Validator

__all__ = [
    "AuthResult",
    "ChannelBindingsMismatch",
    "ClockSkew",
    "EnctypeNotInKeytab",
    "EnctypeNotPermitted",
    "IntegrityError",
    "KerberosError",
    "KeyVersionMismatch",
    "Keytab",
    "KeytabEntry",
    "MalformedToken",
    "NameMismatch",
    "RealmNotAllowed",
    "Replay",
    "ReplayCacheUnavailable",
    "TicketExpired",
    "TicketInvalid",
    "TicketNotYetValid",
    "UnsupportedMechanism",
    "Validator",
    "WrongPrincipal",
]
__version__ = "0.1.0"
