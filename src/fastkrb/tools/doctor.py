"""`fastkrb doctor`: find a Kerberos misconfiguration before the first client does.

Every check asks the real thing: the keytab file as this process reads it, DNS as this host resolves it,
the KDC over the network (TCP and UDP, timed), the KDC's own clock (a KRB-ERROR's stime), and whether the
keytab's keys are the KDC's current keys (an AS exchange as the service principal, as ``kinit -k`` does,
then a ticket for the service itself, validated by fastkrb). Each finding says ok / warning / error,
the evidence, and the fix; the run fails (exit 1) only on an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastkrb.diagnose import enctype_name
from fastkrb.errors import KerberosError
from fastkrb.keytab import DEFAULT_MAX_KEY_AGE_DAYS, Keytab, entry_report, parse_principal, unusable_reason
from fastkrb.krb.asn1 import KrbError
from fastkrb.krb.kdc import KRB_ERROR_NAMES, EtypeInfo2Entry
from fastkrb.tools import kdcclient as kc
from fastkrb.tools.dev import MARKER as DEV_MARKER

__all__ = ["Finding", "DoctorConfig", "Report", "run_doctor", "read_krb5_conf", "DEV_MARKER_PRINCIPAL",
           "format_report"]

Status = Literal["ok", "warning", "error"]

#: The principal `fastkrb dev init` puts into every dev keytab, so that doctor (and `keytab list`) can tell.
DEV_MARKER_PRINCIPAL = DEV_MARKER

# Enctype policy (RFC 6649 removed DES; RFC 8429 deprecated 3DES and RC4).
_REMOVED = {1: "RFC 6649", 2: "RFC 6649", 3: "RFC 6649", 24: "RFC 8429 (export-grade RC4)"}
_DEPRECATED = {16: "RFC 8429", 23: "RFC 8429"}
_USABLE = (17, 18, 19, 20)
_PROBE_ENCTYPES = (20, 19, 18, 17, 23, 16)


@dataclass
class Finding:
    check: str
    status: Status
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "summary": self.summary, "evidence": self.evidence,
                "fix": self.fix}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.status == "error" for f in self.findings)

    def add(self, check: str, status: Status, summary: str, fix: str = "", **evidence: Any) -> Finding:
        f = Finding(check, status, summary, evidence, fix)
        self.findings.append(f)
        return f

    def by_check(self, prefix: str) -> list[Finding]:
        return [f for f in self.findings if f.check == prefix or f.check.startswith(prefix + ".")]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": sum(f.status == "error" for f in self.findings),
                "warnings": sum(f.status == "warning" for f in self.findings),
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class DoctorConfig:
    keytab: str | None = None
    principals: Sequence[str] = ()
    kdcs: Sequence[str] = ()
    realm: str | None = None
    krb5_conf: str | None = None
    clock_skew: float | None = None        # default: krb5.conf clockskew, else 300
    timeout: float = 2.0
    check_dns: bool = True
    user: str | None = None                # optional full round trip as this user ...
    password: str | None = None            # ... with this password
    client_keytab: str | None = None       # ... or this keytab's key
    max_key_age_days: float = DEFAULT_MAX_KEY_AGE_DAYS   # warn past this rotation period


# --- krb5.conf -------------------------------------------------------------------------------------------------

Profile = dict[str, dict[str, Any]]


def _krb5_conf_paths(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    env = os.environ.get("KRB5_CONFIG")
    if env:
        return [p for p in env.split(":") if p]
    return ["/etc/krb5.conf"]


def read_krb5_conf(paths: Iterable[str]) -> tuple[Profile, list[str]]:
    """Parse MIT profile files (sections, nested braces, include/includedir); returns (profile, files read).

    Values are lists (a relation may repeat, e.g. several ``kdc =``); nested blocks are dicts.
    """
    profile: Profile = {}
    read: list[str] = []
    for p in paths:
        _read_profile_file(Path(p), profile, read, depth=0)
    return profile, read


def _read_profile_file(path: Path, profile: Profile, read: list[str], depth: int) -> None:
    if depth > 8:
        return
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    read.append(str(path))
    section: dict[str, Any] | None = None
    stack: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("include ") and not stack:
            _read_profile_file(Path(line[8:].strip()), profile, read, depth + 1)
            continue
        if line.startswith("includedir ") and not stack:
            d = Path(line[11:].strip())
            with contextlib.suppress(OSError):
                for f in sorted(d.iterdir()):
                    if f.is_file() and not f.name.startswith(".") and not f.name.endswith("~"):
                        _read_profile_file(f, profile, read, depth + 1)
            continue
        if line.startswith("[") and "]" in line:
            section = profile.setdefault(line[1:line.index("]")].strip(), {})
            stack = []
            continue
        if section is None:
            continue
        target = stack[-1] if stack else section
        if line.startswith("}"):
            if stack:
                stack.pop()
            continue
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value.endswith("*"):
            value = value[:-1].strip()
        if value == "{":
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                child = {}
                target[key] = child
            stack.append(child)
            continue
        existing = target.setdefault(key, [])
        if isinstance(existing, list):
            existing.append(value)


def _lib(profile: Profile, key: str) -> str | None:
    v = profile.get("libdefaults", {}).get(key)
    return v[0] if isinstance(v, list) and v else None


def _parse_duration(s: str) -> float | None:
    s = s.strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    total = 0.0
    num = ""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    for ch in s:
        if ch.isdigit():
            num += ch
        elif ch in units and num:
            total += int(num) * units[ch]
            num = ""
        elif ch == ":" and num:  # h:m:s
            parts = s.split(":")
            with contextlib.suppress(ValueError):
                vals = [int(x) for x in parts]
                return float(sum(v * m for v, m in zip(reversed(vals), (1, 60, 3600), strict=False)))
            return None
        else:
            return None
    return total if not num else None


# --- the checks ------------------------------------------------------------------------------------------------


def _enctype_policy(enctype: int) -> tuple[str, str]:
    """(policy word, why) for an enctype found in a keytab."""
    if enctype in _REMOVED:
        return "weak", f"removed by {_REMOVED[enctype]}"
    if enctype in _DEPRECATED:
        return "deprecated", f"deprecated by {_DEPRECATED[enctype]}"
    if enctype in _USABLE:
        return "ok", "AES (RFC 3962 / RFC 8009)"
    return "unsupported", "not implemented by fastkrb"


def _check_keytab_file(cfg: DoctorConfig, rep: Report) -> Keytab | None:
    path = cfg.keytab
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        rep.add("keytab.file", "error", f"keytab {path} cannot be found or read: {exc.strerror}",
                "Give the right --keytab path (the file the service uses, e.g. KRB5_KTNAME).", path=path)
        return None
    mode = stat.S_IMODE(st.st_mode)
    ev: dict[str, Any] = {"path": path, "mode": f"{mode:04o}", "owner_uid": st.st_uid, "size": st.st_size}
    if not os.access(path, os.R_OK):
        rep.add("keytab.file", "error", f"keytab {path} exists but this user (uid {os.getuid()}) cannot read it",
                "Run the service as the keytab's owner or make it group-readable for the service's group "
                "(chmod 640, chgrp <service group>).", **ev)
        return None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        rep.add("keytab.permissions", "error",
                f"keytab {path} is world-{'writable' if mode & stat.S_IWOTH else 'readable'} (mode {mode:04o}): "
                "anyone on this host can impersonate the service and forge tickets to it",
                f"chmod 600 {path} (or 640 with a dedicated group), then rotate the key: it may have been read.",
                **ev)
    elif mode & stat.S_IWGRP:
        rep.add("keytab.permissions", "warning", f"keytab {path} is group-writable (mode {mode:04o})",
                f"chmod 640 {path}.", **ev)
    else:
        rep.add("keytab.permissions", "ok", f"keytab {path} is readable and not world-readable (mode {mode:04o})",
                **ev)
    try:
        kt = Keytab.load(path)
    except KerberosError as exc:
        rep.add("keytab.file", "error", f"keytab {path} is damaged: {exc.cause}", exc.fix, **ev)
        return None
    if not len(kt):
        rep.add("keytab.file", "error", f"keytab {path} holds no keys", "Export the service key into it "
                "(kadmin ktadd -k FILE HTTP/host@REALM, or ktpass on AD).", **ev)
        return None
    return kt


def _flat(d: dict[str, list[str]]) -> list[str]:
    return [x for v in d.values() for x in v]


def _check_keytab_contents(kt: Keytab, rep: Report) -> None:
    for principal in kt.principals():
        entries = kt.find(principal)
        if principal.split("@")[0] == DEV_MARKER_PRINCIPAL:
            rep.add("keytab.dev", "error", "this is a `fastkrb dev init` keytab: its keys are throwaway and no "
                    "real KDC knows them", "Use the keytab your KDC exported for the service, never a dev keytab "
                    "outside development.", principal=principal)
            continue
        kvnos = sorted({e.kvno for e in entries})
        keys = []
        flags: dict[str, list[str]] = {}
        for e in entries:
            word, why = _enctype_policy(e.enctype)
            keys.append({"kvno": e.kvno, "enctype": enctype_name(e.enctype), "policy": word})
            if word != "ok":
                flags.setdefault(word, []).append(f"{enctype_name(e.enctype)} kvno {e.kvno}: {why}")
        usable = [e for e in entries if e.enctype in _USABLE and unusable_reason(e) is None]
        ev: dict[str, Any] = {"principal": principal, "kvnos": kvnos, "keys": keys}
        if not usable:
            rep.add("keytab.enctypes", "error", f"{principal}: no AES key, only {', '.join(_flat(flags))}",
                    "Give the service AES keys in the KDC (kadmin cpw -randkey -e aes256-cts-hmac-sha1-96:normal,"
                    "aes256-cts-hmac-sha384-192:normal; on AD set msDS-SupportedEncryptionTypes) and export again.",
                    **ev)
        elif flags:
            rep.add("keytab.enctypes", "warning",
                    f"{principal}: weak or deprecated keys beside AES: {'; '.join(_flat(flags))}",
                    "Remove weak enctypes from the principal (and the keytab) once no client needs them; fastkrb "
                    "accepts rc4 only when listed in Validator(enctypes=...).", **ev)
        else:
            rep.add("keytab.enctypes", "ok", f"{principal}: kvno {', '.join(map(str, kvnos))}; "
                    f"{', '.join(sorted({enctype_name(e.enctype) for e in entries}))}", **ev)


def _check_keytab_entries(kt: Keytab, max_age_days: float, rep: Report) -> None:
    """Entries fastkrb skips (each named, with the reason), and the age of each principal's current key."""
    rows = entry_report(kt, max_age_days)
    for r in rows:
        if not r["usable"] and r["enctype"] in (*_USABLE, 23):
            # DES and RC4-less policy words are keytab.enctypes' business; a broken AES entry is this one's
            rep.add("keytab.unusable", "warning",
                    f"{r['principal']} kvno {r['kvno']} {enctype_name(r['enctype'])} is skipped: {r['reason']}",
                    "Export the keytab again so that this entry holds a plain key (Heimdal: ext_keytab after the "
                    "old keys kept by cpw --keepold are no longer needed, or MIT ktadd -norandkey); a ticket that "
                    "needs exactly this key is refused with key_unusable.",
                    principal=r["principal"], kvno=r["kvno"], enctype=r["enctype"], reason=r["reason"])
        elif not r["usable"] and r["enctype"] not in (1, 2, 3, 16, 23):
            rep.add("keytab.unusable", "warning",
                    f"{r['principal']} kvno {r['kvno']} {enctype_name(r['enctype'])} is skipped: {r['reason']}",
                    "Harmless while the principal has usable keys of the enctypes the KDC issues tickets with.",
                    principal=r["principal"], kvno=r["kvno"], enctype=r["enctype"], reason=r["reason"])
    for principal in kt.principals():
        if principal.split("@")[0] == DEV_MARKER_PRINCIPAL:
            continue
        cur = [r for r in rows if r["principal"] == principal and r["current"] and r["usable"]]
        ages = [r["age_days"] for r in cur if r["age_days"] is not None]
        if not cur or not ages:
            continue
        age = max(ages)
        ev: dict[str, Any] = {"principal": principal, "kvno": cur[0]["kvno"], "age_days": round(age, 1),
              "max_key_age_days": max_age_days}
        if any(r["stale"] for r in cur):
            rep.add("keytab.age", "warning", f"{principal}: the current key (kvno {cur[0]['kvno']}) is {age:.0f} "
                    f"days old, past the rotation period of {max_age_days:g} days",
                    "Rotate the service key (kadmin cpw -randkey / ktadd; AD: reset the account password and "
                    "export again), keeping the old kvno in the keytab until tickets for it expire.", **ev)
        else:
            rep.add("keytab.age", "ok", f"{principal}: the current key (kvno {cur[0]['kvno']}) is {age:.0f} days "
                    f"old (rotation period {max_age_days:g} days)", **ev)


