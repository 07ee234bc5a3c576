"""The MIT krb5 realm: kdb5_util database, krb5kdc on loopback, kadmin.local for principals and keytabs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.krb5conf import ALL_ENCTYPES, keysalt_list, render_profile
from support.procs import wait_listening
from support.realm import KdcError, Lab, Realm, build_lab, which

MIT_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "kvno", "klist", "ktutil")


def mit_tools() -> dict[str, str]:
    """Paths of the MIT programs the fixtures drive; empty entries are missing."""
    return {t: p for t in MIT_TOOLS if (p := which(t))}


def mit_missing() -> list[str]:
    have = mit_tools()
    return [t for t in MIT_TOOLS if t not in have]


@dataclass
class MitRealm(Realm):
    """An MIT krb5 realm: kdb5_util database, krb5kdc on loopback, kadmin.local for principals and keytabs."""

    kind = "mit"
    issues_pac = True  # MIT 1.20 KDCs put a (minimal) PAC in every ticket

    master_password: str = "master-Secret-1"

    @property
    def kdc_conf(self) -> Path:
        return self.workdir / "kdc.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "KRB5_KDC_PROFILE": str(self.kdc_conf)}

    def start(self) -> MitRealm:
        self.kdc_conf.write_text(render_profile({
            "realms": {self.name: {
                "database_name": str(self.workdir / "principal"),
                "key_stash_file": str(self.workdir / "stash"),
                "acl_file": str(self.workdir / "kadm5.acl"),
                "kdc_listen": f"127.0.0.1:{self.port}",
                "kdc_tcp_listen": f"127.0.0.1:{self.port}",
                "master_key_type": "aes256-cts-hmac-sha1-96",
                "supported_enctypes": keysalt_list(ALL_ENCTYPES, sep=" "),
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
                [which("krb5kdc") or "krb5kdc", "-n", "-r", self.name, "-P", str(self.workdir / "kdc.pid")],
                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)
        try:
            wait_listening(self.port, self.proc, self.workdir / "kdc.log", "krb5kdc")
        except BaseException:
            self.stop()    # a KDC that never listened is not left running
            raise
        return self

    def kadmin(self, *commands: str) -> str:
        """Run kadmin.local commands in one process; any error line fails the fixture."""
        proc = self.run(["kadmin.local", "-r", self.name], input="\n".join(commands) + "\nquit\n")
        bad = [ln for ln in proc.stderr.splitlines()
               if ln.strip() and not ln.startswith(("No policy specified", "Authenticating as"))]
        if bad:
            raise KdcError(f"kadmin.local: {'; '.join(bad)}")
        return proc.stdout

    def add_services(self, services: Mapping[str, Sequence[int]]) -> None:
        self.kadmin(*(f"addprinc -randkey -e {keysalt_list(e)} {self.principal(p)}" for p, e in services.items()))

    def export_many(self, keytabs: Mapping[Path, Sequence[str]]) -> None:
        """ktadd -norandkey: the kvno does not move."""
        self.kadmin(*(f"ktadd -norandkey -k {kt} {self.principal(p)}" for kt, ps in keytabs.items() for p in ps))

    def rotate(self, principal: str, enctypes: Sequence[int] = ALL_ENCTYPES) -> None:
        """New random keys with ``enctypes``, kvno + 1, old keys dropped."""
        self.kadmin(f"cpw -randkey -e {keysalt_list(enctypes)} {self.principal(principal)}")


def build_mit_lab(workdir: Path, name: str = "FASTKRB.TEST", domain: str = "fastkrb.test") -> Lab:
    """The MIT realm of the interop suite, with the services and keytabs of support.realm.populate."""
    return build_lab(MitRealm(name=name, workdir=workdir, domain=domain))
