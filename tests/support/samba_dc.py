"""A Samba Active Directory domain controller for the tests: CORP.EXAMPLE, provisioned into a temporary directory.

Samba's own AD DC (Debian's ``samba`` + ``samba-ad-dc``, whose KDC is Samba's embedded Heimdal with the AD
database behind it) is provisioned with ``samba-tool domain provision``, filled from one LDIF applied with
``ldbmodify`` to its ``sam.ldb`` before it starts, and run as ``samba -i -M single`` serving only the KDC and LDAP.

Isolation: the DC runs in a network namespace of its own (``unshare --net``), where it owns 127.0.0.1:88 and
127.0.0.1:389, so test runs in parallel on one machine (and the MIT/Heimdal fixtures on their free ports) never
meet it. The namespace lives exactly as long as the ``samba`` process: nothing is mounted under /run/netns, and
``samba -i`` exits (killing its process group) when its stdin closes, which also happens when the test process
dies without cleaning up. Everything that must reach the DC (MIT ``kinit``/``kvno``, MIT's GSSAPI initiator
through python-gssapi, ``ldbsearch -H ldap://``) runs in that namespace through ``nsenter --net=/proc/<pid>/ns/net``;
what needs no network (keytab export, MIT's acceptor, reading the directory's truth from ``sam.ldb``) runs here.

Nothing in this module imports fastkrb: it is the independent side of the tests. Run as a script it is MIT's
initiator (``initiate``) or acceptor (``accept``) in a child process, so each runs with its own environment
(and the initiator inside the DC's namespace).

Needs root (network namespaces; ``samba`` refuses to start otherwise).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REALM = "CORP.EXAMPLE"
DOMAIN = "CORP"  # NetBIOS name
DNS_DOMAIN = "corp.example"
BASE_DN = "DC=corp,DC=example"
ALT_UPN_SUFFIX = "corp-alt.example"  # listed in uPNSuffixes of CN=Partitions; alice's UPN uses it
DC_HOST = "dc1"
OU = f"OU=fastkrb,{BASE_DN}"
BULK_OU = f"OU=bulk,{OU}"
ADMIN = "Administrator"
ADMIN_PASSWORD = "Fk-Adm1n-Passw0rd!"
USER_PASSWORD = "Fk-Us3r-Passw0rd!"
BULK_GROUPS = 1000

# groupType values (MS-ADTS 2.2.12): security-enabled global / domain-local / universal groups
GLOBAL_GROUP = -2147483646
DOMAIN_LOCAL_GROUP = -2147483644
UNIVERSAL_GROUP = -2147483640
# userAccountControl: NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD; WORKSTATION_TRUST_ACCOUNT
UAC_USER = 0x200 | 0x10000
UAC_COMPUTER = 0x1000
# msDS-SupportedEncryptionTypes bits (MS-KILE 2.2.7)
SET_RC4, SET_AES128, SET_AES256 = 0x4, 0x8, 0x10

ENCTYPE_BY_NAME = {
    "aes256-cts-hmac-sha1-96": 18,
    "aes128-cts-hmac-sha1-96": 17,
    "arcfour-hmac": 23,
    "DEPRECATED:arcfour-hmac": 23,
    "rc4-hmac": 23,
    "aes256-cts-hmac-sha384-192": 20,
    "aes128-cts-hmac-sha256-128": 19,
}

REQUIRED_PROGRAMS = ("samba", "samba-tool", "ldbmodify", "ldbsearch", "unshare", "nsenter", "ip",
                     "kinit", "kvno", "klist")
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class SambaError(RuntimeError):
    """A Samba or MIT program failed while building or using the DC (its output is in the message)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + ":".join(_SBIN))


def missing_programs() -> list[str]:
    """Programs the DC fixture needs that are not installed (.ci/system-deps installs them)."""
    return [p for p in REQUIRED_PROGRAMS if _which(p) is None]


# --------------------------------------------------------------------------------------------------------------
# What the directory holds: the test users, groups and service accounts (written as one LDIF)


@dataclass(frozen=True)
class UserSpec:
    name: str  # sAMAccountName
    kind: str  # the class of user the tests exercise
    upn: str | None  # userPrincipalName as stored; None: none (AD's implicit UPN, name@dns domain, applies)

    @property
    def principal(self) -> str:
        """The Kerberos name kinit uses: the sAMAccountName in the realm (every AD user has it)."""
        return f"{self.name}@{REALM}"

    @property
    def dn(self) -> str:
        return f"CN={self.name},{OU}"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    group_type: int
    members: tuple[str, ...]  # sAMAccountNames of users or groups (which must come earlier)
    ou: str = OU

    @property
    def dn(self) -> str:
        return f"CN={self.name},{self.ou}"