def _check_ticket_kvno(kt: Keytab, creds: kc.Credentials, principal: str, rep: Report) -> None:
    """The newest kvno of the keytab should be the one the KDC issues tickets with."""
    tk = creds.ticket.enc_part.kvno
    have = sorted({e.kvno for e in kt.find(principal) if unusable_reason(e) is None})
    if tk is None or not have:
        return
    ev: dict[str, Any] = {"principal": principal, "ticket_kvno": tk, "keytab_kvnos": have}
    if tk == have[-1]:
        rep.add("kdc.kvno", "ok", f"{principal}: the KDC issues tickets with kvno {tk}, the keytab's newest", **ev)
    elif tk > have[-1]:
        rep.add("kdc.kvno", "error", f"{principal}: the KDC issues tickets with kvno {tk}, newer than every usable "
                f"key in the keytab (newest {have[-1]}): the keytab is out of date",
                "Export the keytab again (kadmin ktadd -norandkey; AD: ktpass or msktutil --update) and deploy it.",
                **ev)
    else:
        rep.add("kdc.kvno", "warning", f"{principal}: the KDC issues tickets with kvno {tk}, but the keytab's newest "
                f"usable key is kvno {have[-1]}" + (" (kvno " + str(tk) + " is in the keytab too, so tickets pass)"
                                                     if tk in have else " and kvno " + str(tk) + " is not in it"),
                "A key staged ahead of the KDC, or a KDC that rolled back: make the KDC and the keytab agree.", **ev)


