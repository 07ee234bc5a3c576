"""The error vocabulary: every rejection is data — a stable code, the facts, a cause and a fix.

Codes are the contract with callers (sidecar ``X-Auth-Error``, logs, metrics); the prose may improve,
the codes never change. ``krb_error`` is the nearest RFC 4120 §7.5.9 error number, for callers that
must answer with a KRB-ERROR.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "KerberosError",
    "MalformedToken",
    "UnsupportedMechanism",
    "EnctypeNotPermitted",
    "WrongPrincipal",
    "KeyVersionMismatch",
    "EnctypeNotInKeytab",
    "IntegrityError",
    "ClockSkew",
    "TicketExpired",
    "TicketNotYetValid",
    "NameMismatch",
    "TicketInvalid",
    "RealmNotAllowed",
    "Replay",
    "ChannelBindingsMismatch",
    "ReplayCacheUnavailable",
    "InternalError",
    "Forbidden",
    "KeyUnusable",
    "ConfigurationError",
    "SessionInvalid",
    "SessionExpired",
    "SessionTooLarge",
    "BearerInvalid",
    "BearerExpired",
    "GROUP_CHANGE_FIX",
    "ERRORS_BY_CODE",
    "error_for_code",
    "replay_unavailable",
    "utc_iso",
]


class KerberosError(Exception):
    """Base of every rejection. ``code`` is stable; ``cause``/``fix`` are for people; ``details`` for machines."""

    code: ClassVar[str] = "kerberos_error"
    krb_error: ClassVar[int | None] = None
    default_fix: ClassVar[str] = ""

    def __init__(self, cause: str, fix: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.cause = cause
        self.fix = fix if fix is not None else self.default_fix
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"[{self.code}] {cause}" + (f" Fix: {self.fix}" if self.fix else ""))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view (bytes become hex) for logs, the CLI and the sidecar."""
        return {
            "code": self.code,
            "cause": self.cause,
            "fix": self.fix,
            "details": {k: (v.hex() if isinstance(v, (bytes, bytearray)) else v) for k, v in self.details.items()},
        }


class MalformedToken(KerberosError):
    code = "malformed"
    krb_error = 40  # KRB_AP_ERR_MSG_TYPE
    default_fix = ("The client did not send a Kerberos token fastkrb can parse; check that the proxy passes the "
                   "Authorization header unchanged and that the client speaks Negotiate/Kerberos.")


class UnsupportedMechanism(KerberosError):
    code = "unsupported_mechanism"
    krb_error = None
    default_fix = ("The client fell back from Kerberos (usually to NTLM): it could not get a service ticket. "
                   "Check on the client that the SPN exists in the KDC (setspn -Q / kadmin getprinc), that the "
                   "hostname it used resolves to the canonical name, and that its realm trusts the service's.")


class EnctypeNotPermitted(KerberosError):
    code = "enctype_not_permitted"
    krb_error = 14  # KDC_ERR_ETYPE_NOSUPP
    default_fix = ("Permit the enctype in Validator(enctypes=...) if it is acceptable, or have the KDC issue "
                   "tickets with an AES enctype (set the service principal's supported enctypes).")


class WrongPrincipal(KerberosError):
    code = "wrong_principal"
    krb_error = 35  # KRB_AP_ERR_NOT_US
    default_fix = ("The client asked for a service principal this validator does not accept. Add its key to the "
                   "keytab (and to principals=) or make the client use the right hostname/SPN.")


class KeyVersionMismatch(KerberosError):
    code = "key_version_mismatch"
    krb_error = 44  # KRB_AP_ERR_BADKEYVER
    default_fix = ("Compare the ticket's kvno with the keytab's (fastkrb keytab list): export the keytab again "
                   "if it is older, or have the client get a new ticket (kdestroy; kinit) if the ticket is.")


class EnctypeNotInKeytab(KerberosError):
    code = "enctype_not_in_keytab"
    krb_error = 45  # KRB_AP_ERR_NOKEY
    default_fix = ("Export the service key again with every enctype the KDC uses for it "
                   "(kadmin ktadd -e ..., or ktpass /crypto ALL).")


class IntegrityError(KerberosError):
    code = "integrity"
    krb_error = 31  # KRB_AP_ERR_BAD_INTEGRITY
    default_fix = ("A key that should decrypt does not: export the keytab from the KDC again; if it is current, "
                   "the message was altered in transit.")


class ClockSkew(KerberosError):
    code = "clock_skew"
    krb_error = 37  # KRB_AP_ERR_SKEW
    default_fix = "Synchronise the clocks of client and server (NTP/chrony), or raise clock_skew if that is policy."


class TicketExpired(KerberosError):
    code = "ticket_expired"
    krb_error = 32  # KRB_AP_ERR_TKT_EXPIRED
    default_fix = "The client must get a fresh ticket (kinit / klist purge), or its clock or ours is wrong."


