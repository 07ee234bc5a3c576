"""Real KDCs for the interop tests: MIT krb5 and Heimdal realms on loopback, their keytabs, and real tokens.

Everything here drives the vendors' own programs (kdb5_util, kadmin.local, krb5kdc, kinit, ktutil; Heimdal's
kdc and kadmin -l) and MIT's GSSAPI through python-gssapi, so every ticket and AP-REQ the tests feed to
fastkrb was made by a real KDC and a real initiator, and MIT's acceptor gives the reference verdict.
Nothing in this module imports fastkrb: it is the independent side of the interop tests.

Run as a script (``python kdc.py accept ...``) it is MIT's acceptor in a child process, used under
libfaketime when the verdict must be taken at another time than now.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]

ENCTYPES: dict[int, str] = {
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
}
ENCTYPE_BY_NAME: dict[str, int] = {v: k for k, v in ENCTYPES.items()}
# Strongest first: the order the KDCs offer and clients request.
ALL_ENCTYPES = (20, 19, 18, 17)

KRB5_OID = bytes.fromhex("2a864886f712010202")  # 1.2.840.113554.1.2.2 (RFC 4121)
SPNEGO_OID = bytes.fromhex("2b0601050502")  # 1.3.6.1.5.5.2 (RFC 4178)

_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
MIT_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "kvno", "klist", "ktutil")


class KdcError(RuntimeError):
    """A KDC program failed while building a fixture (its output is in the message)."""


# --------------------------------------------------------------------------------------------------------------
# Discovery: what is installed


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + ":" + ":".join(_SBIN)
    return shutil.which(name, path=path)


def mit_tools() -> dict[str, str]:
    """Paths of the MIT programs the fixtures drive; empty entries are missing."""
    return {t: p for t in MIT_TOOLS if (p := _which(t))}


def mit_missing() -> list[str]:
    have = mit_tools()
    return [t for t in MIT_TOOLS if t not in have]


def heimdal_dir() -> Path | None:
    """Heimdal unpacked by tests/install_kdc_deps.sh (build/heimdal, or $FASTKRB_HEIMDAL_DIR)."""
    root = Path(os.environ.get("FASTKRB_HEIMDAL_DIR", REPO / "build" / "heimdal"))
    if (root / "usr/lib/heimdal-servers/kdc").exists() and (root / "usr/bin/kadmin.heimdal").exists():
        return root
    return None


def faketime_lib() -> str | None:
    """libfaketime, which lets MIT's acceptor judge a token at another time than now."""
    for cand in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(cand):
            return cand
    return None


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (KDCs listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise KdcError("no free port on 127.0.0.1")


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KdcError(f"KDC exited with {proc.returncode}: {_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise KdcError(f"KDC did not listen on 127.0.0.1:{port} within {timeout}s: {_tail(log)}")


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------------------------
# Keytab files (MIT/Heimdal format 0x0502): read and write raw entries, to build the negative-case variants
# and to state what a keytab holds, without trusting the code under test.


@dataclass(frozen=True)
class KeytabEntry:
    principal: str  # "HTTP/svc.fastkrb.test@FASTKRB.TEST"
    kvno: int
    enctype: int
    key: bytes
    raw: bytes  # the record exactly as stored


def read_keytab(path: str | Path) -> list[KeytabEntry]:
    data = Path(path).read_bytes()
    if data[:2] != b"\x05\x02":
        raise KdcError(f"{path}: not a v2 keytab")
    out: list[KeytabEntry] = []
    off = 2
    while off + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, off)
        off += 4
        if size < 0:  # a hole left by a deleted entry
            off += -size
            continue
        rec = data[off:off + size]
        off += size
        p = 0
        (ncomp,) = struct.unpack_from(">H", rec, p)
        p += 2
        (rlen,) = struct.unpack_from(">H", rec, p)
        realm = rec[p + 2:p + 2 + rlen].decode()
        p += 2 + rlen
        comps = []
        for _ in range(ncomp):
            (clen,) = struct.unpack_from(">H", rec, p)
            comps.append(rec[p + 2:p + 2 + clen].decode())
            p += 2 + clen
        p += 4 + 4  # name type, timestamp
        kvno = rec[p]
        p += 1
        enctype, klen = struct.unpack_from(">HH", rec, p)
        p += 4
        key = rec[p:p + klen]
        p += klen
        if len(rec) - p >= 4:  # 32-bit kvno extension
            (kvno32,) = struct.unpack_from(">I", rec, p)
            if kvno32:
                kvno = kvno32
        out.append(KeytabEntry("/".join(comps) + "@" + realm, kvno, enctype, bytes(key), bytes(rec)))
    return out


def write_keytab(path: str | Path, entries: Iterable[KeytabEntry]) -> Path:
    buf = bytearray(b"\x05\x02")
    for e in entries:
        buf += struct.pack(">i", len(e.raw)) + e.raw
    Path(path).write_bytes(bytes(buf))
    return Path(path)


def keytab_kvnos(path: str | Path, principal: str | None = None) -> list[int]:
    return sorted({e.kvno for e in read_keytab(path) if principal is None or e.principal == principal})


def keytab_enctypes(path: str | Path, principal: str | None = None) -> list[int]:
    return sorted({e.enctype for e in read_keytab(path) if principal is None or e.principal == principal})


# --------------------------------------------------------------------------------------------------------------
# Tokens on the wire: just enough DER to find the AP-REQ's fields and ciphertexts (for assertions and tampering).


def _tlv(buf: bytes, off: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``off``."""
    tag = buf[off]
    ln = buf[off + 1]
    p = off + 2
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(buf[p:p + n], "big")
        p += n
    if p + ln > len(buf):
        raise ValueError("DER element overruns the buffer")
    return tag, p, p + ln


def _children(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element in [start, end)."""
    off = start
    while off < end:
        tag, cs, ce = _tlv(buf, off)
        yield tag, off, cs, ce
        off = ce


def _field(buf: bytes, start: int, end: int, ctx: int) -> tuple[int, int]:
    """Content span of the [ctx] field inside a SEQUENCE's content."""
    for tag, _o, cs, ce in _children(buf, start, end):
        if tag == 0xA0 + ctx:
            return cs, ce
    raise ValueError(f"field [{ctx}] absent")


def ap_req_offset(token: bytes) -> int:
    """Offset of the AP-REQ ([APPLICATION 14]) inside a raw krb5 GSS token, a SPNEGO NegTokenInit or itself."""
    if token[0] == 0x6E:
        return 0
    if token[0] != 0x60:
        raise ValueError("not a GSS token")
    _t, cs, _ce = _tlv(token, 0)
    otag, os_, oe = _tlv(token, cs)
    if otag != 0x06:
        raise ValueError("no mech OID")
    oid = token[os_:oe]
    if oid == KRB5_OID:
        return oe + 2  # TOK_ID 01 00
    if oid == SPNEGO_OID:
        _t, ics, _ice = _tlv(token, oe)  # [0] NegTokenInit
        _t, scs, sce = _tlv(token, ics)  # SEQUENCE
        mcs, _mce = _field(token, scs, sce, 2)  # mechToken
        _t, octs, _octe = _tlv(token, mcs)  # OCTET STRING
        return octs + ap_req_offset(token[octs:])
    raise ValueError(f"unknown mech OID {oid.hex()}")


@dataclass(frozen=True)
class ApReqView:
    """What an AP-REQ says in clear text, read independently of fastkrb."""

    sname: str
    realm: str
    ticket_enctype: int
    ticket_kvno: int | None
    ticket_cipher: tuple[int, int]  # absolute span in the token
    authenticator_enctype: int
    authenticator_cipher: tuple[int, int]
    ap_options: bytes


def _int(buf: bytes, cs: int, ce: int) -> int:
    _t, s, e = _tlv(buf, cs)
    return int.from_bytes(buf[s:e], "big", signed=True)


def _encdata(buf: bytes, cs: int, ce: int) -> tuple[int, int | None, tuple[int, int]]:
    _t, s, e = _tlv(buf, cs)  # SEQUENCE
    etype = _int(buf, *_field(buf, s, e, 0))
    try:
        kvno: int | None = _int(buf, *_field(buf, s, e, 1))
    except ValueError:
        kvno = None
    ccs, _cce = _field(buf, s, e, 2)
    _t, os_, oe = _tlv(buf, ccs)
    return etype, kvno, (os_, oe)


def parse_ap_req(token: bytes) -> ApReqView:
    base = ap_req_offset(token)
    tag, cs, _ce = _tlv(token, base)
    if tag != 0x6E:
        raise ValueError("not an AP-REQ")
    _t, s, e = _tlv(token, cs)  # SEQUENCE
    ocs, _oce = _field(token, s, e, 2)
    _t, bs, be = _tlv(token, ocs)
    ap_options = token[bs + 1:be]
    tcs, _tce = _field(token, s, e, 3)
    _t, tks, _tke = _tlv(token, tcs)  # [APPLICATION 1]
    _t, ts, te = _tlv(token, tks)  # SEQUENCE
    rcs, _rce = _field(token, ts, te, 1)
    _t, rs, re_ = _tlv(token, rcs)
    realm = token[rs:re_].decode()
    ncs, _nce = _field(token, ts, te, 2)
    _t, ns, ne = _tlv(token, ncs)
    scs, _sce = _field(token, ns, ne, 1)
    _t, ss, se = _tlv(token, scs)
    parts = [token[ps:pe].decode() for _tg, _o, ps, pe in _children(token, ss, se)]
    t_et, t_kvno, t_span = _encdata(token, *_field(token, ts, te, 3))
    a_et, _a_kvno, a_span = _encdata(token, *_field(token, s, e, 4))
    return ApReqView("/".join(parts), realm, t_et, t_kvno, t_span, a_et, a_span, ap_options)


def tamper(token: bytes, part: str) -> bytes:
    """Flip one byte in the middle of the ticket's or the authenticator's ciphertext (DER stays valid)."""
    view = parse_ap_req(token)
    start, end = view.ticket_cipher if part == "ticket" else view.authenticator_cipher
    if part not in ("ticket", "authenticator"):
        raise ValueError(part)
    pos = (start + end) // 2
    out = bytearray(token)
    out[pos] ^= 0x5A
    return bytes(out)


# --------------------------------------------------------------------------------------------------------------
# Configuration files


@dataclass(frozen=True)
class RealmRef:
    """How a client reaches a realm: its name, KDC port and DNS domain."""

    name: str
    port: int
    domain: str


def _profile(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a krb5 profile (MIT and Heimdal syntax: tab indentation, nested braces)."""
    lines: list[str] = []

    def emit(key: str, value: Any, depth: int) -> None:
        pad = "\t" * depth
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} = {{")
            for k, v in value.items():
                emit(k, v, depth + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)):
            for v in value:
                emit(key, v, depth)
        else:
            lines.append(f"{pad}{key} = {value}")

    for name, body in sections.items():
        lines.append(f"[{name}]")
        for k, v in body.items():
            emit(k, v, 1)
    return "\n".join(lines) + "\n"


def _enctype_list(enctypes: Sequence[int]) -> str:
    return " ".join(ENCTYPES[e] for e in enctypes)


def client_profile(default: RealmRef, others: Sequence[RealmRef] = (), *,
                   capaths: Mapping[str, Mapping[str, str]] | None = None,
                   libdefaults: Mapping[str, str] | None = None) -> str:
    """krb5.conf for MIT's clients and acceptor: loopback KDCs only, no DNS, AES enctypes (SHA-2 first)."""
    realms = [default, *others]
    lib = {
        "default_realm": default.name,
        "dns_lookup_kdc": "false",
        "dns_lookup_realm": "false",
        "dns_canonicalize_hostname": "false",
        "rdns": "false",
        "forwardable": "true",
        "udp_preference_limit": "1",
        "allow_weak_crypto": "false",
        "permitted_enctypes": _enctype_list(ALL_ENCTYPES),
        "default_tkt_enctypes": _enctype_list(ALL_ENCTYPES),
        "default_tgs_enctypes": _enctype_list(ALL_ENCTYPES),
        "clockskew": "300",
        **(libdefaults or {}),
    }
    sections: dict[str, Mapping[str, Any]] = {
        "libdefaults": lib,
        "realms": {r.name: {"kdc": f"127.0.0.1:{r.port}"} for r in realms},
        "domain_realm": {k: v for r in realms for k, v in ((f".{r.domain}", r.name), (r.domain, r.name))},
    }
    if capaths:
        sections["capaths"] = capaths
    return _profile(sections)


# --------------------------------------------------------------------------------------------------------------
# The initiator and the reference acceptor (MIT's GSSAPI through python-gssapi)


class MitVerdict(NamedTuple):
    """MIT's acceptor on one token: accepted?, its error text, and its output token (AP-REP) if any."""

    ok: bool
    error: str
    output_token: bytes | None


def _mech_oid(mech: str) -> Any:
    import gssapi

    if mech == "krb5":
        return gssapi.MechType.kerberos
    if mech == "spnego":
        return gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
    raise ValueError(f"mech must be 'krb5' or 'spnego', not {mech!r}")


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set variables for in-process MIT library calls (it reads KRB5_CONFIG per krb5 context)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class InitContext:
    """MIT's initiator context behind a token; ``step`` feeds it the acceptor's answer (AP-REP)."""

    ctx: Any  # gssapi.SecurityContext
    env: dict[str, str]
    mech: str

    def step(self, token: bytes) -> bytes | None:
        with environment(self.env):
            out = self.ctx.step(token)
        return bytes(out) if out else None

    @property
    def complete(self) -> bool:
        return bool(self.ctx.complete)


def finish_initiator(init: InitContext, response_token: bytes) -> bool:
    """Feed the acceptor's response to MIT's initiator; True when MIT verified it and completed the context.

    Raises gssapi's GSSError when MIT rejects the AP-REP (bad MAC, wrong session key, malformed).
    """
    init.step(response_token)
    return init.complete


def _cb(channel_bindings: bytes | None) -> Any:
    if channel_bindings is None:
        return None
    import gssapi.raw

    return gssapi.raw.ChannelBindings(application_data=channel_bindings)


def accept_in_process(token: bytes, keytab: str | Path, channel_bindings: bytes | None,
                      env: Mapping[str, str]) -> MitVerdict:
    import gssapi
    from gssapi.raw.misc import GSSError

    with environment(env):
        try:
            creds = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
            ctx = gssapi.SecurityContext(creds=creds, usage="accept", channel_bindings=_cb(channel_bindings))
            out = ctx.step(token)
            # SPNEGO hands back its reject token first and raises the stored error on the next access.
            complete = ctx.complete
        except GSSError as exc:
            return MitVerdict(False, str(exc), None)
        if not complete:
            return MitVerdict(False, "context not complete after one token", bytes(out) if out else None)
        return MitVerdict(True, "", bytes(out) if out else None)


@dataclass(frozen=True)
class MitView:
    """What MIT's acceptor learnt from an accepted token: the ground truth for fields fastkrb reports."""

    client: str
    pac_buffers: tuple[str, ...]  # "urn:mspac:..." name attributes; empty when the ticket has no PAC
    delegated: bool


def inspect_in_process(token: bytes, keytab: str | Path, env: Mapping[str, str]) -> MitView:
    """Accept ``token`` with MIT and read the client name, PAC buffers and delegated credential (raises on
    rejection: use it only on tokens MIT accepts)."""
    import gssapi

    with environment(env):
        creds = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
        ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        ctx.step(token)
        name = ctx.initiator_name
        attrs = tuple(sorted(a.decode() for a in name.attributes if a.startswith(b"urn:mspac:")))
        return MitView(str(name), attrs, ctx.delegated_creds is not None)


# --------------------------------------------------------------------------------------------------------------
# Realms


@dataclass
class Realm:
    """A running KDC for one realm, seen by MIT's client library through ``env``."""

    name: str
    workdir: Path
    domain: str
    port: int = 0
    password: str = "alice-Secret-1"
    peers: list[RealmRef] = field(default_factory=list)
    capaths: dict[str, dict[str, str]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "keytabs").mkdir(exist_ok=True)
        (self.workdir / "ccaches").mkdir(exist_ok=True)
        (self.workdir / "rcache").mkdir(exist_ok=True)
        if not self.port:
            self.port = free_port()

    # --- names and files
    @property
    def ref(self) -> RealmRef:
        return RealmRef(self.name, self.port, self.domain)

    @property
    def user(self) -> str:
        return f"alice@{self.name}"

    def principal(self, name: str) -> str:
        return name if "@" in name else f"{name}@{self.name}"

    def service(self, host: str, service: str = "HTTP") -> str:
        return f"{service}/{host}.{self.domain}@{self.name}"

    def keytab(self, name: str) -> Path:
        return self.workdir / "keytabs" / f"{name}.keytab"

    def ccache(self, name: str) -> Path:
        return self.workdir / "ccaches" / name

    @property
    def krb5_conf(self) -> Path:
        return self.workdir / "krb5.conf"

    @property
    def env(self) -> dict[str, str]:
        """Variables under which MIT's library sees this realm (and its peers) and nothing of the host."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5CCNAME": f"FILE:{self.ccache('default')}",
            "KRB5_KTNAME": f"FILE:{self.workdir / 'keytabs' / 'none.keytab'}",
            "KRB5_CLIENT_KTNAME": f"FILE:{self.workdir / 'keytabs' / 'none.keytab'}",
            "KRB5RCACHEDIR": str(self.workdir / "rcache"),
        }

    def write_client_conf(self, path: Path | None = None, **libdefaults: str) -> Path:
        path = path or self.krb5_conf
        path.write_text(client_profile(self.ref, self.peers, capaths=self.capaths or None, libdefaults=libdefaults))
        return path

    # --- running programs
    def run(self, argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **self.env, **(env or {})}
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, env=full_env, timeout=60)
        if check and proc.returncode != 0:
            raise KdcError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()} {proc.stdout.strip()}")
        return proc

    def kinit(self, ccache: str | Path | None = None, *, principal: str | None = None,
              password: str | None = None) -> Path:
        """MIT kinit (forwardable) for the user, with the password on stdin."""
        cc = Path(ccache) if ccache else self.ccache("default")
        self.run(["kinit", "-f", "-c", f"FILE:{cc}", principal or self.user],
                 input=(password or self.password) + "\n")
        return cc

    def fetch_ticket(self, ccache: Path, service: str) -> None:
        """Get a service ticket into ``ccache`` now (MIT kvno), so later tokens reuse this very ticket."""
        self.run(["kvno", "-c", f"FILE:{ccache}", self.principal(service)])

    def copy_ccache(self, src: Path, name: str) -> Path:
        dst = self.ccache(name)
        shutil.copyfile(src, dst)
        return dst

    def ticket_enctype(self, ccache: Path, service: str) -> int:
        """The enctype of the ticket's encrypted part for ``service`` in ``ccache`` (from klist -e)."""
        out = self.run(["klist", "-e", "-c", f"FILE:{ccache}"]).stdout
        lines = out.splitlines()
        want = self.principal(service)
        for i, line in enumerate(lines):
            if want in line:
                for nxt in lines[i + 1:i + 4]:
                    if "Etype" in nxt:
                        # "renew until ..., Etype (skey, tkt): aes256-cts-hmac-sha1-96, aes128-cts-hmac-sha1-96"
                        tkt = nxt.split("):", 1)[1].split(",")[1].strip()
                        return ENCTYPE_BY_NAME[tkt]
        raise KdcError(f"no ticket for {want} in {ccache}: {out}")

    # --- tokens
    def get_token(self, service: str, *, mech: str = "krb5", mutual: bool = False,
                  channel_bindings: bytes | None = None, delegate: bool = False,
                  ccache: str | Path | None = None, client_aware_cb: bool = False) -> tuple[bytes, InitContext]:
        """An initial context token from MIT's initiator for ``service`` (a principal; realm optional).

        ``client_aware_cb`` sets MIT's client_aware_channel_bindings, which adds KERB_AP_OPTIONS_CBT to the
        authenticator (MS-KILE 3.2.5.8): the acceptor must then insist on bindings.
        """
        import gssapi

        cc = Path(ccache) if ccache else self.ccache("default")
        env = {**self.env, "KRB5CCNAME": f"FILE:{cc}"}
        if client_aware_cb:
            conf = self.workdir / "krb5-cbt.conf"
            if not conf.exists():
                self.write_client_conf(conf, client_aware_channel_bindings="true")
            env["KRB5_CONFIG"] = str(conf)
        rf = gssapi.RequirementFlag
        flags = int(rf.replay_detection) | int(rf.out_of_sequence_detection)
        if mutual:
            flags |= int(rf.mutual_authentication)
        if delegate:
            flags |= int(rf.delegate_to_peer)
        with environment(env):
            creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{cc}"})
            name = gssapi.Name(self.principal(service), gssapi.NameType.kerberos_principal)
            ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=_mech_oid(mech),
                                         flags=flags, channel_bindings=_cb(channel_bindings))
            token = ctx.step()
        return bytes(token), InitContext(ctx, env, mech)

    def mit_accept(self, token: bytes, keytab: str | Path, channel_bindings: bytes | None = None, *,
                   now: float | None = None) -> MitVerdict:
        """MIT's acceptor verdict on ``token`` with ``keytab`` (its replay cache included).

        With ``now`` the acceptor runs in a child process under libfaketime, its clock moved to ``now``.
        """
        if now is None:
            return accept_in_process(token, keytab, channel_bindings, self.env)
        lib = faketime_lib()
        if lib is None:
            raise KdcError("libfaketime is not installed (tests/install_kdc_deps.sh installs it)")
        rcdir = self.workdir / "rcache-faketime"
        rcdir.mkdir(exist_ok=True)
        offset = round(now - time.time())
        env = {**os.environ, **self.env, "KRB5RCACHEDIR": str(rcdir), "LD_PRELOAD": lib,
               "FAKETIME": f"{offset:+d}", "FAKETIME_DONT_RESET": "1", "DONT_FAKE_MONOTONIC": "1"}
        req = {"token": token.hex(), "keytab": str(keytab),
               "cb": None if channel_bindings is None else channel_bindings.hex()}
        proc = subprocess.run([sys.executable, __file__, "accept"], input=json.dumps(req), capture_output=True,
                              text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise KdcError(f"acceptor child failed: {proc.stderr}")
        res = json.loads(proc.stdout)
        return MitVerdict(res["ok"], res["error"], bytes.fromhex(res["out"]) if res["out"] else None)

    def mit_inspect(self, token: bytes, keytab: str | Path) -> MitView:
        return inspect_in_process(token, keytab, self.env)

    # --- lifecycle
    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class MitRealm(Realm):
    """An MIT krb5 realm: kdb5_util database, krb5kdc on loopback, kadmin.local for principals and keytabs."""

    master_password: str = "master-Secret-1"

    @property
    def kdc_conf(self) -> Path:
        return self.workdir / "kdc.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "KRB5_KDC_PROFILE": str(self.kdc_conf)}

    def start(self) -> MitRealm:
        supported = " ".join(f"{ENCTYPES[e]}:normal" for e in ALL_ENCTYPES)
        self.kdc_conf.write_text(_profile({
            "realms": {self.name: {
                "database_name": str(self.workdir / "principal"),
                "key_stash_file": str(self.workdir / "stash"),
                "acl_file": str(self.workdir / "kadm5.acl"),
                "kdc_listen": f"127.0.0.1:{self.port}",
                "kdc_tcp_listen": f"127.0.0.1:{self.port}",
                "master_key_type": "aes256-cts-hmac-sha1-96",
                "supported_enctypes": supported,
                "max_life": "10h",
                "max_renewable_life": "1d",
            }},
            "logging": {"kdc": f"FILE:{self.workdir / 'kdc.log'}",
                        "admin_server": f"FILE:{self.workdir / 'kadmin.log'}"},
        }))
        (self.workdir / "kadm5.acl").write_text("")
        self.write_client_conf()
        self.run(["kdb5_util", "create", "-s", "-r", self.name, "-P", self.master_password])
        self.kadmin(f"addprinc -pw {self.password} {self.user}")
        log = self.workdir / "krb5kdc.out"
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [_which("krb5kdc") or "krb5kdc", "-n", "-r", self.name, "-P", str(self.workdir / "kdc.pid")],
                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)
        _wait_tcp(self.port, self.proc, self.workdir / "kdc.log")
        return self

    def kadmin(self, *commands: str) -> str:
        """Run kadmin.local commands in one process; any error line fails the fixture."""
        proc = self.run(["kadmin.local", "-r", self.name], input="\n".join(commands) + "\nquit\n")
        bad = [ln for ln in proc.stderr.splitlines()
               if ln.strip() and not ln.startswith(("No policy specified", "Authenticating as"))]
        if bad:
            raise KdcError(f"kadmin.local: {'; '.join(bad)}")
        return proc.stdout

    def add_service(self, principal: str, enctypes: Sequence[int] = ALL_ENCTYPES) -> str:
        p = self.principal(principal)
        ks = ",".join(f"{ENCTYPES[e]}:normal" for e in enctypes)
        self.kadmin(f"addprinc -randkey -e {ks} {p}")
        return p

    def export(self, keytab: Path, *principals: str) -> Path:
        """Append the principals' current keys to ``keytab`` (ktadd -norandkey: the kvno does not move)."""
        self.kadmin(*(f"ktadd -norandkey -k {keytab} {self.principal(p)}" for p in principals))
        return keytab

    def rotate(self, principal: str, enctypes: Sequence[int] = ALL_ENCTYPES) -> None:
        """New random keys, kvno + 1, old keys dropped (what a password reset of a service account does)."""
        ks = ",".join(f"{ENCTYPES[e]}:normal" for e in enctypes)
        self.kadmin(f"cpw -randkey -e {ks} {self.principal(principal)}")

    def ktutil_password_key(self, keytab: Path, principal: str, kvno: int, enctype: int, password: str) -> Path:
        """A keytab entry made by MIT ktutil from a password (as an admin with the wrong password would)."""
        script = (f"addent -password -p {self.principal(principal)} -k {kvno} -e {ENCTYPES[enctype]}\n"
                  f"{password}\nwkt {keytab}\nquit\n")
        self.run(["ktutil"], input=script)
        return keytab


@dataclass
class HeimdalRealm(Realm):
    """A Heimdal realm: Heimdal's kdc and kadmin -l from the unpacked packages; MIT clients talk to it."""

    root: Path = field(default_factory=lambda: heimdal_dir() or Path("/nonexistent"))

    @property
    def heimdal_conf(self) -> Path:
        return self.workdir / "heimdal.conf"

    @property
    def heimdal_env(self) -> dict[str, str]:
        libdir = self.root / "usr/lib/x86_64-linux-gnu"
        return {"KRB5_CONFIG": str(self.heimdal_conf), "LD_LIBRARY_PATH": str(libdir)}

    def start(self) -> HeimdalRealm:
        d = self.workdir
        default_keys = " ".join(f"{ENCTYPES[e]}:pw-salt" for e in ALL_ENCTYPES)
        self.heimdal_conf.write_text(_profile({
            "libdefaults": {"default_realm": self.name, "dns_lookup_kdc": "false"},
            "realms": {self.name: {"kdc": f"127.0.0.1:{self.port}"}},
            "kdc": {
                "database": {"dbname": str(d / "heimdal"), "realm": self.name, "mkey_file": str(d / "m-key"),
                             "acl_file": str(d / "kadmind.acl"), "log_file": str(d / "iprop.log")},
                "ports": str(self.port),
                "addresses": "127.0.0.1",
            },
            "kadmin": {"default_keys": default_keys},
            "logging": {"kdc": f"FILE:{d / 'kdc.log'}", "default": f"FILE:{d / 'heimdal.log'}"},
        }))
        self.write_client_conf()
        self.kadmin("init --realm-max-ticket-life=10h --realm-max-renewable-life=1d " + self.name,
                    f"add --password={self.password} --use-defaults {self.user}")
        log = d / "kdc.out"
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [str(self.root / "usr/lib/heimdal-servers/kdc"), "-c", str(self.heimdal_conf),
                 f"--ports={self.port}", "--addresses=127.0.0.1"],
                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **self.heimdal_env},
                start_new_session=True)
        _wait_tcp(self.port, self.proc, log)
        return self

    def kadmin(self, *commands: str) -> str:
        argv = [str(self.root / "usr/bin/kadmin.heimdal"), "-l", "-c", str(self.heimdal_conf), "-r", self.name]
        proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True,
                              env={**os.environ, **self.heimdal_env}, timeout=60)
        if proc.returncode != 0 or proc.stderr.strip():
            raise KdcError(f"heimdal kadmin: {proc.stderr.strip()} {proc.stdout.strip()}")
        return proc.stdout

    def add_cmds(self, principal: str, enctypes: Sequence[int] = ALL_ENCTYPES) -> list[str]:
        """kadmin commands for a random-key service with exactly ``enctypes`` (batch them: each kadmin -l
        start costs ~0.2 s)."""
        p = self.principal(principal)
        cmds = [f"add --random-key --use-defaults {p}"]
        drop = [ENCTYPES[e] for e in ALL_ENCTYPES if e not in enctypes]
        if drop:
            cmds.append(f"del_enctype {p} {' '.join(drop)}")
        return cmds

    def export_cmds(self, keytab: Path, *principals: str) -> list[str]:
        return [f"ext_keytab -k {keytab} {self.principal(p)}" for p in principals]

    def export(self, keytab: Path, *principals: str) -> Path:
        self.kadmin(*self.export_cmds(keytab, *principals))
        return keytab

    def rotate(self, principal: str) -> None:
        """New random keys, kvno + 1 (Heimdal keeps the principal's enctypes)."""
        self.kadmin(f"cpw --random-key {self.principal(principal)}")


