"""Configuration: flags > TOML file > FASTKRB_* environment > defaults, and ``fastkrb serve --check``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fastkrb.sidecar.config import ConfigError, ServerConfig, load_config, parse_args, redact_url
from fastkrb.testing import make_keytab

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture
def keytab(tmp_path: Path) -> Path:
    p = tmp_path / "k.keytab"
    p.write_bytes(make_keytab(("HTTP/a.example.test@EXAMPLE.TEST",), rng=random.Random(1)).to_bytes())
    return p


def test_defaults(keytab: Path) -> None:
    cfg = load_config(parse_args(["--keytab", str(keytab)]), env={})
    assert cfg.socket == "/run/fastkrb/fastkrb.sock" and cfg.tcp is None
    assert cfg.workers == (os.cpu_count() or 1)
    assert cfg.max_request_size == 65536 and cfg.clock_skew == 300 and cfg.cold_start is True
    assert cfg.socket_mode == 0o660 and cfg.allow_uids is None


def test_precedence_flags_over_file_over_env(tmp_path: Path, keytab: Path) -> None:
    toml = tmp_path / "fastkrb.toml"
    toml.write_text(f'[serve]\nkeytab = "{keytab}"\nworkers = 3\nclock_skew = 120\n'
                    'principals = ["HTTP/a.example.test"]\nsocket_mode = "0600"\n')
    env = {"FASTKRB_WORKERS": "5", "FASTKRB_CLOCK_SKEW": "60", "FASTKRB_MAX_CONNECTIONS": "77",
           "FASTKRB_ALLOW_UIDS": "0,1000", "FASTKRB_CONFIG": str(toml)}
    cfg = load_config(parse_args(["--workers", "2"]), env=env)
    assert cfg.workers == 2                     # flag beats file and env
    assert cfg.clock_skew == 120                # file beats env
    assert cfg.max_connections == 77            # env beats default
    assert cfg.allow_uids == [0, 1000]          # comma list from the environment
    assert cfg.principals == ["HTTP/a.example.test"]
    assert cfg.socket_mode == 0o600
    assert cfg.keytab == str(keytab)
    # --config beats FASTKRB_CONFIG
    other = tmp_path / "other.toml"
    other.write_text(f'keytab = "{keytab}"\nworkers = 4\n')
    assert load_config(parse_args(["--config", str(other)]), env=env).workers == 4


def test_repeatable_and_comma_flags(keytab: Path) -> None:
    cfg = load_config(parse_args(["--keytab", str(keytab), "--principal", "HTTP/a", "--principals", "HTTP/b,HTTP/c",
                                  "--enctypes", "18,17", "--no-cold-start", "--no-log-decisions"]), env={})
    assert cfg.principals == ["HTTP/a", "HTTP/b", "HTTP/c"]
    assert cfg.enctypes == [18, 17] and cfg.cold_start is False and cfg.log_decisions is False


@pytest.mark.parametrize("argv, env, message", [
    ([], {}, "no keytab"),
    (["--keytab", "k", "--workers", "0"], {}, "workers"),
    (["--keytab", "k", "--workers", "two"], {}, "--workers"),
    (["--keytab", "k"], {"FASTKRB_CLOCK_SKEW": "soon"}, "environment"),
    (["--keytab", "k", "--tcp", "0.0.0.0:8181"], {}, "not a loopback"),
    (["--keytab", "k", "--tcp", "nonsense"], {}, "HOST:PORT"),
    (["--keytab", "k", "--replay-cache", "ftp://x"], {}, "unknown replay cache"),
    (["--keytab", "k", "--socket", "none"], {}, "nothing to listen on"),
    (["--keytab", "k", "--max-request-size", "100"], {}, "max_request_size"),
])
def test_bad_configurations_name_the_problem(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(parse_args(argv), env=env)


def test_remote_tcp_needs_explicit_consent(keytab: Path) -> None:
    cfg = load_config(parse_args(["--keytab", str(keytab), "--tcp", "0.0.0.0:8181", "--tcp-allow-remote"]), env={})
    assert cfg.tcp_address() == ("0.0.0.0", 8181)
    assert load_config(parse_args(["--keytab", "k", "--tcp", "[::1]:99"]), env={}).tcp_address() == ("::1", 99)


def test_unknown_file_option_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('keytab = "k"\nworkerz = 2\n')
    with pytest.raises(ConfigError, match="workerz"):
        load_config(parse_args(["--config", str(toml)]), env={})
    toml.write_text("keytab = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(parse_args(["--config", str(toml)]), env={})


def test_redis_password_is_redacted() -> None:
    assert redact_url("redis://user:s3cret@10.0.0.1:6379/0") == "redis://user:***@10.0.0.1:6379/0"
    assert redact_url("redis://:s3cret@h") == "redis://:***@h"
    assert redact_url("memory") == "memory"
    cfg = ServerConfig(keytab="k", replay_cache="redis://u:s3cret@h")
    assert "s3cret" not in str(cfg.public_dict())


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FASTKRB_")}
    e["PYTHONPATH"] = SRC
    return subprocess.run([sys.executable, "-m", "fastkrb", "serve", *args], env={**e, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_check_accepts_a_good_configuration(tmp_path: Path, keytab: Path) -> None:
    out = _serve("--check", "--keytab", str(keytab), "--socket", str(tmp_path / "s.sock"), "--workers", "2",
                 "--replay-cache", "redis://u:topsecret@127.0.0.1:6379")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "configuration ok" in out.stdout
    assert "topsecret" not in out.stdout
    assert not (tmp_path / "s.sock").exists()   # --check binds nothing


def test_check_refuses_a_broken_keytab_and_a_missing_principal(tmp_path: Path, keytab: Path) -> None:
    bad = tmp_path / "bad.keytab"
    bad.write_bytes(b"\x05\x02\x00\x00\x00\x40garbage")
    out = _serve("--check", "--keytab", str(bad), "--socket", str(tmp_path / "s.sock"))
    assert out.returncode == 2 and "keytab" in out.stdout
    out = _serve("--check", "--keytab", str(keytab), "--socket", str(tmp_path / "s.sock"),
                 "--principal", "HTTP/other.example.test")
    assert out.returncode == 2 and "HTTP/other.example.test" in out.stdout
    out = _serve("--check", "--keytab", str(keytab), "--socket", "/nonexistent-dir/sub/s.sock")
    assert out.returncode == 2
    assert "error: cannot create /nonexistent-dir/sub: its parent /nonexistent-dir does not exist" in out.stdout


def test_check_warns_about_unshared_replay_caches(tmp_path: Path, keytab: Path) -> None:
    out = _serve("--check", "--keytab", str(keytab), "--socket", str(tmp_path / "s.sock"), "--workers", "2",
                 "--replay-cache", "memory")
    assert out.returncode == 0
    assert "warning: replay_cache = memory with 2 workers" in out.stdout


def test_serve_refuses_to_start_without_a_usable_keytab(tmp_path: Path) -> None:
    out = _serve("--keytab", str(tmp_path / "missing.keytab"), "--socket", str(tmp_path / "s.sock"))
    assert out.returncode == 2
    assert "missing.keytab" in out.stderr
    assert not (tmp_path / "s.sock").exists()
