"""`fastkrb validate` as a new user meets it (issue 14): every form a token is printed in is read, a replay shows
across two runs that share a cache, times and flags are decoded, --now takes ISO 8601 or seconds, and the
messages say what they mean: real near-misses only, a cut token called truncated, one key vs keys."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Validator
from fastkrb.diagnose import close_match
from fastkrb.testing import make_keytab, mint
from fastkrb.tools.inspect_token import inspect_token
from fastkrb.tools.present import parse_time, span, when

REPO = Path(__file__).resolve().parents[1]
SPN = "HTTP/api.corp.example@CORP.EXAMPLE"
NOW = 1_796_565_600            # 2026-12-06T14:00:00Z
NOW_ISO = "2026-12-06T14:00:00Z"


def fastkrb(*args: str, stdin: str | bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if isinstance(stdin, bytes):
        p = subprocess.run([sys.executable, "-m", "fastkrb", *args], input=stdin, capture_output=True, timeout=60,
                           env=env, cwd=cwd)
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())
    return subprocess.run([sys.executable, "-m", "fastkrb", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


@pytest.fixture
def svc(tmp_path: Path) -> tuple[Path, Any]:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=3, rng=random.Random(1))
    path = tmp_path / "api.keytab"
    kt.save(path)
    return path, kt


def _minted(kt: Any, seed: int = 4) -> bytes:
    return bytes(mint(kt, server=SPN, now=NOW, rng=random.Random(seed), framing="spnego").token)


# --- 1. every form the other commands print ----------------------------------------------------------------------


def test_every_form_of_a_dev_header_is_accepted(tmp_path: Path) -> None:
    kt = tmp_path / "dev.keytab"
    assert fastkrb("dev", "init", "--spn", "HTTP/api.example.test", "--keytab", str(kt)).returncode == 0
    line = fastkrb("dev", "header", "--user", "alice", "--keytab", str(kt)).stdout.strip()
    assert line.startswith("Authorization: Negotiate ")
    value = line.split(": ", 1)[1]
    b64 = value.split(" ", 1)[1]
    raw = base64.b64decode(b64)
    (tmp_path / "header.txt").write_text(line + "\n")
    (tmp_path / "token.bin").write_bytes(raw)
    forms: list[tuple[tuple[str, ...], str | bytes | None]] = [
        ((line,), None),                                   # what `fastkrb dev header` prints
        ((value,), None),                                  # the header value
        ((b64,), None),                                    # bare base64
        ((raw.hex(),), None),                              # hex, as Wireshark copies bytes
        (("-",), line + "\n"),                             # stdin: the header line
        (("-",), raw),                                     # stdin: the binary token
        ((f"@{tmp_path / 'header.txt'}",), None),          # a text file
        ((f"@{tmp_path / 'token.bin'}",), None),           # a binary file
        (("--file", str(tmp_path / "token.bin")), None),
        (("--file", "-"), raw),
    ]
    for args, stdin in forms:
        # each run has its own private cache (the default): the same token is accepted every time
        out = fastkrb("validate", "--keytab", str(kt), *args, stdin=stdin)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        assert out.stdout.startswith("ACCEPTED alice@DEV.TEST -> HTTP/api.example.test@DEV.TEST"), args


def test_a_real_mit_token_from_a_binary_file(mit_lab: Any, tmp_path: Path) -> None:
    token, _ = mit_lab.get_token("svc18", mech="spnego")
    (tmp_path / "mit.bin").write_bytes(bytes(token))
    out = fastkrb("validate", "--keytab", str(mit_lab.keytabs["svc18"]), f"@{tmp_path / 'mit.bin'}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ACCEPTED alice@FASTKRB.TEST")
    insp = fastkrb("inspect", f"@{tmp_path / 'mit.bin'}")
    assert insp.returncode == 0 and "framing: spnego" in insp.stdout


def test_unreadable_inputs_are_one_sentence(tmp_path: Path, svc: tuple[Path, Any]) -> None:
    path, _ = svc
    missing = fastkrb("validate", "--keytab", str(path), f"@{tmp_path / 'nope.bin'}")
    assert missing.returncode == 2
    assert f"cannot read the token file {tmp_path / 'nope.bin'}" in missing.stderr
    assert "Traceback" not in missing.stderr and "Errno" not in missing.stderr
    empty = fastkrb("validate", "--keytab", str(path), "-", stdin="")
    assert empty.returncode == 2 and "standard input holds no token" in empty.stderr
    none = fastkrb("validate", "--keytab", str(path))
    assert none.returncode == 2 and "no token was given" in none.stderr


# --- 2. decoded times and flags ----------------------------------------------------------------------------------


def test_times_flags_and_enctypes_are_decoded(tmp_path: Path, svc: tuple[Path, Any]) -> None:
    path, kt = svc
    (tmp_path / "t.bin").write_bytes(_minted(kt))
    out = fastkrb("validate", "--keytab", str(path), "--now", str(NOW + 60), f"@{tmp_path / 't.bin'}")
    assert out.returncode == 0, out.stderr
    rows = dict(line.split(None, 1) for line in out.stdout.splitlines()[1:])
    assert rows["now"] == "2026-12-06T14:01:00Z"
    assert rows["end_time"] == "2026-12-07T00:00:00Z (in 9h59m)"
    assert rows["auth_time"] == "2026-12-06T14:00:00Z (1m ago)"
    assert rows["flags"] == "forwardable, renewable, pre-authent"
    assert rows["gss_flags"] == "mutual, conf, integ"
    assert rows["enctype"] == "aes256-cts-hmac-sha1-96(18)"
    assert rows["renew_till"] == "none"
    # a rejection's details are worded the same way
    late = fastkrb("validate", "--keytab", str(path), "--now", str(NOW + 11 * 3600), f"@{tmp_path / 't.bin'}")
    assert late.returncode == 1 and "REJECTED [ticket_expired]" in late.stdout
    assert "  end_time: 2026-12-07T00:00:00Z (1h0m ago)" not in late.stdout   # span drops a zero unit
    assert "  end_time: 2026-12-07T00:00:00Z (1h ago)" in late.stdout
    assert "  ticket_flags: forwardable, renewable, pre-authent" in late.stdout
    # JSON stays raw for scripts
    js = fastkrb("validate", "--json", "--keytab", str(path), "--now", str(NOW), f"@{tmp_path / 't.bin'}")
    assert '"end_time": 1796601600' in js.stdout


def test_span_and_when() -> None:
    assert span(35940) == "9h59m" and span(36000) == "10h" and span(42) == "42s" and span(0.35) == "350ms"
    assert span(2 * 86400 + 3 * 3600 + 5) == "2d3h"
    assert when(NOW + 35940, NOW) == "2026-12-06T23:59:00Z (in 9h59m)"
    assert when(NOW - 180, NOW) == "2026-12-06T13:57:00Z (3m ago)"
    assert when(NOW, NOW) == "2026-12-06T14:00:00Z (now)"


# --- 3. a replay across two runs that share a cache --------------------------------------------------------------


def test_replay_across_two_runs_with_a_shared_shm_cache(tmp_path: Path, svc: tuple[Path, Any]) -> None:
    path, kt = svc
    (tmp_path / "t.bin").write_bytes(_minted(kt))
    shm = tmp_path / "demo.shm"
    args = ("validate", "--keytab", str(path), "--replay", f"shm:{shm}", f"@{tmp_path / 't.bin'}")
    first = fastkrb(*args[:3], "--now", str(NOW), *args[3:])
    assert first.returncode == 0, first.stdout + first.stderr
    assert shm.exists()
    second = fastkrb(*args[:3], "--now", str(NOW + 2), *args[3:])
    assert second.returncode == 1
    assert "REJECTED [replay]" in second.stdout
    assert "was already accepted 2.0 s ago" in second.stdout
    assert "fix:   The same authenticator was presented twice" in second.stdout
    assert "  first_seen: 2026-12-06T14:00:00Z (2s ago)" in second.stdout
    # the default is a cache private to the run: the same token again is accepted
    again = fastkrb("validate", "--keytab", str(path), "--now", str(NOW + 2), f"@{tmp_path / 't.bin'}")
    assert again.returncode == 0
    shm.unlink()
    assert not shm.exists()


def test_replay_help_and_a_bad_spec() -> None:
    text = " ".join(fastkrb("validate", "--help").stdout.split())
    assert "private to this run" in text and "shm:/path" in text
    bad = fastkrb("validate", "--keytab", "x", "--replay", "mem", "YII")
    assert bad.returncode == 2 and "unknown replay cache 'mem'" in bad.stderr and "Traceback" not in bad.stderr


# --- --now -------------------------------------------------------------------------------------------------------


def test_now_takes_iso_8601_and_seconds(tmp_path: Path, svc: tuple[Path, Any]) -> None:
    path, kt = svc
    (tmp_path / "t.bin").write_bytes(_minted(kt))
    for now in (NOW_ISO, str(NOW), "2026-12-06T15:00:00+01:00", "2026-12-06T14:00:00"):
        out = fastkrb("validate", "--keytab", str(path), "--now", now, f"@{tmp_path / 't.bin'}")
        assert out.returncode == 0, (now, out.stdout, out.stderr)
        assert "now               2026-12-06T14:00:00Z" in out.stdout
    insp = fastkrb("inspect", "--keytab", str(path), "--now", NOW_ISO, f"@{tmp_path / 't.bin'}")
    assert insp.returncode == 0 and "now: 2026-12-06T14:00:00Z" in insp.stdout
    bad = fastkrb("validate", "--keytab", str(path), "--now", "yesterday", f"@{tmp_path / 't.bin'}")
    assert bad.returncode == 2
    assert ("'yesterday' is neither an ISO 8601 time (like 2026-12-06T14:00:00Z) nor Unix seconds "
            "(like 1796565600)") in bad.stderr
    assert "Traceback" not in bad.stderr
    assert parse_time(NOW_ISO) == NOW == parse_time(str(NOW)) == parse_time("2026-12-06T14:00:00z")
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_time("12/06/2026")


# --- wording: close matches --------------------------------------------------------------------------------------


@pytest.mark.parametrize("candidate, close", [
    ("HTTP/web.other.example@CORP.EXAMPLE", False),     # shares only the service
    ("HTTP/api.other.example@CORP.EXAMPLE", False),
    ("host/api.corp.example@CORP.EXAMPLE", False),      # another service on the same host
    ("svc-api@CORP.EXAMPLE", False),
    ("HTTP/api.corp.exampel@CORP.EXAMPLE", True),       # a typo: two letters swapped
    ("HTTP/api.corp.exmple@CORP.EXAMPLE", True),        # one letter missing
    ("HTTP/apj.corp.example@CORP.EXAMPLE", True),       # one letter wrong
    ("http/API.corp.example@CORP.EXAMPLE", True),       # letter case
    ("HTTP/api.corp.example@corp.example", True),       # realm case
    ("HTTP/api@CORP.EXAMPLE", True),                    # short host name
    ("HTTP/api.corp.example@OTHER.EXAMPLE", True),      # the same name in another realm
    ("HTTP/api.corp.example@CORP.EXAMPLE", False),      # itself
])
def test_close_match_only_for_real_near_misses(candidate: str, close: bool) -> None:
    assert (close_match(SPN, candidate) is not None) is close


def _reject(keytab: Any, token: bytes | str, now: float = NOW) -> KerberosError:
    with pytest.raises(KerberosError) as info:
        Validator(keytab, cold_start=False, replay_cache="none").validate(token, now=now)
    return info.value


def test_wrong_principal_names_a_close_match_only_when_there_is_one(svc: tuple[Path, Any]) -> None:
    _, kt = svc
    token = _minted(kt)
    far = make_keytab(principals=("HTTP/web.other.example@CORP.EXAMPLE",), enctypes=(18,), kvno=3,
                      rng=random.Random(2))
    err = _reject(far, token)
    assert err.code == "wrong_principal" and "lose match" not in err.cause
    near = make_keytab(principals=("HTTP/api.corp.exampel@CORP.EXAMPLE",), enctypes=(18,), kvno=3,
                       rng=random.Random(3))
    err = _reject(near, token)
    assert err.code == "wrong_principal"
    assert ("Close match in the keytab: HTTP/api.corp.exampel@CORP.EXAMPLE (the host name differs by one "
            "character).") in err.cause
    case = make_keytab(principals=("http/API.corp.example@CORP.EXAMPLE",), enctypes=(18,), kvno=3,
                       rng=random.Random(3))
    assert "differs only in letter case" in _reject(case, token).cause


# --- wording: a truncated token ----------------------------------------------------------------------------------


def _cuts(raw: bytes) -> list[str | bytes]:
    b64 = base64.b64encode(raw).decode()
    # every residue of the base64 length (4k+1 leaves one dangling character), and the binary prefix
    return [*(f"Negotiate {b64[:n]}" for n in (200, 201, 202, 203)), b64[:len(b64) // 2], raw[:300]]


def test_a_cut_token_is_called_truncated(svc: tuple[Path, Any], mit_lab: Any) -> None:
    _, kt = svc
    for keytab, raw in ((kt, _minted(kt)), (str(mit_lab.keytabs["svc18"]),
                                             bytes(mit_lab.get_token("svc18", mech="spnego")[0]))):
        for cut in _cuts(raw):
            err = _reject(keytab, cut)
            assert err.code == "malformed"
            have, announced = err.details["token_bytes"], err.details["announced_bytes"]
            assert announced == len(raw) and have < announced
            assert err.cause.startswith(f"The token is truncated: it ends after {have} of the {announced} bytes "
                                        "its header announces, so it was cut in transit")
            assert "large_client_header_buffers" in err.fix
            rep = inspect_token(cut)
            assert rep["ok"] is False and rep["truncated"] == {"token_bytes": have, "announced_bytes": announced}
            assert rep["error"] == err.cause
    # a bare AP-REQ cut short too
    ap = bytes(mint(kt, server=SPN, now=NOW, rng=random.Random(4), framing="raw").token)
    err = _reject(kt, ap[:100])
    assert err.details["token_bytes"] == 100 and err.details["announced_bytes"] == len(ap)


def test_a_damaged_token_is_not_called_truncated(svc: tuple[Path, Any]) -> None:
    _, kt = svc
    raw = _minted(kt)
    for bad in (b"\x30" + raw[1:], raw + b"\x00", b"\x60\x03\x06\x01\x00\xff"):
        err = _reject(kt, bad)
        assert err.code == "malformed" and "truncated" not in err.cause and "token_bytes" not in err.details
    err = _reject(kt, "Negotiate not*base64")
    assert err.cause.startswith("The token is neither a binary Kerberos/SPNEGO token nor base64 text")


# --- wording: one key, keys --------------------------------------------------------------------------------------


def test_one_key_and_several_keys_are_worded_apart(svc: tuple[Path, Any]) -> None:
    _, kt = svc
    k5 = make_keytab(principals=(SPN,), enctypes=(18,), kvno=5, rng=random.Random(9))
    token = bytes(mint(k5, server=SPN, now=NOW, rng=random.Random(5), framing="spnego").token)
    one = _reject(kt, token)
    assert one.code == "key_version_mismatch"
    assert "newer than the key in the keytab (kvno 3)" in one.cause
    assert "The keytab's aes256-cts-hmac-sha1-96(18) key of another kvno was tried too" in one.cause
    two = make_keytab(principals=(SPN,), enctypes=(18,), kvno=2, rng=random.Random(7))
    for e in kt.entries:
        two.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    many = _reject(two, token)
    assert "newer than every key in the keytab (kvnos 2, 3)" in many.cause
    assert "The keytab's 2 aes256-cts-hmac-sha1-96(18) keys of other kvnos were tried too" in many.cause
    # an SPN the keytab does not name, tried with the account keys: one key, then two
    other = make_keytab(principals=("svc-api@CORP.EXAMPLE",), enctypes=(18,), kvno=3, rng=random.Random(8))
    assert "its only aes256-cts-hmac-sha1-96(18) key does not decrypt it" in _reject(other, token).cause
    other.add("svc-web@CORP.EXAMPLE", bytes(32), enctype=18, kvno=3)
    assert "none of its 2 aes256-cts-hmac-sha1-96(18) keys decrypts it" in _reject(other, token).cause
    for err in (one, many):
        assert "(s)" not in err.cause and "kvnos [" not in err.cause