# --------------------------------------------------------------------------------------------------------------
# Labs: a realm plus the principals, keytabs and ccaches the tests use


@dataclass
class Lab:
    """A realm with its services, keytab variants and ccaches, built once per test session."""

    realm: Realm
    services: dict[str, str] = field(default_factory=dict)  # short name -> principal
    keytabs: dict[str, Path] = field(default_factory=dict)
    ccaches: dict[str, Path] = field(default_factory=dict)
    ticket_enctypes: dict[str, int] = field(default_factory=dict)  # short name -> enctype of its ticket
    extra: dict[str, Any] = field(default_factory=dict)
    others: list[Realm] = field(default_factory=list)

    def get_token(self, service: str, **kw: Any) -> tuple[bytes, InitContext]:
        return self.realm.get_token(self.services.get(service, service), **kw)

    def mit_accept(self, token: bytes, keytab: str | Path, channel_bindings: bytes | None = None,
                   **kw: Any) -> MitVerdict:
        kt = self.keytabs.get(str(keytab), keytab)
        return self.realm.mit_accept(token, kt, channel_bindings, **kw)

    def mit_inspect(self, token: bytes, keytab: str | Path) -> MitView:
        return self.realm.mit_inspect(token, self.keytabs.get(str(keytab), keytab))

    def stop(self) -> None:
        self.realm.stop()
        for r in self.others:
            r.stop()