def _resolve_principal(p: str, realm: str | None) -> str:
    if "@" in p.replace("\\@", ""):
        return p
    if realm is None:
        raise ValueError(f"principal {p!r} has no realm and none is known (give --realm or a default_realm)")
    return f"{p}@{realm}"


def _check_spn(kt: Keytab | None, principal: str, rep: Report) -> None:
    if kt is None:
        return
    if kt.find(principal):
        kv = sorted({e.kvno for e in kt.find(principal)})
        rep.add("spn.keytab", "ok", f"{principal} is in the keytab (kvno {', '.join(map(str, kv))})",
                principal=principal)
        return
    comps, _ = parse_principal(principal)
    close = [p for p in kt.principals() if p.split("@")[0].lower() == "/".join(comps).lower()
             or (len(comps) > 1 and comps[-1].lower() in p.lower())]
    rep.add("spn.keytab", "error", f"{principal} is not in the keytab",
            "Export this principal's key into the keytab, or configure the SPN the keytab holds "
            f"({', '.join(kt.principals()[:5])}).", principal=principal, keytab_principals=kt.principals(),
            similar=close)


def _is_local_address(addr: str) -> bool:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def _check_dns(principal: str, rep: Report) -> None:
    comps, _ = parse_principal(principal)
    if len(comps) < 2:
        return
    host = comps[1]
    check = f"dns.{host}"
    try:
        ipaddress.ip_address(host)
        rep.add(check, "warning", f"the SPN names an IP address ({host}): clients canonicalise host names, not "
                "addresses, and most never ask for such a ticket", "Use the DNS name clients use in the URL.",
                host=host)
        return
    except ValueError:
        pass
    t0 = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        rep.add(check, "warning", f"{host} does not resolve here ({exc.strerror or exc}); clients that cannot "
                "resolve it will not ask for its ticket (they fall back to NTLM or fail)",
                "Add the A/AAAA record (or a CNAME whose target clients map to this SPN).", host=host)
        return
    addrs = sorted({str(i[4][0]) for i in infos})
    forward_ms = round((time.monotonic() - t0) * 1000, 2)
    reverse: dict[str, str | None] = {}
    for a in addrs:
        try:
            reverse[a] = socket.gethostbyaddr(a)[0]
        except OSError:
            reverse[a] = None
    local = [a for a in addrs if _is_local_address(a)]
    ev: dict[str, Any] = {"host": host, "addresses": addrs, "reverse": reverse, "local_addresses": local,
                          "forward_ms": forward_ms}
    notes = []
    if not local:
        notes.append("none of its addresses is on this host (fine behind a load balancer or proxy)")
    mism = [f"{a} -> {n}" for a, n in reverse.items() if n is None or n.rstrip(".").lower() != host.lower()]
    if mism:
        notes.append("reverse DNS does not give the name back (" + ", ".join(f"{m}" if m else "none"
                                                                           for m in mism) + "); clients with "
                     "rdns = true would ask for another SPN")
    if notes:
        rep.add(check, "warning", f"{host} resolves to {', '.join(addrs)}, but " + "; ".join(notes),
                "Reported, not required: make forward and reverse DNS agree, or have clients set rdns = false "
                "(and dns_canonicalize_hostname = false) in krb5.conf.", **ev)
    else:
        rep.add(check, "ok", f"{host} resolves to {', '.join(addrs)} on this host and back", **ev)