@dataclass(frozen=True)
class ServiceSpec:
    account: str  # sAMAccountName ("web1$" for the computer)
    spns: tuple[str, ...]
    supported_enctypes: int  # msDS-SupportedEncryptionTypes
    ticket_enctype: int  # the enctype the KDC must encrypt this service's tickets with
    computer: bool = False
    dns_host: str | None = None

    @property
    def dn(self) -> str:
        return f"CN={self.account.rstrip('$')},{OU}"

    @property
    def principal(self) -> str:
        """The account's own Kerberos name (what an export by account name writes)."""
        return f"{self.account}@{REALM}"

    @property
    def spn(self) -> str:
        """The first SPN, the one the tests ask tickets for."""
        return self.spns[0]


def bulk_group_names(n: int = BULK_GROUPS) -> tuple[str, ...]:
    return tuple(f"fk-bulk-{i:04d}" for i in range(1, n + 1))


USERS: tuple[UserSpec, ...] = (
    UserSpec("bob", "plain", f"bob@{DNS_DOMAIN}"),
    UserSpec("carol", "nested", f"carol@{DNS_DOMAIN}"),  # member of fk-g1 and fk-univ (see GROUPS)
    UserSpec("dave", "many_groups", f"dave@{DNS_DOMAIN}"),  # member of the 1,000 fk-bulk-NNNN groups
    UserSpec("alice", "alt_upn", f"alice@{ALT_UPN_SUFFIX}"),
    UserSpec("erin", "no_upn", None),
)

# carol -> fk-g1 -> fk-g2 -> fk-dl (domain local); carol -> fk-univ (universal); dave -> 1,000 global groups
GROUPS: tuple[GroupSpec, ...] = (
    GroupSpec("fk-g1", GLOBAL_GROUP, ("carol",)),
    GroupSpec("fk-g2", GLOBAL_GROUP, ("fk-g1",)),
    GroupSpec("fk-dl", DOMAIN_LOCAL_GROUP, ("fk-g2",)),
    GroupSpec("fk-univ", UNIVERSAL_GROUP, ("carol",)),
    *(GroupSpec(g, GLOBAL_GROUP, ("dave",), BULK_OU) for g in bulk_group_names()),
)

SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("svc-aes256", (f"HTTP/aes256.{DNS_DOMAIN}",), SET_AES256, 18),
    ServiceSpec("svc-aes128", (f"HTTP/aes128.{DNS_DOMAIN}",), SET_AES128, 17),
    ServiceSpec("svc-rc4", (f"HTTP/rc4.{DNS_DOMAIN}",), SET_RC4, 23),
    ServiceSpec("svc-multi", (f"HTTP/multi.{DNS_DOMAIN}", f"HTTP/multi-alias.{DNS_DOMAIN}", "HTTP/multi",
                              f"host/multi.{DNS_DOMAIN}"), SET_AES256 | SET_AES128, 18),
    ServiceSpec("svc-rot", (f"HTTP/rot.{DNS_DOMAIN}",), SET_AES256 | SET_AES128, 18),  # its password changes
    ServiceSpec("web1$", (f"HTTP/web1.{DNS_DOMAIN}", f"host/web1.{DNS_DOMAIN}"),
                SET_AES256 | SET_AES128 | SET_RC4, 18, computer=True, dns_host=f"web1.{DNS_DOMAIN}"),
)


def _unicode_pwd(password: str) -> str:
    """unicodePwd as AD wants it: the quoted password in UTF-16LE (base64 for LDIF)."""
    return base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode()


