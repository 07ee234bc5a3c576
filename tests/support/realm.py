"""A realm on loopback, whatever KDC serves it, and the lab the interop tests share.

``Realm`` is the base every KDC kind (support/mit.py, support/heimdal.py; a Samba AD DC next) builds on. The
base is the client side, the same for every kind: a krb5.conf naming the KDC's loopback port, MIT's kinit,
kvno, klist and ktutil, MIT's GSSAPI initiator for tokens and MIT's acceptor for the reference verdict
(support/mitgss.py). A kind adds the server side: ``start`` (database, the user alice, the KDC process
listening on 127.0.0.1:port), ``add_services``, ``export_many`` and ``rotate``, and says what its tickets are
like (``kind``, ``issues_pac``).

``Lab`` is a started realm with the services, keytab variants and ccaches ``populate`` makes through that
interface, so that one test can run against every KDC kind (the ``realm`` fixture in tests/conftest.py).
Nothing here imports fastkrb: it is the independent side of the interop tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from support import mitgss, procs
from support.keytabfile import KeytabEntry, read_keytab, write_keytab
from support.krb5conf import ALL_ENCTYPES, ENCTYPE_BY_NAME, ENCTYPES, RealmRef, client_profile

REPO = Path(__file__).resolve().parents[2]
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class KdcError(RuntimeError):
    """A KDC program failed while building a fixture (its output is in the message)."""


# --------------------------------------------------------------------------------------------------------------
# Programs


def which(name: str) -> str | None:
    """A program on PATH or in the sbin directories (where the KDC daemons live)."""
    path = os.environ.get("PATH", "") + ":" + ":".join(_SBIN)
    return shutil.which(name, path=path)


def faketime_lib() -> str | None:
    """libfaketime, which lets MIT's acceptor judge a token at another time than now."""
    for cand in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(cand):
            return cand
    return None


# --------------------------------------------------------------------------------------------------------------
# The realm


@dataclass
class Realm:
    """A running KDC for one realm, seen by MIT's client library through ``env``."""

    kind: ClassVar[str] = ""  # "mit", "heimdal": the id of the realm fixture's parameter
    issues_pac: ClassVar[bool] = False  # whether the KDC puts an MS-PAC in every service ticket

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
            self.port = procs.free_port()

    # --- the server side: each KDC kind implements these
    def start(self) -> Realm:
        """Create the database with the user alice (``password``), start the KDC on 127.0.0.1:``port``."""
        raise NotImplementedError

    def add_services(self, services: Mapping[str, Sequence[int]]) -> None:
        """Random-key principals (kvno 1) with exactly the given enctypes each."""
        raise NotImplementedError

    def export_many(self, keytabs: Mapping[Path, Sequence[str]]) -> None:
        """Write each keytab with the principals' current keys (the kvno does not move)."""
        raise NotImplementedError

    def rotate(self, principal: str) -> None:
        """New random keys, kvno + 1, old keys dropped (what a password reset of a service account does)."""
        raise NotImplementedError

    def add_service(self, principal: str, enctypes: Sequence[int] = ALL_ENCTYPES) -> str:
        p = self.principal(principal)
        self.add_services({p: enctypes})
        return p

    def export(self, keytab: Path, *principals: str) -> Path:
        """Append the principals' current keys to ``keytab``."""
        self.export_many({keytab: principals})
        return keytab

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

    # --- MIT's client programs
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

    def ktutil_password_key(self, keytab: Path, principal: str, kvno: int, enctype: int, password: str) -> Path:
        """A keytab entry made by MIT ktutil from a password (as an admin with the wrong password would)."""
        script = (f"addent -password -p {self.principal(principal)} -k {kvno} -e {ENCTYPES[enctype]}\n"
                  f"{password}\nwkt {keytab}\nquit\n")
        self.run(["ktutil"], input=script)
        return keytab

    # --- tokens and verdicts
    def get_token(self, service: str, *, mech: str = "krb5", mutual: bool = False,
                  channel_bindings: bytes | None = None, delegate: bool = False,
                  ccache: str | Path | None = None, client_aware_cb: bool = False) -> tuple[bytes, mitgss.InitContext]:
        """An initial context token from MIT's initiator for ``service`` (a principal; realm optional).

        ``client_aware_cb`` sets MIT's client_aware_channel_bindings, which adds KERB_AP_OPTIONS_CBT to the
        authenticator (MS-KILE 3.2.5.8): the acceptor must then insist on bindings.
        """
        env = self.env
        if client_aware_cb:
            conf = self.workdir / "krb5-cbt.conf"
            if not conf.exists():
                self.write_client_conf(conf, client_aware_channel_bindings="true")
            env["KRB5_CONFIG"] = str(conf)
        cc = Path(ccache) if ccache else self.ccache("default")
        return mitgss.initiate(self.principal(service), cc, env, mech=mech, mutual=mutual,
                               channel_bindings=channel_bindings, delegate=delegate)

    def mit_accept(self, token: bytes, keytab: str | Path, channel_bindings: bytes | None = None, *,
                   now: float | None = None) -> mitgss.MitVerdict:
        """MIT's acceptor verdict on ``token`` with ``keytab`` (its replay cache included).

        With ``now`` the acceptor runs in a child process under libfaketime, its clock moved to ``now``.
        """
        if now is None:
            return mitgss.accept_in_process(token, keytab, channel_bindings, self.env)
        lib = faketime_lib()
        if lib is None:
            raise KdcError("libfaketime is not installed (tests/install_kdc_deps.sh installs it)")
        rcdir = self.workdir / "rcache-faketime"
        rcdir.mkdir(exist_ok=True)
        offset = round(now - time.time())
        env = {**self.env, "KRB5RCACHEDIR": str(rcdir), "LD_PRELOAD": lib,
               "FAKETIME": f"{offset:+d}", "FAKETIME_DONT_RESET": "1", "DONT_FAKE_MONOTONIC": "1"}
        return mitgss.accept_in_child(token, keytab, channel_bindings, env)

    def mit_inspect(self, token: bytes, keytab: str | Path) -> mitgss.MitView:
        return mitgss.inspect_in_process(token, keytab, self.env)

    # --- lifecycle
    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
        self.proc = None


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

    @property
    def kind(self) -> str:
        return self.realm.kind

    @property
    def issues_pac(self) -> bool:
        return self.realm.issues_pac

    @property
    def user(self) -> str:
        return self.realm.user

    def get_token(self, service: str, **kw: Any) -> tuple[bytes, mitgss.InitContext]:
        return self.realm.get_token(self.services.get(service, service), **kw)

    def mit_accept(self, token: bytes, keytab: str | Path, channel_bindings: bytes | None = None,
                   **kw: Any) -> mitgss.MitVerdict:
        kt = self.keytabs.get(str(keytab), keytab)
        return self.realm.mit_accept(token, kt, channel_bindings, **kw)

    def mit_inspect(self, token: bytes, keytab: str | Path) -> mitgss.MitView:
        return self.realm.mit_inspect(token, self.keytabs.get(str(keytab), keytab))

    def stop(self) -> None:
        self.realm.stop()
        for r in self.others:
            r.stop()


