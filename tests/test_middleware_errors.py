"""What a refused request shows, in every middleware: the 401/403 body says the code, the cause and the fix
(JSON when Accept asks for it, text otherwise) and never the token or a key; the refusal is a WARNING on
``fastkrb.http`` (rate-limited), the first challenge only DEBUG; and under real uvicorn with its default
logging the cause reaches the terminal (Python's last-resort handler), which is what a developer sees.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import wsgiref.util
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fastkrb import Validator
from fastkrb.errors import KerberosError, MalformedToken, Replay
from fastkrb.testing import make_keytab, mint
from fastkrb.web import wsgi as fk_wsgi
from fastkrb.web.negotiate import RejectionLog, rejection_log, wants_json
from support.http_clients import EXAMPLES, Apps, behind_middleware, negotiate_header, service_validator
from support.mitgss import initiator_verdict

JSON = "application/json"
KINDS = ["asgi", "wsgi", "aiohttp"]
ROOT = EXAMPLES.parent


serve = behind_middleware   # the framework's server with the middleware in front of a hello app, on a free port


def get(port: int, authorization: str | None = None, accept: str | None = None) -> httpx.Response:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=30)


def assert_no_token(header: str, raw: bytes, *texts: str | bytes) -> None:
    """Neither the header's base64 (nor any 16-character piece of it) nor the token's bytes are in ``texts``."""
    b64 = header.split(" ", 1)[1]
    pieces = [b64[i:i + 16] for i in range(0, len(b64) - 16, 8)]
    for t in texts:
        s = t if isinstance(t, str) else t.decode("latin-1")
        b = t if isinstance(t, bytes) else t.encode("utf-8")
        assert raw not in b and raw[:32] not in b
        assert not any(p in s for p in pieces), "a piece of the token is in the answer or the log"


@pytest.fixture(autouse=True)
def every_refusal_logged() -> Iterator[None]:
    """These tests refuse many tokens a second: lift the shared log's rate limit (tested on its own below)."""
    before, rejection_log.per_second = rejection_log.per_second, 0
    yield
    rejection_log.per_second = before


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fastkrb.http" and r.levelno >= logging.WARNING]


# -- the body and the log of a real refused token, in each middleware -------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_replay_body_has_cause_and_fix_never_the_token(mit_lab: Any, kind: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastkrb.http")
    header = negotiate_header(mit_lab)          # a real token from MIT's initiator
    raw = base64.b64decode(header.split(" ", 1)[1])
    with serve(kind, service_validator(mit_lab)) as port:
        assert get(port, header).status_code == 200
        text = get(port, header)                                   # httpx: Accept */* -> text
        js = get(port, header, accept=f"text/html;q=0.9, {JSON}")   # names JSON -> JSON
    for r in (text, js):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Negotiate" and r.headers["x-auth-error"] == "replay"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert_no_token(header, raw, r.content, "".join(f"{k}: {v}" for k, v in r.headers.items()))

    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    first, cause, fix = text.text.splitlines()
    assert first == "Kerberos authentication failed: replay"
    assert cause.startswith(f"Cause: This authenticator of {mit_lab.realm.user} for ") and "already accepted" in cause
    assert fix == f"Fix: {Replay.default_fix}"

    assert js.headers["content-type"] == JSON
    doc = js.json()
    assert set(doc) == {"error", "cause", "fix"} and doc["error"] == "replay" and doc["fix"] == Replay.default_fix
    assert doc["cause"].startswith(f"This authenticator of {mit_lab.realm.user} for ")

    logged = refusals(caplog)
    assert len(logged) == 2 and all(r.levelno == logging.WARNING for r in logged)
    facts = logged[-1].fastkrb  # type: ignore[attr-defined]
    assert facts["code"] == "replay" and facts["status"] == 401 and facts["client"] == mit_lab.realm.user
    assert facts["cause"] == doc["cause"] and facts["path"] == "/" and facts["method"] == "GET"
    assert facts["peer"].startswith("127.0.0.1") and facts["where"] == kind
    msg = logged[-1].getMessage()
    assert msg.startswith("fastkrb: refused GET / from 127.0.0.1")
    assert f"401 replay, client {mit_lab.realm.user}: {doc['cause']} Fix: {Replay.default_fix}" in msg
    assert_no_token(header, raw, msg, json.dumps(facts))


@pytest.mark.parametrize("kind", KINDS)
def test_mutual_refusal_carries_the_krb_error(mit_lab: Any, kind: str) -> None:
    """A client that asked for mutual authentication gets the KRB-ERROR MIT's acceptor would send in the
    401's challenge, and MIT's own initiator, fed it, names the reason (issue 16: error tokens)."""
    token, init = mit_lab.get_token("svc18", mech="spnego", mutual=True)
    header = "Negotiate " + base64.b64encode(token).decode()
    with serve(kind, service_validator(mit_lab)) as port:
        assert get(port, header).status_code == 200
        r = get(port, header)
    assert r.status_code == 401 and r.headers["x-auth-error"] == "replay"
    scheme, _, b64 = r.headers["www-authenticate"].partition(" ")
    assert scheme == "Negotiate" and b64
    minor, message, _ = initiator_verdict(init, base64.b64decode(b64))
    assert "Request is a replay" in message, (minor, message)


