"""A Heimdal realm: Heimdal's kdc and ``kadmin -l`` from the Debian packages that tests/install_kdc_deps.sh
unpacks into build/heimdal (they conflict with MIT's, so they are not installed); MIT's clients talk to it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.krb5conf import ALL_ENCTYPES, ENCTYPES, keysalt_list, render_profile
from support.procs import wait_listening
from support.realm import REPO, KdcError, Lab, Realm, build_lab


def heimdal_dir() -> Path | None:
    """Heimdal unpacked by tests/install_kdc_deps.sh (build/heimdal, or $FASTKRB_HEIMDAL_DIR)."""
    root = Path(os.environ.get("FASTKRB_HEIMDAL_DIR", REPO / "build" / "heimdal"))
    if (root / "usr/lib/heimdal-servers/kdc").exists() and (root / "usr/bin/kadmin.heimdal").exists():
        return root
    return None


@dataclass
class HeimdalRealm(Realm):
    """A Heimdal 7.8 realm. Its tickets carry no PAC (no windc plugin) and always a start time."""

    kind = "heimdal"
    issues_pac = False

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
        self.heimdal_conf.write_text(render_profile({
            "libdefaults": {"default_realm": self.name, "dns_lookup_kdc": "false"},
            "realms": {self.name: {"kdc": f"127.0.0.1:{self.port}"}},
            "kdc": {
                "database": {"dbname": str(d / "heimdal"), "realm": self.name, "mkey_file": str(d / "m-key"),
                             "acl_file": str(d / "kadmind.acl"), "log_file": str(d / "iprop.log")},
                "ports": str(self.port),
                "addresses": "127.0.0.1",
            },
            "kadmin": {"default_keys": keysalt_list(ALL_ENCTYPES, "pw-salt", " ")},
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
        try:
            wait_listening(self.port, self.proc, log, "Heimdal kdc")
        except BaseException:
            self.stop()    # a KDC that never listened is not left running
            raise
        return self

    def kadmin(self, *commands: str) -> str:
        """Run ``kadmin -l`` commands in one process (each start costs ~0.2 s: batch them)."""
        argv = [str(self.root / "usr/bin/kadmin.heimdal"), "-l", "-c", str(self.heimdal_conf), "-r", self.name]
        proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True,
                              env={**os.environ, **self.heimdal_env}, timeout=60)
        if proc.returncode != 0 or proc.stderr.strip():
            raise KdcError(f"heimdal kadmin: {proc.stderr.strip()} {proc.stdout.strip()}")
        return proc.stdout

    def add_services(self, services: Mapping[str, Sequence[int]]) -> None:
        """``add --random-key`` takes the realm's default keys: the enctypes not asked for are deleted."""
        cmds: list[str] = []
        for principal, enctypes in services.items():
            p = self.principal(principal)
            cmds.append(f"add --random-key --use-defaults {p}")
            drop = [ENCTYPES[e] for e in ALL_ENCTYPES if e not in enctypes]
            if drop:
                cmds.append(f"del_enctype {p} {' '.join(drop)}")
        self.kadmin(*cmds)

    def export_many(self, keytabs: Mapping[Path, Sequence[str]]) -> None:
        self.kadmin(*(f"ext_keytab -k {kt} {self.principal(p)}" for kt, ps in keytabs.items() for p in ps))

    def rotate(self, principal: str) -> None:
        """New random keys, kvno + 1 (Heimdal keeps the principal's enctypes)."""
        self.kadmin(f"cpw --random-key {self.principal(principal)}")


def build_heimdal_lab(workdir: Path, name: str = "HEIMDAL.TEST", domain: str = "heimdal.test") -> Lab:
    """A Heimdal realm with the same services and keytabs as the MIT lab (support.realm.populate)."""
    return build_lab(HeimdalRealm(name=name, workdir=workdir, domain=domain))