def population_ldif(users: Sequence[UserSpec] = USERS, groups: Sequence[GroupSpec] = GROUPS,
                    services: Sequence[ServiceSpec] = SERVICES) -> str:
    """Every object the tests need, as ldbmodify change records (members are added with their group, so
    users come first and a group's member groups before it)."""
    by_name: dict[str, str] = {u.name: u.dn for u in users}
    by_name.update({g.name: g.dn for g in groups})
    out = [
        f"dn: CN=Partitions,CN=Configuration,{BASE_DN}\nchangetype: modify\nadd: uPNSuffixes\n"
        f"uPNSuffixes: {ALT_UPN_SUFFIX}\n-\n",
        f"dn: {OU}\nchangetype: add\nobjectClass: organizationalUnit\n",
        f"dn: {BULK_OU}\nchangetype: add\nobjectClass: organizationalUnit\n",
    ]
    for u in users:
        rec = [f"dn: {u.dn}", "changetype: add", "objectClass: user", f"sAMAccountName: {u.name}",
               f"userAccountControl: {UAC_USER}", f"unicodePwd:: {_unicode_pwd(USER_PASSWORD)}"]
        if u.upn:
            rec.append(f"userPrincipalName: {u.upn}")
        out.append("\n".join(rec) + "\n")
    for s in services:
        rec = [f"dn: {s.dn}", "changetype: add", f"objectClass: {'computer' if s.computer else 'user'}",
               f"sAMAccountName: {s.account}",
               f"userAccountControl: {UAC_COMPUTER if s.computer else UAC_USER}",
               f"unicodePwd:: {_unicode_pwd(service_password(s.account))}",
               f"msDS-SupportedEncryptionTypes: {s.supported_enctypes}",
               *(f"servicePrincipalName: {spn}" for spn in s.spns)]
        if s.dns_host:
            rec.append(f"dNSHostName: {s.dns_host}")
        out.append("\n".join(rec) + "\n")
    for g in groups:
        rec = [f"dn: {g.dn}", "changetype: add", "objectClass: group", f"sAMAccountName: {g.name}",
               f"groupType: {g.group_type}", *(f"member: {by_name[m]}" for m in g.members)]
        out.append("\n".join(rec) + "\n")
    return "\n".join(out)


def service_password(account: str, generation: int = 1) -> str:
    return f"Fk-Svc-{account.rstrip('$')}-{generation}-Passw0rd!"


# --------------------------------------------------------------------------------------------------------------
# LDIF as ldbsearch prints it (continuation lines, base64 values)


def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    records: list[dict[str, list[str]]] = []
    cur: dict[str, list[str]] = {}
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    for line in lines:
        if line.startswith("#") or line.startswith("ref:"):
            continue
        if not line.strip():
            if cur:
                records.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            data = base64.b64decode(value[1:].strip())
            try:
                value = data.decode()
            except UnicodeDecodeError:
                value = data.hex()
        else:
            value = value.strip()
        cur.setdefault(key, []).append(value)
    if cur:
        records.append(cur)
    return [r for r in records if "dn" in r]


# --------------------------------------------------------------------------------------------------------------
# The DC


@dataclass(frozen=True)
class DirectoryEntry:
    """The directory's truth for one account, read from sam.ldb (tokenGroups is AD's constructed attribute:
    the transitive group SIDs of the account's security token, primary group included)."""

    dn: str
    sam_account_name: str
    sid: str
    token_groups: tuple[str, ...]
    upn: str | None  # userPrincipalName as stored; None when there is none
    kvno: int
    member_of: tuple[str, ...]


@dataclass(frozen=True)
class MitVerdict:
    """MIT's acceptor (python-gssapi, accept_sec_context with a keytab) on one token."""

    accepted: bool
    initiator: str | None
    target: str | None
    error: str


@dataclass(frozen=True)
class Rotation:
    """A service account's password change: kvnos and keytab files before and after."""

    account: str
    old_kvno: int
    new_kvno: int
    old_spn_keytab: Path
    new_spn_keytab: Path
    old_account_keytab: Path
    new_account_keytab: Path


