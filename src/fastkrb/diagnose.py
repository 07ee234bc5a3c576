"""Turns a native verdict and its facts into a typed error that names the real cause and the fix.

This runs only on the rejection path, so it may be as thorough as it likes: it compares the ticket
with what the keytab holds (MIT's rd_req_dec.c diagnoses, made precise) and words the skew, the
replay and the cache state so that an operator can act without a packet capture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastkrb import errors as E
from fastkrb.enctypes import label as enctype_name
from fastkrb.errors import utc_iso as _iso
from fastkrb.krb.pac import CKSUMTYPE_FOR_ENCTYPE

__all__ = ["explain", "enctype_name", "close_match", "truncated"]

# principal -> [(kvno, enctype)] of the keytab, for diagnoses.
KeyIndex = Mapping[str, Sequence[tuple[int, int]]]
Facts = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One rejection as every handler reads it: the facts the native core collected, the details the error
    will carry, and what the validator was configured with."""

    facts: Facts                    # what the native core (or avalidate) collected
    details: Facts                  # the facts fit for the error's details
    server: str | None              # the ticket's service principal, when it was read
    keys: KeyIndex                  # principal -> [(kvno, enctype)] of the keytab
    permitted: Sequence[int]        # the validator's permitted enctypes
    realms: Sequence[str] | None    # allowed client/transited realms (None: any)
    started: float                  # when the replay cache started empty (cold-start rule)


def explain(verdict: str, f: dict[str, Any], keys: KeyIndex, permitted: Sequence[int],
            allowed_realms: Sequence[str] | None, rc_started: float,
            unusable: Mapping[tuple[str, int, int], str] | None = None) -> E.KerberosError:
    """The typed error for a verdict; ``f`` holds the facts the native core collected. ``unusable`` maps
    (principal, kvno, enctype) of each keytab entry the validator skipped to the reason."""
    server = f.get("server")
    d = {k: v for k, v in f.items()
         if k not in ("what", "offset") or verdict in ("malformed", "pac_malformed", "pac_client_mismatch",
                                                        "pac_realm_mismatch")}
    held = keys.get(server) if isinstance(server, str) else None
    if held:
        # what the keytab holds for the ticket's principal: the first thing an operator compares
        d.setdefault("keytab_kvnos", sorted({k for k, _ in held}))
        d.setdefault("keytab_enctypes", sorted({e for _, e in held}))
    if unusable and isinstance(server, str) and verdict in _KEY_VERDICTS:
        hit = _unusable_entry(unusable, server, f.get("ticket_kvno"), f.get("ticket_enctype"))
        if hit is not None:
            (p, kvno, et), why = hit
            d["unusable_entry"] = {"principal": p, "kvno": kvno, "enctype": et}
            d["reason"] = why
            return E.KeyUnusable(
                f"The ticket for {server} needs the keytab entry {p} kvno {kvno} {enctype_name(et)}, which is "
                f"in the keytab but cannot be used: {why}.", details=d)
    handler = _HANDLERS.get(verdict)
    if handler is None:
        return E.InternalError(f"Validation failed inside fastkrb ({verdict}).", details=d)
    return handler(Case(f, d, server if isinstance(server, str) else None, keys, permitted, allowed_realms,
                        rc_started))


# verdicts of "no key decrypts this ticket", where a skipped keytab entry may be the one the ticket needs
_KEY_VERDICTS = frozenset({"wrong_principal", "kvno", "enctype_not_in_keytab", "ticket_integrity_no_kvno"})


def _unusable_entry(unusable: Mapping[tuple[str, int, int], str], server: str, kvno: Any,
                    enctype: Any) -> tuple[tuple[str, int, int], str] | None:
    if enctype is None:
        return None
    for (p, k, e), why in unusable.items():
        if p == server and e == enctype and (kvno is None or k == kvno):
            return (p, k, e), why
    return None


