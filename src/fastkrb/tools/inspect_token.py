"""Explain a token: what anyone can read from it, what a keytab reveals, and the verdict at a chosen time.

A tool, not the hot path. Without a key: the framing, the mechanisms the client offered (NTLM named as
such, with the user and domain an NTLM message carries), the realm, SPN, kvno, enctypes and AP options,
and the authenticator's MAC tag (the replay cache's key: two captures with the same tag are one
authenticator presented twice). With the keytab: what it holds for the ticket's SPN, the decrypted ticket
(client, times, flags, addresses, transited realms) and authenticator (time, GSS flags, channel-binding
hash against the expected one), the PAC (its KDC-only signatures marked as such) and the identity it
carries, and the verdict a Validator would give at ``now``. An SPN the keytab does not name is decrypted,
as the Validator and MIT's acceptor do, with the keytab's keys of the ticket's enctype. Key bytes are shown
only when asked.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from fastkrb import _native
from fastkrb.diagnose import truncated
from fastkrb.enctypes import label as enctype_name
from fastkrb.errors import KerberosError, MalformedToken
from fastkrb.keytab import Keytab
from fastkrb.krb import asn1, crypto, gss
from fastkrb.krb.asn1 import Authenticator, EncTicketPart, flags_to_names
from fastkrb.krb.gss import GssChecksum
from fastkrb.krb.negotiate import token_bytes
from fastkrb.tools.present import gss_flag_names, read_token_arg, when

__all__ = ["inspect_token", "read_token_arg", "ntlm_message"]

_MECHS = {asn1.OID_KRB5: "krb5", asn1.OID_MS_KRB5: "krb5 (Microsoft's OID)", asn1.OID_NTLMSSP: "NTLM",
          "1.3.6.1.4.1.311.2.2.30": "NegoEx", asn1.OID_KRB5_USER_TO_USER: "krb5 user-to-user"}
_MAC_LEN = {17: 12, 18: 12, 19: 16, 20: 24, 23: 16}
# PAC buffers keyed with the krbtgt key (MS-PAC §2.8.2-2.8.4): present, but only the KDC can verify them
_KDC_VERIFIABLE = {7: "PRIVSVR_CHECKSUM", 16: "TICKET_CHECKSUM", 19: "FULL_CHECKSUM"}
_NTLM_NOTE = ("NTLM: the client did not get a Kerberos ticket for this server (unknown SPN, a hostname or "
              "alias with no SPN, no route to its KDC, or no trust) and fell back to NTLM")


def _iso(t: float | None, now: float | None = None) -> str | None:
    """A time as every command words it: ISO 8601 UTC, and relative to the verdict's time when there is one."""
    return None if t is None else when(t, now)


def ntlm_message(data: bytes) -> dict[str, Any] | None:
    """The readable fields of an NTLMSSP message (MS-NLMP §2.2.1): its type, and for type 3 the user,
    domain and workstation; None if it is not NTLM."""
    if not data.startswith(b"NTLMSSP\x00") or len(data) < 12:
        return None
    (mtype,) = struct.unpack_from("<I", data, 8)
    out: dict[str, Any] = {"message_type": {1: "NEGOTIATE (1)", 2: "CHALLENGE (2)", 3: "AUTHENTICATE (3)"}
                           .get(mtype, str(mtype))}
    if mtype == 3 and len(data) >= 64:
        (flags,) = struct.unpack_from("<I", data, 60)
        unicode = bool(flags & 1)

        def field(off: int) -> str | None:
            ln, _mx, pos = struct.unpack_from("<HHI", data, off)
            raw = data[pos:pos + ln]
            if not raw:
                return None
            return raw.decode("utf-16-le" if unicode else "latin-1", "replace")

        out.update(domain=field(28), user=field(36), workstation=field(44))
    return out


def _mech_offer(raw: bytes) -> tuple[list[str] | None, dict[str, Any] | None]:
    """Mechanisms of a SPNEGO NegTokenInit (names), and an NTLM message if that is what it carries."""
    mechs = None
    ntlm = ntlm_message(raw)
    if ntlm is not None:
        return None, ntlm
    try:
        neg = gss.decode_spnego(raw)
    except KerberosError:
        return None, None
    if isinstance(neg, gss.NegTokenInit):
        mechs = [_MECHS.get(m, m) for m in neg.mech_types]
        if neg.mech_token is not None:
            ntlm = ntlm_message(neg.mech_token)
    return mechs, ntlm