@dataclass
class _Reach:
    addr: kc.KdcAddress
    proto: kc.Proto
    exchange: kc.Exchange | None
    failure: kc.KdcUnreachable | None


def _probe(addr: kc.KdcAddress, proto: kc.Proto, principal: str, timeout: float) -> _Reach:
    # des-cbc-crc only: no modern KDC has such a key, so it answers with a KRB-ERROR whose stime is its clock,
    # and issues no ticket (an unknown principal answers with C_PRINCIPAL_UNKNOWN, also with stime).
    try:
        out = kc.as_exchange(addr, principal, (1,), None, proto=proto, timeout=timeout)
        return _Reach(addr, proto, out.exchanges[-1], None)
    except kc.KdcUnreachable as exc:
        return _Reach(addr, proto, None, exc)


def _err_name(code: int) -> str:
    return f"{KRB_ERROR_NAMES.get(code, 'KRB_ERR')}({code})"


def _check_reach(kdcs: Sequence[kc.KdcAddress], principal: str, timeout: float, rep: Report) -> list[_Reach]:
    results = []
    for addr in kdcs:
        for proto in ("tcp", "udp"):
            r = _probe(addr, proto, principal, timeout)  # type: ignore[arg-type]
            results.append(r)
            port = f"{addr}/{proto}"
            if r.exchange is not None:
                ms = round(r.exchange.elapsed * 1000, 2)
                err = r.exchange.error
                rep.add(f"kdc.reach.{proto}", "ok", f"KDC {port} answers in {ms} ms",
                        kdc=str(addr), proto=proto, port=addr.port, ms=ms,
                        reply=_err_name(err.error_code) if err else "AS-REP")
            else:
                assert r.failure is not None
                kind = r.failure.details.get("kind")
                fix = {"timeout": f"Port {addr.port}/{proto} looks filtered between this host and the KDC: open "
                                  f"{proto.upper()} {addr.port} in the firewalls/security groups on the path "
                                  "(or check that the KDC host is up).",
                       "refused": f"Nothing listens on {port}: check the KDC runs and listens on "
                                  f"{proto.upper()} (kdc_listen / kdc_tcp_listen) and the port in krb5.conf.",
                       "resolve": "Fix the KDC host name in krb5.conf or DNS."}.get(
                    str(kind), "Check the route and firewalls to the KDC.")
                status: Status = "error"
                rep.add(f"kdc.reach.{proto}", status, f"KDC {port}: {r.failure.cause.split(': ', 1)[-1]}", fix,
                        kdc=str(addr), proto=proto, port=addr.port, kind=kind,
                        elapsed_ms=round(float(r.failure.details.get("elapsed", 0)) * 1000, 1))
    return results