SINGLE = {f"svc{e}": e for e in (17, 18, 19, 20)}


def build_mit_lab(workdir: Path, name: str = "FASTKRB.TEST", domain: str = "fastkrb.test") -> Lab:
    """The MIT realm of the interop suite.

    Services: svc17..svc20 (one enctype each), multi (all four), other (all four), rotated (kvno 1 -> 2 -> 3,
    with a ccache holding a ticket of each kvno). Keytabs: one per service; rotated_k1/k2/k3/k12/k23/k123;
    multi_missing (every enctype but the ticket's); svc18_wrong and multi_wrong (same kvno and enctype,
    key from a wrong password via ktutil); all (every current key).
    """
    realm = MitRealm(name=name, workdir=workdir, domain=domain).start()
    lab = Lab(realm)
    try:
        _populate_mit(lab)
    except BaseException:
        lab.stop()
        raise
    return lab


def _populate_mit(lab: Lab) -> None:
    realm = lab.realm
    assert isinstance(realm, MitRealm)
    kt = realm.keytab
    for short, e in SINGLE.items():
        lab.services[short] = realm.add_service(realm.service(short), [e])
    for short in ("multi", "other", "rotated"):
        lab.services[short] = realm.add_service(realm.service(short))
    for short in (*SINGLE, "multi", "other"):
        lab.keytabs[short] = realm.export(kt(short), lab.services[short])
    lab.keytabs["all"] = realm.export(kt("all"), *(lab.services[s] for s in (*SINGLE, "multi", "other")))

    base = realm.kinit(realm.ccache("default"))
    lab.ccaches["default"] = base
    tgt_only = realm.copy_ccache(base, "tgt")
    for short in (*SINGLE, "multi"):
        realm.fetch_ticket(base, lab.services[short])
        lab.ticket_enctypes[short] = realm.ticket_enctype(base, lab.services[short])

    # Rotation: a ticket per kvno, each in its own ccache, and keytabs of every key generation.
    rot = lab.services["rotated"]
    gens: dict[int, list[KeytabEntry]] = {}
    for kvno in (1, 2, 3):
        if kvno > 1:
            realm.rotate(rot)
        gen_kt = realm.export(kt(f"rotated_k{kvno}"), rot)
        gens[kvno] = read_keytab(gen_kt)
        cc = realm.copy_ccache(tgt_only, f"rotated_k{kvno}")
        realm.fetch_ticket(cc, rot)
        lab.ccaches[f"rotated_k{kvno}"] = cc
        lab.keytabs[f"rotated_k{kvno}"] = gen_kt
    lab.ticket_enctypes["rotated"] = realm.ticket_enctype(lab.ccaches["rotated_k1"], rot)
    for combo in ("12", "23", "123", "13"):
        lab.keytabs[f"rotated_k{combo}"] = write_keytab(kt(f"rotated_k{combo}"),
                                                        [e for k in combo for e in gens[int(k)]])

    # Negative variants.
    multi_et = lab.ticket_enctypes["multi"]
    lab.keytabs["multi_missing"] = write_keytab(
        kt("multi_missing"), [e for e in read_keytab(lab.keytabs["multi"]) if e.enctype != multi_et])
    realm.ktutil_password_key(kt("svc18_wrong"), lab.services["svc18"], 1, 18, "not-the-password")
    lab.keytabs["svc18_wrong"] = kt("svc18_wrong")
    realm.ktutil_password_key(kt("multi_wrong"), lab.services["multi"], 1, multi_et, "not-the-password")
    lab.keytabs["multi_wrong"] = kt("multi_wrong")