def inspect_token(token: str | bytes, keytab: str | os.PathLike[str] | Keytab | None = None, *,
                  show_keys: bool = False, now: float | None = None, channel_bindings: bytes | None = None,
                  enctypes: tuple[int, ...] = (20, 19, 18, 17, 23), allowed_realms: list[str] | None = None,
                  clock_skew: float = 300.0, principals: list[str] | None = None) -> dict[str, Any]:
    """A nested dict report; ``ok`` is False when the token is unreadable or (with a keytab) rejected.

    The verdict uses a Validator configured by ``enctypes``, ``allowed_realms`` (default: any), ``clock_skew``
    and ``principals``, without a replay cache (a single token cannot be a replay of itself).
    """
    report: dict[str, Any] = {}
    try:
        raw: bytes | None = token_bytes(token, ("negotiate", "ntlm"))
    except MalformedToken:
        raw = None
    if raw is not None:
        mechs, ntlm = _mech_offer(raw)
        if mechs is not None:
            report["mechs_offered"] = mechs
        if ntlm is not None:
            report["ok"] = False
            report["mechanism"] = _NTLM_NOTE
            report["ntlm"] = ntlm
            return report
    try:
        d = _native.decode_token(token)
    except ValueError as exc:
        what, offset, partial = exc.args if len(exc.args) == 3 else (str(exc), 0, {})
        report["ok"] = False
        cut = gss.truncation(partial.get("bytes") or _prefix(token, raw))
        if cut is not None:
            err = truncated(*cut)
            report["error"] = err.cause
            report["fix"] = err.fix
            report["truncated"] = {"token_bytes": cut[0], "announced_bytes": cut[1]}
            return report
        report["error"] = f"{what} (byte {offset})"
        if partial.get("mechanism") == "ntlm":
            report["mechanism"] = _NTLM_NOTE
        return report
    report["framing"] = d["framing"]
    report["gss_mech"] = d["mech"]
    report["spnego_mech"] = d["spnego_mech"]
    report["size"] = d["size"]
    report["server"] = d["server"]
    report["realm"] = d["realm"]
    report["ticket_enctype"] = enctype_name(d["ticket_enctype"])
    report["ticket_kvno"] = d["ticket_kvno"]
    report["authenticator_enctype"] = enctype_name(d["authenticator_enctype"])
    report["mutual_required"] = d["mutual_required"]
    req = asn1.ApReq.from_der(d["ap_req"])
    report["ap_options"] = flags_to_names(req.ap_options, asn1.AP_OPTIONS)
    mac = _MAC_LEN.get(req.authenticator.etype)
    if mac:
        report["authenticator_tag"] = req.authenticator.cipher[-mac:].hex()
    if keytab is None:
        report["ok"] = True
        return report
    kt = keytab if isinstance(keytab, Keytab) else Keytab.load(keytab)
    held = kt.find(d["server"]) if d["server"] else []
    report["keytab"] = {
        "principals": kt.principals(),
        "has_server": bool(held),
        "kvnos_for_server": sorted({e.kvno for e in held}),
        "enctypes_for_server": sorted({enctype_name(e.enctype) for e in held}),
    }
    t_now = time.time() if now is None else now
    report["now"] = _iso(t_now)
    report["ticket"] = _decrypt(d, req, kt, show_keys, channel_bindings, t_now, clock_skew)
    from fastkrb.validator import Validator

    if 23 in enctypes and not any(e.enctype == 23 for e in kt.usable()):
        enctypes = tuple(e for e in enctypes if e != 23)   # RC4 is permitted only beside an RC4 key
    v = Validator(kt, principals=principals, replay_cache=_NoReplay(), cold_start=False, enctypes=enctypes,
                  allowed_realms=["*"] if allowed_realms is None else allowed_realms, clock_skew=clock_skew)
    try:
        res = v.validate(token, now=now, channel_bindings=channel_bindings)
        report["verdict"] = {"accepted": True, "client": res.client, "server": res.server,
                             "mutual": res.mutual, "pac_verified": res.pac_verified}
        if res.requested_server != res.server:
            report["verdict"]["requested_server"] = res.requested_server
        if res.pac is not None:
            report["pac"] = res.pac.to_dict()
            report["pac"]["kdc_verifiable"] = [
                f"{_KDC_VERIFIABLE[b.type]} (type {b.type}): present, KDC-verifiable (krbtgt key), not checked here"
                for b in res.pac.buffers if b.type in _KDC_VERIFIABLE]
            try:
                ident = res.identity
                report["identity"] = None if ident is None else ident.to_dict()
            except KerberosError as exc:
                report["identity"] = {"error": exc.cause}
        report["ok"] = True
    except KerberosError as exc:
        report["verdict"] = {"accepted": False, **exc.to_dict()}
        report["ok"] = False
    return report


