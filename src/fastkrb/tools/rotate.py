"""`fastkrb keytab rotate` and `keytab prune`: change a service's key at the KDC with its current key, as
``k5srvutil change``, ``msktutil --auto-update`` and ``adcli update`` do, and drop old kvnos later.

Rotation, in order; each step that fails stops it and says what the KDC now holds:

1. the current keys (the newest kvno of the principal in the keytab) get a kadmin/changepw ticket in an AS
   exchange (so it has the INITIAL flag), which also reads the salt from the KDC's ETYPE-INFO2 -> a wrong
   key is ``CurrentKeyRejected``; the KDC and the keytab are untouched;
2. a new random password goes to the password server (RFC 3244, krb/kpasswd.py) -> a refusal is
   ``KpasswdError``; nothing changed;
3. the new keys, derived with the principal's salt (the one given, else ETYPE-INFO2's, else RFC 4120's
   default REALM+components), must each get a TGT in an AS exchange (one per enctype: the KDC may now hold
   enctypes the old kvno lacked, and KDC_ERR_ETYPE_NOSUPP says which it does not); the kvno comes from the
   replies. If no salt
   works, the KDC has the new password but the keytab does not: ``RotationIncomplete``, and the keys of every
   salt tried are written to ``<keytab>.pending-<time>`` (mode 0600) so nothing is lost;
4. the new kvno is appended beside the old ones (also for every other name in the keytab whose newest keys
   are the rotated ones: an AD keytab lists the account and each SPN with the same keys) and the keytab
   replaced atomically (temporary file in the same directory, fsync, rename, the same owner and mode), so a
   running validator accepts both kvnos throughout.
"""

from __future__ import annotations

import os
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fastkrb.errors import KerberosError
from fastkrb.files import replace_file
from fastkrb.keytab import Keytab, KeytabEntry, parse_principal
from fastkrb.krb import asn1, crypto, kdc, kpasswd
from fastkrb.krb.kpasswd import KpasswdError
from fastkrb.tools import kdcclient
from fastkrb.tools.kdcclient import KdcAddress

__all__ = ["CurrentKeyRejected", "RotationRefused", "RotationIncomplete", "RotateResult", "rotate", "prune",
           "PruneResult", "random_password", "ad_salt", "parse_duration", "write_keytab"]


class CurrentKeyRejected(KerberosError):
    """The KDC did not accept the keytab's current key: nothing was changed, at the KDC or in the keytab."""

    code = "current_key_rejected"
    default_fix = ("The keytab's newest kvno is not the KDC's key (someone rotated it elsewhere, or the keytab is "
                   "for another account): export a fresh keytab (kadmin ktadd, msktutil, adcli) before rotating.")


class RotationRefused(KerberosError):
    """The KDC refused the AS exchange for another reason than the key (unknown or disabled principal, expired
    password, unreachable): nothing was changed."""

    code = "rotation_refused"
    default_fix = "Read the KDC's error: the account must exist, be enabled, and the KDC be reachable."


class RotationIncomplete(KerberosError):
    """The KDC accepted the new password but the new keys could not be verified or written."""

    code = "rotation_incomplete"
    default_fix = ("The KDC holds the new keys; the keytab still has only the old ones, so new tickets will not "
                   "validate. Use the keys in the .pending file (or re-export the keytab from the KDC).")


@dataclass
class RotateResult:
    principal: str
    old_kvno: int
    new_kvno: int
    enctypes: tuple[int, ...]
    salt: str
    kdc: str
    kpasswd: str
    seconds: float
    steps: list[str] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # other names in the keytab that had the same keys (AD SPNs)


_SPECIALS = "!#%+,-.:=?@^_~"


def random_password(length: int = 32) -> str:
    """Random, with every character class (AD's complexity rule), no quotes or spaces."""
    alphabet = string.ascii_letters + string.digits + _SPECIALS
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in pw) and any(c.isupper() for c in pw) and any(c.isdigit() for c in pw)
                and any(c in _SPECIALS for c in pw)):
            return pw


def ad_salt(principal: str, *, computer: bool) -> str:
    """Active Directory's salt: ``REALMuser`` for a user account (the sAMAccountName, case as stored), and
    ``REALMhost<name>.<domain>`` (name lower-case, without the ``$``) for a computer account (MS-KILE §3.1.1.2)."""
    comps, realm = parse_principal(principal)
    if computer:
        name = comps[-1].rstrip("$").lower() if len(comps) == 1 else comps[1].split(".")[0].lower()
        return f"{realm.upper()}host{name}.{realm.lower()}"
    return realm.upper() + "".join(comps)


