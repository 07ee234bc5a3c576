"""fastkrb.client against a real ``fastkrb serve``: the same results and the same errors as the library."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkrb import ChannelBindingsMismatch, KerberosError, MalformedToken, Replay, Validator
from fastkrb.client import AsyncClient, Client, RemoteAuthResult, SidecarUnavailable
from fastkrb.testing import Minted, mint
from support.sidecar import SRC, Sidecar, service_keytab

CLIENT = "dave@EXAMPLE.TEST"
SERVICE = "HTTP/client.example.test@EXAMPLE.TEST"


@pytest.fixture(scope="module")
def keytab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return service_keytab(tmp_path_factory.mktemp("kt"), SERVICE, 8)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keytab: Path) -> Iterator[Sidecar]:
    with Sidecar(tmp_path_factory.mktemp("sc"), keytab, args=("--replay-cache", "memory", "--idle-timeout", "1")) as sc:
        yield sc


@pytest.fixture(scope="module")
def minted(keytab: Path) -> Minted:
    return mint(str(keytab), client=CLIENT, server=SERVICE, now=time.time() + 1)


def fresh(m: Minted, n: int = 1) -> list[bytes]:
    return m.variants(n, now=time.time() + 1)


def test_result_matches_the_library(sidecar: Sidecar, keytab: Path, minted: Minted) -> None:
    tok = fresh(minted)[0]
    lib = Validator(str(keytab), replay_cache="none").validate(tok)
    with Client(sidecar.socket) as c:
        res = c.validate(tok)
    assert isinstance(res, RemoteAuthResult)
    want = lib.to_dict()
    got = res.to_dict()
    for k in ("client", "server", "client_realm", "enctype", "session_enctype", "kvno", "auth_time", "start_time",
              "end_time", "flags", "mutual", "framing", "gss_flags", "ctime", "pac_verified"):
        assert got[k] == want[k], k
    assert res.short_name == lib.short_name == "dave"
    assert res.delegated is False
    assert res.response_token is not None and res.www_authenticate is not None
    assert res.www_authenticate.startswith("Negotiate ")


def test_errors_are_the_library_classes(sidecar: Sidecar, minted: Minted) -> None:
    tok = fresh(minted)[0]
    with Client(sidecar.socket) as c:
        c.validate(tok)
        with pytest.raises(Replay) as ei:
            c.validate(tok)
        assert ei.value.code == "replay"
        assert ei.value.details["first_seen_ago"] < 10
        assert "already accepted" in ei.value.cause
        with pytest.raises(MalformedToken):
            c.validate(b"definitely not kerberos")
        with pytest.raises(MalformedToken):
            c.validate("Negotiate !!!")


def test_channel_bindings_travel(sidecar: Sidecar, keytab: Path) -> None:
    cb = b"tls-server-end-point:" + bytes(range(32))
    m = mint(str(keytab), client=CLIENT, server=SERVICE, channel_bindings=cb, now=time.time() + 1)
    with Client(sidecar.socket) as c:
        assert c.validate(fresh(m)[0], channel_bindings=cb).client == CLIENT
        with pytest.raises(ChannelBindingsMismatch):
            c.validate(fresh(m)[0], channel_bindings=b"tls-server-end-point:" + bytes(32))


def test_validate_many_pipelines_in_order(sidecar: Sidecar, minted: Minted) -> None:
    toks = fresh(minted, 500)
    batch = [*toks, toks[3], b"junk", *fresh(minted, 2)]
    with Client(sidecar.socket) as c:
        out = c.validate_many(batch)
    assert len(out) == len(batch)
    assert all(isinstance(r, RemoteAuthResult) for r in out[:500])
    assert isinstance(out[500], Replay) and isinstance(out[501], MalformedToken)
    assert all(isinstance(r, RemoteAuthResult) for r in out[502:])
    assert Client(sidecar.socket).validate_many([]) == []


def test_connection_is_reused_and_reopened_after_idle_close(sidecar: Sidecar, minted: Minted) -> None:
    c = Client(sidecar.socket)
    c.validate(fresh(minted)[0])
    first = c._sock
    c.validate(fresh(minted)[0])
    assert c._sock is first                 # reused
    time.sleep(2.5)                         # the sidecar closes it (idle_timeout 1 s)
    assert c.validate(fresh(minted)[0]).client == CLIENT
    assert c._sock is not first
    assert c.ping()["ready"] is True
    c.close()


def test_client_is_thread_safe(sidecar: Sidecar, minted: Minted) -> None:
    toks = fresh(minted, 400)
    c = Client(sidecar.socket)
    errors: list[BaseException] = []

    def work(part: list[bytes]) -> None:
        try:
            for t in part:
                assert c.validate(t).client == CLIENT
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(toks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    assert errors == []


def test_unreachable_sidecar_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(SidecarUnavailable) as ei:
        Client(str(tmp_path / "nobody.sock"), timeout=1).validate(b"x")
    assert ei.value.code == "sidecar_unavailable" and isinstance(ei.value, KerberosError)


def test_timeout_when_the_sidecar_does_not_answer(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(SidecarUnavailable, match="did not answer"):
        Client(path, timeout=0.5).validate(b"x")
    assert time.monotonic() - t0 < 3

    async def go() -> None:
        async with AsyncClient(path, timeout=0.5) as ac:
            await ac.validate(b"x")

    with pytest.raises(SidecarUnavailable):
        asyncio.run(go())
    srv.close()


def test_async_client_concurrent_calls_share_one_connection(sidecar: Sidecar, minted: Minted) -> None:
    toks = fresh(minted, 300)

    async def go() -> None:
        async with AsyncClient(sidecar.socket) as ac:
            results = await asyncio.gather(*(ac.validate(t) for t in toks))
            assert all(r.client == CLIENT for r in results)
            conn = ac._conn
            with pytest.raises(Replay):
                await ac.validate(toks[0])
            out = await ac.validate_many([toks[1], b"junk", fresh(minted)[0]])
            assert isinstance(out[0], Replay) and isinstance(out[1], MalformedToken)
            assert isinstance(out[2], RemoteAuthResult)
            assert ac._conn is conn
            assert (await ac.ping())["ready"] is True
            await asyncio.sleep(2.5)        # idle close by the sidecar, then a transparent reconnect
            assert (await ac.validate(fresh(minted)[0])).client == CLIENT

    asyncio.run(go())


def test_async_client_unreachable(tmp_path: Path) -> None:
    async def go() -> None:
        await AsyncClient(str(tmp_path / "none.sock"), timeout=1).validate(b"x")

    with pytest.raises(SidecarUnavailable):
        asyncio.run(go())


def test_ping_command_for_probes(sidecar: Sidecar, tmp_path: Path) -> None:
    env = {"PYTHONPATH": SRC}
    ok = subprocess.run([sys.executable, "-m", "fastkrb.client", "ping", "--socket", sidecar.socket], env=env,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and '"ready": true' in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fastkrb.client", "ping", "--socket", str(tmp_path / "x.sock")],
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "not ready" in bad.stderr
