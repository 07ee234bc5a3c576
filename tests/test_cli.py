"""The `fastkrb` command: exit codes, JSON, and that secrets stay out of the output."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_800_000_000


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastkrb", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_validate_inspect_and_list(tmp_path: Path) -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18, 17), kvno=4, rng=random.Random(1))
    path = tmp_path / "svc.keytab"
    kt.save(path)
    m = mint(kt, server=SPN, now=NOW, framing="header", rng=random.Random(2))

    ok = run("validate", "--keytab", str(path), "--now", str(NOW), "--json", m.token)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] and data["client"] == "alice@EXAMPLE.TEST" and data["kvno"] == 4
    assert m.session_key.hex() not in ok.stdout

    late = run("validate", "--keytab", str(path), "--now", str(NOW + 3600), "-", stdin=m.token)
    assert late.returncode == 1
    assert "REJECTED [clock_skew]" in late.stdout and "fix:" in late.stdout

    insp = run("inspect", "--json", m.token)
    assert insp.returncode == 0
    info = json.loads(insp.stdout)
    assert info["server"] == SPN and info["ticket_kvno"] == 4 and info["framing"] == "spnego"

    deep = run("inspect", "--keytab", str(path), "--now", str(NOW), m.token)
    assert deep.returncode == 0 and "alice@EXAMPLE.TEST" in deep.stdout
    assert m.session_key.hex() not in deep.stdout

    listing = run("keytab", "list", str(path))
    assert listing.returncode == 0
    assert listing.stdout.count(SPN) == 2 and "aes256-cts-hmac-sha1-96(18)" in listing.stdout
    assert all(e.key.hex() not in listing.stdout for e in kt.entries)


def test_ntlm_is_named() -> None:
    out = run("inspect", "Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==")
    assert out.returncode == 1
    assert "NTLM" in out.stdout


def test_bad_keytab_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.keytab"
    bad.write_bytes(b"\x05\x02\x00\x00\x00\x10garbage")
    out = run("keytab", "list", str(bad))
    assert out.returncode == 2 and "error [bad_keytab]" in out.stderr


def test_a_file_error_is_a_sentence_with_the_path(tmp_path: Path) -> None:
    """A file the command cannot write is named (not the temporary file beside it), with no errno or traceback."""
    target = tmp_path / "missing-dir" / "dev.keytab"
    r = run("dev", "init", "--spn", "HTTP/api.example.test", "--keytab", str(target))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: {target}: no such file or directory; check that the path exists and that user "
                     f"{lines[0].split('user ', 1)[1].split(' may', 1)[0]} may use it (owner, mode, the directories "
                     f"above it)"], r.stderr
    assert "Errno" not in r.stderr and "Traceback" not in r.stderr and ".keytab-" not in r.stderr
    assert not target.parent.exists()
