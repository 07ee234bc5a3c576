"""The files in deploy/ are checked, not just shipped.

nginx: ``nginx -t`` on the shipped file (the e2e test also runs it). Envoy and Traefik: parsed, and every
header name they copy is one a running sidecar really sends. systemd: parsed, ``systemd-analyze verify``
when present, the ExecStart arguments parse, and socket activation is exercised with
``systemd-socket-activate``. Kubernetes: parsed, and the sidecar's arguments, mounts and probes agree.
"""

from __future__ import annotations

import base64
import configparser
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastkrb.sidecar.config import load_config, parse_args
from fastkrb.testing import make_keytab, mint
from support.sidecar import SRC, Sidecar, parse_response, recv_all
from test_e2e_nginx import enable_challenges

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SERVICE = "HTTP/api.example.com@EXAMPLE.COM"


@pytest.fixture(scope="module")
def live_headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The headers of a real 200 from the sidecar for an AD-like ticket (a PAC), of a 401 and of a 403
    (lower-cased names)."""
    d = tmp_path_factory.mktemp("deploy")
    kt = make_keytab((SERVICE,), rng=random.Random(2))
    (d / "k.keytab").write_bytes(kt.to_bytes())
    sc = Sidecar(d, d / "k.keytab", args=("--replay-cache", "memory", "--remote-groups", "sid")).start()
    try:
        groups = [513, *range(2000, 2500)]                              # enough to be cut at 8 KiB
        pac = {"logon_info": {"domain_sid": "S-1-5-21-7-8-9", "user_rid": 1104, "group_rids": groups}}
        tok = mint(kt, client="erin@EXAMPLE.COM", server=SERVICE, pac=pac, now=time.time() + 1).token_bytes
        status, headers, _ = sc.http("GET", "/auth/api/x", {"Authorization": "Negotiate " +
                                                              base64.b64encode(tok).decode()})
        assert status == 200
        rej = sc.http("GET", "/auth", {"Authorization": "Negotiate AAAA"})[1]
        tok = mint(kt, client="erin@EXAMPLE.COM", server=SERVICE, now=time.time() + 1).token_bytes
        status, forbidden, _ = sc.http("GET", "/auth?allowed_users=nobody",
                                       {"Authorization": "Negotiate " + base64.b64encode(tok).decode()})
        assert status == 403
        return {**headers, **{f"401:{k}": v for k, v in rej.items()}, **{f"403:{k}": v for k, v in forbidden.items()}}
    finally:
        assert sc.stop() == 0


# -- nginx ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"),
                    reason="nginx is not installed")
def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    text = (DEPLOY / "nginx" / "fastkrb.conf").read_text()
    # the trap is avoided and explained
    assert "auth_request /_fastkrb;" in text
    assert re.search(r"if \(\$fastkrb_user\) \{[^}]*return 204;", text)
    assert "INTERNAL-REDIRECT TRAP" in text and "internal redirect" in text
    assert 'auth_request_set $fastkrb_user      "$fastkrb_user$upstream_http_x_remote_user"' in text
    assert "large_client_header_buffers" in text and "proxy_cache off" in text
    conf = tmp_path / "site.conf"
    conf.write_text(text.replace("listen 80;", "listen 127.0.0.1:1;").replace("/srv/www", str(tmp_path)))
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/n.pid; error_log {tmp_path}/e.log; events {{}}\n"
                    f"http {{ access_log off; client_body_temp_path {tmp_path}/t; proxy_temp_path {tmp_path}/t;\n"
                    f"include {conf}; }}\n")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    out = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # the honest-challenge block, commented out in the file, is valid nginx once uncommented
    assert "add_header Set-Cookie $fastkrb_cookie always;" in text   # the tried cookie goes with a 401
    conf.write_text(enable_challenges(conf.read_text()))
    assert "error_page 401 = /_fastkrb_401;" in conf.read_text()
    out = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- Envoy --------------------------------------------------------------------------------------------

def _find(obj: Any, key: str) -> list[Any]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += _find(v, key)
    return found


def _patterns(block: dict[str, Any]) -> set[str]:
    return {p["exact"].lower() for p in block["patterns"]}


def test_envoy_ext_authz(live_headers: dict[str, str]) -> None:
    doc = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
    (authz,) = [f["typed_config"] for f in _find(doc, "http_filters")[0] if f["name"] == "envoy.filters.http.ext_authz"]
    svc = authz["http_service"]
    assert authz["failure_mode_allow"] is False
    assert svc["path_prefix"] == "/auth"
    assert "authorization" in _patterns(svc["authorization_request"]["allowed_headers"])
    resp = svc["authorization_response"]
    upstream = _patterns(resp["allowed_upstream_headers"])
    assert upstream == {"x-remote-user", "x-remote-principal", "x-remote-realm", "x-remote-sid", "x-remote-upn",
                        "x-remote-groups", "x-remote-groups-truncated"}
    assert upstream <= set(live_headers)                       # the sidecar really sends them on 200
    assert _patterns(resp["allowed_client_headers_on_success"]) == {"www-authenticate"}
    assert "www-authenticate" in live_headers
    client = _patterns(resp["allowed_client_headers"])
    assert {f"401:{h}" for h in client} <= set(live_headers)  # ... and these on 401
    assert live_headers["403:x-auth-error"] == "forbidden" and "403:www-authenticate" not in live_headers
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == svc["server_uri"]["cluster"])
    (pipe,) = _find(cluster, "pipe")
    assert pipe["path"] == "/run/fastkrb/fastkrb.sock"
    # headers bigger than Envoy's 60 KiB default are expected
    assert _find(doc, "max_request_headers_kb")[0] >= 64


# -- Traefik ------------------------------------------------------------------------------------------

def test_traefik_forward_auth(live_headers: dict[str, str]) -> None:
    text = (DEPLOY / "traefik" / "dynamic.yml").read_text()
    doc = yaml.safe_load(text)
    fa = doc["http"]["middlewares"]["fastkrb"]["forwardAuth"]
    m = re.fullmatch(r"http://(127\.0\.0\.1):(\d+)/auth", fa["address"])
    assert m, fa["address"]
    assert f"--tcp {m.group(1)}:{m.group(2)}" in text             # the sidecar command it documents
    assert fa["trustForwardHeader"] is False
    assert fa["authRequestHeaders"] == ["Authorization"]
    assert {h.lower() for h in fa["authResponseHeaders"]} <= set(live_headers)
    assert "fastkrb" in doc["http"]["routers"]["api"]["middlewares"]


# -- systemd ------------------------------------------------------------------------------------------

def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((DEPLOY / "systemd" / name).read_text())
    return cp


def test_systemd_units_agree_with_the_config(tmp_path: Path) -> None:
    svc = _unit("fastkrb.service")
    sock = _unit("fastkrb.socket")
    assert svc["Service"]["Type"] == "notify"
    assert svc["Service"]["ExecReload"].endswith("-HUP $MAINPID")
    assert svc["Service"]["KillSignal"] == "SIGTERM"
    assert svc["Service"]["RuntimeDirectoryPreserve"] == "yes"
    assert svc["Unit"]["Requires"] == "fastkrb.socket"
    argv = shlex.split(svc["Service"]["ExecStart"])
    assert argv[1] == "serve"
    args = parse_args(argv[2:])
    cfg_path = Path(args.config)
    assert "--check" in shlex.split(svc["Service"]["ExecStartPre"])
    # the TOML file it names is the one in deploy/, and it parses into a configuration
    assert cfg_path.name == "fastkrb.toml"
    env = dict(kv.split("=", 1) for kv in svc["Service"]["Environment"].split())
    cfg = load_config(parse_args(["--config", str(DEPLOY / "fastkrb.toml")]), env=env)
    assert cfg.socket == sock["Socket"]["ListenStream"]
    assert cfg.socket_group == sock["Socket"]["SocketGroup"]
    assert cfg.replay_spec() == "shm:/run/fastkrb/replay.shm"
    assert oct(cfg.socket_mode) == oct(int(sock["Socket"]["SocketMode"], 8))


def test_groups_sync_timer_runs_a_valid_command() -> None:
    import argparse

    from fastkrb.tools.groups import add_arguments

    svc = _unit("fastkrb-groups-sync.service")
    timer = _unit("fastkrb-groups-sync.timer")
    assert svc["Service"]["Type"] == "oneshot" and svc["Service"]["ReadWritePaths"] == "/etc/fastkrb"
    argv = shlex.split(svc["Service"]["ExecStart"])
    assert argv[1:3] == ["groups", "sync"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(argv[3:])
    assert a.ldap_url.startswith("ldaps://") and a.out == "/etc/fastkrb/groups.json"   # where fastkrb.toml reads it
    assert a.bind_dn == "CN=fastkrb-sync,OU=Service Accounts,DC=corp,DC=example" and a.password_file
    cfg = load_config(parse_args(["--config", str(DEPLOY / "fastkrb.toml")]), env={})
    assert cfg.group_names == a.out
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    names = ("fastkrb.service", "fastkrb.socket", "fastkrb-groups-sync.service", "fastkrb-groups-sync.timer")
    for name in names:
        # the units run the fastkrb of a virtual environment at /opt/fastkrb (README.md, "Install")
        text = (DEPLOY / "systemd" / name).read_text().replace("/opt/fastkrb/bin/fastkrb",
                                                                sys.executable + " -m fastkrb")
        (tmp_path / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in names)],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "fastkrb" in line and "Unknown user" not in line and "Failed to" not in line]
    assert not problems, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing")
def test_socket_activation(tmp_path: Path) -> None:
    kt = make_keytab((SERVICE,), rng=random.Random(2))
    (tmp_path / "k.keytab").write_bytes(kt.to_bytes())
    sock = tmp_path / "activated.sock"
    log = tmp_path / "log.json"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}, "PYTHONPATH": SRC}
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(sock), "-E", "PYTHONPATH",
                             sys.executable, "-m", "fastkrb", "serve",
                             "--keytab", str(tmp_path / "k.keytab"), "--socket", str(sock), "--workers", "1",
                             "--log-file", str(log), "--replay-cache", "memory"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        import socket as _s

        c = _s.socket(_s.AF_UNIX)
        c.settimeout(20)
        c.connect(str(sock))            # accepted by systemd's socket; the daemon starts on demand
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        status, _, body = parse_response(recv_all(c))
        c.close()
        assert status == 200 and b'"ready": true' in body
        assert '"socket_activated":true' in log.read_text()
    finally:
        proc.terminate()
        proc.wait(20)


# -- Kubernetes ---------------------------------------------------------------------------------------

def test_k8s_sidecar_manifest() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "sidecar.yaml").read_text()))
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = dep["spec"]["template"]["spec"]
    (side,) = spec["initContainers"]
    assert side["restartPolicy"] == "Always"                    # a native sidecar
    assert side["args"][0] == "serve"
    env = {}
    for e in side["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        env[e["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    cfg = load_config(parse_args(side["args"][1:]), env=env)
    assert cfg.replay_spec().startswith("redis://")            # replicas share the SPN: share the cache
    assert cfg.allow_gids == [spec["securityContext"]["runAsGroup"]]
    mounts = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    keytab_vol = next(n for n, p in mounts.items() if cfg.keytab.startswith(p + "/"))
    assert volumes[keytab_vol]["secret"]["secretName"] in secrets
    assert volumes[keytab_vol]["secret"]["defaultMode"] in (0o400, 0o440)
    sock_dir = os.path.dirname(cfg.socket)
    sock_vol = next(n for n, p in mounts.items() if p == sock_dir)
    assert "emptyDir" in volumes[sock_vol]
    (app,) = spec["containers"]
    assert {m["name"]: m["mountPath"] for m in app["volumeMounts"]}[sock_vol] == sock_dir
    assert {e["name"]: e.get("value") for e in app["env"]}["FASTKRB_SOCKET"] == cfg.socket
    for probe in ("readinessProbe", "startupProbe"):
        cmd = side[probe]["exec"]["command"]
        assert cmd[:4] == ["python", "-m", "fastkrb.client", "ping"] and cmd[cmd.index("--socket") + 1] == cfg.socket