def _check_clock(reach: Sequence[_Reach], skew: float, rep: Report) -> float | None:
    best: tuple[float, kc.Exchange] | None = None
    for r in reach:
        if r.exchange is None:
            continue
        t = kc.kdc_time(r.exchange)
        if t is None:
            continue
        if best is None or r.exchange.elapsed < best[1].elapsed:
            best = (t, r.exchange)
    if best is None:
        rep.add("clock.offset", "warning", "could not read the KDC's clock (no KDC answered with a KRB-ERROR)",
                "Check KDC reachability first.")
        return None
    t, ex = best
    offset = t - ex.midpoint
    ev: dict[str, Any] = {
        "offset_seconds": round(offset, 3), "clock_skew": skew, "kdc": str(ex.addr), "proto": ex.proto,
        "kdc_time": t, "local_time": round(ex.midpoint, 3), "rtt_ms": round(ex.elapsed * 1000, 2),
        "source": "KRB-ERROR stime/susec"}
    direction = "behind" if offset > 0 else "ahead of"
    text = f"this host's clock is {abs(offset):.1f} s {direction} the KDC's ({ex.addr})"
    if abs(offset) > skew:
        rep.add("clock.offset", "error", f"{text}: more than clock_skew ({skew:g} s). Every ticket will be "
                "rejected (clock_skew / ticket_not_yet_valid), and the KDC refuses our pre-authentication",
                "Synchronise this host with the KDC's time source (chronyc tracking / timedatectl; on AD the "
                "PDC emulator), then run doctor again.", **ev)
    elif abs(offset) > skew / 2:
        rep.add("clock.offset", "warning", f"{text}: within clock_skew ({skew:g} s) but more than half of it",
                "Fix NTP on this host (or the KDC) before the drift grows past clock_skew.", **ev)
    else:
        rep.add("clock.offset", "ok", f"{text} (clock_skew {skew:g} s)", **ev)
    return offset


def _first_reachable(reach: Sequence[_Reach]) -> tuple[kc.KdcAddress, kc.Proto] | None:
    for proto in ("tcp", "udp"):
        for r in reach:
            if r.proto == proto and r.exchange is not None:
                return r.addr, r.proto
    return None


def _salt_of(info: Sequence[EtypeInfo2Entry], et: int) -> str | None:
    for i in info:
        if i.etype == et:
            return i.salt
    return None


