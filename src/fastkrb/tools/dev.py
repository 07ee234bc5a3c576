"""`fastkrb dev`: Kerberos for an API in minutes, without touching production.

``init`` writes a throwaway keytab of random keys for an SPN, marked dev-only twice: by its file name and
by a marker principal inside it (``fastkrb-dev-only/DO-NOT-USE-IN-PRODUCTION``, which `fastkrb doctor`
flags as an error). ``header`` mints a valid ``Authorization: Negotiate ...`` line for it, with no KDC (and
refuses any keytab without the marker: minting with a real service key is forging tickets). ``realm``
starts a real, throwaway MIT realm on loopback (KDC, a user, the service keytab, a krb5.conf to export)
for ``kinit`` + ``curl --negotiate``, and stops it cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastkrb.errors import KerberosError
from fastkrb.keytab import DEV_MARKER, Keytab, parse_principal

__all__ = ["DEFAULT_KEYTAB", "DEV_REALM", "dev_init", "dev_header", "init_instructions", "realm_instructions",
           "DevRealm", "is_dev_keytab", "MARKER"]

DEFAULT_KEYTAB = "fastkrb-dev.keytab"
DEV_REALM = "DEV.TEST"
MARKER = DEV_MARKER   # keytab.py owns it: the sidecar (a floor below) recognises dev keytabs too
_ENCTYPES = (18, 17, 20, 19)


class DevError(KerberosError):
    code = "dev"
    default_fix = ""


def _full_spn(spn: str, realm: str) -> str:
    return spn if "@" in spn else f"{spn}@{realm}"


def is_dev_keytab(kt: Keytab) -> bool:
    return any(p.split("@")[0] == MARKER for p in kt.principals())


def dev_init(spn: str, path: str | os.PathLike[str] = DEFAULT_KEYTAB, *, realm: str = DEV_REALM,
             force: bool = False) -> Keytab:
    """Write a dev keytab (mode 0600) with random keys of every AES enctype for ``spn``, kvno 1."""
    from fastkrb.testing import make_keytab

    full = _full_spn(spn, realm)
    parse_principal(full)
    p = Path(path)
    if p.exists() and not force:
        raise DevError(f"{p} exists; not overwriting it.", "Pass --force to replace it, or choose --keytab.",
                       {"path": str(p)})
    kt = make_keytab(principals=(full,), enctypes=_ENCTYPES, kvno=1)
    realm_of = parse_principal(full)[1]
    for e in make_keytab(principals=(f"{MARKER}@{realm_of}",), enctypes=(18,), kvno=1).entries:
        kt.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    kt.save(p, mode=0o600)
    return kt


def init_instructions(path: str | os.PathLike[str], spn: str, port: int = 8000) -> str:
    """What `fastkrb dev init` prints: what it wrote, and commands that work as printed with that keytab (the
    sidecar in a dev run on loopback, curl with a minted header; or one's own app with FASTKRB_KEYTAB)."""
    return (f"wrote {path} (mode 0600): DEV-ONLY random keys for {spn}, kvno 1, aes256/aes128 sha1 and sha2 "
            "enctypes.\nNo KDC knows these keys: use it only to develop and test.\n\n"
            f"Run a service with it on :{port}, e.g. the fastkrb sidecar (--dev: it refuses a dev keytab otherwise):\n"
            f"  fastkrb serve --dev --keytab {path} --socket none --tcp 127.0.0.1:{port} --replay-cache memory "
            "--workers 1\n"
            f"  curl -H \"$(fastkrb dev header --user alice --keytab {path})\" http://127.0.0.1:{port}/auth\n"
            "or your own API with fastkrb's middleware given this keytab (FASTKRB_KEYTAB in the examples):\n"
            f"  FASTKRB_KEYTAB={path} uvicorn --factory examples.fastapi.app:main --port {port}  # in the source tree\n"
            f"  curl -H \"$(fastkrb dev header --user alice --keytab {path})\" http://127.0.0.1:{port}/me")


def dev_header(user: str, path: str | os.PathLike[str] = DEFAULT_KEYTAB, *, spn: str | None = None,
               skew: float = 0.0, expired: bool = False, mutual: bool = True) -> str:
    """``Negotiate <b64>`` for ``user`` to the dev keytab's SPN (minted, valid now unless asked otherwise).

    ``skew`` moves the authenticator's clock (to watch a clock_skew rejection); ``expired`` makes a ticket
    that ended an hour ago.
    """
    from fastkrb.testing import mint

    kt = Keytab.load(path)
    if not is_dev_keytab(kt):
        raise DevError(f"{path} is not a `fastkrb dev init` keytab; refusing to mint tickets with its keys.",
                       "Use the keytab `fastkrb dev init` wrote. Minting with a real service key forges tickets.",
                       {"path": str(path)})
    services = [p for p in kt.principals() if p.split("@")[0] != MARKER]
    server = services[0] if spn is None else _full_spn(spn, parse_principal(services[0])[1])
    if not kt.find(server):
        raise DevError(f"{server} is not in {path}.",
                       f"Pass --spn with a principal the dev keytab holds ({', '.join(services)}), or make a dev "
                       f"keytab for it: fastkrb dev init --spn {spn} --keytab OTHER.keytab.", {"path": str(path)})
    now = time.time()
    kw: dict[str, Any] = {}
    if expired:
        kw.update(authtime=int(now) - 11 * 3600, endtime=int(now) - 3600)
    m = mint(kt, server=server, client=user, now=now, ctime=int(now + skew), framing="header",
             gss_flags=("mutual", "integ", "conf") if mutual else ("integ", "conf"), **kw)
    return m.header


# --- a throwaway MIT realm ----------------------------------------------------------------------------------------

_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local")


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + ":".join(_SBIN))


