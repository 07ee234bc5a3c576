"""The HTTP front door of a real ``fastkrb serve`` process, driven with raw HTTP/1.1 over its Unix socket.

Tokens are minted with fastkrb.testing from the daemon's keytab (a KDC in a function), one fresh
authenticator per request, exactly as a client with a cached service ticket sends them.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Validator
from fastkrb.testing import Minted, make_keytab, mint
from support.sidecar import Sidecar, parse_responses, recv_all, service_keytab

CLIENT = "alice@EXAMPLE.TEST"
SERVICE = "HTTP/api.example.test@EXAMPLE.TEST"


@pytest.fixture(scope="module")
def keytab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return service_keytab(tmp_path_factory.mktemp("kt"), SERVICE, 4)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keytab: Path) -> Iterator[Sidecar]:
    with Sidecar(tmp_path_factory.mktemp("sidecar"), keytab, workers=1, args=("--replay-cache", "memory")) as sc:
        yield sc


@pytest.fixture(scope="module")
def minted(keytab: Path) -> Minted:
    return mint(str(keytab), client=CLIENT, server=SERVICE, now=time.time() + 1)


def krb_error_code(challenge: str) -> int:
    """The error code of the KRB-ERROR in a ``Negotiate <b64>`` challenge (SPNEGO reject or bare RFC 4121)."""
    from fastkrb.krb.asn1 import TOK_ID_KRB_ERROR, KrbError
    from fastkrb.krb.gss import NegTokenResp, decode_spnego, gss_unwrap

    scheme, _, b64 = challenge.partition(" ")
    assert scheme == "Negotiate" and b64, challenge
    raw = base64.b64decode(b64)
    if raw[0] == 0xA1:
        resp = decode_spnego(raw)
        assert isinstance(resp, NegTokenResp) and resp.neg_state == 2 and resp.response_token is not None
        raw = resp.response_token
    g = gss_unwrap(raw)
    assert g.tok_id == TOK_ID_KRB_ERROR
    return int(KrbError.from_der(g.inner).error_code)


def header(m: Minted, n: int = 1) -> list[str]:
    """n fresh 'Negotiate <b64>' values (new authenticators, same ticket), dated just ahead of now."""
    return ["Negotiate " + base64.b64encode(t).decode() for t in m.variants(n, now=time.time() + 1)]


def test_accepted_with_identity_and_mutual_answer(sidecar: Sidecar, minted: Minted) -> None:
    fresh = minted.again(now=time.time() + 1)
    status, h, body = sidecar.http("GET", "/auth", {"Authorization": fresh.header})
    assert status == 200, body
    assert h["x-remote-user"] == "alice"
    assert h["x-remote-principal"] == CLIENT
    assert h["x-remote-realm"] == "EXAMPLE.TEST"
    assert h["cache-control"] == "no-store"
    # the AP-REP really answers this authenticator (decrypts with the session key, same ctime/cusec)
    assert h["www-authenticate"].startswith("Negotiate ")
    assert fresh.verify_ap_rep(h["www-authenticate"]) is not None
    assert body == b""


def test_any_method_and_envoy_path_prefix(sidecar: Sidecar, minted: Minted) -> None:
    for method, path in (("POST", "/auth"), ("HEAD", "/auth"), ("PUT", "/auth/api/v1/things?x=1"),
                         ("DELETE", "/auth?uri=/x")):
        status, h, _ = sidecar.http(method, path, {"Authorization": header(minted)[0]})
        assert status == 200, (method, path)
        assert h["x-remote-user"] == "alice"


def test_no_mutual_no_answer_token(sidecar: Sidecar, keytab: Path) -> None:
    m = mint(str(keytab), client=CLIENT, server=SERVICE, gss_flags=("integ", "conf"), framing="krb5",
             now=time.time() + 1)
    status, h, _ = sidecar.http("GET", "/auth", {"Authorization": header(m)[0]})
    assert status == 200
    assert "www-authenticate" not in h


def test_no_header_is_a_negotiate_challenge(sidecar: Sidecar) -> None:
    status, h, body = sidecar.http("GET", "/auth")
    assert status == 401
    assert h["www-authenticate"] == "Negotiate"
    assert h["x-auth-error"] == "no_token"
    assert json.loads(body)["code"] == "no_token"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Negotiate", "Negotiate ", "Bearer abc"])
def test_other_schemes_are_challenged(sidecar: Sidecar, value: str) -> None:
    status, h, body = sidecar.http("GET", "/auth", {"Authorization": value})
    assert status == 401
    assert h["www-authenticate"] == "Negotiate"
    assert h["x-auth-error"] == "no_token"
    assert "dXNlcjpwYXNz" not in body.decode()


def test_scheme_is_case_insensitive(sidecar: Sidecar, minted: Minted) -> None:
    value = header(minted)[0].replace("Negotiate", "nEGOTIATE", 1)
    status, h, _ = sidecar.http("GET", "/auth", {"Authorization": value})
    assert status == 200
    assert h["x-remote-user"] == "alice"


def test_garbage_token_is_401_with_code_and_cause_and_never_echoed(sidecar: Sidecar) -> None:
    junk = base64.b64encode(b"\x60\x82" + bytes(range(200))).decode()
    status, h, body = sidecar.http("GET", "/auth", {"Authorization": "Negotiate " + junk})
    assert status == 401
    assert h["www-authenticate"] == "Negotiate"
    assert h["x-auth-error"] == "malformed"
    assert h["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["code"] == "malformed" and doc["cause"]
    assert set(doc) == {"code", "cause"}
    assert junk not in body.decode() and junk[:40] not in json.dumps(dict(h))


def test_replay_is_401_and_says_how_long_ago(sidecar: Sidecar, minted: Minted) -> None:
    value = header(minted)[0]
    assert sidecar.http("GET", "/auth", {"Authorization": value})[0] == 200
    status, h, body = sidecar.http("GET", "/auth", {"Authorization": value})
    assert status == 401
    assert h["x-auth-error"] == "replay"
    # the client asked for mutual authentication: the challenge carries MIT's KRB-ERROR, KRB_AP_ERR_REPEAT (34)
    assert krb_error_code(h["www-authenticate"]) == 34
    cause = json.loads(body)["cause"]
    assert re.search(r"already accepted [\d.]+ (ms|s) ago", cause), cause
    time.sleep(0.3)  # the log is flushed on the daemon's tick
    replays = [e for e in sidecar.events() if e.get("code") == "replay"]
    assert replays and 0 <= replays[-1]["first_seen_ago"] < 10


def test_wrong_key_is_named(sidecar: Sidecar) -> None:
    other = make_keytab((SERVICE,), rng=random.Random(99))
    m = mint(other, client=CLIENT, server=SERVICE, now=time.time() + 1)
    status, h, _body = sidecar.http("GET", "/auth", {"Authorization": m.header})
    assert status == 401
    assert h["x-auth-error"] == "integrity"


def test_keep_alive_and_pipelining_answer_in_order(sidecar: Sidecar, minted: Minted) -> None:
    vals = header(minted, 5)
    reqs = []
    for i, v in enumerate([vals[0], vals[1], vals[1], "Basic x", vals[2], vals[3], vals[4]]):
        reqs.append(f"GET /auth?i={i} HTTP/1.1\r\nHost: s\r\nAuthorization: {v}\r\n\r\n".encode())
    reqs.append(b"GET /healthz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
    s = sidecar.connect()
    s.sendall(b"".join(reqs))
    got = parse_responses(recv_all(s))
    s.close()
    assert [r[0] for r in got] == [200, 200, 401, 401, 200, 200, 200, 200]
    assert got[2][1]["x-auth-error"] == "replay"
    assert got[3][1]["x-auth-error"] == "no_token"
    assert json.loads(got[-1][2])["ready"] is True


def test_http10_closes_after_answer(sidecar: Sidecar, minted: Minted) -> None:
    s = sidecar.connect()
    s.sendall(f"GET /auth HTTP/1.0\r\nAuthorization: {header(minted)[0]}\r\n\r\n".encode())
    data = recv_all(s)  # returns only because the server closes
    s.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in data


def test_large_head_up_to_64k_is_accepted(sidecar: Sidecar, minted: Minted) -> None:
    # AD tokens with big PACs reach tens of KiB; cookies and other headers come on top
    filler = {f"X-Filler-{i}": "f" * 4000 for i in range(14)}   # ~56 KiB besides the token
    status, h, _ = sidecar.http("GET", "/auth", {**filler, "Authorization": header(minted)[0]})
    assert status == 200
    assert h["x-remote-user"] == "alice"


def test_head_over_limit_is_431_and_closed(sidecar: Sidecar) -> None:
    filler = {f"X-Filler-{i}": "f" * 8000 for i in range(9)}   # 72 KiB
    status, h, _body = sidecar.http("GET", "/auth", filler)
    assert status == 431
    assert h["connection"] == "close"


def test_body_over_limit_is_413(sidecar: Sidecar) -> None:
    status, _, _ = sidecar.http("POST", "/auth", {"Content-Type": "application/octet-stream"}, b"x" * 70000)
    assert status == 413


def test_small_body_is_ignored(sidecar: Sidecar, minted: Minted) -> None:
    status, _h, _ = sidecar.http("POST", "/auth/upload", {"Authorization": header(minted)[0]}, b'{"a": 1}')
    assert status == 200


def test_not_http_is_400(sidecar: Sidecar) -> None:
    s = sidecar.connect()
    s.sendall(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
    data = recv_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 ")


def test_unknown_path_is_404(sidecar: Sidecar) -> None:
    assert sidecar.http("GET", "/")[0] == 404


def test_healthz(sidecar: Sidecar) -> None:
    status, _h, body = sidecar.http("GET", "/healthz")
    doc = json.loads(body)
    assert status == 200 and doc["ready"] is True
    assert doc["kvnos"] == {SERVICE: 1}
    assert doc["replay_cache"]["spec"] == "memory"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_decisions(sidecar: Sidecar, minted: Minted) -> None:
    before = sidecar.http("GET", "/metrics")[2].decode()
    v = header(minted, 3)
    for x in (v[0], v[1], v[1], "Negotiate AAAA"):
        sidecar.http("GET", "/auth", {"Authorization": x})
    sidecar.http("GET", "/auth")
    status, h, body = sidecar.http("GET", "/metrics")
    text = body.decode()
    assert status == 200 and h["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return _metric(text, name, **labels) - _metric(before, name, **labels)

    assert delta("fastkrb_decisions_total", outcome="accepted", code="ok") == 2
    assert delta("fastkrb_decisions_total", outcome="rejected", code="replay") == 1
    assert delta("fastkrb_decisions_total", outcome="rejected", code="malformed") == 1
    assert delta("fastkrb_decisions_total", outcome="challenged", code="no_token") == 1
    assert delta("fastkrb_validation_seconds_count") == 4
    assert delta("fastkrb_clock_skew_seconds_count") == 2
    assert _metric(text, "fastkrb_keytab_kvno", principal=SERVICE) == 1
    assert _metric(text, "fastkrb_replay_cache_entries") >= 2
    assert _metric(text, "fastkrb_workers") == 1
    assert _metric(text, "fastkrb_ready") == 1
    assert "fastkrb_keytab_age_seconds" in text


def test_log_has_one_line_per_decision_and_never_the_token(sidecar: Sidecar, minted: Minted) -> None:
    time.sleep(0.5)  # earlier tests' lines are flushed on the daemon's tick
    n0 = len([e for e in sidecar.events() if e.get("event") == "decision"])
    vals = header(minted, 2)
    for v in vals:
        assert sidecar.http("GET", "/auth", {"Authorization": v}, )[0] == 200
    time.sleep(0.5)
    text = sidecar.log.read_text()
    decisions = [e for e in sidecar.events() if e.get("event") == "decision"]
    assert len(decisions) == n0 + 2
    last: dict[str, Any] = decisions[-1]
    assert last["outcome"] == "accepted" and last["code"] == "ok"
    assert last["client"] == CLIENT and last["server"] == SERVICE
    assert last["enctype"] == minted.ticket_enctype and last["kvno"] == 1
    assert last["frontend"] == "http" and last["peer"].startswith("uid=")
    assert isinstance(last["latency_us"], float) and "time" in last
    for v in vals:
        b64 = v.split()[1]
        for i in range(0, len(b64) - 32, 32):   # no 32-character piece of any token
            assert b64[i:i + 32] not in text
    # nor the session key or the service key
    keys = [minted.session_key.hex(), minted.server_key.hex(), base64.b64encode(minted.session_key).decode()]
    assert not any(k in text for k in keys)


def test_validator_agrees(keytab: Path, minted: Minted, sidecar: Sidecar) -> None:
    """The daemon's verdicts are the library's: the same token, the same code."""
    lib = Validator(str(keytab), replay_cache="none")
    other = mint(make_keytab((SERVICE,), rng=random.Random(5)), client=CLIENT, server=SERVICE, now=time.time() + 1)
    for value in (other.header, "Negotiate " + base64.b64encode(b"\x60\x03\x06\x01\x00").decode()):
        try:
            lib.validate(value)
            code = "ok"
        except Exception as exc:
            code = exc.code  # type: ignore[attr-defined]
        _, h, _ = sidecar.http("GET", "/auth", {"Authorization": value})
        assert h.get("x-auth-error") == code


def test_header_values_cannot_split_a_header() -> None:
    from fastkrb.sidecar.http import header_value

    assert header_value("alice") == b"alice"
    assert header_value("jürgen") == "jürgen".encode()
    assert header_value("evil\r\nX-Remote-User: root") == b"evil%0D%0AX-Remote-User: root"
    assert b"\n" not in header_value("a\u2028b\x85c\x7f")
