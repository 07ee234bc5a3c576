"""Doctor from another network segment: the KDC in one network namespace, doctor in another, joined by a
veth pair (10.200.N.1 <-> 10.200.N.2, addresses that exist only inside the namespaces this test makes),
and port 88 filtered between them with nftables. Doctor must name the filtered port and protocol.

Needs root, `ip netns` and `nft`; skips cleanly otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.mit import MitRealm, mit_missing
from support.procs import stop
from support.realm import which

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.kdc


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    name = f"fkprobe{os.getpid()}"
    if _run("ip", "netns", "add", name, check=False).returncode != 0:
        return "ip netns add is not permitted here"
    _run("ip", "netns", "del", name, check=False)
    return None


@dataclass
class Segment:
    kdc_ns: str
    cli_ns: str
    kdc_ip: str
    realm: Any
    keytab: Path
    principal: str
    client_conf: Path

    def filter(self, *protos: str) -> None:
        """Drop packets to port 88 of the given protocols at the KDC's side (nothing comes back)."""
        self.unfilter()
        ns = ["ip", "netns", "exec", self.kdc_ns, "nft"]
        _run(*ns, "add", "table", "inet", "fkdoctor")
        _run(*ns, "add", "chain", "inet", "fkdoctor", "input",
             "{ type filter hook input priority 0 ; policy accept ; }")
        for p in protos:
            _run(*ns, "add", "rule", "inet", "fkdoctor", "input", p, "dport", "88", "drop")

    def unfilter(self) -> None:
        _run("ip", "netns", "exec", self.kdc_ns, "nft", "delete", "table", "inet", "fkdoctor", check=False)

    def doctor(self, *args: str) -> tuple[int, dict[str, Any]]:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "KRB5_CONFIG": str(self.client_conf)}
        proc = subprocess.run(["ip", "netns", "exec", self.cli_ns, sys.executable, "-m", "fastkrb", "doctor",
                               "--no-dns", "--json", "--timeout", "1", "--keytab", str(self.keytab), *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.stdout, proc.stderr
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Segment]:
    why = _netns_usable()
    if why:
        pytest.skip(why)
    missing = mit_missing()
    if missing:
        pytest.skip(f"MIT KDC programs missing: {missing}")
    n = os.getpid() % 200 + 20
    kdc_ns, cli_ns = f"fkkdc{os.getpid()}", f"fkcli{os.getpid()}"
    veth_k, veth_c = f"fkk{os.getpid() % 100000}", f"fkc{os.getpid() % 100000}"
    kdc_ip, cli_ip = f"10.200.{n}.1", f"10.200.{n}.2"
    work = tmp_path_factory.mktemp("netns-realm")
    proc: subprocess.Popen[bytes] | None = None
    realm = MitRealm(name="SEGMENT.TEST", workdir=work, domain="segment.test")
    try:
        _run("ip", "netns", "add", kdc_ns)
        _run("ip", "netns", "add", cli_ns)
        _run("ip", "link", "add", veth_k, "type", "veth", "peer", "name", veth_c)
        _run("ip", "link", "set", veth_k, "netns", kdc_ns)
        _run("ip", "link", "set", veth_c, "netns", cli_ns)
        for ns, dev, ip in ((kdc_ns, veth_k, kdc_ip), (cli_ns, veth_c, cli_ip)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

        # The realm's database is made on loopback by the usual fixture code, then its KDC is moved into
        # the KDC's namespace, listening on the standard port 88 of the veth address.
        realm.start()
        principal = realm.add_service(realm.service("api"))
        keytab = realm.export(realm.keytab("api"), principal)
        os.chmod(keytab, 0o600)
        realm.stop()
        ns_conf = work / "kdc-netns.conf"
        ns_conf.write_text(realm.kdc_conf.read_text().replace(f"127.0.0.1:{realm.port}", f"{kdc_ip}:88"))
        client_conf = work / "krb5-client.conf"
        client_conf.write_text(realm.krb5_conf.read_text().replace(f"127.0.0.1:{realm.port}", kdc_ip))
        env = {**os.environ, **realm.env, "KRB5_KDC_PROFILE": str(ns_conf)}
        krb5kdc = which("krb5kdc") or "krb5kdc"
        with open(work / "kdc-netns.out", "wb") as fh:
            proc = subprocess.Popen(["ip", "netns", "exec", kdc_ns, krb5kdc, "-n", "-r", realm.name, "-P",
                                     str(work / "kdc-netns.pid")], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        deadline = time.monotonic() + 10
        probe = f"import socket; socket.create_connection(('{kdc_ip}', 88), 0.3).close()"
        while _run("ip", "netns", "exec", cli_ns, sys.executable, "-c", probe, check=False).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"KDC in {kdc_ns} did not start: {(work / 'kdc-netns.out').read_text()}")
            time.sleep(0.1)
        yield Segment(kdc_ns, cli_ns, kdc_ip, realm, keytab, principal, client_conf)
    finally:
        if proc is not None:
            stop(proc)
        realm.stop()
        for ns in (kdc_ns, cli_ns):
            _run("ip", "netns", "del", ns, check=False)


def _by(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in rep["findings"]}


def test_open_path_is_healthy(segment: Segment) -> None:
    segment.unfilter()
    rc, rep = segment.doctor()
    by = _by(rep)
    assert rc == 0, [f for f in rep["findings"] if f["status"] != "ok"]
    assert by["kdc.config"]["evidence"]["kdcs"] == [f"{segment.kdc_ip}:88"]
    assert by["kdc.reach.tcp"]["status"] == by["kdc.reach.udp"]["status"] == "ok"
    assert by["kdc.key"]["status"] == "ok" and by["roundtrip.self"]["status"] == "ok"


@pytest.mark.parametrize(("filtered", "open_"), [("tcp", "udp"), ("udp", "tcp")])
def test_filtered_port_is_named(segment: Segment, filtered: str, open_: str) -> None:
    segment.filter(filtered)
    try:
        rc, rep = segment.doctor()
    finally:
        segment.unfilter()
    by = _by(rep)
    bad = by[f"kdc.reach.{filtered}"]
    assert rc == 1
    assert bad["status"] == "error" and bad["evidence"]["kind"] == "timeout"
    assert f"{segment.kdc_ip}:88/{filtered}" in bad["summary"]
    assert "filtered" in bad["summary"] + bad["fix"] and f"{filtered.upper()} 88" in bad["fix"]
    assert by[f"kdc.reach.{open_}"]["status"] == "ok"
    # the other protocol still carries the key check
    assert by["kdc.key"]["status"] == "ok"
    assert by["kdc.key"]["evidence"]["kdc"] == f"{segment.kdc_ip}:88/{open_}"


def test_both_filtered(segment: Segment) -> None:
    segment.filter("tcp", "udp")
    try:
        rc, rep = segment.doctor()
    finally:
        segment.unfilter()
    by = _by(rep)
    assert rc == 1
    for proto in ("tcp", "udp"):
        assert by[f"kdc.reach.{proto}"]["evidence"]["kind"] == "timeout"
        assert f"{segment.kdc_ip}:88/{proto}" in by[f"kdc.reach.{proto}"]["summary"]
    assert by["kdc.key"]["status"] == "error" and "no KDC answered" in by["kdc.key"]["summary"]