def build_heimdal_lab(workdir: Path, name: str = "HEIMDAL.TEST", domain: str = "heimdal.test") -> Lab:
    """A Heimdal realm: svc17..svc20, multi, other, rotated (kvno 1 -> 2), keytabs like the MIT lab's."""
    realm = HeimdalRealm(name=name, workdir=workdir, domain=domain).start()
    lab = Lab(realm)
    try:
        kt = realm.keytab
        cmds: list[str] = []
        for short, e in SINGLE.items():
            lab.services[short] = realm.principal(realm.service(short))
            cmds += realm.add_cmds(lab.services[short], [e])
        for short in ("multi", "other", "rotated"):
            lab.services[short] = realm.principal(realm.service(short))
            cmds += realm.add_cmds(lab.services[short])
        for short in (*SINGLE, "multi", "other"):
            lab.keytabs[short] = kt(short)
            cmds += realm.export_cmds(kt(short), lab.services[short])
        lab.keytabs["rotated_k1"] = kt("rotated_k1")
        cmds += realm.export_cmds(kt("rotated_k1"), lab.services["rotated"])
        realm.kadmin(*cmds)

        base = realm.kinit(realm.ccache("default"))
        lab.ccaches["default"] = base
        tgt_only = realm.copy_ccache(base, "tgt")
        for short in (*SINGLE, "multi"):
            realm.fetch_ticket(base, lab.services[short])
            lab.ticket_enctypes[short] = realm.ticket_enctype(base, lab.services[short])
        rot = lab.services["rotated"]
        for kvno in (1, 2):
            if kvno > 1:
                realm.kadmin(f"cpw --random-key {rot}", *realm.export_cmds(kt(f"rotated_k{kvno}"), rot))
                lab.keytabs[f"rotated_k{kvno}"] = kt(f"rotated_k{kvno}")
            cc = realm.copy_ccache(tgt_only, f"rotated_k{kvno}")
            realm.fetch_ticket(cc, rot)
            lab.ccaches[f"rotated_k{kvno}"] = cc
        lab.ticket_enctypes["rotated"] = realm.ticket_enctype(lab.ccaches["rotated_k1"], rot)
        lab.keytabs["rotated_k12"] = write_keytab(
            kt("rotated_k12"), [*read_keytab(kt("rotated_k1")), *read_keytab(kt("rotated_k2"))])
        multi_et = lab.ticket_enctypes["multi"]
        lab.keytabs["multi_missing"] = write_keytab(
            kt("multi_missing"), [e for e in read_keytab(lab.keytabs["multi"]) if e.enctype != multi_et])
    except BaseException:
        lab.stop()
        raise
    return lab