def _free_port() -> int:
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DevError("No free port on 127.0.0.1 for the KDC was found in 50 tries.", "Name one with --port.")


@dataclass
class DevRealm:
    """An MIT realm on 127.0.0.1: database, krb5kdc, a user with a password, the service and its keytab."""

    workdir: Path
    realm: str = DEV_REALM
    spn: str = "HTTP/localhost"
    user: str = "alice"
    password: str = field(default_factory=lambda: "dev-" + secrets.token_urlsafe(9))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing_tools() -> list[str]:
        return [t for t in _TOOLS if _which(t) is None]

    @property
    def krb5_conf(self) -> Path:
        return self.workdir / "krb5.conf"

    @property
    def keytab(self) -> Path:
        return self.workdir / "service.keytab"

    @property
    def ccache(self) -> Path:
        return self.workdir / "ccache"

    @property
    def principal(self) -> str:
        return _full_spn(self.spn, self.realm)

    @property
    def env(self) -> dict[str, str]:
        """What a shell needs to use the realm (krb5.conf, its own ccache) and the service its keytab."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5CCNAME": f"FILE:{self.ccache}",
                "FASTKRB_KEYTAB": str(self.keytab)}

    def _kdc_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "KRB5_KDC_PROFILE": str(self.workdir / "kdc.conf")}

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, env=self._kdc_env(),
                              timeout=60)
        if proc.returncode != 0:
            raise DevError(f"{argv[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def start(self) -> DevRealm:
        missing = self.missing_tools()
        if missing:
            raise DevError(f"MIT krb5 KDC programs are missing: {', '.join(missing)}",
                           "Install them (Debian/Ubuntu: apt-get install krb5-kdc krb5-admin-server krb5-user).")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = _free_port()
        d = self.workdir
        enctypes = "aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal " \
                   "aes256-cts-hmac-sha384-192:normal aes128-cts-hmac-sha256-128:normal"
        (d / "kdc.conf").write_text(
            f"[realms]\n\t{self.realm} = {{\n\t\tdatabase_name = {d / 'principal'}\n"
            f"\t\tkey_stash_file = {d / 'stash'}\n\t\tacl_file = {d / 'kadm5.acl'}\n"
            f"\t\tkdc_listen = 127.0.0.1:{self.port}\n\t\tkdc_tcp_listen = 127.0.0.1:{self.port}\n"
            f"\t\tsupported_enctypes = {enctypes}\n\t\tmax_life = 10h\n\t}}\n"
            f"[logging]\n\tkdc = FILE:{d / 'kdc.log'}\n")
        (d / "kadm5.acl").write_text("")
        self.krb5_conf.write_text(
            f"[libdefaults]\n\tdefault_realm = {self.realm}\n\tdns_lookup_kdc = false\n\tdns_lookup_realm = false\n"
            "\tdns_canonicalize_hostname = false\n\trdns = false\n\tudp_preference_limit = 1\n"
            f"[realms]\n\t{self.realm} = {{\n\t\tkdc = 127.0.0.1:{self.port}\n\t}}\n"
            f"[domain_realm]\n\tlocalhost = {self.realm}\n")
        self._run([_which("kdb5_util") or "kdb5_util", "create", "-s", "-r", self.realm, "-P",
                   secrets.token_urlsafe(16)])
        kadmin = _which("kadmin.local") or "kadmin.local"
        self._run([kadmin, "-r", self.realm], stdin=f"addprinc -pw {self.password} {self.user}@{self.realm}\n"
                  f"addprinc -randkey {self.principal}\nktadd -k {self.keytab} {self.principal}\nquit\n")
        os.chmod(self.keytab, 0o600)
        with open(d / "krb5kdc.out", "wb") as fh:
            self.proc = subprocess.Popen([_which("krb5kdc") or "krb5kdc", "-n", "-r", self.realm, "-P",
                                          str(d / "kdc.pid")], stdout=fh, stderr=subprocess.STDOUT,
                                         env=self._kdc_env(), start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise DevError(f"krb5kdc exited: {(d / 'krb5kdc.out').read_text(errors='replace')[-500:]}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise DevError(f"krb5kdc did not start listening on 127.0.0.1:{self.port} within 10 s.",
                               f"Read its log, {d / 'kdc.log'} and {d / 'krb5kdc.out'} (keep them with --dir), or "
                               "choose another --port.")
            time.sleep(0.05)
        (d / "env.sh").write_text("".join(f"export {k}={v}\n" for k, v in self.env.items()))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def describe(self) -> dict[str, Any]:
        return {"realm": self.realm, "kdc": f"127.0.0.1:{self.port}", "user": f"{self.user}@{self.realm}",
                "password": self.password, "service": self.principal, "keytab": str(self.keytab),
                "krb5_conf": str(self.krb5_conf), "env": self.env, "workdir": str(self.workdir),
                "kdc_pid": self.proc.pid if self.proc else None}


def realm_instructions(r: DevRealm, deleted_at_end: bool, port: int = 8000) -> str:
    """What to type to use a running DevRealm: commands that work as printed, the service included (the fastkrb
    sidecar on loopback answering ``/auth``, or one's own app with the middleware and FASTKRB_KEYTAB)."""
    host = r.spn.split("/", 1)[1].split("@")[0] if "/" in r.spn else "localhost"
    # curl asks for HTTP/<host in the URL>: a host other than localhost is pointed at loopback, not looked up
    resolve = "" if host == "localhost" else f"--resolve {host}:{port}:127.0.0.1 "
    info = r.describe()
    return (f"fastkrb dev realm {r.realm} is running (KDC 127.0.0.1:{r.port}, pid {info['kdc_pid']}).\n"
            f"  user     {info['user']}  password {r.password}\n"
            f"  service  {r.principal}  keytab {r.keytab}\n\n"
            "In another shell, get a ticket:\n"
            f"  source {r.workdir / 'env.sh'}          # sets KRB5_CONFIG, KRB5CCNAME, FASTKRB_KEYTAB\n"
            f"  echo '{r.password}' | kinit {r.user}\n\n"
            f"Run a service with this keytab on :{port}, e.g. the fastkrb sidecar (it answers /auth):\n"
            f"  fastkrb serve --keytab {r.keytab} --socket none --tcp 127.0.0.1:{port} "
            "--replay-cache memory --workers 1\n"
            f"  curl --negotiate -u : {resolve}http://{host}:{port}/auth    # 200 and X-Remote-User: {r.user}\n"
            "or your own API with fastkrb's middleware (it reads $FASTKRB_KEYTAB in the examples), e.g.:\n"
            f"  uvicorn --factory examples.fastapi.app:main --port {port}    # from the fastkrb source tree\n"
            f"  curl --negotiate -u : {resolve}http://{host}:{port}/me\n\n"
            "Throwaway: Ctrl-C stops the KDC" + (" and deletes it all." if deleted_at_end else "."))


def run_realm(*, workdir: str | None, realm: str, spn: str, user: str, password: str | None, port: int,
              as_json: bool, keep: bool) -> int:
    """Start a DevRealm, print how to use it, wait for SIGINT/SIGTERM, stop it (and remove a temp dir)."""
    made_temp = workdir is None
    d = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fastkrb-dev-realm-"))
    r = DevRealm(d, realm=realm, spn=spn, user=user, port=port)
    if password:
        r.password = password
    stop = {"sig": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        r.start()
        info = r.describe()
        if as_json:
            print(json.dumps({"ready": True, **info}), flush=True)
        else:
            print(realm_instructions(r, made_temp and not keep), flush=True)
        while not stop["sig"]:
            if r.proc is None or r.proc.poll() is not None:
                print("error: krb5kdc of the dev realm exited unexpectedly; run again with --dir DIR (kept) and "
                      "read DIR/kdc.log and DIR/krb5kdc.out", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        r.stop()
        for s, h in old.items():
            signal.signal(s, h)
        if made_temp and not keep:
            shutil.rmtree(d, ignore_errors=True)
