"""Explain a token: what anyone can read from it, what a keytab reveals, and the verdict.

A tool, not the hot path: it uses the native decoder for the framing (so it sees exactly what the
validator sees) and the pyasn1 models for the decrypted parts. Key bytes are shown only when asked.
"""

from __future__ import annotations

import os
from typing import Any

from fastkrb import _native, crypto
from fastkrb.asn1 import Authenticator, EncTicketPart, GssChecksum, flags_to_names
from fastkrb.diagnose import enctype_name
from fastkrb.errors import KerberosError
from fastkrb.keytab import Keytab

__all__ = ["inspect_token"]

_GSS_FLAGS = {1: "deleg", 2: "mutual", 4: "replay", 8: "sequence", 16: "conf", 32: "integ", 0x1000: "dce-style"}


def _iso(t: float | None) -> str | None:
    from fastkrb.diagnose import _iso as iso

    return None if t is None else iso(t)


def inspect_token(token: str | bytes, keytab: str | os.PathLike[str] | Keytab | None = None, *,
                  show_keys: bool = False, now: float | None = None) -> dict[str, Any]:
    """A nested dict report; ``ok`` is False when the token is unreadable or (with a keytab) rejected."""
    report: dict[str, Any] = {}
    try:
        d = _native.decode_token(token)
    except ValueError as exc:
        what, offset, partial = exc.args if len(exc.args) == 3 else (str(exc), 0, {})
        report["ok"] = False
        report["error"] = f"{what} (byte {offset})"
        if partial.get("mechanism") == "ntlm":
            report["mechanism"] = "NTLM: the client could not get a Kerberos ticket for this server"
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
    if keytab is None:
        report["ok"] = True
        return report
    kt = keytab if isinstance(keytab, Keytab) else Keytab.load(keytab)
    report["ticket"] = _decrypt_ticket(d, kt, show_keys)
    from fastkrb.validator import Validator

    v = Validator(kt, replay_cache="none", cold_start=False, enctypes=(20, 19, 18, 17, 23),
                  allowed_realms=["*"])
    try:
        res = v.validate(token, now=now)
        report["verdict"] = {"accepted": True, "client": res.client, "server": res.server}
        if res.pac is not None:
            report["pac"] = res.pac.to_dict()
        report["ok"] = True
    except KerberosError as exc:
        report["verdict"] = {"accepted": False, "code": exc.code, "cause": exc.cause, "fix": exc.fix}
        report["ok"] = False
    return report


def _decrypt_ticket(d: dict[str, Any], kt: Keytab, show_keys: bool) -> dict[str, Any]:
    from fastkrb.asn1 import ApReq

    req = ApReq.from_der(d["ap_req"])
    server, etype = d["server"], d["ticket_enctype"]
    candidates = [e for e in kt.entries if e.principal == server and e.enctype == etype]
    candidates.sort(key=lambda e: e.kvno != d["ticket_kvno"])
    for e in candidates:
        try:
            plain = crypto.decrypt(etype, e.key, 2, req.ticket.enc_part.cipher)
        except KerberosError:
            continue
        tkt = EncTicketPart.from_der(plain)
        out: dict[str, Any] = {
            "decrypted_with_kvno": e.kvno,
            "client": "/".join(tkt.cname.components) + "@" + tkt.crealm,
            "flags": flags_to_names(tkt.flags),
            "auth_time": _iso(tkt.authtime), "start_time": _iso(tkt.starttime), "end_time": _iso(tkt.endtime),
            "renew_till": _iso(tkt.renew_till),
            "session_enctype": enctype_name(tkt.key.keytype),
            "transited": tkt.transited.contents.decode("utf-8", "replace") or None,
            "addresses": [a.address.hex() for a in tkt.caddr or ()],
            "authorization_data_types": [a.ad_type for a in tkt.authorization_data or ()],
        }
        if show_keys:
            out["session_key"] = tkt.key.keyvalue.hex()
        try:
            auth = Authenticator.from_der(crypto.decrypt(tkt.key.keytype, tkt.key.keyvalue, 11,
                                                         req.authenticator.cipher))
            a: dict[str, Any] = {"client": "/".join(auth.cname.components) + "@" + auth.crealm,
                                 "ctime": _iso(auth.ctime),
                                 "cusec": auth.cusec, "seq_number": auth.seq_number,
                                 "subkey_enctype": auth.subkey.keytype if auth.subkey else None}
            if auth.cksum is not None and auth.cksum.cksumtype == 0x8003:
                g = GssChecksum.from_bytes(auth.cksum.checksum)
                a["gss_flags"] = [n for bit, n in _GSS_FLAGS.items() if g.flags & bit]
                a["channel_bindings"] = "none" if g.bnd == bytes(16) else g.bnd.hex()
                a["delegated"] = g.delegation is not None
            out["authenticator"] = a
        except KerberosError as exc:
            out["authenticator"] = {"error": exc.cause}
        return out
    return {"error": f"no key of {server} with {enctype_name(etype)} in the keytab decrypts the ticket"}