def build_cross_lab(workdir: Path, a: str = "ALPHA.TEST", b: str = "BETA.TEST") -> Lab:
    """Two MIT realms, A trusting nothing and B trusting A: krbtgt/B@A with the same key in both databases.

    alice@A gets a ticket for HTTP/api.beta.test@B through A's KDC (capaths: A -> B directly). The lab's
    realm is A (the client's view, whose krb5.conf knows both); ``others[0]`` is B.
    """
    ra = MitRealm(name=a, workdir=workdir / "a", domain=a.lower())
    rb = MitRealm(name=b, workdir=workdir / "b", domain=b.lower())
    capaths = {a: {b: "."}, b: {a: "."}}
    ra.peers, rb.peers = [rb.ref], [ra.ref]
    ra.capaths = rb.capaths = capaths
    ra.start()
    lab = Lab(ra, others=[rb])
    try:
        rb.start()
        trust = f"krbtgt/{b}@{a}"
        secret = "cross-realm-Trust-1"
        ks = ",".join(f"{ENCTYPES[e]}:normal" for e in ALL_ENCTYPES)
        for r in (ra, rb):
            r.kadmin(f"addprinc -pw {secret} -e {ks} {trust}")
        svc = rb.add_service(rb.service("api"))
        lab.services["api"] = svc
        lab.keytabs["api"] = rb.export(rb.keytab("api"), svc)
        local = ra.add_service(ra.service("local"))
        lab.services["local"] = local
        lab.keytabs["local"] = ra.export(ra.keytab("local"), local)
        lab.ccaches["default"] = ra.kinit(ra.ccache("default"))
        ra.fetch_ticket(lab.ccaches["default"], svc)
        lab.ticket_enctypes["api"] = ra.ticket_enctype(lab.ccaches["default"], svc)
        lab.extra["trust"] = trust
    except BaseException:
        lab.stop()
        raise
    return lab


# --------------------------------------------------------------------------------------------------------------
# Child-process acceptor (for verdicts at a faked time)


def _accept_main() -> int:
    req = json.loads(sys.stdin.read())
    cb = bytes.fromhex(req["cb"]) if req["cb"] is not None else None
    verdict = accept_in_process(bytes.fromhex(req["token"]), req["keytab"], cb, {})
    out = verdict.output_token.hex() if verdict.output_token else None
    sys.stdout.write(json.dumps({"ok": verdict.ok, "error": verdict.error, "out": out}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["accept"]:
        raise SystemExit(_accept_main())
    raise SystemExit(f"usage: {sys.argv[0]} accept  (token request as JSON on stdin)")