def _newest(kt: Keytab, principal: str) -> tuple[int, dict[int, bytes]]:
    entries = kt.find(principal)
    if not entries:
        raise CurrentKeyRejected(f"the keytab has no key for {principal}", "Name a principal the keytab holds.",
                                 {"principal": principal, "changed": False})
    kvno = max(e.kvno for e in entries)
    return kvno, {e.enctype: e.key for e in entries if e.kvno == kvno and e.enctype in crypto.ENCTYPES}


def _shares_key(kt: Keytab, principal: str, keys: dict[int, bytes]) -> bool:
    """Whether ``principal``'s newest kvno holds one of ``keys`` (same enctype, same bytes)."""
    entries = kt.find(principal)
    newest = max(e.kvno for e in entries)
    return any(e.kvno == newest and keys.get(e.enctype) == e.key for e in entries)


_KEY_ERRORS = (24, 31)  # KDC_ERR_PREAUTH_FAILED, KRB_AP_ERR_BAD_INTEGRITY
_AMBIGUOUS = ("timeout", "reset", "garbage")  # the request may have been processed


def _as(kdc_addr: KdcAddress, principal: str, etypes: Sequence[int], keys: dict[int, bytes], proto: kdcclient.Proto,
        timeout: float, **kw: object) -> kdcclient.AsOutcome:
    """as_exchange, retried over TCP when the KDC says the reply is too big for UDP (a ticket with a PAC)."""
    out = kdcclient.as_exchange(kdc_addr, principal, etypes, keys, proto=proto, timeout=timeout, lifetime=300,
                                **kw)  # type: ignore[arg-type]
    if proto == "udp" and out.error is not None and out.error.error_code == 52:  # KRB_ERR_RESPONSE_TOO_BIG
        out = kdcclient.as_exchange(kdc_addr, principal, etypes, keys, proto="tcp", timeout=timeout, lifetime=300,
                                    **kw)  # type: ignore[arg-type]
    return out


def _fail_text(out: kdcclient.AsOutcome) -> str:
    if out.error is not None:
        name = kdc.KRB_ERROR_NAMES.get(out.error.error_code, f"error {out.error.error_code}")
        return f"{name}{': ' + out.error.e_text if out.error.e_text else ''}"
    return out.decrypt_error or "no reply decrypted"


def write_keytab(path: str | os.PathLike[str], kt: Keytab) -> None:
    """Replace ``path`` atomically with ``kt``: a temporary file in the same directory, fsync, rename, with the
    file's owner, group and mode (0600 for a new file); the directory is fsynced after the rename."""
    replace_file(path, kt.to_bytes(), keep_owner=True, prefix=".keytab-rotate-")


def _preflight(keytab: str | os.PathLike[str], principal: str) -> None:
    """Refuse before the KDC is touched if the keytab could not be rewritten with its owner and mode."""
    path = os.fspath(keytab)
    directory = os.path.dirname(os.path.abspath(path))
    st = os.stat(path)
    why = ""
    if not os.access(directory, os.W_OK | os.X_OK):
        why = f"the directory {directory} is not writable (the new file is created beside the keytab)"
    elif os.geteuid() != 0 and (st.st_uid != os.geteuid() or
                                (st.st_gid != os.getegid() and st.st_gid not in os.getgroups())):
        why = f"the keytab belongs to uid {st.st_uid} gid {st.st_gid}, which this user cannot give a new file"
    if why:
        raise RotationRefused(f"cannot rotate {principal} in {path}: {why}. Nothing changed.",
                              "Run as the keytab's owner (or root).", {"changed": False})


