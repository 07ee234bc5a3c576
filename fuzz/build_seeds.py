"""Seed corpora for every fuzz target, from a real MIT KDC and from fastkrb.testing.mint.

    PYTHONPATH=src:tests:fuzz python fuzz/build_seeds.py [--out fuzz/seeds] [--no-mit]

An MIT realm FUZZ.TEST (tests/support/mit.py MitRealm, on loopback) gets the services of fuzz/fuzzkeys.py with
their password; its exported keytab must equal fuzzkeys' table, so MIT's tokens validate against the
fixed keytab the C targets embed. Every token seed is checked to validate (fastkrb.Validator) at the
`now` written in front of it, so the fuzzers start from inputs that reach every check.

Layout: <out>/<target>/<sha1[:16]> — targets: der, crypto, validate, pac, rcache, shm (C) and py_keytab,
py_pac, py_validate, py_wire (atheris). Formats are described in each target's header comment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import fuzzkeys

from fastkrb import Validator
from fastkrb.keytab import Keytab
from fastkrb.krb import asn1, crypto, gss
from fastkrb.testing import ap_options_cbt, mint

ROOT = Path(__file__).resolve().parent.parent
OPT_CB, OPT_REALMS, OPT_COLD, OPT_NO_PAC, OPT_RCACHE, OPT_NO_RC4 = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FRAMINGS = ("spnego", "krb5", "krb5-ms", "spnego-ms", "raw", "header")
# index of each key in keys.h (newest kvno first, stable), for the PAC target's selector byte
KEY_ORDER = [(p, k, e) for p, k, e, _, _ in sorted(fuzzkeys.ENTRIES, key=lambda t: -t[1])]


class Seeds:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.count: dict[str, int] = {}

    def add(self, target: str, data: bytes) -> None:
        d = self.out / target
        d.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()[:16]
        if not (d / name).exists():
            (d / name).write_bytes(data)
            self.count[target] = self.count.get(target, 0) + 1


def validator(**kw: Any) -> Validator:
    return Validator(fuzzkeys.keytab(), principals=fuzzkeys.accepted_principals(), replay_cache="none",
                     enctypes=(17, 18, 19, 20, 23), allowed_realms=fuzzkeys.ALLOWED_REALMS, **kw)


def token_bytes(tok: bytes | str) -> bytes:
    return tok.encode("ascii") if isinstance(tok, str) else tok


def add_token(seeds: Seeds, tok: bytes, now: int, opts: int, *, must_validate: bool = True,
              cb: bytes | None = None) -> None:
    """A validate seed; checked to validate (unless it is a deliberate negative) at `now`."""
    if must_validate:
        res = validator(verify_pac=not opts & OPT_NO_PAC).validate(tok, now=now, channel_bindings=cb)
        assert res.client, "seed did not validate"
    framed = struct.pack(">I", now) + bytes([opts]) + tok
    seeds.add("validate", framed)
    seeds.add("py_validate", framed)
    seeds.add("der", tok)
    wire_seeds(seeds, tok, now, cb, must_validate)


def wire_seeds(seeds: Seeds, tok: bytes, now: int, cb: bytes | None, valid: bool) -> None:
    """py_wire: the frames a client sends for this token, and the sidecar's answer to them."""
    from fastkrb.errors import KerberosError
    from fastkrb.sidecar import protocol

    req = protocol.encode_validate(1, tok, cb) + protocol.encode_ping(2)
    try:
        res = validator().validate(tok, now=now, channel_bindings=cb)
        rep = protocol.encode_accepted(1, res)
    except KerberosError as exc:
        rep = protocol.encode_rejected(1, exc.code, exc.cause, exc.fix, exc.to_dict()["details"])
    prefix = struct.pack(">HH", 0xFFFF, len(req) // 2)
    seeds.add("py_wire", prefix + req)
    seeds.add("py_wire", prefix + rep + protocol.encode_protocol_error(0, "bye"))
    if valid:
        seeds.add("py_wire", prefix + req[: len(req) // 3])


def pac_selector(principal: str, kvno: int, enctype: int) -> int:
    return KEY_ORDER.index((principal, kvno, enctype))


def _if_relevant(inner: asn1.ADEntry) -> asn1.ADEntry:
    return asn1.ADEntry(1, asn1.encode_authorization_data([inner]))


def minted(seeds: Seeds, rng: random.Random) -> None:
    kt = fuzzkeys.keytab()
    now = fuzzkeys.NOW_DEFAULT
    svc = f"HTTP/svc.fuzz.test@{fuzzkeys.REALM}"
    cb = fuzzkeys.CHANNEL_BINDINGS
    for princ, kvno, enctype, accepted, source in fuzzkeys.ENTRIES:
        for framing in FRAMINGS:
            m = mint(kt, server=princ, kvno=kvno, ticket_enctype=enctype, now=now, rng=rng, framing=framing,  # type: ignore[arg-type]
                     pac=True)
            add_token(seeds, token_bytes(m.token), now, OPT_REALMS | OPT_RCACHE, must_validate=accepted)
            seeds.add("der", m.enc_ticket_part)
            seeds.add("der", m.authenticator)
            assert m.pac is not None
            seeds.add("pac", bytes([pac_selector(princ, kvno, enctype)]) + m.pac)
            seeds.add("py_pac", m.pac)
            if framing != "spnego":
                continue
            # the ticket's own ciphertext as a crypto seed: it decrypts (usage 2) with the key
            key = fuzzkeys.key_for(princ, kvno, enctype, source)
            ct = asn1.ApReq.from_der(m.ap_req).ticket.enc_part.cipher
            sel = [17, 18, 19, 20, 23].index(enctype)
            seeds.add("crypto", bytes([0, sel]) + struct.pack(">I", 2) + key + ct)
            seeds.add("crypto", bytes([1, sel]) + struct.pack(">I", 11) + key + rng.randbytes(40))
            seeds.add("crypto", bytes([2, sel]) + struct.pack(">I", 17) + key + rng.randbytes(64))
            seeds.add("crypto", bytes([4, sel]) + struct.pack(">I", 0) + key + b"\x10kerberos")
    # raw AES-CTS: 32-byte key, the RFC 3962 test plaintext
    seeds.add("crypto", bytes([3, 0, 0, 0, 0, 0]) + bytes(16) + b"\x01" + bytes(32)
              + b"I would like the General Gau's Chicken, please, and wonton soup.")

    # every acceptance path and every rejection the validator names, on the multi-enctype service
    variants: list[tuple[dict[str, Any], int, bool, bytes | None]] = [
        ({"channel_bindings": cb}, OPT_CB | OPT_REALMS | OPT_RCACHE, True, cb),
        ({"channel_bindings": cb, "java_style_bindings": True}, OPT_CB | OPT_REALMS, True, cb),
        ({"channel_bindings": cb, "authenticator_authorization_data": [ap_options_cbt()]}, OPT_CB, True, cb),
        ({"authenticator_authorization_data": [ap_options_cbt()]}, OPT_CB, False, cb),
        ({"channel_bindings": b"other"}, OPT_CB, False, cb),
        ({"delegated": b"\x76\x03\x02\x01\x05", "gss_flags": ("mutual", "deleg")}, OPT_RCACHE, True, None),
        ({"subkey": True, "seq_number": 12345}, OPT_RCACHE, True, None),
        ({"gss_flags": ()}, OPT_RCACHE, True, None),
        ({"no_checksum": True, "framing": "raw"}, OPT_RCACHE, True, None),
        ({"transited": b"TRUSTED.TEST", "crealm": "TRUSTED.TEST"}, OPT_REALMS, True, None),
        ({"transited": b"EVIL.TEST", "crealm": "TRUSTED.TEST"}, OPT_REALMS, False, None),
        ({"crealm": "EVIL.TEST"}, OPT_REALMS, False, None),
        ({"authenticator_client": "mallory@FUZZ.TEST"}, 0, False, None),
        ({"flags": ("invalid", "postdated")}, 0, False, None),
        ({"starttime": fuzzkeys.NOW_DEFAULT + 3600}, 0, False, None),
        ({"endtime": fuzzkeys.NOW_DEFAULT - 3600, "authtime": fuzzkeys.NOW_DEFAULT - 7200}, 0, False, None),
        ({"ctime": fuzzkeys.NOW_DEFAULT - 1000}, 0, False, None),
        ({"ap_options": ("use-session-key",)}, 0, False, None),
        ({"session_enctype": 23}, OPT_RCACHE, True, None),
        ({"session_enctype": 23}, OPT_NO_RC4, False, None),
        ({"ticket_enctype": 23}, OPT_RCACHE, True, None),
        ({"pac": True, "ticket_enctype": 20}, 0, True, None),
        ({"pac": True}, OPT_NO_PAC, True, None),
        ({"pac": b"\x00" * 8}, 0, False, None),
        ({"kvno": 7, "key": bytes(32)}, 0, False, None),
        ({"kvno": 1, "key": bytes(32)}, 0, False, None),
        ({"authorization_data": [_if_relevant(_if_relevant(asn1.ADEntry(99, b"x")))]}, 0, True, None),
        ({"addresses": [(2, b"\x7f\x00\x00\x01")], "renew_till": fuzzkeys.NOW_DEFAULT + 86400}, 0, True, None),
    ]
    for kw, opts, ok, cbv in variants:
        kw = dict(kw)
        kw.setdefault("ticket_enctype", 18)
        m = mint(kt, server=svc, now=fuzzkeys.NOW_DEFAULT, rng=rng, **kw)
        add_token(seeds, token_bytes(m.token), fuzzkeys.NOW_DEFAULT, opts, must_validate=ok, cb=cbv)
        seeds.add("der", m.authenticator)
        seeds.add("der", m.enc_ticket_part)
    checks_behind_the_mac(seeds, kt, svc, rng)
    # cold start: the authenticator predates the cache
    m = mint(kt, server=svc, now=fuzzkeys.NOW_DEFAULT - 60, rng=rng)
    add_token(seeds, token_bytes(m.token), fuzzkeys.NOW_DEFAULT, OPT_COLD | OPT_RCACHE, must_validate=False)
    # NTLM and other mechanisms, garbage, nesting
    seeds.add("der", b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(24))
    seeds.add("der", b"Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==")
    seeds.add("der", gss.spnego_init(b"NTLMSSP\x00\x01\x00\x00\x00", (asn1.OID_NTLMSSP,)))
    nested = asn1.encode_authorization_data([asn1.ADEntry(128, b"pac")])
    for _ in range(6):
        nested = asn1.encode_authorization_data([asn1.ADEntry(1, nested)])
    seeds.add("der", nested)


def checks_behind_the_mac(seeds: Seeds, kt: Keytab, svc: str, rng: random.Random) -> None:
    """Tokens whose encrypted parts are wrong in ways only a key holder can make: the checks after
    decryption that a fuzzer cannot reach by mutation (it cannot forge the MAC)."""
    now = fuzzkeys.NOW_DEFAULT
    sk = rng.randbytes(32)
    good_cksum = crypto.checksum(16, sk, 10, b"")
    cases: list[tuple[dict[str, Any], int, bool, bytes | None]] = [
        ({"cksum": struct.pack("<I", 16) + bytes(8)}, 0, False, None),                       # 0x8003 too short
        ({"cksum": struct.pack("<I", 16) + bytes(16) + struct.pack("<I", 1) + b"\x02\x00\xff\x00"}, 0, False,
         None),                                                                              # bad delegation
        ({"no_checksum": True, "authenticator_authorization_data": [ap_options_cbt()]}, OPT_CB, False,
         fuzzkeys.CHANNEL_BINDINGS),                                                         # CBT, no 0x8003
        ({"framing": "raw", "session_key": sk, "cksum": (16, good_cksum)}, OPT_RCACHE, True, None),
        ({"framing": "raw", "session_key": sk, "cksum": (16, bytes(12))}, 0, False, None),  # keyed cksum bad
        ({"authorization_data": [(1, b"\x30\x03\x02\x01")]}, 0, False, None),            # AD-IF-RELEVANT junk
    ]
    for kw, opts, ok, cb in cases:
        kw = {"ticket_enctype": 18, "session_enctype": 18, **kw}
        m = mint(kt, server=svc, now=now, rng=rng, **kw)
        add_token(seeds, token_bytes(m.token), now, opts, must_validate=ok, cb=cb)
    # re-encrypted parts: a ticket and an authenticator whose plaintext is not DER, a ticket without kvno
    key = fuzzkeys.key_for(svc, 1, 18, "pw")
    m = mint(kt, server=svc, now=now, rng=rng, ticket_enctype=18, kvno=1, framing="raw")
    req = asn1.ApReq.from_der(m.ap_req)
    t = req.ticket
    bad_ticket = asn1.EncryptedData(18, crypto.encrypt(18, key, 2, b"\x63\x03\x30\x01\x00"), 1)
    bad_auth = asn1.EncryptedData(18, crypto.encrypt(18, m.session_key, 11, b"\x62\x02\x30\x00"))
    no_kvno = asn1.EncryptedData(18, t.enc_part.cipher, None)
    wrong_no_kvno = asn1.EncryptedData(18, crypto.encrypt(18, bytes(32), 2, m.enc_ticket_part), None)
    for enc, auth, ok in ((bad_ticket, req.authenticator, False), (t.enc_part, bad_auth, False),
                          (no_kvno, req.authenticator, True), (wrong_no_kvno, req.authenticator, False)):
        ap = asn1.ApReq(asn1.Ticket(t.realm, t.sname, enc), auth, req.ap_options).to_der()
        add_token(seeds, gss.gss_wrap(asn1.OID_KRB5, ap, asn1.TOK_ID_AP_REQ), now, OPT_RCACHE, must_validate=ok)


def mit(seeds: Seeds, workdir: Path) -> int:
    """Tokens from MIT's initiator and KDC for the fuzz services; returns how many."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support import krb5conf, mit

    if mit.mit_missing():
        print(f"MIT KDC programs missing ({mit.mit_missing()}): MIT seeds skipped", file=sys.stderr)
        return 0
    realm = mit.MitRealm(name=fuzzkeys.REALM, workdir=workdir, domain="fuzz.test").start()
    n = 0
    try:
        by_princ: dict[str, list[int]] = {}
        for princ, _, enctype, _, source in fuzzkeys.ENTRIES:
            if source == "pw":
                by_princ.setdefault(princ, []).append(enctype)
        for princ, ets in by_princ.items():
            mit_ets = [e for e in ets if e in krb5conf.ENCTYPES]
            ks = ",".join(f"{krb5conf.ENCTYPES[e]}:normal" for e in mit_ets)
            realm.kadmin(f"addprinc -pw {fuzzkeys.PASSWORD} -e {ks} {princ}")
            exported = Keytab.load(realm.export(realm.keytab(princ.split("/")[1].split(".")[0]), princ))
            for e in exported.entries:
                want = fuzzkeys.key_for(princ, 1, e.enctype, "pw")
                assert e.kvno == 1 and e.key == want, f"MIT key for {princ} {e.enctype} differs from fuzzkeys"
            seeds.add("py_keytab", exported.to_bytes())
            seeds.add("py_keytab", (realm.keytab(princ.split("/")[1].split(".")[0])).read_bytes())
        realm.kinit(realm.ccache("default"))
        v = validator()
        for princ in by_princ:
            for mech in ("krb5", "spnego"):
                for kw in ({}, {"mutual": True}, {"channel_bindings": fuzzkeys.CHANNEL_BINDINGS},
                           {"delegate": True, "mutual": True}):
                    tok, _ = realm.get_token(princ, mech=mech, **kw)
                    cb = kw.get("channel_bindings")
                    res = v.validate(tok, channel_bindings=cb if isinstance(cb, bytes) else None)
                    now = int(res.ctime)
                    opts = OPT_REALMS | OPT_RCACHE | (OPT_CB if cb else 0)
                    add_token(seeds, tok, now, opts, cb=cb if isinstance(cb, bytes) else None)
                    n += 1
                    req = asn1.ApReq.from_der(_apreq(tok))
                    key = fuzzkeys.key_for(princ, 1, req.ticket.enc_part.etype, "pw")
                    etp = crypto.decrypt(req.ticket.enc_part.etype, key, 2, req.ticket.enc_part.cipher)
                    seeds.add("der", etp)
                    auth = crypto.decrypt(req.authenticator.etype, res.session_key, 11, req.authenticator.cipher)
                    seeds.add("der", auth)
                    if res.pac_bytes is not None:
                        sel = pac_selector(princ, 1, req.ticket.enc_part.etype)
                        seeds.add("pac", bytes([sel]) + res.pac_bytes)
                        seeds.add("py_pac", res.pac_bytes)
    finally:
        realm.stop()
    return n


def _apreq(tok: bytes) -> bytes:
    from fastkrb import _native

    info: dict[str, Any] = _native.decode_token(tok)
    return bytes(info["ap_req"])


def static(seeds: Seeds) -> None:
    """Published vectors shipped in tests/vectors (keytabs, PACs) and replay-cache op sequences."""
    for p in sorted((ROOT / "tests/vectors/keytabs").glob("*.keytab")):
        seeds.add("py_keytab", p.read_bytes())
    seeds.add("py_keytab", fuzzkeys.keytab().to_bytes())
    pac_json = json.loads((ROOT / "tests/vectors/pac.json").read_text())
    for item in _walk(pac_json):
        seeds.add("py_pac", item)
        seeds.add("pac", b"\x00" + item)
    rng = random.Random(7)
    for target in ("rcache", "shm"):   # the same op format
        for n in (4, 40, 400, 4000):
            seeds.add(target, rng.randbytes(n))
        # 17 distinct keys, clock still: the 17th fills the cache of 16
        seeds.add(target, b"".join(bytes([i, 0, 200, 0]) for i in range(17)))
        seeds.add(target, b"".join(bytes([i % 5, 1, 8, i & 3]) for i in range(200)))


def _walk(node: Any) -> list[bytes]:
    """Hex strings in the PAC vectors that look like a PAC (a buffer count and version 0)."""
    out: list[bytes] = []
    if isinstance(node, dict):
        for v in node.values():
            out += _walk(v)
    elif isinstance(node, list):
        for v in node:
            out += _walk(v)
    elif isinstance(node, str) and len(node) >= 16 and len(node) % 2 == 0:
        try:
            b = bytes.fromhex(node)
        except ValueError:
            return out
        if 0 < int.from_bytes(b[:4], "little") < 32 and b[4:8] == bytes(4):
            out.append(b)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz" / "seeds")
    ap.add_argument("--no-mit", action="store_true", help="minted tokens only (no KDC needed)")
    ap.add_argument("--clean", action="store_true", help="remove the output directory first")
    args = ap.parse_args()
    logging.getLogger("fastkrb").setLevel(logging.ERROR)  # replay_cache="none" is deliberate here
    if args.clean and args.out.exists():
        shutil.rmtree(args.out)
    seeds = Seeds(args.out)
    rng = random.Random(20240607)
    minted(seeds, rng)
    static(seeds)
    n_mit = 0
    if not args.no_mit:
        with tempfile.TemporaryDirectory(prefix="fastkrb-fuzz-mit-") as tmp:
            n_mit = mit(seeds, Path(tmp))
    print(json.dumps({"mit_tokens": n_mit, "new_seeds": seeds.count}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