def truncated(have: int, announced: int, details: Facts | None = None) -> E.MalformedToken:
    """The error of a token cut in transit: a valid prefix of a real token (its first DER header announces
    more bytes than arrived). Proxies cut long headers; Kerberos tokens of users in many groups are long."""
    return E.MalformedToken(
        f"The token is truncated: it ends after {have} of the {announced} bytes its header announces, so it was "
        "cut in transit, most likely by a header size limit in a proxy in front of the service.",
        "Raise the header size limit of every proxy on the way above the largest token: a Windows client's token "
        "may reach 48,000 bytes (its default MaxTokenSize), 64,000 in base64. nginx: large_client_header_buffers "
        "4 64k; Apache: LimitRequestFieldSize 65536; HAProxy: tune.bufsize 65536. If the client itself sent it "
        "cut, its MaxTokenSize is too small for the user's groups.",
        {**(details or {}), "token_bytes": have, "announced_bytes": announced})


_NOT_A_TOKEN = "token is neither binary nor base64"


def _malformed(c: Case) -> E.KerberosError:
    have, announced = c.facts.get("token_bytes"), c.facts.get("announced_bytes")
    if isinstance(have, int) and isinstance(announced, int):
        # the parser's complaint (the first structure that ran past the end) would only restate the cut
        return truncated(have, announced, {k: v for k, v in c.details.items() if k not in ("what", "offset")})
    what = c.facts.get("what") or "not a Kerberos message"
    if what == _NOT_A_TOKEN:
        return E.MalformedToken(
            "The token is neither a binary Kerberos/SPNEGO token nor base64 text: it has characters outside the "
            "base64 alphabet, or a length no base64 text has.",
            "Pass the Authorization header's value (Negotiate <base64>), the base64 alone, or the binary token. "
            "If that is what was passed, something between the client and here changed the header: check that "
            "every proxy passes it unchanged.", c.details)
    at = f" (byte {c.facts['offset']})" if c.facts.get("offset") else ""
    return E.MalformedToken(f"The token is not a valid Kerberos/SPNEGO message: {what}{at}.", details=c.details)


def _too_large(c: Case) -> E.KerberosError:
    return E.MalformedToken(
        f"The token is larger than the {c.facts.get('max_token')}-byte limit.",
        "If the client's PAC is legitimately this large (many AD groups), raise max_token_size; "
        "otherwise this is abuse.", c.details)


def _ntlm(c: Case) -> E.KerberosError:
    return E.UnsupportedMechanism(
        f"The client sent NTLM instead of Kerberos ({c.facts.get('what', 'NTLMSSP token')}): it could not get a "
        "Kerberos service ticket for this server.", details=c.details)


def _no_krb5(c: Case) -> E.KerberosError:
    return E.UnsupportedMechanism(
        f"The SPNEGO token offers no usable Kerberos mechanism ({c.facts.get('what', '')}).", details=c.details)


def _u2u(c: Case) -> E.KerberosError:
    return E.UnsupportedMechanism(
        "The AP-REQ asks for user-to-user authentication (USE-SESSION-KEY), which a keytab-based acceptor "
        "cannot do.", "Give the service a keytab and let the client ask for a normal service ticket.", c.details)


def _enctype(c: Case) -> E.KerberosError:
    e = c.facts.get("ticket_enctype")
    allowed = ", ".join(enctype_name(x) for x in c.permitted)
    return E.EnctypeNotPermitted(
        f"The ticket for {c.server} is encrypted with {enctype_name(e)}, which this validator does not "
        f"permit (permitted: {allowed}).", details=c.details | {"permitted": list(c.permitted)})


def _session_enctype(c: Case) -> E.KerberosError:
    e = c.facts.get("session_enctype")
    allowed = ", ".join(enctype_name(x) for x in c.permitted)
    return E.EnctypeNotPermitted(
        f"The session key of the ticket for {c.server} uses {enctype_name(e)}, which this validator does "
        f"not permit (permitted: {allowed}).",
        "Have the KDC choose an AES session key (the client's permitted_enctypes / the service's "
        "supported enctypes), or permit the enctype.", c.details | {"permitted": list(c.permitted)})