def _check_keys(kt: Keytab, principal: str, via: tuple[kc.KdcAddress, kc.Proto], offset: float, timeout: float,
                rep: Report) -> kc.Credentials | None:
    """Is each of the keytab's newest keys the KDC's current key? AS exchange per enctype, as kinit -k does."""
    addr, proto = via
    entries = kt.find(principal)
    newest = max(e.kvno for e in entries)
    current = {e.enctype: e for e in entries if e.kvno == newest}
    older = [e for e in entries if e.kvno != newest]
    results: dict[str, Any] = {}
    tgt: kc.Credentials | None = None
    bad: list[str] = []
    extra: list[str] = []
    unverifiable: list[str] = []
    salts: dict[str, str | None] = {}
    refused: KrbError | None = None
    for et, e in sorted(current.items(), key=lambda kv: -kv[0]):
        name = enctype_name(et)
        if et not in _USABLE and et != 23:
            results[name] = "not checked (enctype not implemented by fastkrb)"
            continue
        out = kc.as_exchange(addr, principal, (et,), {et: e.key}, proto=proto, timeout=timeout, clock_offset=offset)
        salts[name] = _salt_of(out.etype_info2, et)
        if out.credentials is not None:
            results[name] = f"kvno {newest}: matches the KDC's key"
            tgt = tgt or out.credentials
            continue
        err = out.error
        if err is not None and err.error_code == 14:
            results[name] = "the KDC holds no key of this enctype for the principal"
            extra.append(name)
            continue
        if err is not None and err.error_code == 6:
            rep.add("kdc.key", "error", f"the KDC does not know {principal} (KDC_ERR_C_PRINCIPAL_UNKNOWN): no "
                    "client can get a ticket for it",
                    "Create the principal (kadmin addprinc -randkey) or fix its name/realm; on AD add the SPN to "
                    "the service account (setspn -S).", principal=principal, kdc=f"{addr}/{proto}")
            return None
        if (err is not None and err.error_code in (24, 31)) or out.decrypt_error is not None:
            # the key does not match: an older kvno in the keytab may still be the KDC's key
            match_old = None
            for o in older:
                if o.enctype != et:
                    continue
                o_out = kc.as_exchange(addr, principal, (et,), {et: o.key}, proto=proto, timeout=timeout,
                                       clock_offset=offset)
                if o_out.credentials is not None:
                    match_old = o.kvno
                    tgt = tgt or o_out.credentials
                    break
            if match_old is not None:
                results[name] = (f"kvno {newest} does not match; the KDC still uses the key of kvno {match_old}")
            else:
                results[name] = (f"kvno {newest} does not match the KDC's key"
                                 + (f" ({_err_name(err.error_code)})" if err is not None else
                                    f" ({out.decrypt_error})"))
            bad.append(name)
            continue
        if err is not None:
            refused = err
            results[name] = f"not checked: the KDC answered {_err_name(err.error_code)}" + (
                f" ({err.e_text})" if err.e_text else "")
            unverifiable.append(name)
            continue
        results[name] = "not checked: no reply to decrypt"
        unverifiable.append(name)
    ev: dict[str, Any] = {"principal": principal, "kdc": f"{addr}/{proto}", "keytab_kvno": newest, "keys": results,
          "kdc_salts": salts}
    if bad:
        rep.add("kdc.key", "error",
                f"{principal}: the keytab's key{'s' if len(bad) > 1 else ''} ({', '.join(bad)}) of kvno {newest} "
                + ("are not the KDC's current keys" if len(bad) > 1 else "is not the KDC's current key")
                + ": the keytab is stale (the key changed after it was exported), "
                "or it was made from a wrong password or salt; tickets will fail with key_version_mismatch or "
                "integrity",
                "Export the keytab again from the KDC (kadmin ktadd -norandkey, or ktpass on AD; note ktadd without "
                "-norandkey changes the key) and deploy it everywhere the service runs."
                + (f" If the keytab is made from a password, use the KDC's salt: {next(iter(salts.values()))!r}."
                   if any(salts.values()) else ""), **ev)
    elif unverifiable and tgt is None:
        rep.add("kdc.key", "warning", f"{principal}: the KDC would not let us check the keys "
                f"({_err_name(refused.error_code) if refused else 'no reply'})",
                "The principal may be barred from getting tickets as a client (MIT: -allow_tix / +requires_hwauth; "
                "AD: disabled account); check it with kinit -k -t KEYTAB PRINCIPAL.", **ev)
    elif tgt is not None:
        rep.add("kdc.key", "ok", f"{principal}: the keytab's keys of kvno {newest} are the KDC's current keys", **ev)
    if extra:
        rep.add("kdc.enctypes.extra", "warning", f"{principal}: the keytab has keys the KDC does not "
                f"({', '.join(extra)}); harmless, but a sign the keytab and the KDC drifted apart",
                "Export the keytab again to match the KDC.", principal=principal, enctypes=extra)
    _check_kdc_enctypes(addr, proto, principal, set(current), timeout, rep)
    return tgt


def _check_kdc_enctypes(addr: kc.KdcAddress, proto: kc.Proto, principal: str, have: set[int], timeout: float,
                        rep: Report) -> None:
    missing = []
    for et in _PROBE_ENCTYPES:
        if et in have:
            continue
        try:
            out = kc.as_exchange(addr, principal, (et,), None, proto=proto, timeout=timeout)
        except kc.KdcUnreachable:
            return
        if out.error is None or out.error.error_code == 25:
            missing.append(et)
    if missing:
        rep.add("kdc.enctypes.missing", "warning",
                f"{principal}: the KDC holds keys the keytab lacks: {', '.join(enctype_name(e) for e in missing)}; "
                "a ticket encrypted with one of them cannot be decrypted here (enctype_not_in_keytab)",
                "Export the keytab again with every enctype (kadmin ktadd -norandkey -k FILE PRINCIPAL; ktpass "
                "/crypto ALL).", principal=principal, missing=[enctype_name(e) for e in missing])


def _permit_all(kt: Keytab) -> tuple[int, ...]:
    """Every enctype fastkrb implements, RC4 only when the keytab has an RC4 key (a Validator refuses RC4
    without one)."""
    return (20, 19, 18, 17) + ((23,) if any(e.enctype == 23 for e in kt.usable()) else ())