@pytest.mark.parametrize("kind", KINDS)
def test_first_challenge_and_garbage(mit_lab: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastkrb.http")
    with serve(kind, service_validator(mit_lab)) as port:
        plain = get(port)
        plain_js = get(port, accept=JSON)
        assert refusals(caplog) == []                  # the normal browser flow is no warning
        bad = get(port, "Negotiate AAAAAAAA")
    assert plain.status_code == plain_js.status_code == 401
    assert plain.headers["www-authenticate"] == "Negotiate" and "x-auth-error" not in plain.headers
    assert plain.text == "Negotiate authentication required\n"
    assert plain_js.json() == {"error": "unauthorized", "detail": "Negotiate authentication required"}
    challenged = [r for r in caplog.records if r.name == "fastkrb.http" and r.levelno == logging.DEBUG]
    assert len(challenged) == 2 and "challenged GET / from 127.0.0.1" in challenged[0].getMessage()

    assert bad.status_code == 401 and bad.headers["x-auth-error"] == "malformed"
    first, cause, fix = bad.text.splitlines()
    assert first == "Kerberos authentication failed: malformed" and cause.startswith("Cause: The token is not")
    assert fix == f"Fix: {MalformedToken.default_fix}"
    [logged] = refusals(caplog)
    assert "401 malformed: The token is not" in logged.getMessage()


@pytest.mark.parametrize("kind", KINDS)
def test_expose_errors_false_keeps_the_cause_in_the_log(mit_lab: Any, kind: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with serve(kind, service_validator(mit_lab), expose_errors=False) as port:
        text = get(port, "Negotiate AAAAAAAA")
        js = get(port, "Negotiate AAAAAAAA", accept=JSON)
    assert text.text == ("Kerberos authentication failed: malformed\n"
                         "The cause is in the server's log (logger fastkrb.http).\n")
    assert js.json() == {"error": "malformed"}
    logged = refusals(caplog)
    assert len(logged) == 2
    assert all(r.fastkrb["cause"].startswith("The token is not") for r in logged)  # type: ignore[attr-defined]


# -- no secret in any refusal: minted failures of every kind through the real WSGI middleware -------------------

SPN = "HTTP/api.example.test@EXAMPLE.TEST"


def _failure(code: str) -> tuple[Any, Any]:
    """The validator's keytab and a token minted now that it refuses with ``code``."""
    kt = make_keytab(principals=(SPN,), kvno=2)
    now = int(time.time())
    if code == "ticket_expired":
        return kt, mint(kt, authtime=now - 36000, endtime=now - 3600)
    if code == "clock_skew":
        return kt, mint(kt, ctime=now + 3600)
    if code == "key_version_mismatch":
        return kt, mint(make_keytab(principals=(SPN,), kvno=3))
    if code == "integrity":                                       # same name and kvno, another key
        return kt, mint(make_keytab(principals=(SPN,), kvno=2))
    if code == "wrong_principal":
        return kt, mint(make_keytab(principals=("HTTP/other.example.test@EXAMPLE.TEST",), kvno=2))
    if code == "name_mismatch":
        return kt, mint(kt, authenticator_client="mallory@EXAMPLE.TEST")
    assert code == "realm_not_allowed"
    return kt, mint(kt, client="eve@EVIL.TEST")


def _call_wsgi(app: Any, header: str, accept: str) -> tuple[str, list[tuple[str, str]], bytes]:
    environ: dict[str, Any] = {"HTTP_AUTHORIZATION": header, "HTTP_ACCEPT": accept}
    wsgiref.util.setup_testing_defaults(environ)
    box: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        box["status"], box["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    return box["status"], box["headers"], body


@pytest.mark.parametrize("code", ["ticket_expired", "clock_skew", "key_version_mismatch", "integrity",
                                  "wrong_principal", "name_mismatch", "realm_not_allowed"])
def test_no_secret_in_any_refusal(code: str, caplog: pytest.LogCaptureFixture) -> None:
    keytab, minted = _failure(code)
    v = Validator(keytab, cold_start=False)
    with pytest.raises(KerberosError) as direct:
        Validator(keytab, cold_start=False).validate(minted.header)
    assert direct.value.code == code
    app = fk_wsgi.NegotiateMiddleware(Apps().wsgi, v)
    secrets = [minted.token_bytes, minted.session_key, minted.server_key, minted.authenticator,
               minted.enc_ticket_part, minted.ticket]
    for accept in ("*/*", JSON):
        caplog.clear()
        status, headers, body = _call_wsgi(app, minted.header, accept)
        assert status == "401 Unauthorized" and ("X-Auth-Error", code) in headers
        [record] = refusals(caplog)
        logged = record.getMessage() + json.dumps(record.fastkrb)  # type: ignore[attr-defined]
        everything = body + logged.encode() + repr(headers).encode()
        for s in secrets:
            assert s not in everything and s.hex() not in everything.decode("latin-1")
            assert base64.b64encode(s)[:20] not in everything
        assert_no_token(minted.header, minted.token_bytes, body, logged)
        cause = record.fastkrb["cause"]  # type: ignore[attr-defined]
        assert cause[:40] == direct.value.cause[:40]
        text = body.decode()
        if accept == JSON:
            assert json.loads(text) == {"error": code, "cause": cause, "fix": direct.value.fix}
        else:
            assert text == f"Kerberos authentication failed: {code}\nCause: {cause}\nFix: {direct.value.fix}\n"


# -- the log's rate limit and the Accept rule ----------------------------------------------------------------------

def test_rate_limit_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    logger = logging.getLogger("fastkrb.http.ratetest")
    limited = RejectionLog(logger, per_second=3, clock=lambda: clock[0])
    replay, bad = Replay("seen", "again"), MalformedToken("not base64")
    caplog.set_level(logging.WARNING, logger=logger.name)
    for i in range(10):
        limited.refused(replay if i % 2 else bad, "wsgi", peer="10.0.0.1", path="/")
    assert len(caplog.records) == 3
    clock[0] += 0.5
    limited.refused(replay, "wsgi")
    assert len(caplog.records) == 3                       # still the same second
    clock[0] += 1.0
    limited.refused(bad, "asgi", peer="10.0.0.2", method="POST", path="/x")
    summary, line = caplog.records[3:]
    assert summary.getMessage() == ("fastkrb: 8 more refused requests in the last 1.5 s were not logged (at most 3 "
                                    "lines a second): replay 5, malformed 3")
    assert summary.fastkrb == {"event": "suppressed", "counts": {"malformed": 3, "replay": 5}}  # type: ignore[attr-defined]
    assert line.getMessage() == "fastkrb: refused POST /x from 10.0.0.2 (asgi): 401 malformed: not base64 Fix: " + \
        MalformedToken.default_fix
    limited.per_second = 0                                # no limit
    for _ in range(20):
        limited.refused(replay, "wsgi")
    assert len(caplog.records) == 25


@pytest.mark.parametrize("accept, json_wanted", [
    (None, False), ("", False), ("*/*", False), ("text/html,application/xhtml+xml,*/*;q=0.8", False),
    ("application/json", True), ("Application/JSON; charset=utf-8", True), ("text/plain, application/json;q=0.5", True),
    ("application/problem+json", True), ("application/json;q=0", False), ("application/jsonx", False),
])
def test_accept_rule(accept: str | None, json_wanted: bool) -> None:
    assert wants_json(accept) is json_wanted


# -- what a developer sees: real uvicorn, its default logging, the FastAPI example --------------------------------

def test_uvicorn_default_logging_shows_the_cause(mit_lab: Any) -> None:
    """`uvicorn --factory examples.fastapi.app:main` as the example says, no log configuration: uvicorn sets up
    only its own loggers, and the refusal still reaches stderr through Python's last-resort handler."""
    env = {**os.environ, "FASTKRB_KEYTAB": str(mit_lab.keytabs["svc18"]),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "examples.fastapi.app:main",
                             "--host", "127.0.0.1", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port is not None, "".join(seen)
        header = negotiate_header(mit_lab)                 # made after the start: the cache vouches for it
        url = f"http://127.0.0.1:{port}/me"
        assert httpx.get(url, headers={"Authorization": header}, timeout=30).status_code == 200
        replayed = httpx.get(url, headers={"Authorization": header}, timeout=30)
        assert replayed.status_code == 401 and replayed.headers["x-auth-error"] == "replay"
        assert httpx.get(url, headers={"Authorization": "Negotiate AAAAAAAA"}, timeout=30).status_code == 401
        assert httpx.get(url, timeout=30).status_code == 401  # the first challenge: not on the terminal
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    stderr = "".join(seen) + err
    user = mit_lab.realm.user
    lines = [ln for ln in stderr.splitlines() if ln.startswith("fastkrb: ")]
    assert len(lines) == 2, stderr
    assert re.match(rf"fastkrb: refused GET /me from 127\.0\.0\.1:\d+ \(asgi\): 401 replay, client {user}: "
                    rf"This authenticator of {user} for \S+ was already accepted", lines[0]), lines[0]
    assert lines[0].endswith(f"Fix: {Replay.default_fix}")
    assert "401 malformed: The token is not" in lines[1]
    assert_no_token(header, base64.b64decode(header.split(" ", 1)[1]), stderr, out)
    body_cause = replayed.text.splitlines()[1].removeprefix("Cause: ")
    assert f"client {user}: {body_cause} Fix: " in lines[0]          # the body says what the terminal says