def rotate(keytab: str | os.PathLike[str], principal: str, kdc_addr: KdcAddress, *,
           kpasswd_addr: KdcAddress | None = None, proto: kdcclient.Proto = "tcp", salt: str | None = None,
           timeout: float = 5.0, password: str | None = None,
           kpasswd_version: int = kpasswd.VERSION_CHANGE) -> RotateResult:
    """Rotate ``principal``'s key (see the module doc). ``password`` fixes the new password (tests only)."""
    t0 = time.monotonic()
    kt = Keytab.load(keytab)
    _preflight(keytab, principal)
    old_kvno, keys = _newest(kt, principal)
    if not keys:
        raise CurrentKeyRejected(f"the keytab's kvno {old_kvno} of {principal} has no key of an enctype fastkrb "
                                 "implements", details={"principal": principal, "changed": False})
    comps, realm = parse_principal(principal)
    etypes = tuple(keys)
    kp = kpasswd_addr or KdcAddress(kdc_addr.host, 464)
    res = RotateResult(principal, old_kvno, 0, etypes, "", str(kdc_addr), str(kp), 0.0)

    # 1. a kadmin/changepw ticket with the current key
    try:
        out = _as(kdc_addr, principal, etypes, keys, proto, timeout, server=f"kadmin/changepw@{realm}",
                  kdc_options=(), pac=True)
    except kdcclient.KdcUnreachable as exc:
        raise RotationRefused(f"{exc.cause} Nothing changed.", details={**exc.details, "changed": False}) from exc
    if out.credentials is None:
        if out.error is not None and out.error.error_code not in _KEY_ERRORS:
            raise RotationRefused(
                f"the KDC refused a kadmin/changepw ticket for {principal}: {_fail_text(out)}. Nothing changed: the "
                f"KDC and the keytab hold the same keys as before (kvno {old_kvno}).",
                details={"principal": principal, "kvno": old_kvno, "changed": False,
                         "krb_error": out.error.error_code})
        raise CurrentKeyRejected(
            f"the KDC did not accept the current key (kvno {old_kvno}) of {principal}: {_fail_text(out)}. "
            "Nothing changed: the KDC and the keytab hold the same keys as before.",
            details={"principal": principal, "kvno": old_kvno, "changed": False,
                     "krb_error": out.error.error_code if out.error else None})
    creds = out.credentials
    res.steps.append(f"kadmin/changepw ticket with kvno {creds.kvno if creds.kvno is not None else old_kvno}")

    # 2. the new password
    new_pw = password or random_password()
    cname = asn1.PrincipalName(asn1.NT_SRV_INST if len(comps) > 1 else asn1.NT_PRINCIPAL, comps)
    unknown = ""  # set when the request may have reached the server but no usable reply came back
    try:
        reply = kpasswd.change_password(kp.host, kp.port, creds.ticket, creds.session_enctype, creds.session_key,
                                        cname, realm, new_pw, proto=proto, timeout=timeout,
                                        version=kpasswd_version)
        res.steps.append(f"password changed ({reply.result_name})")
    except KpasswdError as exc:
        if exc.details.get("kind") not in _AMBIGUOUS:
            raise KpasswdError(f"{exc.cause} The KDC still holds kvno {old_kvno}; the keytab is unchanged.",
                               exc.fix, {**exc.details, "principal": principal, "kvno": old_kvno}) from exc
        unknown = exc.cause
    except KerberosError as exc:  # an unreadable reply
        unknown = f"the password server's reply could not be read ({exc.cause})"
    if unknown:  # the new keys decide: if they get a ticket, the change happened
        res.steps.append(f"no usable reply ({unknown}): asking the KDC which key it holds")

    # 3. derive with the principal's salt, and prove the new keys at the KDC
    salts: list[str] = []
    info = {i.etype: i for i in out.etype_info2}
    for cand in ([salt] if salt else []) + [i.salt for i in out.etype_info2 if i.salt] + [
            crypto.default_salt(principal).decode("utf-8")]:
        if cand and cand not in salts:
            salts.append(cand)
    # The KDC may now hold enctypes the old kvno lacked (MIT derives every supported_enctypes one): try each AES
    # enctype, and the old kvno's others, one AS exchange apiece; KDC_ERR_ETYPE_NOSUPP means it has no such key.
    candidates = tuple(dict.fromkeys((*etypes, 18, 17, 20, 19)))
    tried: dict[str, dict[int, bytes]] = {}
    unreachable = ""
    for s in salts:
        new_keys = {et: crypto.string_to_key(et, new_pw, s, info[et].s2kparams if et in info else None)
                    for et in candidates}
        tried[s] = new_keys
        verified: dict[int, bytes] = {}
        kvnos: set[int] = set()
        failed = False
        for et in candidates:
            try:
                check = _as(kdc_addr, principal, (et,), {et: new_keys[et]}, proto, timeout)
            except kdcclient.KdcUnreachable as exc:
                unreachable = exc.cause
                failed = True
                break
            if check.credentials is not None:
                verified[et] = new_keys[et]
                if check.credentials.kvno is not None:
                    kvnos.add(check.credentials.kvno)
            elif check.error is not None and check.error.error_code == 14:  # KDC_ERR_ETYPE_NOSUPP
                continue
            else:
                failed = True
                break
        if verified and not failed:
            res.new_kvno = max(kvnos) if kvnos else old_kvno + 1
            res.salt = s
            res.enctypes = tuple(verified)
            tried[s] = verified
            res.steps.append(f"new keys verified (kvno {res.new_kvno}, enctypes {list(verified)}, salt {s!r})")
            break
    else:
        if unknown:
            try:
                still = _as(kdc_addr, principal, etypes, keys, proto, timeout).credentials is not None
            except kdcclient.KdcUnreachable:
                still = False
            if still:
                raise KpasswdError(
                    f"{unknown}. The KDC still holds kvno {old_kvno} (checked: the old key still gets a ticket); "
                    "the keytab is unchanged.", details={"principal": principal, "kvno": old_kvno, "changed": False})
        pending = f"{os.fspath(keytab)}.pending-{int(time.time())}"
        pk = Keytab()
        for i, ks in enumerate(tried.values()):
            for et, k in ks.items():  # kvnos old+1, old+2, ...: one per salt tried
                pk.add(principal, k, enctype=et, kvno=old_kvno + 1 + i)
        where = pending
        try:
            write_keytab(pending, pk)
        except OSError as exc:
            where = f"nowhere: writing {pending} failed ({exc})"
        raise RotationIncomplete(
            f"{unknown + '; ' if unknown else ''}the KDC accepted the new password for {principal}, but no AS "
            "exchange with the derived keys "
            f"succeeded (salts tried: {', '.join(repr(s) for s in salts)}{'; ' + unreachable if unreachable else ''}). "
            f"The KDC now holds the new keys "
            f"(kvno {old_kvno + 1} or later), not kvno {old_kvno}; the keytab is unchanged. The candidate keys are "
            f"in {where} (kvno {old_kvno + 1} for the first salt tried, +1 for each next one: set the right "
            "one's kvno with ktutil).", details={"principal": principal, "changed": None if unknown else True,
                                                         "pending": pending})

    # 4. append and replace atomically (re-read: another writer may have added entries meanwhile)
    now = int(time.time())
    try:
        current = Keytab.load(keytab)
        # An AD keytab names the account and each SPN with the same keys: they all move with the account.
        same = [principal] + [p for p in current.principals() if p != principal and _shares_key(current, p, keys)]
        for p in same:
            for et in res.enctypes:
                current.add(p, tried[res.salt][et], enctype=et, kvno=res.new_kvno, timestamp=now)
        res.also = same[1:]
        write_keytab(keytab, current)
    except (OSError, KerberosError) as exc:
        raise RotationIncomplete(
            f"the KDC holds the new keys (kvno {res.new_kvno}) of {principal}, but the keytab could not be written: "
            f"{exc}. It still holds kvno {old_kvno} only.",
            details={"principal": principal, "changed": True, "new_kvno": res.new_kvno}) from exc
    res.steps.append(f"keytab written with kvno {old_kvno} and {res.new_kvno}")
    res.seconds = time.monotonic() - t0
    return res