def _validate_roundtrip(check: str, kt: Keytab, creds: kc.Credentials, principal: str, offset: float,
                        skew: float, rep: Report, via: str, who: str) -> None:
    from fastkrb.validator import Validator

    tok = kc.ap_req_token(creds, clock_offset=offset)
    ev: dict[str, Any] = {
        "client": creds.client, "server": principal, "ticket_enctype": enctype_name(creds.ticket.enc_part.etype),
        "ticket_kvno": creds.ticket.enc_part.kvno, "kdc": via}
    try:
        v = Validator(kt, principals=[principal], clock_skew=skew, replay_cache="memory", cold_start=False,
                      enctypes=_permit_all(kt), allowed_realms=["*"])
        res = v.validate(tok)
    except KerberosError as exc:
        rep.add(check, "error", f"{who}: a real ticket for {principal} is rejected here: [{exc.code}] {exc.cause}",
                exc.fix, code=exc.code, **ev, details=exc.to_dict()["details"])
        return
    rep.add(check, "ok", f"{who}: the KDC's ticket for {principal} ({enctype_name(res.enctype)}, kvno {res.kvno}) "
            "validates with this keytab", **ev)


def _tgs(addr: kc.KdcAddress, proto: kc.Proto, tgt: kc.Credentials, principal: str, offset: float,
         timeout: float) -> tuple[kc.Credentials | None, KrbError | None]:
    ex, creds = kc.tgs_exchange(addr, tgt, principal, (20, 19, 18, 17), proto=proto, timeout=timeout,
                                clock_offset=offset)
    return creds, ex.error


def _user_roundtrip(cfg: DoctorConfig, kt: Keytab, principal: str, via: tuple[kc.KdcAddress, kc.Proto],
                    offset: float, skew: float, rep: Report, realm: str) -> None:
    addr, proto = via
    user = _resolve_principal(cfg.user or "", realm)
    etypes = (20, 19, 18, 17)
    if cfg.client_keytab:
        ckt = Keytab.load(cfg.client_keytab)
        ents = ckt.find(user)
        if not ents:
            rep.add("roundtrip.user", "error", f"{user} has no key in {cfg.client_keytab}", "", user=user)
            return
        newest = max(e.kvno for e in ents)
        keys = {e.enctype: e.key for e in ents if e.kvno == newest}
        out = kc.as_exchange(addr, user, [e for e in etypes if e in keys], keys, proto=proto,
                             timeout=cfg.timeout, clock_offset=offset, preauth=True)
    else:
        probe = kc.as_exchange(addr, user, etypes, None, proto=proto, timeout=cfg.timeout, clock_offset=offset)
        keys = kc.password_keys(user, cfg.password or "", etypes, probe.etype_info2)
        out = kc.as_exchange(addr, user, etypes, keys, proto=proto, timeout=cfg.timeout, clock_offset=offset,
                             preauth=probe.preauth_required)
        if out.credentials is None and out.decrypt_error is None and out.error is None:
            out = probe
    if out.credentials is None:
        why = _err_name(out.error.error_code) if out.error else out.decrypt_error
        rep.add("roundtrip.user", "error", f"cannot get a TGT as {user}: {why}",
                "Check the user's password / client keytab and that the account is enabled.", user=user)
        return
    creds, err = _tgs(addr, proto, out.credentials, principal, offset, cfg.timeout)
    if creds is None:
        code = err.error_code if err else -1
        fix = ("The KDC does not know this SPN: create it or fix the name (clients would fall back to NTLM)."
               if code == 7 else "See the KDC's log for the request.")
        rep.add("roundtrip.user", "error", f"{user} cannot get a ticket for {principal}: {_err_name(code)}", fix,
                user=user, principal=principal)
        return
    if not any(f.evidence.get("principal") == principal for f in rep.by_check("kdc.kvno")):
        _check_ticket_kvno(kt, creds, principal, rep)   # the service's own ticket was not to be had
    _validate_roundtrip("roundtrip.user", kt, creds, principal, offset, skew, rep, f"{addr}/{proto}", user)