def _split(principal: str) -> tuple[list[str], str]:
    name, at, realm = principal.rpartition("@")
    return (name if at else realm).split("/"), realm if at else ""


def _one_edit(a: str, b: str) -> bool:
    """a and b differ by at most one insertion, deletion, substitution or swap of neighbours (a typo)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1:] == b[i + 1:] or (a[i:i + 2] == b[i:i + 2][::-1] and a[i + 2:] == b[i + 2:])
    return a[i:] == b[i + 1:] if len(a) < len(b) else a[i + 1:] == b[i:]


def close_match(server: str, candidate: str) -> str | None:
    """Why ``candidate`` (a keytab principal) is a near-miss of the ticket's ``server``, or None.

    Only real near-misses: the same name in another letter case (Kerberos compares names exactly), the same
    service and realm with the host one typo away or short versus fully qualified, or the same name in
    another realm. Two hosts that merely share the service (HTTP/api.corp.example, HTTP/web.other.example)
    are not close.
    """
    if candidate == server:
        return None
    if candidate.lower() == server.lower():
        return "differs only in letter case (Kerberos names are case-sensitive)"
    (scomp, srealm), (ccomp, crealm) = _split(server), _split(candidate)
    if len(scomp) != len(ccomp) or scomp[0].lower() != ccomp[0].lower():
        return None
    if [x.lower() for x in scomp] == [x.lower() for x in ccomp]:
        return f"the same name in realm {crealm}"
    if srealm.lower() != crealm.lower() or len(scomp) != 2:
        return None
    sh, ch = scomp[1].lower(), ccomp[1].lower()
    if _one_edit(sh, ch):
        return "the host name differs by one character"
    if ("." in sh) != ("." in ch) and sh.split(".")[0] == ch.split(".")[0]:
        return "a short host name against the fully qualified one"
    return None


def _close_names(server: str, names: Sequence[str]) -> list[str]:
    return [f"{n} ({why})" for n in names if (why := close_match(server, n)) is not None]


def _alias_note(c: Case) -> str:
    """What trying the keytab's keys on an unknown sname (as MIT's acceptor does) found: no key decrypts."""
    tried = c.facts.get("alias_keys_tried")
    if tried is None:
        return ""
    te, tk = c.facts.get("ticket_enctype"), c.facts.get("ticket_kvno")
    enc = enctype_name(te)
    if not tried:
        have = sorted({e for held in c.keys.values() for _, e in held})
        return (f" It cannot be an SPN of an account in the keytab either: the keytab has no {enc} key (it has "
                f"{', '.join(enctype_name(e) for e in have) or 'no keys'}), and the KDC encrypted the ticket with "
                f"{enc}.")
    keys = ", ".join(f"{p} kvno {k}" for p, k in tried)
    which = (f"its only {enc} key does not decrypt it" if len(tried) == 1 else
             f"none of its {len(tried)} {enc} keys decrypts it")
    note = f" Tried as an SPN of the keytab's accounts (as MIT's acceptor does), {which} ({keys})."
    kvnos = sorted({k for _, k in tried})
    if tk is not None and tk not in kvnos:
        if tk > kvnos[-1]:
            note += (f" The ticket's kvno {tk} is newer than all of them: if {c.server} is an SPN of one of these "
                     "accounts, the keytab is older than the account's current key.")
        elif tk < kvnos[0]:
            note += (f" The ticket's kvno {tk} is older than all of them: if {c.server} is an SPN of one of these "
                     "accounts, the client holds a ticket from before the account's key changed.")
    return note


def _wrong_principal(c: Case) -> E.KerberosError:
    names = sorted(c.keys)
    close = _close_names(c.server or "", names)
    hint = (f" Close {'match' if len(close) == 1 else 'matches'} in the keytab: {'; '.join(close)}."
            if close else "")
    d = c.details | {"keytab_principals": names}
    if "alias_keys_tried" in c.facts:
        d["alias_keys_tried"] = [f"{p} kvno {k}" for p, k in c.facts["alias_keys_tried"]]
    return E.WrongPrincipal(
        f"The ticket is for {c.server}, which is not in the keytab (it holds {', '.join(names) or 'nothing'})."
        f"{_alias_note(c)}{hint}",
        "Add the service's key to the keytab (for Active Directory: export the account that has this SPN, "
        "setspn -Q <SPN> names it), or make the client use the right hostname/SPN. If the key is in the keytab "
        "under the account's name, export it again: the key must be the account's current one.", d)


def _not_accepted(c: Case) -> E.KerberosError:
    return E.WrongPrincipal(
        f"The ticket is for {c.server}: its key is in the keytab, but the principal is not in this "
        "validator's accepted principals.",
        "Add it to principals= if this service should answer to that name.", c.details)


def _kvnos(keys: KeyIndex, server: str | None) -> list[int]:
    return sorted({k for k, _ in keys.get(server or "", ())})


def _kvno_words(kvnos: Sequence[int]) -> str:
    return ("no kvno" if not kvnos else f"kvno {kvnos[0]}" if len(kvnos) == 1 else
            "kvnos " + ", ".join(str(k) for k in kvnos))


def _kvno(c: Case) -> E.KerberosError:
    tk = c.facts.get("ticket_kvno")
    have = _kvnos(c.keys, c.server)
    d = c.details | {"keytab_kvnos": have}
    enc = enctype_name(c.facts.get("ticket_enctype"))
    tried = c.facts.get("keys_tried", 0)
    also = ("" if not tried else
            f" The keytab's {enc} key of another kvno was tried too (as MIT does) and does not decrypt it."
            if tried == 1 else
            f" The keytab's {tried} {enc} keys of other kvnos were tried too (as MIT does); none decrypts it.")
    if have and tk is not None and tk < min(have):
        d["direction"] = "ticket_older"
        return E.KeyVersionMismatch(
            f"The ticket for {c.server} was issued for key version {tk}, older than "
            f"{'the key' if len(have) == 1 else 'every key'} in the keytab ({_kvno_words(have)}): the client holds a "
            f"ticket from before the key rotation.{also}",
            "On the client: kdestroy && kinit (or klist purge on Windows) to get a ticket for the current key. "
            "If the old key should still be accepted during rotation, keep it in the keytab.", d)
    if have and tk is not None and tk > max(have):
        d["direction"] = "keytab_older"
        return E.KeyVersionMismatch(
            f"The ticket for {c.server} was issued for key version {tk}, newer than "
            f"{'the key' if len(have) == 1 else 'every key'} in the keytab ({_kvno_words(have)}): the keytab is out "
            f"of date — the service key was changed after it was exported.{also}",
            "Export the keytab again (kadmin: ktadd -norandkey; AD: ktpass or msktutil --update) and deploy "
            "it; fastkrb reloads it without a restart in the sidecar.", d)
    d["direction"] = "missing"
    return E.KeyVersionMismatch(
        f"The ticket for {c.server} was issued for key version {tk}, which is not in the keytab (it has "
        f"{_kvno_words(have)}).{also}", "Export the keytab again so that it holds the KDC's current key.", d)


def _enctype_missing(c: Case) -> E.KerberosError:
    tk, te = c.facts.get("ticket_kvno"), c.facts.get("ticket_enctype")
    held = sorted({(k, e) for k, e in c.keys.get(c.server or "", ())})
    at_kvno = [enctype_name(e) for k, e in held if k == tk] if tk is not None else [enctype_name(e) for _, e in held]
    return E.EnctypeNotInKeytab(
        f"The keytab has {c.server}" + (f" kvno {tk}" if tk is not None else "") +
        f" but not with {enctype_name(te)}, the enctype of the ticket (it has {', '.join(at_kvno) or 'none'}).",
        details=c.details | {"keytab_enctypes": sorted({e for _, e in held})})


def _ticket_integrity(c: Case) -> E.KerberosError:
    tk, te = c.facts.get("ticket_kvno"), c.facts.get("ticket_enctype")
    return E.IntegrityError(
        f"The keytab has a key for {c.server} kvno {tk} {enctype_name(te)}, but it does not decrypt the ticket: "
        "the keytab's key is not the KDC's (made from a wrong password or salt, or the key was reset without "
        "a new kvno), or the ticket was altered in transit.",
        "Export the keytab from the KDC again (or with ktpass/msktutil using the account's UPN salt), and "
        "check that no other system reset the service account's password.", c.details)


def _ticket_integrity_no_kvno(c: Case) -> E.KerberosError:
    enc, n = enctype_name(c.facts.get("ticket_enctype")), c.facts.get("keys_tried", 0)
    return E.IntegrityError(
        f"The ticket for {c.server} names no key version and " +
        (f"the keytab's {enc} key does not decrypt it." if n == 1 else
         f"none of the keytab's {n} {enc} keys decrypts it." if n else f"no {enc} key of the keytab decrypts it."),
        "Export the keytab from the KDC again; check the service account's password and salt.", c.details)


def _auth_integrity(c: Case) -> E.KerberosError:
    return E.IntegrityError(
        f"The ticket for {c.server} is genuine but the authenticator does not decrypt with its session key: "
        "it was altered, or joined to a ticket it was not made for.",
        "Treat it as an attack or a broken client; a correct client only needs to retry.", c.details)


def _auth_enctype(c: Case) -> E.KerberosError:
    return E.IntegrityError(
        f"The authenticator is encrypted with {enctype_name(c.facts.get('authenticator_enctype'))} but the "
        f"ticket's session key is {enctype_name(c.facts.get('session_enctype'))}.",
        "A correct client never does this: treat it as tampering.", c.details)


def _cksum_integrity(c: Case) -> E.KerberosError:
    return E.IntegrityError("The authenticator's checksum does not verify with the session key.",
                            "Treat it as tampering or a broken client.", c.details)


def _pac_integrity(c: Case) -> E.KerberosError:
    return E.IntegrityError(
        f"The PAC in the ticket for {c.facts.get('client')} fails its server signature: the PAC was altered or "
        "forged.", "Treat it as an attack; genuine KDC tickets always verify.", c.details)


def _pac_malformed(c: Case) -> E.KerberosError:
    # MIT (krb5_pac_parse / k5_pac_validate_client) answers EINVAL, ERANGE or ENOENT for these
    what = c.facts.get("what") or "it cannot be parsed or lacks its signatures"
    return E.MalformedToken(
        f"The ticket for {c.facts.get('client')} carries a PAC that breaks MS-PAC: {what}.",
        "A genuine KDC does not issue such tickets; treat it as tampering or a KDC bug.", c.details)


def _pac_signature_type(c: Case) -> E.KerberosError:
    # MIT: KRB5KRB_AP_ERR_INAPP_CKSUM / KRB5_BAD_ENCTYPE from krb5_c_verify_checksum
    te = c.facts.get("ticket_enctype")
    want = CKSUMTYPE_FOR_ENCTYPE.get(te) if isinstance(te, int) else None
    got = c.facts.get("pac_signature_type")
    return E.IntegrityError(
        f"The PAC in the ticket of {c.facts.get('client')} has a server signature of checksum type {got}, but the "
        f"service key ({enctype_name(te)}) signs with type {want}: the server signature must be the key's own "
        "keyed checksum (HMAC-SHA1-96-AES for AES-SHA1 keys, HMAC-SHA2 for 19/20, HMAC-MD5 only for RC4).",
        "Treat it as tampering: a KDC always signs with the service key's checksum type.",
        c.details | {"expected_signature_type": want})


def _pac_client_mismatch(c: Case) -> E.KerberosError:
    # MIT: KRB5KRB_AP_WRONG_PRINC from k5_pac_validate_client; Heimdal: EINVAL from verify_logonname
    client = c.facts.get("client")
    if c.facts.get("pac_auth_time") is not None and c.facts.get("pac_auth_time") != c.facts.get("auth_time"):
        fact = (f"its PAC_CLIENT_INFO says the ticket was issued at {_iso(c.facts.get('pac_auth_time'))}, the ticket "
                f"says {_iso(c.facts.get('auth_time'))}")
    else:
        fact = (f"its PAC_CLIENT_INFO names {c.facts.get('pac_client_name')!r}, not the ticket's client (compared "
                "without the realm, case included, as MIT does)")
    return E.NameMismatch(
        f"The PAC in the ticket of {client} belongs to another ticket: {fact}.",
        "A genuine KDC never issues this (the PAC was moved from another ticket, or the KDC is broken): treat "
        "it as an attack.", c.details)


def _pac_realm_mismatch(c: Case) -> E.KerberosError:
    # MIT and Heimdal do not read UPN_DNS_INFO; Windows and Samba check the domain against the realm
    return E.NameMismatch(
        f"The PAC in the ticket of {c.facts.get('client')} describes a user of domain "
        f"{c.facts.get('pac_dns_domain')!r} (UPN_DNS_INFO), neither the client's realm "
        f"{c.facts.get('client_realm')} nor the ticket's realm {c.facts.get('ticket_realm')}.",
        "A genuine KDC puts the user's own domain there: treat it as an attack or a KDC bug.", c.details)


def _name_mismatch(c: Case) -> E.KerberosError:
    return E.NameMismatch(
        f"The authenticator names {c.facts.get('authenticator_client')} but the ticket belongs to "
        f"{c.facts.get('client')}.", details=c.details)


def _realm(c: Case) -> E.KerberosError:
    return E.RealmNotAllowed(
        f"The client {c.facts.get('client')} is from realm {c.facts.get('client_realm')}, which is not allowed "
        f"(allowed: {', '.join(c.realms or [])}).", details=c.details | {"allowed_realms": list(c.realms or [])})


def _transited(c: Case) -> E.KerberosError:
    return E.RealmNotAllowed(
        f"The ticket of {c.facts.get('client')} transited realm {c.facts.get('transited_realm')!r} (path "
        f"{c.facts.get('transited')!r}), which is not allowed, and the KDC did not mark the path as checked.",
        "Allow the transited realms if that trust path is intended, or fix capaths on the KDC.",
        c.details | {"allowed_realms": list(c.realms or [])})


def _invalid(c: Case) -> E.KerberosError:
    return E.TicketInvalid(f"The ticket of {c.facts.get('client')} carries the INVALID flag (a postdated ticket "
                           "the KDC has not validated).", details=c.details)


def _skew(c: Case) -> E.KerberosError:
    s = float(c.facts.get("skew_seconds", 0.0))
    direction = "ahead of" if s > 0 else "behind"
    d = c.details | {"direction": "client_ahead" if s > 0 else "client_behind", "offset_seconds": round(s, 3)}
    return E.ClockSkew(
        f"The authenticator of {c.facts.get('client')} was made at {_iso(c.facts.get('ctime'))}: {abs(s):.0f} s "
        f"{direction} this server's clock ({_iso(c.facts.get('now'))}), beyond the allowed "
        f"±{c.facts.get('clock_skew'):.0f} s.",
        details=d)


def _clock_note(f: Facts) -> str:
    s = f.get("skew_seconds")
    if s is None or abs(s) <= float(f.get("clock_skew", 300)):
        return ""
    return (f" The authenticator is also {abs(s):.0f} s {'ahead of' if s > 0 else 'behind'} this server's clock: "
            "if the client just got its ticket, this server's clock is the one that is wrong.")


def _not_yet(c: Case) -> E.KerberosError:
    return E.TicketNotYetValid(
        f"The ticket of {c.facts.get('client')} starts at {_iso(c.facts.get('start_time'))}, after now "
        f"({_iso(c.facts.get('now'))}) plus the allowed skew.{_clock_note(c.facts)}", details=c.details)


def _expired(c: Case) -> E.KerberosError:
    ago = float(c.facts.get("now", 0)) - float(c.facts.get("end_time", 0))
    return E.TicketExpired(
        f"The ticket of {c.facts.get('client')} expired at {_iso(c.facts.get('end_time'))}, {ago:.0f} s ago "
        f"(allowed skew {c.facts.get('clock_skew'):.0f} s).{_clock_note(c.facts)}", details=c.details)


def _cb_mismatch(c: Case) -> E.KerberosError:
    return E.ChannelBindingsMismatch(
        "The token is bound to a different channel than the one given: the client computed channel bindings "
        "for another TLS connection (a TLS-terminating proxy in between?) or the token was moved.", details=c.details)


def _cb_missing(c: Case) -> E.KerberosError:
    return E.ChannelBindingsMismatch(
        "The client declared channel bindings mandatory (KERB_AP_OPTIONS_CBT) but sent none.", details=c.details)


def _replay(c: Case) -> E.KerberosError:
    ago = c.facts.get("first_seen_ago")
    when = f" {ago * 1000:.1f} ms ago" if ago is not None and ago < 1 else (
        f" {ago:.1f} s ago" if ago is not None else "")
    hint = (" So soon after the first use this is almost always the same request validated twice (an internal "
            "redirect or sub-request re-running authentication), not an attack."
            if ago is not None and ago < 1 else "")
    return E.Replay(f"This authenticator of {c.facts.get('client')} for {c.server} was already accepted{when}.{hint}",
                    details=c.details)


def _rc_cold(c: Case) -> E.KerberosError:
    return E.replay_unavailable("cold_start", started=c.started, ctime=c.facts.get("ctime"),
                                clock_skew=float(c.facts.get("clock_skew", 0.0)), details=c.details)


def _rc_full(c: Case) -> E.KerberosError:
    return E.replay_unavailable("full", details=c.details)


def _rc_unavailable(c: Case) -> E.KerberosError:
    return E.replay_unavailable(str(c.facts.get("reason", "backend error")), details=c.details)


def _internal(c: Case) -> E.KerberosError:
    return E.InternalError("Validation failed inside fastkrb (crypto or memory).", details=c.details)


_HANDLERS: dict[str, Callable[[Case], E.KerberosError]] = {
    "malformed": _malformed, "too_large": _too_large, "ntlm": _ntlm, "no_krb5": _no_krb5,
    "user_to_user": _u2u, "enctype_not_permitted": _enctype, "session_enctype_not_permitted": _session_enctype,
    "wrong_principal": _wrong_principal, "principal_not_accepted": _not_accepted, "kvno": _kvno,
    "enctype_not_in_keytab": _enctype_missing, "ticket_integrity": _ticket_integrity,
    "ticket_integrity_no_kvno": _ticket_integrity_no_kvno, "auth_integrity": _auth_integrity,
    "auth_enctype_mismatch": _auth_enctype, "cksum_integrity": _cksum_integrity,
    "pac_integrity": _pac_integrity, "pac_malformed": _pac_malformed, "pac_signature_type": _pac_signature_type,
    "pac_client_mismatch": _pac_client_mismatch, "pac_realm_mismatch": _pac_realm_mismatch,
    "name_mismatch": _name_mismatch,
    "realm": _realm, "transited": _transited, "ticket_invalid": _invalid, "clock_skew": _skew,
    "not_yet_valid": _not_yet, "expired": _expired, "cb_mismatch": _cb_mismatch, "cb_missing": _cb_missing,
    "replay": _replay, "rc_cold": _rc_cold, "rc_full": _rc_full, "rc_unavailable": _rc_unavailable,
    "internal": _internal,
}
