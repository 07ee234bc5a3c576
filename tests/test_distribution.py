"""The sdist and the wheel build from the repository's files and work when installed, with nothing else.

``python -m build`` (pypa/build, isolated: it fetches setuptools and Cython as pyproject's
[build-system] says) runs on a copy of the files git knows (tracked, plus new untracked ones not
ignored: what a commit of the working tree would hold), so a file MANIFEST.in misses is missing here
too. It builds the sdist and then the wheel *from that sdist*. Then two fresh virtual environments:
one installs the sdist (pip compiles the native core again), the other the wheel; each, from a
directory outside the repository and without PYTHONPATH, runs ``fastkrb --version``, ``fastkrb demo``,
``fastkrb serve --check`` on a TOML configuration, and a smoke script: every module imported (each
third-party import must be a declared dependency), a token minted with fastkrb.testing validated by
fastkrb.Validator, then ``fastkrb serve`` on a Unix socket answering fastkrb.client and an HTTP
``/auth`` request as a proxy sends it.

Needs a C compiler, OpenSSL headers and PyPI (or the machine's pip index) for the dependencies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastkrb import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("krb", "replay", "sessions", "sidecar", "web", "tools", "capacity")


def _env() -> dict[str, str]:
    """The caller's environment without what would make the repository's code importable or configure fastkrb
    (the pip configuration, index and cache stay: they are how this machine reaches PyPI)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FASTKRB_")}


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def _tree_files() -> list[str]:
    """The files a commit of the working tree would hold (tracked and not deleted, plus untracked not ignored)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return sorted({f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()})


@pytest.fixture(scope="module")
def tree() -> list[str]:
    return _tree_files()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, tree: list[str]) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of the repository's files (the wheel from the sdist)."""
    base = tmp_path_factory.mktemp("dist")
    src = base / "src"
    for f in tree:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = _run([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(src)], cwd=base, timeout=600)
    # a MANIFEST.in line that matches nothing, a setuptools deprecation, a compiler warning: all fail here
    benign = ("byte-compiling is disabled", "no previously-included files matching '*.py[cod]'")
    warnings = [line for line in (out.stdout + out.stderr).splitlines()
                if "warning" in line.lower() and not any(b in line for b in benign)]
    assert not warnings, "the build warned:\n" + "\n".join(warnings)
    sdists = list((base / "dist").glob("fastkrb-*.tar.gz"))
    wheels = list((base / "dist").glob("fastkrb-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, list((base / "dist").iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory, dist: dict[str, Path]) -> dict[str, Path]:
    """A fresh virtual environment per artifact with it installed (both installs run at once)."""
    base = tmp_path_factory.mktemp("venvs")

    def install(kind: str) -> tuple[Path, str]:
        venv = base / kind
        _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
        out = _run([str(venv / "bin" / "python"), "-m", "pip", "install", str(dist[kind])], cwd=base, timeout=600)
        return venv, out.stdout + out.stderr

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(("sdist", "wheel"), pool.map(install, ("sdist", "wheel")), strict=True))
    # pip compiled the sdist (no wheel cache stood in for it); the wheel was installed as built
    assert "Building wheel for fastkrb" in results["sdist"][1], results["sdist"][1]
    assert "Building wheel" not in results["wheel"][1], results["wheel"][1]
    return {kind: venv for kind, (venv, _) in results.items()}


def test_sdist_holds_the_sources_and_no_build_junk(dist: dict[str, Path], tree: list[str]) -> None:
    with tarfile.open(dist["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    top = f"fastkrb-{__version__}"
    assert dist["sdist"].name == f"{top}.tar.gz"
    wanted = {f for f in tree if f.startswith(("native/", "src/fastkrb/", "deploy/", "docs/", "examples/"))}
    wanted |= {"LICENSE", "README.md", "CHANGELOG.md", "setup.py", "pyproject.toml", "MANIFEST.in"}
    assert "native/_native.pyx" in wanted and any(f.endswith(".pxi") for f in wanted)
    assert not wanted - names, f"missing from the sdist: {sorted(wanted - names)}"
    junk = [n for n in names if n.startswith(("build/", ".venv/", "dist/", "tests/", "benches/", "fuzz/", ".ci/"))
            or n.endswith((".so", ".o", ".pyc", ".html")) or n == "native/_native.c"]
    assert not junk, f"not for the sdist: {junk}"


def test_wheel_holds_the_package_stubs_and_extension(dist: dict[str, Path], tree: list[str]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"fastkrb-{__version__}.dist-info/entry_points.txt").decode()
        metadata = zf.read(f"fastkrb-{__version__}.dist-info/METADATA").decode()
    package = {f.removeprefix("src/") for f in tree if f.startswith("src/fastkrb/")}
    assert {"fastkrb/py.typed", "fastkrb/_native.pyi"} <= package
    assert {f"fastkrb/{p}/__init__.py" for p in SUBPACKAGES} <= package
    assert not package - names, f"missing from the wheel: {sorted(package - names)}"
    assert [n for n in names if re.fullmatch(r"fastkrb/_native\.cpython-[^/]+\.so", n)], sorted(names)
    assert not [n for n in names if n.startswith(("tests/", "native/", "benches/"))]
    assert "fastkrb = fastkrb.tools.cli:main" in entry_points
    assert "License-Expression: Apache-2.0" in metadata


SMOKE = textwrap.dedent('''
    """Run by the installed package's interpreter: library, then the running sidecar over its Unix socket."""
    import random
    import socket
    import sys
    import time

    import fastkrb
    import fastkrb._native
    from fastkrb import KerberosError, Validator
    from fastkrb.client import Client
    from fastkrb.testing import make_keytab, mint
    from fastkrb.tools.dev import dev_header

    sock, dev_keytab, workdir = sys.argv[1:4]
    print("fastkrb", fastkrb.__file__)
    print("native", fastkrb._native.__file__)

    # every module imports with only the declared dependencies installed; the aiohttp middleware alone
    # needs its framework, which the application brings
    import importlib
    import pkgutil

    modules = [m.name for m in pkgutil.walk_packages(fastkrb.__path__, "fastkrb.") if m.name != "fastkrb.__main__"]
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (name, exc.name) != ("fastkrb.web.aiohttp", "aiohttp"):
                raise
    print("imported", len(modules), "modules")

    spn = "HTTP/api.example.test@EXAMPLE.TEST"
    kt = make_keytab((spn,), rng=random.Random(7))
    kt.save(workdir + "/lib.keytab")
    v = Validator(workdir + "/lib.keytab")
    token = mint(kt, server=spn, client="alice@EXAMPLE.TEST", framing="header").token
    res = v.validate(token)
    print("library: ACCEPTED", res.client, "->", res.server)
    try:
        v.validate(token)
        raise SystemExit("library: a replayed token was accepted")
    except KerberosError as exc:
        print("library: the same token again: REJECTED", exc.code)

    client = Client(sock)
    deadline = time.monotonic() + 30
    while True:
        try:
            ping = client.ping()
            break
        except KerberosError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    print("sidecar: ping ready", ping["ready"], "replay cache", ping["replay_cache"]["spec"])
    r = client.validate(dev_header("bob", dev_keytab))
    print("sidecar (fastkrb.client): ACCEPTED", r.client, "->", r.server)

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(("GET /auth HTTP/1.1\\r\\nHost: sidecar\\r\\nAuthorization: " + dev_header("carol", dev_keytab) +
               "\\r\\nConnection: close\\r\\n\\r\\n").encode())
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head = raw.split(b"\\r\\n\\r\\n", 1)[0].decode().lower().split("\\r\\n")
    print("sidecar (HTTP GET /auth):", head[0], [h for h in head if h.startswith("x-remote-user:")])
''')


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_installed_package_runs_outside_the_repository(kind: str, venvs: dict[str, Path], tmp_path: Path) -> None:
    venv = venvs[kind]
    bin_ = venv / "bin"
    fastkrb = str(bin_ / "fastkrb")

    assert _run([fastkrb, "--version"], cwd=tmp_path).stdout.strip() == f"fastkrb {__version__}"

    demo = _run([fastkrb, "demo"], cwd=tmp_path).stdout
    assert "ACCEPTED" in demo and "REJECTED [replay]" in demo and "REJECTED [clock_skew]" in demo
    assert "REJECTED [key_version_mismatch]" in demo and "validations/s" in demo

    _run([fastkrb, "dev", "init", "--spn", "HTTP/api.example.test", "--keytab", str(tmp_path / "dev.keytab")],
         cwd=tmp_path)
    (tmp_path / "run").mkdir()
    config = tmp_path / "fastkrb.toml"
    config.write_text(textwrap.dedent(f"""\
        [serve]
        keytab = "{tmp_path}/dev.keytab"
        socket = "{tmp_path}/run/fastkrb.sock"
        socket_mode = "0600"
        workers = 2
        replay_cache = "shm:{tmp_path}/run/replay.shm"
        replay_capacity = 65536                   # a 4 MiB file, not the default 64 MiB
        clock_skew = 300
        log_file = "{tmp_path}/run/decisions.log"
        dev = true                                # the keytab is `fastkrb dev init`'s
        """))
    check = _run([fastkrb, "serve", "--config", str(config), "--check"], cwd=tmp_path).stdout
    # warnings (a dev keytab, a replay file not on tmpfs, ...) are fine here; an error is not
    assert re.fullmatch(r"configuration ok(, \d+ warning\(s\))?", check.splitlines()[-1]), check
    # --check does check: the same keytab outside a dev run is refused, naming the file
    refused = subprocess.run([fastkrb, "serve", "--config", str(config), "--no-dev", "--check"], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and f"keytab {tmp_path}/dev.keytab: a `fastkrb dev init` keytab" in refused.stdout

    (tmp_path / "smoke.py").write_text(SMOKE)
    serve = subprocess.Popen([fastkrb, "serve", "--config", str(config)], cwd=tmp_path, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        smoke = subprocess.run([str(bin_ / "python"), "smoke.py", str(tmp_path / "run" / "fastkrb.sock"),
                                str(tmp_path / "dev.keytab"), str(tmp_path)],
                               cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve_out, _ = serve.communicate(timeout=60)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr + serve_out
    pkg = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "fastkrb"
    lines = smoke.stdout.splitlines()
    assert lines[0] == f"fastkrb {pkg}/__init__.py" and lines[1].startswith(f"native {pkg}/_native.cpython-")
    assert re.fullmatch(r"imported \d+ modules", lines[2]) and int(lines[2].split()[1]) >= len(SUBPACKAGES) * 2
    assert "library: ACCEPTED alice@EXAMPLE.TEST -> HTTP/api.example.test@EXAMPLE.TEST" in lines
    assert "library: the same token again: REJECTED replay" in smoke.stdout
    assert "sidecar (fastkrb.client): ACCEPTED bob@DEV.TEST -> HTTP/api.example.test@DEV.TEST" in smoke.stdout
    assert "sidecar (HTTP GET /auth): http/1.1 200 ok ['x-remote-user: carol']" in smoke.stdout, smoke.stdout
    assert serve.returncode == 0, serve_out
    assert '"worker_stopped"' in (tmp_path / "run" / "decisions.log").read_text()