def run_doctor(cfg: DoctorConfig) -> Report:
    rep = Report()
    profile, files = read_krb5_conf(_krb5_conf_paths(cfg.krb5_conf))
    default_realm = _lib(profile, "default_realm")
    conf_skew = _parse_duration(_lib(profile, "clockskew") or "") if _lib(profile, "clockskew") else None
    skew = cfg.clock_skew if cfg.clock_skew is not None else (conf_skew or 300.0)
    if files:
        rep.add("krb5.conf", "ok", f"read {', '.join(files)}" + (f"; default_realm {default_realm}"
                                                                  if default_realm else ""),
                files=files, default_realm=default_realm, clock_skew=skew,
                realms=sorted(profile.get("realms", {})))
    else:
        rep.add("krb5.conf", "warning", f"no krb5.conf found ({', '.join(_krb5_conf_paths(cfg.krb5_conf))}); "
                "relying on --realm and --kdc", "Install /etc/krb5.conf (or set KRB5_CONFIG) so clients and "
                "tools find the realm's KDCs.")

    kt = _check_keytab_file(cfg, rep)
    if kt is not None:
        _check_keytab_contents(kt, rep)
        _check_keytab_entries(kt, cfg.max_key_age_days, rep)

    realm = cfg.realm
    principals: list[str] = []
    try:
        for p in cfg.principals:
            principals.append(_resolve_principal(p, realm or default_realm))
    except ValueError as exc:
        rep.add("spn", "error", str(exc), "Give the principal with its realm (HTTP/host@REALM) or --realm.")
    if not principals and kt is not None:
        principals = [p for p in kt.principals() if p.split("@")[0] != DEV_MARKER_PRINCIPAL]
    if realm is None and principals:
        realm = parse_principal(principals[0])[1]
    realm = realm or default_realm
    if cfg.principals:
        for p in principals:
            _check_spn(kt, p, rep)
    if cfg.check_dns:
        for p in principals:
            _check_dns(p, rep)

    if realm is None:
        rep.add("kdc.config", "error", "no realm: none given, none in the keytab, no default_realm",
                "Give --realm or --principal HTTP/host@REALM.")
        return rep
    kdc_specs = list(cfg.kdcs)
    if not kdc_specs:
        entry = profile.get("realms", {}).get(realm, {})
        kdc_specs = list(entry.get("kdc", [])) if isinstance(entry, dict) else []
    if not kdc_specs:
        rep.add("kdc.config", "error", f"no KDC known for realm {realm}",
                f"Give --kdc host[:port], or add to krb5.conf: [realms] {realm} = {{ kdc = host:88 }} "
                "(fastkrb doctor does not look up DNS SRV records).", realm=realm)
        return rep
    try:
        kdcs = [kc.parse_kdc(s) for s in kdc_specs]
    except ValueError as exc:
        rep.add("kdc.config", "error", str(exc), "Fix the KDC address.")
        return rep
    rep.add("kdc.config", "ok", f"realm {realm}: KDC {', '.join(map(str, kdcs))}", realm=realm,
            kdcs=[str(k) for k in kdcs], source="--kdc" if cfg.kdcs else "krb5.conf")

    probe_principal = principals[0] if principals else f"krbtgt/{realm}@{realm}"
    reach = _check_reach(kdcs, probe_principal, cfg.timeout, rep)
    for r in reach:
        err = r.exchange.error if r.exchange is not None else None
        if err is not None and err.error_code == 6 and principals:
            rep.add("kdc.principal", "error", f"the KDC does not know {probe_principal} "
                    "(KDC_ERR_C_PRINCIPAL_UNKNOWN): clients cannot get a ticket for it and fall back to NTLM",
                    "Create the principal in the KDC (kadmin addprinc -randkey; AD: setspn -S SPN account) or fix "
                    "the SPN/realm.", principal=probe_principal, kdc=str(r.addr))
            break
    offset = _check_clock(reach, skew, rep)
    via = _first_reachable(reach)
    if via is None:
        rep.add("kdc.key", "error", "no KDC answered on TCP or UDP: the keytab could not be checked against it",
                "Fix reachability first (see the kdc.reach findings).")
        return rep
    if kt is None:
        return rep
    for p in principals:
        if not kt.find(p):
            continue
        tgt = _check_keys(kt, p, via, offset or 0.0, cfg.timeout, rep)
        if tgt is not None:
            creds, err = _tgs(via[0], via[1], tgt, p, offset or 0.0, cfg.timeout)
            if creds is None:
                rep.add("roundtrip.self", "warning", f"the KDC refused a ticket for {p} to itself "
                        f"({_err_name(err.error_code) if err else 'no reply'}); ticket enctype not checked",
                        "", principal=p)
            else:
                _check_ticket_kvno(kt, creds, p, rep)
                _validate_roundtrip("roundtrip.self", kt, creds, p, offset or 0.0, skew, rep,
                                    f"{via[0]}/{via[1]}", "as the service itself")
    if (cfg.user and (cfg.password is not None or cfg.client_keytab)) and principals:
        _user_roundtrip(cfg, kt, principals[0], via, offset or 0.0, skew, rep, realm)
    return rep


_MARK = {"ok": "ok     ", "warning": "WARNING", "error": "ERROR  "}


def format_report(rep: Report, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(rep.to_dict(), indent=2, default=str)
    lines = []
    for f in rep.findings:
        lines.append(f"{_MARK[f.status]}  {f.check:<22} {f.summary}")
        if f.status != "ok" and f.fix:
            lines.append(f"{'':9}  {'':<22} fix: {f.fix}")
    d = rep.to_dict()
    lines.append("")
    lines.append(f"{d['errors']} error(s), {d['warnings']} warning(s): "
                 + ("no blocking problem found" if rep.ok else "fix the errors above"))
    return "\n".join(lines)