# --- prune ------------------------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``10m``, ``10h``, ``1d``, ``1w`` (or sums like ``1h30m``) -> seconds."""
    t = text.strip().lower()
    if t.isdigit():
        return int(t)
    total, num = 0, ""
    for ch in t:
        if ch.isdigit():
            num += ch
        elif ch in _UNITS and num:
            total += int(num) * _UNITS[ch]
            num = ""
        else:
            raise ValueError(f"not a duration: {text!r} (use e.g. 10h, 1d, 90m)")
    if num:
        raise ValueError(f"not a duration: {text!r} (a number without a unit at the end)")
    return total


@dataclass
class PruneResult:
    removed: list[tuple[str, int]] = field(default_factory=list)     # (principal, kvno)
    kept: list[tuple[str, int, str]] = field(default_factory=list)   # (principal, kvno, why)


def prune(keytab: str | os.PathLike[str], older_than: int, *, principals: Sequence[str] = (),
          now: float | None = None, dry_run: bool = False) -> PruneResult:
    """Remove every kvno but the newest of each principal, once ``older_than`` seconds (the KDC's maximum ticket
    lifetime) have passed since the newest kvno was written (its keytab timestamp): by then no ticket of an
    older kvno can still be valid. Written atomically as rotate writes."""
    t = time.time() if now is None else now
    kt = Keytab.load(keytab)
    res = PruneResult()
    by_principal: dict[str, list[KeytabEntry]] = {}
    for e in kt:
        by_principal.setdefault(e.principal, []).append(e)
    drop: set[tuple[str, int]] = set()
    for p, es in by_principal.items():
        if principals and p not in principals:
            continue
        newest = max(e.kvno for e in es)
        rotated_at = max(e.timestamp for e in es if e.kvno == newest)
        for kv in sorted({e.kvno for e in es if e.kvno != newest}):
            if t - rotated_at >= older_than:
                drop.add((p, kv))
                res.removed.append((p, kv))
            else:
                res.kept.append((p, kv, f"kvno {newest} is {int(t - rotated_at)} s old, under {older_than} s"))
    if drop and not dry_run:
        write_keytab(keytab, Keytab(e for e in kt if (e.principal, e.kvno) not in drop))
    return res