class TicketNotYetValid(KerberosError):
    code = "ticket_not_yet_valid"
    krb_error = 33  # KRB_AP_ERR_TKT_NYV
    default_fix = "The ticket's start time is in the future: check the clocks of client, KDC and server."


class NameMismatch(KerberosError):
    code = "name_mismatch"
    krb_error = 36  # KRB_AP_ERR_BADMATCH
    default_fix = "The authenticator was not made by the ticket's owner: treat it as an attack or a broken client."


class TicketInvalid(KerberosError):
    code = "ticket_invalid"
    krb_error = 33  # MIT answers KRB_AP_ERR_TKT_NYV for the INVALID flag
    default_fix = "The ticket is postdated and not yet validated: the client must have the KDC validate it (kinit -v)."


class RealmNotAllowed(KerberosError):
    code = "realm_not_allowed"
    krb_error = 12  # KDC_ERR_POLICY
    default_fix = "Add the client's realm (and each transited realm) to the allowed realms if that trust is intended."


class Replay(KerberosError):
    code = "replay"
    krb_error = 34  # KRB_AP_ERR_REPEAT
    default_fix = ("The same authenticator was presented twice. If the first presentation was milliseconds ago from "
                   "the same request, a proxy re-ran the auth (internal redirect, filter re-run): validate once per "
                   "request. Otherwise it may be an attack; the client should send a fresh token.")


class ChannelBindingsMismatch(KerberosError):
    code = "channel_bindings"
    krb_error = 38  # KRB_AP_ERR_BADADDR
    default_fix = ("The token is bound to another channel (a TLS-terminating proxy in between?). Compute the "
                   "bindings on the TLS connection the client actually used (tls-server-end-point).")


class ReplayCacheUnavailable(KerberosError):
    code = "replay_cache_unavailable"
    krb_error = None
    default_fix = ("The client should retry with a fresh token. If this persists, check the replay cache "
                   "backend (shared-memory file, Redis) and the server's logs.")


#: Why a user just added to a group is still refused: said by every ``forbidden`` that a group rule decided.
GROUP_CHANGE_FIX = ("Group membership reaches a service only with a new logon: the groups travel in the PAC of the "
                    "user's TGT, so a change in the directory shows in tickets only after the client gets a new TGT "
                    "(klist purge, or log off and on; kinit) or its TGT is renewed (typically within 10 hours).")


class Forbidden(KerberosError):
    """The ticket is valid, the client authenticated, and a policy does not allow it (HTTP 403, never 401).

    ``details``: ``client``, ``realm``, ``constraint`` (``"realms"``, ``"users"`` or ``"groups"``: the rule
    that refused), ``group_count`` (group SIDs the ticket carried; 0 without a PAC), ``has_identity``, and
    ``policy`` when the policy has a name.
    """

    code = "forbidden"
    krb_error = None   # not a Kerberos failure: the authentication succeeded
    default_fix = ("Allow the user in the policy (allowed_users, allowed_groups, allowed_realms), or use an "
                   "account the policy allows.")


class KeyUnusable(KerberosError):
    """The ticket needs a keytab entry that is there but cannot be used (wrong key length, DES, unknown
    enctype, empty key); ``details["unusable_entry"]`` names it and ``details["reason"]`` says why."""

    code = "key_unusable"
    krb_error = 45  # KRB_AP_ERR_NOKEY
    default_fix = ("Export the service key again (MIT: kadmin ktadd -norandkey; Heimdal: ext_keytab of the current "
                   "keys; AD: ktpass) so that the keytab holds a plain, usable key for this kvno and enctype.")


class ConfigurationError(KerberosError, ValueError):
    """A Validator (or the sidecar) was configured so that it could not accept any ticket, or not the ones
    asked for: a principal not in the keytab, enctypes no usable key has. Raised at construction, never
    per request. A ValueError too, for callers that caught the ValueError of earlier releases."""

    code = "configuration"
    krb_error = None
    default_fix = "Compare the configuration with `fastkrb keytab list KEYTAB` and make them agree."


class InternalError(KerberosError):
    code = "internal"
    krb_error = None
    default_fix = "This is a fault in fastkrb or its environment (memory, OpenSSL), not in the token: report it."


# -- sessions after one Negotiate (fastkrb.sessions): not Kerberos failures, so krb_error is None; HTTP 401 -----

class SessionInvalid(KerberosError):
    """A session cookie that does not open: not fastkrb's format, sealed with a key no longer in the key file
    (``details["reason"] == "unknown_kid"``), altered, or sealed for another cookie name (``"integrity"``)."""

    code = "session_invalid"
    krb_error = None
    default_fix = ("The client authenticates with Negotiate again and gets a new cookie. If every replica refuses "
                   "cookies the others set, give them all the same session key file.")


