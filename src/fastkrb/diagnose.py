"""Turns a native verdict and its facts into a typed error that names the real cause and the fix.

This runs only on the rejection path, so it may be as thorough as it likes: it compares the ticket
with what the keytab holds (MIT's rd_req_dec.c diagnoses, made precise) and words the skew, the
replay and the cache state so that an operator can act without a packet capture.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastkrb import errors as E

__all__ = ["explain", "enctype_name"]

_ENCTYPE_NAMES = {
    1: "des-cbc-crc", 3: "des-cbc-md5", 16: "des3-cbc-sha1", 17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96", 19: "aes128-cts-hmac-sha256-128", 20: "aes256-cts-hmac-sha384-192",
    23: "arcfour-hmac", 24: "arcfour-hmac-exp", 25: "camellia128-cts-cmac", 26: "camellia256-cts-cmac",
}


def enctype_name(e: int | None) -> str:
    if e is None:
        return "unknown enctype"
    return f"{_ENCTYPE_NAMES.get(e, 'enctype')}({e})"


def _iso(t: float | None) -> str:
    if t is None:
        return "?"
    try:
        return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)


# principal -> [(kvno, enctype)] of the keytab, for diagnoses.
KeyIndex = Mapping[str, Sequence[tuple[int, int]]]
Facts = dict[str, Any]


def explain(verdict: str, f: dict[str, Any], keys: KeyIndex, permitted: Sequence[int],
            allowed_realms: Sequence[str] | None, rc_started: float) -> E.KerberosError:
    """The typed error for a verdict; ``f`` holds the facts the native core collected."""
    server = f.get("server")
    d = {k: v for k, v in f.items() if k not in ("what", "offset") or verdict in ("malformed", "pac_malformed")}
    held = keys.get(server) if isinstance(server, str) else None
    if held:
        # what the keytab holds for the ticket's principal: the first thing an operator compares
        d.setdefault("keytab_kvnos", sorted({k for k, _ in held}))
        d.setdefault("keytab_enctypes", sorted({e for _, e in held}))
    handler = _HANDLERS.get(verdict)
    if handler is None:
        return E.InternalError(f"Validation failed inside fastkrb ({verdict}).", details=d)
    return handler(f, d, server, keys, permitted, allowed_realms, rc_started)


def _malformed(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    what = f.get("what") or "not a Kerberos message"
    at = f" (byte {f['offset']})" if f.get("offset") else ""
    return E.MalformedToken(f"The token is not a valid Kerberos/SPNEGO message: {what}{at}.", details=d)


def _too_large(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.MalformedToken(
        f"The token is larger than the {f.get('max_token')}-byte limit.",
        "If the client's PAC is legitimately this large (many AD groups), raise max_token_size; "
        "otherwise this is abuse.", d)


def _ntlm(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.UnsupportedMechanism(
        f"The client sent NTLM instead of Kerberos ({f.get('what', 'NTLMSSP token')}): it could not get a "
        "Kerberos service ticket for this server.", details=d)


def _no_krb5(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.UnsupportedMechanism(
        f"The SPNEGO token offers no usable Kerberos mechanism ({f.get('what', '')}).", details=d)


def _u2u(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.UnsupportedMechanism(
        "The AP-REQ asks for user-to-user authentication (USE-SESSION-KEY), which a keytab-based acceptor "
        "cannot do.", "Give the service a keytab and let the client ask for a normal service ticket.", d)


def _enctype(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    e = f.get("ticket_enctype")
    allowed = ", ".join(enctype_name(x) for x in permitted)
    return E.EnctypeNotPermitted(
        f"The ticket for {server} is encrypted with {enctype_name(e)}, which this validator does not "
        f"permit (permitted: {allowed}).", details=d | {"permitted": list(permitted)})


def _session_enctype(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    e = f.get("session_enctype")
    allowed = ", ".join(enctype_name(x) for x in permitted)
    return E.EnctypeNotPermitted(
        f"The session key of the ticket for {server} uses {enctype_name(e)}, which this validator does "
        f"not permit (permitted: {allowed}).",
        "Have the KDC choose an AES session key (the client's permitted_enctypes / the service's "
        "supported enctypes), or permit the enctype.", d | {"permitted": list(permitted)})


def _close_names(server: str, names: Sequence[str]) -> list[str]:
    low = server.lower()
    svc = server.split("/", 1)[0]
    return [n for n in names if n.lower() == low or (n.split("/", 1)[0] == svc and n != server)]


def _wrong_principal(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    names = sorted(keys)
    close = _close_names(server or "", names)
    hint = f" Close matches in the keytab: {', '.join(close)}." if close else ""
    return E.WrongPrincipal(
        f"The ticket is for {server}, which is not in the keytab (it holds {', '.join(names) or 'nothing'})."
        f"{hint}", details=d | {"keytab_principals": names})


def _not_accepted(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.WrongPrincipal(
        f"The ticket is for {server}: its key is in the keytab, but the principal is not in this "
        "validator's accepted principals.",
        "Add it to principals= if this service should answer to that name.", d)


def _kvnos(keys: KeyIndex, server: str | None) -> list[int]:
    return sorted({k for k, _ in keys.get(server or "", ())})


def _kvno(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    tk = f.get("ticket_kvno")
    have = _kvnos(keys, server)
    d = d | {"keytab_kvnos": have}
    enc = enctype_name(f.get("ticket_enctype"))
    tried = f.get("keys_tried", 0)
    also = (f" The other {tried} key(s) of {enc} in the keytab do not decrypt it either."
            if tried else "")
    if have and tk is not None and tk < min(have):
        d["direction"] = "ticket_older"
        return E.KeyVersionMismatch(
            f"The ticket for {server} was issued for key version {tk}, older than every key in the keytab "
            f"(kvnos {have}): the client holds a ticket from before the key rotation.{also}",
            "On the client: kdestroy && kinit (or klist purge on Windows) to get a ticket for the current key. "
            "If the old key should still be accepted during rotation, keep it in the keytab.", d)
    if have and tk is not None and tk > max(have):
        d["direction"] = "keytab_older"
        return E.KeyVersionMismatch(
            f"The ticket for {server} was issued for key version {tk}, newer than every key in the keytab "
            f"(kvnos {have}): the keytab is out of date — the service key was changed after it was "
            f"exported.{also}",
            "Export the keytab again (kadmin: ktadd -norandkey; AD: ktpass or msktutil --update) and deploy "
            "it; fastkrb reloads it without a restart in the sidecar.", d)
    d["direction"] = "missing"
    return E.KeyVersionMismatch(
        f"The ticket for {server} was issued for key version {tk}, which is not in the keytab (kvnos "
        f"{have}).{also}", "Export the keytab again so that it holds the KDC's current key.", d)


def _enctype_missing(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    tk, te = f.get("ticket_kvno"), f.get("ticket_enctype")
    held = sorted({(k, e) for k, e in keys.get(server or "", ())})
    at_kvno = [enctype_name(e) for k, e in held if k == tk] if tk is not None else [enctype_name(e) for _, e in held]
    return E.EnctypeNotInKeytab(
        f"The keytab has {server}" + (f" kvno {tk}" if tk is not None else "") +
        f" but not with {enctype_name(te)}, the enctype of the ticket (it has {', '.join(at_kvno) or 'none'}).",
        details=d | {"keytab_enctypes": sorted({e for _, e in held})})


def _ticket_integrity(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    tk, te = f.get("ticket_kvno"), f.get("ticket_enctype")
    return E.IntegrityError(
        f"The keytab has a key for {server} kvno {tk} {enctype_name(te)}, but it does not decrypt the ticket: "
        "the keytab's key is not the KDC's (made from a wrong password or salt, or the key was reset without "
        "a new kvno), or the ticket was altered in transit.",
        "Export the keytab from the KDC again (or with ktpass/msktutil using the account's UPN salt), and "
        "check that no other system reset the service account's password.", d)


def _ticket_integrity_no_kvno(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.IntegrityError(
        f"The ticket for {server} names no key version and none of the keytab's "
        f"{enctype_name(f.get('ticket_enctype'))} keys decrypts it.",
        "Export the keytab from the KDC again; check the service account's password and salt.", d)


def _auth_integrity(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.IntegrityError(
        f"The ticket for {server} is genuine but the authenticator does not decrypt with its session key: "
        "it was altered, or joined to a ticket it was not made for.",
        "Treat it as an attack or a broken client; a correct client only needs to retry.", d)


def _auth_enctype(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.IntegrityError(
        f"The authenticator is encrypted with {enctype_name(f.get('authenticator_enctype'))} but the "
        f"ticket's session key is {enctype_name(f.get('session_enctype'))}.",
        "A correct client never does this: treat it as tampering.", d)


def _cksum_integrity(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.IntegrityError("The authenticator's checksum does not verify with the session key.",
                            "Treat it as tampering or a broken client.", d)


def _pac_integrity(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.IntegrityError(
        f"The PAC in the ticket for {f.get('client')} fails its server signature: the PAC was altered or "
        "forged.", "Treat it as an attack; genuine KDC tickets always verify.", d)


def _pac_malformed(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.MalformedToken(
        f"The ticket for {f.get('client')} carries a PAC that cannot be parsed or lacks its signatures.",
        "A genuine KDC does not issue such tickets; treat it as tampering or a KDC bug.", d)


def _name_mismatch(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.NameMismatch(
        f"The authenticator names {f.get('authenticator_client')} but the ticket belongs to "
        f"{f.get('client')}.", details=d)


def _realm(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.RealmNotAllowed(
        f"The client {f.get('client')} is from realm {f.get('client_realm')}, which is not allowed "
        f"(allowed: {', '.join(realms or [])}).", details=d | {"allowed_realms": list(realms or [])})


def _transited(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.RealmNotAllowed(
        f"The ticket of {f.get('client')} transited realm {f.get('transited_realm')!r} (path "
        f"{f.get('transited')!r}), which is not allowed, and the KDC did not mark the path as checked.",
        "Allow the transited realms if that trust path is intended, or fix capaths on the KDC.",
        d | {"allowed_realms": list(realms or [])})


def _invalid(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.TicketInvalid(f"The ticket of {f.get('client')} carries the INVALID flag (a postdated ticket "
                           "the KDC has not validated).", details=d)


def _skew(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    s = float(f.get("skew_seconds", 0.0))
    direction = "ahead of" if s > 0 else "behind"
    d = d | {"direction": "client_ahead" if s > 0 else "client_behind", "offset_seconds": round(s, 3)}
    return E.ClockSkew(
        f"The authenticator of {f.get('client')} was made at {_iso(f.get('ctime'))}: {abs(s):.0f} s "
        f"{direction} this server's clock ({_iso(f.get('now'))}), beyond the allowed ±{f.get('clock_skew'):.0f} s.",
        details=d)


def _clock_note(f: Facts) -> str:
    s = f.get("skew_seconds")
    if s is None or abs(s) <= float(f.get("clock_skew", 300)):
        return ""
    return (f" The authenticator is also {abs(s):.0f} s {'ahead of' if s > 0 else 'behind'} this server's clock: "
            "if the client just got its ticket, this server's clock is the one that is wrong.")


def _not_yet(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.TicketNotYetValid(
        f"The ticket of {f.get('client')} starts at {_iso(f.get('start_time'))}, after now "
        f"({_iso(f.get('now'))}) plus the allowed skew.{_clock_note(f)}", details=d)


def _expired(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    ago = float(f.get("now", 0)) - float(f.get("end_time", 0))
    return E.TicketExpired(
        f"The ticket of {f.get('client')} expired at {_iso(f.get('end_time'))}, {ago:.0f} s ago "
        f"(allowed skew {f.get('clock_skew'):.0f} s).{_clock_note(f)}", details=d)


def _cb_mismatch(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.ChannelBindingsMismatch(
        "The token is bound to a different channel than the one given: the client computed channel bindings "
        "for another TLS connection (a TLS-terminating proxy in between?) or the token was moved.", details=d)


def _cb_missing(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.ChannelBindingsMismatch(
        "The client declared channel bindings mandatory (KERB_AP_OPTIONS_CBT) but sent none.", details=d)


def _replay(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    ago = f.get("first_seen_ago")
    when = f" {ago * 1000:.1f} ms ago" if ago is not None and ago < 1 else (
        f" {ago:.1f} s ago" if ago is not None else "")
    hint = (" So soon after the first use this is almost always the same request validated twice (an internal "
            "redirect or sub-request re-running authentication), not an attack."
            if ago is not None and ago < 1 else "")
    return E.Replay(f"This authenticator of {f.get('client')} for {server} was already accepted{when}.{hint}",
                    details=d)


def _rc_cold(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.ReplayCacheUnavailable(
        f"The replay cache started empty at {_iso(started)}, and this authenticator ({_iso(f.get('ctime'))}) "
        f"predates that: for the first {f.get('clock_skew'):.0f} s after a start the cache cannot know whether "
        "it was seen before (RFC 4120 §3.2.3), so it is refused.",
        "The client retries with a fresh authenticator and succeeds. When validating recorded tokens "
        "(with `now` in the past) use cold_start=False.", d | {"cache_started": started})


def _rc_full(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.ReplayCacheUnavailable(
        "The replay cache is full of live entries; rather than forget one (and let its replay through) it "
        "refuses new authenticators until entries expire.",
        "Raise the replay cache capacity to cover the peak rate times twice the clock skew.", d)


def _rc_unavailable(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.ReplayCacheUnavailable(
        f"The replay cache cannot answer ({f.get('reason', 'backend error')}); failing closed.", details=d)


def _internal(f: Facts, d: Facts, server: str | None, keys: KeyIndex, permitted: Sequence[int],
        realms: Sequence[str] | None, started: float) -> E.KerberosError:
    return E.InternalError("Validation failed inside fastkrb (crypto or memory).", details=d)


_HANDLERS: dict[str, Callable[..., E.KerberosError]] = {
    "malformed": _malformed, "too_large": _too_large, "ntlm": _ntlm, "no_krb5": _no_krb5,
    "user_to_user": _u2u, "enctype_not_permitted": _enctype, "session_enctype_not_permitted": _session_enctype,
    "wrong_principal": _wrong_principal, "principal_not_accepted": _not_accepted, "kvno": _kvno,
    "enctype_not_in_keytab": _enctype_missing, "ticket_integrity": _ticket_integrity,
    "ticket_integrity_no_kvno": _ticket_integrity_no_kvno, "auth_integrity": _auth_integrity,
    "auth_enctype_mismatch": _auth_enctype, "cksum_integrity": _cksum_integrity,
    "pac_integrity": _pac_integrity, "pac_malformed": _pac_malformed, "name_mismatch": _name_mismatch,
    "realm": _realm, "transited": _transited, "ticket_invalid": _invalid, "clock_skew": _skew,
    "not_yet_valid": _not_yet, "expired": _expired, "cb_mismatch": _cb_mismatch, "cb_missing": _cb_missing,
    "replay": _replay, "rc_cold": _rc_cold, "rc_full": _rc_full, "rc_unavailable": _rc_unavailable,
    "internal": _internal,
}