@dataclass
class SambaDC:
    """One provisioned domain controller; ``start()`` runs it, ``stop()`` ends it and removes its directory."""

    workdir: Path
    keep: bool = False  # leave the directory behind after stop() (debugging)
    realm: str = REALM
    domain: str = DOMAIN
    dns_domain: str = DNS_DOMAIN
    base_dn: str = BASE_DN
    users: dict[str, UserSpec] = field(default_factory=lambda: {u.name: u for u in USERS})
    services: dict[str, ServiceSpec] = field(default_factory=lambda: {s.account: s for s in SERVICES})
    proc: subprocess.Popen[bytes] | None = None
    netns_inode: int | None = None
    _netns_fd: int | None = None  # held open while running, so the inode is not recycled under us
    timings: dict[str, float] = field(default_factory=dict)
    keytabs: dict[str, Path] = field(default_factory=dict)  # "<account>:spn" / "<account>:account" -> file
    _truth: dict[str, DirectoryEntry] = field(default_factory=dict)
    _generation: dict[str, int] = field(default_factory=dict)  # password generation per service account

    # -- paths and environment ------------------------------------------------------------------------------

    @property
    def host_name(self) -> str:
        """The DC's host name (``--host-name`` of the provision)."""
        return DC_HOST

    @property
    def host_fqdn(self) -> str:
        """dc1.corp.example: the name in its TLS certificate and in its ldap/ SPN."""
        return f"{DC_HOST}.{self.dns_domain}"

    @property
    def dc_account(self) -> str:
        """The DC's computer account (sAMAccountName)."""
        return f"{DC_HOST.upper()}$"

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    @property
    def admin_bind_dn(self) -> str:
        """The domain Administrator's DN, for a simple bind."""
        return f"CN={ADMIN},CN=Users,{self.base_dn}"

    @property
    def smb_conf(self) -> Path:
        return self.workdir / "etc" / "smb.conf"

    @property
    def sam_ldb(self) -> Path:
        return self.workdir / "private" / "sam.ldb"

    @property
    def krb5_conf(self) -> Path:
        """The client profile (KRB5_CONFIG) for MIT tools and libraries: this realm's KDC at 127.0.0.1:88, TCP."""
        return self.workdir / "krb5.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "samba.log"

    @property
    def ldap_url(self) -> str:
        """LDAP as seen from inside the DC's namespace (see ``netns_argv``)."""
        return "ldap://127.0.0.1"

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise SambaError(f"the DC is not running: {self._tail()}")
        return self.proc.pid

    @property
    def netns(self) -> str:
        """The DC's network namespace, as a path nsenter and setns(2) take."""
        return f"/proc/{self.pid}/ns/net"

    @property
    def env(self) -> dict[str, str]:
        """Variables for MIT's client library and Samba's tools (a ccache is chosen per call)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "SMB_CONF_PATH": str(self.smb_conf), "TDB_NO_FSYNC": "1",
                "KRB5RCACHETYPE": "none"}

    def netns_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the DC's network namespace."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def keytab(self, account: str, by: str = "spn") -> Path:
        """The exported keytab of a service account, ``by`` "spn" (every SPN of the account) or "account"
        (the account's own name, e.g. svc-multi@CORP.EXAMPLE or web1$@CORP.EXAMPLE)."""
        return self.keytabs[f"{account}:{by}"]

    # -- running programs ----------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
            netns: bool = False, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, **self.env, **(env or {})}
        cmd = self.netns_argv(argv) if netns else list(argv)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=full, timeout=timeout,
                              cwd=self.workdir)
        if check and proc.returncode != 0:
            raise SambaError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()} "
                             f"{proc.stdout.strip()[-2000:]}")
        return proc

    def _tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no samba log)"

    # -- build -----------------------------------------------------------------------------------------------

    def provision(self) -> None:
        """``samba-tool domain provision`` into workdir, with every path of the smb.conf it writes inside it."""
        t0 = time.monotonic()
        for sub in ("etc", "run", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.smb_conf.write_text("")  # provision writes its own; an empty file keeps /etc/samba/smb.conf out
        w = self.workdir
        options = {
            "interfaces": "lo", "bind interfaces only": "yes",
            "server services": "kdc, ldap",  # no smbd, winbindd, rpc, dns, drepl, kcc, ...
            "pid directory": w / "run", "ncalrpc dir": w / "run" / "ncalrpc",
            "winbindd socket directory": w / "run" / "winbindd",
            "ntp signd socket directory": w / "run" / "ntp_signd", "log file": w / "log" / "samba.log",
            "dns update command": "/bin/true", "spn update command": "/bin/true",
            # ldap3's GSSAPI bind (fastkrb groups sync --keytab) has no SASL signing layer: Samba before 4.20
            # refuses it even over TLS unless told that TLS is protection enough
            "ldap server require strong auth": "allow_sasl_over_tls",
        }
        argv = ["samba-tool", "domain", "provision", "-s", str(self.smb_conf), f"--targetdir={w}",
                f"--realm={self.realm}", f"--domain={self.domain}", "--server-role=dc", "--dns-backend=NONE",
                f"--host-name={DC_HOST}", f"--adminpass={ADMIN_PASSWORD}", "--use-rfc2307",
                *(f"--option={k} = {v}" for k, v in options.items())]
        proc = self.run(argv, check=False, timeout=300)
        (w / "provision.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SambaError(f"samba-tool domain provision exited {proc.returncode}: {proc.stderr[-3000:]}")
        self.krb5_conf.write_text(client_profile(self.realm, self.dns_domain))
        self.timings["provision"] = time.monotonic() - t0

    def populate(self) -> None:
        """Apply the population LDIF to sam.ldb with one ldbmodify (the DC is not running yet), and give the DC's
        account its ldap/ SPN."""
        t0 = time.monotonic()
        ldif = self.workdir / "population.ldif"
        ldif.write_text(population_ldif(tuple(self.users.values()), GROUPS, tuple(self.services.values())))
        self.run(["ldbmodify", "-H", str(self.sam_ldb), str(ldif)], timeout=600)
        self.ensure_ldap_spn()
        self.timings["populate"] = time.monotonic() - t0

    def dc_account_spns(self) -> list[str]:
        """servicePrincipalName of the DC's own computer account (DC1$)."""
        recs = self.search(self.base_dn, "servicePrincipalName", scope="sub",
                           expr=f"(sAMAccountName={self.dc_account})")
        if len(recs) != 1:
            raise SambaError(f"{self.dc_account}: {len(recs)} entries")
        return recs[0].get("servicePrincipalName", [])

    def ensure_ldap_spn(self) -> None:
        """ldap/<DC host FQDN> on the DC's account unless it has it: what a GSSAPI bind to its LDAP asks a ticket
        for (a real DC's samba_spnupdate adds it; here "spn update command" is /bin/true)."""
        want = f"ldap/{self.host_fqdn}"
        if want.lower() in {s.lower() for s in self.dc_account_spns()}:
            return
        dn = self.search(self.base_dn, "dn", scope="sub", expr=f"(sAMAccountName={self.dc_account})")[0]["dn"][0]
        ldif = self.workdir / "dc-spn.ldif"
        ldif.write_text(f"dn: {dn}\nchangetype: modify\nadd: servicePrincipalName\nservicePrincipalName: {want}\n-\n")
        self.run(["ldbmodify", "-H", str(self.sam_ldb), str(ldif)])

    def start(self, timeout: float = 60) -> None:
        """``samba -i -M single`` in a new network namespace; returns when the KDC and LDAP accept connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        t0 = time.monotonic()
        samba = _which("samba") or "samba"
        # unshare and sh exec in place: the Popen's pid is samba's, the namespace's only original member.
        script = 'ip link set lo up && exec "$0" -i -M single -s "$1" --debuglevel=1'
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "--", "sh", "-c", script, samba, str(self.smb_conf)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, **self.env}, start_new_session=True)
        try:
            self.netns_inode = _wait_netns(self.proc)
            self._netns_fd = os.open(f"/proc/{self.proc.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(self._netns_fd).st_ino != self.netns_inode:
                raise SambaError("samba's namespace changed under us")
            probe = ("import os, socket, sys, time\n"
                     "pid, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])\n"
                     "while time.monotonic() < deadline:\n"
                     "    if not os.path.exists(f'/proc/{pid}'):\n"
                     "        sys.exit(2)\n"
                     "    try:\n"
                     "        for port in (88, 389):\n"
                     "            socket.create_connection(('127.0.0.1', port), 0.5).close()\n"
                     "        sys.exit(0)\n"
                     "    except OSError:\n"
                     "        time.sleep(0.05)\n"
                     "sys.exit(1)\n")
            rc = self.run([sys.executable, "-c", probe, str(self.proc.pid), str(timeout)], netns=True,
                          check=False, timeout=timeout + 10).returncode
            if rc != 0:
                raise SambaError(f"samba did not serve 127.0.0.1:88 and :389 in its namespace within {timeout}s "
                                 f"(probe {rc}): {self._tail()}")
        except BaseException:
            self.stop(remove=False)
            raise
        self.timings["start"] = time.monotonic() - t0

    def stop(self, *, remove: bool | None = None) -> None:
        """End samba (stdin closed: it SIGTERMs its process group), SIGKILL the group if it lingers, check that
        no process is left in its namespace, and remove the directory (unless ``keep``)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            # Not reaped yet, so its pid, which is also its process group's id, cannot have been reused.
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            _wait_exited(proc.pid, timeout=10)  # without reaping it
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in samba's group
            except ProcessLookupError:
                pass
            proc.wait()
        left: list[int] = []
        if self._netns_fd is not None:
            left = namespace_members(self.netns_inode)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.close(self._netns_fd)  # the namespace goes with its last process and this reference
            self._netns_fd = None
        if remove if remove is not None else not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if left:
            raise SambaError(f"processes {left} were still in the DC's network namespace (killed)")

    # -- keytabs ---------------------------------------------------------------------------------------------

    def export_keytab(self, path: Path, *principals: str) -> Path:
        """``samba-tool domain exportkeytab`` for each principal (an SPN or an account name) into ``path``,
        replacing the file."""
        path.unlink(missing_ok=True)
        for p in principals:
            self.run(["samba-tool", "domain", "exportkeytab", "-s", str(self.smb_conf), str(path),
                      f"--principal={p}"])
        os.chmod(path, 0o600)
        return path

    def export_keytabs(self) -> None:
        """For every service account: a keytab by SPN (all its SPNs) and one by account name."""
        t0 = time.monotonic()
        kdir = self.workdir / "keytabs"
        kdir.mkdir(exist_ok=True)
        for s in self.services.values():
            stem = s.account.rstrip("$")
            self.keytabs[f"{s.account}:spn"] = self.export_keytab(kdir / f"{stem}.spn.keytab", *s.spns)
            self.keytabs[f"{s.account}:account"] = self.export_keytab(kdir / f"{stem}.account.keytab", s.account)
        self.timings["export_keytabs"] = time.monotonic() - t0

    def rotate(self, account: str) -> Rotation:
        """Change a service account's password (the kvno goes up by one) and re-export its keytabs to new files;
        ``keytab(account, ...)`` answers the new ones from then on, the old files stay."""
        old_kvno = self.kvno(account)
        old = {by: self.keytab(account, by) for by in ("spn", "account")}
        self._generation[account] = self._generation.get(account, 1) + 1
        new_kvno = self.set_password(account, service_password(account, self._generation[account]))
        s = self.services[account]
        stem = f"{account.rstrip('$')}.kvno{new_kvno}"
        kdir = self.workdir / "keytabs"
        self.keytabs[f"{account}:spn"] = self.export_keytab(kdir / f"{stem}.spn.keytab", *s.spns)
        self.keytabs[f"{account}:account"] = self.export_keytab(kdir / f"{stem}.account.keytab", account)
        return Rotation(account, old_kvno, new_kvno, old["spn"], self.keytabs[f"{account}:spn"],
                        old["account"], self.keytabs[f"{account}:account"])

    def set_password(self, account: str, password: str) -> int:
        """An administrative password reset (``samba-tool user setpassword`` on sam.ldb); returns the new kvno."""
        before = self.kvno(account)
        self.run(["samba-tool", "user", "setpassword", "-s", str(self.smb_conf), "-H", str(self.sam_ldb),
                  account, f"--newpassword={password}"])
        self._truth.pop(account, None)
        after = self.kvno(account)
        if after == before:
            raise SambaError(f"{account}: kvno still {after} after the password change")
        return after

    # -- the directory's truth ----------------------------------------------------------------------------

    def search(self, base: str, *attrs: str, scope: str = "base", expr: str | None = None,
               ldap: bool = False) -> list[dict[str, list[str]]]:
        """ldbsearch on the local sam.ldb, or (``ldap=True``) over LDAP inside the namespace as Administrator."""
        if ldap:
            url = [self.ldap_url, f"-U{self.domain}\\{ADMIN}%{ADMIN_PASSWORD}"]
        else:
            url = [str(self.sam_ldb)]
        argv = ["ldbsearch", "-H", *url, "-b", base, "-s", scope, *([expr] if expr else []), *attrs]
        return parse_ldif(self.run(argv, netns=ldap, timeout=120).stdout)

    def truth(self, account: str) -> DirectoryEntry:
        """objectSid, tokenGroups, UPN, kvno and memberOf of a user or service account."""
        hit = self._truth.get(account)
        if hit is not None:
            return hit
        recs = self.search(self.base_dn, "objectSid", "userPrincipalName", "msDS-KeyVersionNumber",
                           "sAMAccountName", "memberOf", scope="sub", expr=f"(sAMAccountName={account})")
        if len(recs) != 1:
            raise SambaError(f"{account}: {len(recs)} entries")
        r = recs[0]
        dn = r["dn"][0]
        tg = self.search(dn, "tokenGroups")
        entry = DirectoryEntry(
            dn=dn, sam_account_name=r["sAMAccountName"][0], sid=r["objectSid"][0],
            token_groups=tuple(tg[0].get("tokenGroups", ())), upn=(r.get("userPrincipalName") or [None])[0],
            kvno=int(r.get("msDS-KeyVersionNumber", ["0"])[0]), member_of=tuple(r.get("memberOf", ())))
        self._truth[account] = entry
        return entry

    def kvno(self, account: str) -> int:
        recs = self.search(self.base_dn, "msDS-KeyVersionNumber", scope="sub", expr=f"(sAMAccountName={account})")
        return int(recs[0]["msDS-KeyVersionNumber"][0])

    def domain_sid(self) -> str:
        return self.search(self.base_dn, "objectSid")[0]["objectSid"][0]

    # -- tickets and tokens (MIT's client, in the namespace) -----------------------------------------------

    def ccache(self, name: str) -> Path:
        d = self.workdir / "ccache"
        d.mkdir(exist_ok=True)
        return d / name

    def kinit(self, principal: str, password: str | None = None, *, ccache: Path | None = None,
              enterprise: bool = False, canonicalize: bool = False) -> Path:
        """A TGT for ``principal`` (a user name, "name@REALM", or with ``enterprise`` a UPN) in a new ccache,
        with MIT's kinit reading the password from stdin. Returns the ccache path."""
        if "@" not in principal and not enterprise:
            principal = f"{principal}@{self.realm}"
        cc = ccache or self.ccache(re.sub(r"[^A-Za-z0-9.-]", "_", principal))
        cc.unlink(missing_ok=True)
        argv = ["kinit", "-c", f"FILE:{cc}", *(["-E"] if enterprise else []), *(["-C"] if canonicalize else []),
                principal]
        self.run(argv, input=(password if password is not None else USER_PASSWORD) + "\n", netns=True)
        return cc

    def user_ccache(self, name: str) -> Path:
        """A fresh TGT for one of the test users, by its sAMAccountName."""
        return self.kinit(self.users[name].principal)

    def service_ticket(self, ccache: Path, spn: str) -> int:
        """A service ticket for ``spn`` into ``ccache`` (MIT's kvno); returns the ticket's enctype (klist -e)."""
        self.run(["kvno", "-c", f"FILE:{ccache}", spn], netns=True)
        return ticket_enctypes(self.run(["klist", "-e", "-c", f"FILE:{ccache}"]).stdout, spn)[1]

    def default_principal(self, ccache: Path) -> str:
        out = self.run(["klist", "-c", f"FILE:{ccache}"]).stdout
        m = re.search(r"Default principal: (\S+)", out)
        if not m:
            raise SambaError(f"no default principal in {ccache}: {out}")
        return m.group(1)

    def token(self, ccache: Path, spn: str, *, mech: str = "krb5", mutual: bool = False) -> bytes:
        """An AP-REQ token for ``spn`` from MIT's GSSAPI initiator (python-gssapi in a child process in the
        namespace, which gets the service ticket from the DC when the ccache lacks it)."""
        argv = [sys.executable, str(Path(__file__).resolve()), "initiate", spn, "--mech", mech,
                *(["--mutual"] if mutual else [])]
        out = self.run(argv, env={"KRB5CCNAME": f"FILE:{ccache}"}, netns=True).stdout
        return bytes.fromhex(json.loads(out)["token"])

    def mit_accept(self, token: bytes, keytab: Path) -> MitVerdict:
        """MIT's acceptor on ``token`` with ``keytab`` (no acceptor name: any key in the keytab may serve)."""
        argv = [sys.executable, str(Path(__file__).resolve()), "accept", str(keytab)]
        out = self.run(argv, input=token.hex()).stdout
        d = json.loads(out)
        return MitVerdict(d["accepted"], d.get("initiator"), d.get("target"), d.get("error", ""))


def client_profile(realm: str = REALM, dns_domain: str = DNS_DOMAIN) -> str:
    """krb5.conf for MIT's client in the DC's namespace: the KDC at 127.0.0.1:88 over TCP, no DNS."""
    return (
        "[libdefaults]\n"
        f"  default_realm = {realm}\n"
        "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n  rdns = false\n"
        "  dns_canonicalize_hostname = false\n  udp_preference_limit = 1\n"
        "  permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 arcfour-hmac\n"
        "  default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 arcfour-hmac\n"
        "  default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 arcfour-hmac\n"
        "[realms]\n"
        f"  {realm} = {{\n    kdc = 127.0.0.1:88\n    admin_server = 127.0.0.1\n"
        "    kpasswd_server = 127.0.0.1\n  }\n"
        "[domain_realm]\n"
        f"  .{dns_domain} = {realm}\n  {dns_domain} = {realm}\n"
    )


def ticket_enctypes(klist_e: str, spn: str) -> tuple[int, int]:
    """(session key, ticket) enctypes of the ccache entry for ``spn`` in ``klist -e`` output."""
    lines = klist_e.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 5 and fields[4].split("@")[0] == spn.split("@")[0]:
            for follow in lines[i + 1:i + 3]:
                m = re.search(r"Etype \(skey, tkt\): ([^,]+), (\S+)", follow)
                if m:
                    return ENCTYPE_BY_NAME[m.group(1).strip()], ENCTYPE_BY_NAME[m.group(2).strip()]
    raise SambaError(f"no ticket for {spn} in klist output:\n{klist_e}")


def keytab_entries(path: Path) -> list[tuple[int, str, int]]:
    """(kvno, principal, enctype) of each entry, as MIT's ``klist -ke`` reads the file."""
    out = subprocess.run(["klist", "-ke", str(path)], capture_output=True, text=True, check=True).stdout
    entries = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+) (\S+) \((\S+)\)\s*$", line)
        if m:
            entries.append((int(m.group(1)), m.group(2), ENCTYPE_BY_NAME[m.group(3)]))
    return entries


def merge_keytabs(path: Path, *keytabs: Path) -> Path:
    """One keytab holding every entry of ``keytabs`` (v2 files: the 2-byte header, then size-prefixed records)."""
    body = b""
    for kt in keytabs:
        data = kt.read_bytes()
        if data[:2] != b"\x05\x02":
            raise SambaError(f"{kt}: not a v2 keytab")
        body += data[2:]
    path.write_bytes(b"\x05\x02" + body)
    os.chmod(path, 0o600)
    return path


def _wait_exited(pid: int, timeout: float) -> None:
    """Until ``pid`` is a zombie or gone (a child we have not reaped stays a zombie), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)


def _wait_netns(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The inode of the new namespace, once unshare has made it (the pid's namespace differs from ours)."""
    mine = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SambaError(f"unshare/samba exited {proc.returncode} at once")
        try:
            ino = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        except FileNotFoundError:
            ino = mine
        if ino != mine:
            return ino
        time.sleep(0.01)
    raise SambaError("unshare --net did not make a namespace")


def namespace_members(inode: int | None) -> list[int]:
    """Pids of the processes whose network namespace has this inode."""
    if inode is None:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == inode:
                    out.append(int(d))
            except OSError:
                continue
    return out


def build_dc(workdir: Path | None = None, *, keep: bool = False) -> SambaDC:
    """Provision, populate, start, export keytabs; timings in ``dc.timings``. The caller stops it."""
    missing = missing_programs()
    if missing:
        raise SambaError(f"not installed: {', '.join(missing)} (bash .ci/system-deps installs them)")
    if os.geteuid() != 0:
        raise SambaError("the Samba DC needs root (network namespace, samba itself)")
    work = workdir or Path(tempfile.mkdtemp(prefix="fastkrb-samba-"))
    dc = SambaDC(work, keep=keep)
    t0 = time.monotonic()
    try:
        dc.provision()
        dc.populate()
        dc.start()
        dc.export_keytabs()
    except BaseException:
        dc.stop()
        raise
    dc.timings["total"] = time.monotonic() - t0
    return dc


@contextmanager
def running_dc(workdir: Path | None = None, *, keep: bool = False) -> Iterator[SambaDC]:
    dc = build_dc(workdir, keep=keep)
    try:
        yield dc
    finally:
        dc.stop()


# --------------------------------------------------------------------------------------------------------------
# Script mode: MIT's initiator / acceptor in a child process


def _mech(name: str) -> Any:
    import gssapi

    if name == "krb5":
        return gssapi.MechType.kerberos
    if name == "spnego":
        return gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
    raise SystemExit(f"mech must be krb5 or spnego, not {name!r}")


def _initiate(spn: str, mech: str, mutual: bool) -> dict[str, Any]:
    import gssapi

    creds = gssapi.Credentials(usage="initiate")  # KRB5CCNAME
    name = gssapi.Name(spn, gssapi.NameType.kerberos_principal)
    flags = gssapi.RequirementFlag.out_of_sequence_detection
    if mutual:
        flags |= gssapi.RequirementFlag.mutual_authentication
    ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=_mech(mech), flags=flags)
    return {"token": bytes(ctx.step()).hex()}