SINGLE = {f"svc{e}": e for e in (17, 18, 19, 20)}
ROTATIONS = (1, 2, 3)


def build_lab(realm: Realm) -> Lab:
    """Start ``realm`` and ``populate`` it; the KDC is stopped again if anything fails."""
    realm.start()
    lab = Lab(realm)
    try:
        populate(lab)
    except BaseException:
        lab.stop()
        raise
    return lab


def populate(lab: Lab) -> None:
    """The services, keytabs and ccaches of the interop suite, in any KDC kind's realm.

    Services: svc17..svc20 (one enctype each), multi (all four), other (all four), rotated (kvno 1 -> 2 -> 3,
    with a ccache holding a ticket of each kvno). Keytabs: one per service; rotated_k1/k2/k3/k12/k23/k123/k13;
    multi_missing (every enctype but the ticket's); svc18_wrong and multi_wrong (same kvno and enctype,
    key from a wrong password via ktutil); all (every current key).
    """
    realm = lab.realm
    kt = realm.keytab
    plain = (*SINGLE, "multi", "other")
    for short in (*plain, "rotated"):
        lab.services[short] = realm.service(short)
    realm.add_services({lab.services[s]: [SINGLE[s]] if s in SINGLE else ALL_ENCTYPES
                        for s in (*plain, "rotated")})
    exports = {kt(s): [lab.services[s]] for s in plain}
    exports[kt("all")] = [lab.services[s] for s in plain]
    realm.export_many(exports)
    lab.keytabs.update({s: kt(s) for s in (*plain, "all")})

    base = realm.kinit(realm.ccache("default"))
    lab.ccaches["default"] = base
    tgt_only = realm.copy_ccache(base, "tgt")
    for short in (*SINGLE, "multi"):
        realm.fetch_ticket(base, lab.services[short])
        lab.ticket_enctypes[short] = realm.ticket_enctype(base, lab.services[short])

    # Rotation: a ticket per kvno, each in its own ccache, and keytabs of every key generation.
    rot = lab.services["rotated"]
    gens: dict[int, list[KeytabEntry]] = {}
    for kvno in ROTATIONS:
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