class SessionExpired(KerberosError):
    """A session cookie past its expiry (the ticket's end time or the configured maximum age, whichever came
    first), or a ticket that ends too soon to seal one."""

    code = "session_expired"
    krb_error = None
    default_fix = "The client authenticates with Negotiate again (with a fresh ticket if its ticket ended)."


class SessionTooLarge(KerberosError):
    """The sealed session would exceed what browsers keep of one cookie (RFC 6265 §6.1: 4096 bytes), usually a
    user in very many groups; no cookie is set and the client keeps using Negotiate."""

    code = "session_too_large"
    krb_error = None
    default_fix = ("Nothing breaks: the client keeps authenticating with Negotiate on every request. For sessions, "
                   "reduce the user's group memberships or use bearer tokens (POST /token) instead of cookies.")


class BearerInvalid(KerberosError):
    """An ``Authorization: Bearer`` token this service did not issue or no longer accepts: not a JWT, another
    algorithm than the one configured (``none`` and HMAC included), a key id no longer in the signing key file,
    a bad signature, another issuer or audience, a missing claim (``details["reason"]`` says which)."""

    code = "bearer_invalid"
    krb_error = None
    default_fix = ("Get a new token from this service's POST /token with a Kerberos ticket; check that the token "
                   "was issued for this audience and that the signing key file is the issuer's.")


class BearerExpired(KerberosError):
    """A bearer token past its ``exp`` (bounded by the ticket's end time), beyond the configured leeway, or a
    ticket that ends too soon to issue one."""

    code = "bearer_expired"
    krb_error = None
    default_fix = "Get a new token from POST /token (with a fresh Kerberos ticket if the ticket ended)."


ERRORS_BY_CODE: dict[str, type[KerberosError]] = {
    c.code: c
    for c in (
        MalformedToken, UnsupportedMechanism, EnctypeNotPermitted, WrongPrincipal, KeyVersionMismatch,
        EnctypeNotInKeytab, IntegrityError, ClockSkew, TicketExpired, TicketNotYetValid, NameMismatch,
        TicketInvalid, RealmNotAllowed, Replay, ChannelBindingsMismatch, ReplayCacheUnavailable, InternalError,
        Forbidden, KeyUnusable, ConfigurationError,
        SessionInvalid, SessionExpired, SessionTooLarge, BearerInvalid, BearerExpired,
    )
}


def error_for_code(code: str, cause: str, fix: str | None = None,
                   details: dict[str, Any] | None = None) -> KerberosError:
    """Rebuild a typed error from its wire form (sidecar client, JSON logs)."""
    cls = ERRORS_BY_CODE.get(code, KerberosError)
    return cls(cause, fix, details)


def utc_iso(t: float | None) -> str:
    """A Unix time as RFC 3339 UTC to the second ("?" when unknown), as every message words times."""
    if t is None:
        return "?"
    try:
        return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)


def replay_unavailable(reason: str, *, backend: str | None = None, name: str | None = None, where: str = "",
                       started: float | None = None, ctime: float | None = None, clock_skew: float = 300.0,
                       details: Mapping[str, Any] | None = None) -> ReplayCacheUnavailable:
    """The fail-closed error of a replay cache, worded once for every backend and for the validator.

    ``reason``: ``"full"`` (full of live entries: it refuses rather than forget one, whose replay would
    then pass), ``"cold_start"`` (the cache started empty after the authenticator was made, so for
    clock_skew seconds it cannot vouch for it: RFC 4120 §3.2.3), or any other text saying why it cannot
    answer ("closed", "ConnectionError: ..."). ``backend`` ("memory", "shm", "redis") goes into the
    details; ``name`` is how the cause names the cache (default: the backend) and ``where`` follows it
    (a Redis address).
    """
    label = name or backend
    cache = (f"The {label} replay cache" if label else "The replay cache") + (f" {where}" if where else "")
    facts = {**(details or {}), "reason": reason}
    if backend:
        facts["backend"] = backend
    if reason == "full":
        return ReplayCacheUnavailable(
            f"{cache} is full of live entries; rather than forget one (and let its replay through) it refuses "
            "new authenticators until entries expire.",
            "Raise the replay cache capacity to cover the peak rate times twice the clock skew.", facts)
    if reason == "cold_start":
        made = f" ({utc_iso(ctime)})" if ctime is not None else ""
        facts["cache_started"] = started
        if ctime is not None:
            facts.setdefault("ctime", ctime)
        return ReplayCacheUnavailable(
            f"{cache} started empty at {utc_iso(started)}, and this authenticator{made} predates that: for the "
            f"first {clock_skew:.0f} s after a start the cache cannot know whether it was seen before "
            "(RFC 4120 §3.2.3), so it is refused.",
            "The client retries with a fresh authenticator and succeeds. When validating recorded tokens "
            "(with `now` in the past) use cold_start=False.", facts)
    return ReplayCacheUnavailable(f"{cache} cannot answer ({reason}); failing closed.", details=facts)