def _accept(keytab: str, token: bytes) -> dict[str, Any]:
    import gssapi
    from gssapi.raw.misc import GSSError

    try:
        creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
        ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        ctx.step(token)
        if not ctx.complete:
            return {"accepted": False, "error": "context not complete after one token"}
        return {"accepted": True, "initiator": str(ctx.initiator_name), "target": str(ctx.target_name)}
    except GSSError as exc:
        return {"accepted": False, "error": str(exc)}


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ini = sub.add_parser("initiate", help="print {'token': hex} for an SPN (KRB5CCNAME, KRB5_CONFIG)")
    ini.add_argument("spn")
    ini.add_argument("--mech", default="krb5")
    ini.add_argument("--mutual", action="store_true")
    acc = sub.add_parser("accept", help="MIT's verdict on a hex token read from stdin")
    acc.add_argument("keytab")
    run = sub.add_parser("run", help="provision and run a DC until interrupted (keeps its directory)")
    run.add_argument("--workdir", type=Path)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "initiate":
        print(json.dumps(_initiate(args.spn, args.mech, args.mutual)))
    elif args.cmd == "accept":
        print(json.dumps(_accept(args.keytab, bytes.fromhex(sys.stdin.read().strip()))))
    else:
        with running_dc(args.workdir, keep=True) as dc:
            print(json.dumps({"workdir": str(dc.workdir), "pid": dc.pid, "netns": dc.netns,
                              "krb5_conf": str(dc.krb5_conf), "timings": dc.timings}, indent=2), flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