def _prefix(token: str | bytes, raw: bytes | None) -> bytes:
    """The bytes a token's text holds, also when base64 cut at 4k+1 characters leaves one dangling character."""
    if raw is not None:
        return raw
    if isinstance(token, str) and len(token.strip()) > 1:
        try:
            return token_bytes(token.strip()[:-1])
        except MalformedToken:
            pass
    return b""


class _NoReplay:
    """A replay cache that has seen nothing: inspect judges one token, never a sequence."""

    started = 0.0

    def insert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        return True, None

    def insert_many(self, items: Sequence[tuple[bytes, float]], now: float) -> list[tuple[bool, float | None]]:
        return [(True, None) for _ in items]

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def _decrypt(d: dict[str, Any], req: asn1.ApReq, kt: Keytab, show_keys: bool, cb: bytes | None, now: float,
             skew: float) -> dict[str, Any]:
    server, etype = d["server"], d["ticket_enctype"]
    candidates = [e for e in kt.entries if e.principal == server and e.enctype == etype]
    if not candidates and not kt.find(server):
        # an SPN the keytab does not name: its accounts' keys of this enctype (an AD alias), as the Validator does
        candidates = [e for e in kt.entries if e.enctype == etype]
    candidates.sort(key=lambda e: e.kvno != d["ticket_kvno"])
    if not candidates:
        return {"error": f"the keytab has no key of {server} with {enctype_name(etype)}"}
    for e in candidates:
        try:
            plain = crypto.decrypt(etype, e.key, 2, req.ticket.enc_part.cipher)
        except KerberosError:
            continue
        tkt = EncTicketPart.from_der(plain)
        start = tkt.starttime if tkt.starttime is not None else tkt.authtime
        out: dict[str, Any] = {
            "decrypted_with_kvno": e.kvno,
            "decrypted_with_principal": e.principal,
            "client": "/".join(tkt.cname.components) + "@" + tkt.crealm,
            "flags": flags_to_names(tkt.flags),
            "auth_time": _iso(tkt.authtime, now), "start_time": _iso(tkt.starttime, now),
            "end_time": _iso(tkt.endtime, now), "renew_till": _iso(tkt.renew_till, now),
            "window_at_now": ("not yet valid" if now < start - skew else "expired" if now > tkt.endtime + skew
                              else "valid"),
            "session_enctype": enctype_name(tkt.key.keytype),
            "transited": tkt.transited.contents.decode("utf-8", "replace") or None,
            "addresses": [a.address.hex() for a in tkt.caddr or ()],
            "authorization_data_types": [a.ad_type for a in tkt.authorization_data or ()],
        }
        if show_keys:
            out["session_key"] = tkt.key.keyvalue.hex()
        out["authenticator"] = _authenticator(req, tkt, cb, now)
        return out
    return {"error": f"no key of {server} with {enctype_name(etype)} in the keytab decrypts the ticket "
                     f"(kvnos tried: {sorted({e.kvno for e in candidates})}): wrong key for that kvno"}


def _authenticator(req: asn1.ApReq, tkt: EncTicketPart, cb: bytes | None, now: float) -> dict[str, Any]:
    try:
        auth = Authenticator.from_der(crypto.decrypt(tkt.key.keytype, tkt.key.keyvalue, 11,
                                                     req.authenticator.cipher))
    except (KerberosError, MalformedToken) as exc:
        return {"error": exc.cause}
    a: dict[str, Any] = {"client": "/".join(auth.cname.components) + "@" + auth.crealm,
                         "ctime": _iso(auth.ctime, now), "cusec": auth.cusec,
                         "offset_from_now_seconds": round(auth.ctime + auth.cusec / 1e6 - now, 3),
                         "seq_number": auth.seq_number,
                         "subkey_enctype": enctype_name(auth.subkey.keytype) if auth.subkey else None}
    tclient = "/".join(tkt.cname.components) + "@" + tkt.crealm
    a["matches_ticket_client"] = a["client"] == tclient
    if auth.cksum is not None and auth.cksum.cksumtype == asn1.CKSUMTYPE_GSSAPI:
        try:
            g = GssChecksum.from_bytes(auth.cksum.checksum)
        except MalformedToken as exc:
            a["checksum"] = {"error": exc.cause}
        else:
            a["gss_flags"] = gss_flag_names(g.flags)
            a["channel_bindings"] = "none" if g.bnd == bytes(16) else g.bnd.hex()
            if cb is not None:
                want = gss.channel_bindings_hash(cb)
                a["channel_bindings_expected"] = want.hex()
                a["channel_bindings_match"] = g.bnd in (want, bytes(16))
            a["delegated"] = g.delegation is not None
    elif auth.cksum is not None:
        a["checksum"] = {"type": auth.cksum.cksumtype}
    else:
        a["checksum"] = None
    return a
