"""Sidecar configuration: flags, then a TOML file, then ``FASTKRB_*`` variables, then defaults.

One table of options drives all three sources, so a setting has the same name everywhere
(``--max-connections`` / ``max_connections = ...`` / ``FASTKRB_MAX_CONNECTIONS``). ``check()`` is what
``fastkrb serve --check`` runs: everything that can be known before binding a socket.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import ipaddress
import os
import pwd
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConfigError", "ServerConfig", "add_arguments", "check", "load_config", "policy_problems", "redact_url"]

DEFAULT_SOCKET = "/run/fastkrb/fastkrb.sock"


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the option and its source."""


@dataclass
class ServerConfig:
    """Every sidecar setting; the defaults are what an unconfigured ``fastkrb serve`` does."""

    keytab: str = ""
    socket: str | None = DEFAULT_SOCKET      # None: TCP only
    socket_mode: int = 0o660
    socket_group: str | None = None
    tcp: str | None = None                   # "127.0.0.1:8181"
    tcp_allow_remote: bool = False           # a non-loopback TCP address needs this on purpose
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    replay_cache: str | None = None          # None: shared memory beside the socket (memory without it)
    replay_capacity: int = 1 << 20           # live entries: peak validations/s x 2 x clock_skew suffices
    principals: list[str] | None = None
    clock_skew: float = 300.0
    cold_start: bool = True
    enctypes: list[int] = field(default_factory=lambda: [20, 19, 18, 17])
    allowed_realms: list[str] | None = None
    max_connections: int = 1024              # per worker
    max_request_size: int = 64 * 1024        # HTTP head, HTTP body, binary frame
    idle_timeout: float = 75.0               # a keep-alive connection with nothing in flight
    request_timeout: float = 10.0            # a started request must be complete by then
    drain_timeout: float = 10.0              # SIGTERM: finish in-flight work for at most this long
    allow_uids: list[int] | None = None      # SO_PEERCRED allow-list on the Unix socket
    allow_gids: list[int] | None = None
    reload_interval: float = 1.0             # keytab change detection (stat) period
    log_decisions: bool = True
    log_file: str | None = None              # None: standard error
    metrics_dir: str | None = None           # None: a private temporary directory
    group_names: str | None = None           # the SID -> name map file (fastkrb groups sync), reloaded on change
    remote_groups: str = "off"               # X-Remote-Groups: "sid", "name" or "off"
    dev: bool = False                        # a dev run: a `fastkrb dev init` keytab may be served
    native_front: bool = True                # the common requests answered in C (sidecar/conn.py); off: Python's path
    policies: dict[str, dict[str, list[str]]] = field(default_factory=dict)   # [policies.NAME] tables
    check: bool = False

    def replay_spec(self) -> str:
        """The replay cache the workers open: shared memory by default, so every worker sees every token."""
        if self.replay_cache:
            return self.replay_cache
        if self.socket:
            return "shm:" + os.path.join(os.path.dirname(os.path.abspath(self.socket)), "fastkrb-replay.shm")
        return "memory"   # TCP only: no directory of ours to put the file in; keytab_problems() warns for workers > 1

    def tcp_address(self) -> tuple[str, int] | None:
        if not self.tcp:
            return None
        host, _, port = self.tcp.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        return host, int(port)

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration for logs and --check (a Redis password is masked)."""
        d = dataclasses.asdict(self)
        d["replay_cache"] = redact_url(self.replay_spec())
        d["socket_mode"] = oct(self.socket_mode)
        d.pop("check", None)
        return d


def redact_url(spec: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: a password never reaches a log."""
    if "://" in spec and "@" in spec:
        scheme, rest = spec.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
        return f"{scheme}://***@{host}"
    return spec


# -- the option table ---------------------------------------------------------------------------------

def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _mode(v: Any) -> int:
    if isinstance(v, int):
        return v
    return int(str(v), 8)


def _strs(v: Any) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [x.strip() for x in str(v).split(",") if x.strip()]


def _ints(v: Any) -> list[int]:
    return [int(x) for x in _strs(v)]


def _uids(v: Any) -> list[int]:
    return [int(x) if str(x).isdigit() else pwd.getpwnam(str(x)).pw_uid for x in _strs(v)]


def _gids(v: Any) -> list[int]:
    return [int(x) if str(x).isdigit() else grp.getgrnam(str(x)).gr_gid for x in _strs(v)]


def _remote_groups(v: Any) -> str:
    s = str(v).strip().lower()
    if s not in ("sid", "name", "off"):
        raise ValueError("want sid, name or off")
    return s


def _opt_str(v: Any) -> str | None:
    s = str(v)
    return None if s.lower() in ("", "none") else s


# name -> (converter, flag help). Lists take repeatable flags, comma lists in the environment, arrays in TOML.
_OPTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "keytab": (str, "the service keytab (reloaded when the file changes, and on SIGHUP)"),
    "socket": (_opt_str, f"Unix socket to listen on (default {DEFAULT_SOCKET}; 'none' for TCP only)"),
    "socket_mode": (_mode, "octal mode of the socket file (default 0660)"),
    "socket_group": (_opt_str, "group owning the socket file (the proxy's group)"),
    "tcp": (_opt_str, "also listen on HOST:PORT (loopback unless --tcp-allow-remote)"),
    "tcp_allow_remote": (_bool, "permit a non-loopback --tcp address"),
    "workers": (int, "worker processes (default: one per core)"),
    "replay_cache": (_opt_str, "memory | shm:/path | redis://... | none (default: shm beside the socket)"),
    "replay_capacity": (int, "live entries the replay cache holds (default 1048576; full = fail closed)"),
    "principals": (_strs, "accepted server principal (repeatable; default: every principal in the keytab)"),
    "clock_skew": (float, "permitted clock skew in seconds (default 300)"),
    "cold_start": (_bool, "RFC 4120 §3.2.3 rule for an empty replay cache (default true)"),
    "enctypes": (_ints, "permitted enctypes (default 20,19,18,17)"),
    "allowed_realms": (_strs, "client realms accepted (repeatable; '*' for any; default: the keytab's)"),
    "max_connections": (int, "open connections per worker (default 1024)"),
    "max_request_size": (int, "largest HTTP head, HTTP body or binary frame in bytes (default 65536)"),
    "idle_timeout": (float, "close a keep-alive connection idle this long (s, default 75)"),
    "request_timeout": (float, "a started request must be complete within this (s, default 10)"),
    "drain_timeout": (float, "on SIGTERM, finish in-flight requests for at most this (s, default 10)"),
    "allow_uids": (_uids, "peer uids (or user names) allowed on the Unix socket (SO_PEERCRED)"),
    "allow_gids": (_gids, "peer gids (or group names) allowed on the Unix socket (SO_PEERCRED)"),
    "reload_interval": (float, "how often the keytab file is checked for changes (s, default 1)"),
    "log_decisions": (_bool, "one JSON line per decision (default true)"),
    "log_file": (_opt_str, "append JSON log lines to this file (default: standard error)"),
    "metrics_dir": (_opt_str, "directory for the workers' metric snapshots (default: a private temp dir)"),
    "group_names": (_opt_str, "SID -> group name map file (fastkrb groups sync writes it; reloaded on change): "
                              "group names in policies, and X-Remote-Groups names"),
    "remote_groups": (_remote_groups, "X-Remote-Groups on success: sid, name or off (default off)"),
    "dev": (_bool, "a dev run: permit a `fastkrb dev init` keytab (refused otherwise: its keys are throwaway)"),
    "native_front": (_bool, "answer the common requests in native code, the rest in Python (default true; the "
                            "answers are the same either way)"),
}
_LISTS = {"principals", "allowed_realms", "allow_uids", "allow_gids", "enctypes"}
_BOOLS = {"tcp_allow_remote", "cold_start", "log_decisions", "dev", "native_front"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``fastkrb serve`` flags; every default is None so that unset flags fall through to the file."""
    p.add_argument("--config", help="TOML file ([serve] table or top level); also $FASTKRB_CONFIG")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit (0 ok, 2 not)")
    for name, (_, help_) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name in _BOOLS:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif name in _LISTS:
            p.add_argument(flag, dest=name, action="append", default=None, help=help_)
        else:
            p.add_argument(flag, dest=name, default=None, help=help_)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError as exc:  # Python 3.10
        raise ConfigError("--config needs Python 3.11 (tomllib)") from exc
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from exc
    table = data.get("serve", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path!r}: [serve] must be a table")
    out = {str(k).replace("-", "_"): v for k, v in table.items()}
    if table is not data and "policies" in data:   # [policies.NAME] beside [serve]
        if "policies" in out:
            raise ConfigError(f"config file {path!r}: policies both in [serve] and beside it")
        out["policies"] = data["policies"]
    return out


_POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_POLICY_KEYS = ("allowed_users", "allowed_groups", "allowed_realms")


def _policies(raw: Any, source: str) -> dict[str, dict[str, list[str]]]:
    """The [policies.NAME] tables: each a table of allowed_users / allowed_groups / allowed_realms arrays."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: policies must be tables ([policies.NAME])")
    out: dict[str, dict[str, list[str]]] = {}
    for name, table in raw.items():
        if not _POLICY_NAME.fullmatch(str(name)):
            raise ConfigError(f"{source}: policy name {name!r}: letters, digits, '_', '.', '-' (at most 64)")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [policies.{name}] must be a table")
        unknown = sorted(set(table) - set(_POLICY_KEYS))
        if unknown:
            raise ConfigError(f"{source}: [policies.{name}]: unknown key(s) {', '.join(unknown)} "
                              f"({', '.join(_POLICY_KEYS)})")
        rules: dict[str, list[str]] = {}
        for key, values in table.items():
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"{source}: [policies.{name}] {key} must be an array of non-empty strings")
            rules[key] = [v.strip() for v in values]
        out[str(name)] = rules
    return out


def load_config(args: argparse.Namespace | Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> ServerConfig:
    """Merge the three sources (flags > TOML > environment > defaults) into one checked ServerConfig."""
    flags = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    env = os.environ if env is None else env
    cfg_path = flags.get("config") or env.get("FASTKRB_CONFIG")
    layers: list[tuple[str, dict[str, Any]]] = [
        ("flag", {k: v for k, v in flags.items() if k in _OPTIONS and v is not None}),
        (f"config file {cfg_path}", _read_toml(cfg_path) if cfg_path else {}),
        ("environment", {k[8:].lower(): v for k, v in env.items()
                         if k.startswith("FASTKRB_") and k[8:].lower() in _OPTIONS}),
    ]
    file_source, file_layer = layers[1]
    policies = _policies(file_layer.pop("policies"), file_source) if "policies" in file_layer else {}
    for source, layer in layers[1:2]:
        unknown = sorted(set(layer) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, (conv, _) in _OPTIONS.items():
        for source, layer in layers:
            if name in layer:
                raw = layer[name]
                if source == "flag" and name in _LISTS:  # repeatable flags, each maybe a comma list
                    raw = [x for item in raw for x in _strs(item)]
                try:
                    values[name] = conv(raw)
                except (ValueError, KeyError, TypeError) as exc:
                    flag = "--" + name.replace("_", "-") if source == "flag" else name
                    raise ConfigError(f"{source}: bad value for {flag}: {raw!r} ({exc})") from None
                break
    cfg = ServerConfig(**values, policies=policies, check=bool(flags.get("check")))
    _validate(cfg)
    return cfg


def _validate(cfg: ServerConfig) -> None:
    if not cfg.keytab:
        raise ConfigError("no keytab: give --keytab, keytab = in the config file, or FASTKRB_KEYTAB")
    if not cfg.socket and not cfg.tcp:
        raise ConfigError("nothing to listen on: give --socket or --tcp")
    if cfg.workers < 1:
        raise ConfigError("workers must be >= 1")
    for name in ("max_connections", "max_request_size", "replay_capacity"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1")
    if cfg.max_request_size < 1024:
        raise ConfigError("max_request_size below 1024 bytes cannot carry a Kerberos token")
    for name in ("idle_timeout", "request_timeout", "drain_timeout", "reload_interval", "clock_skew"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0")
    if cfg.remote_groups == "name" and not cfg.group_names:
        raise ConfigError("remote_groups = name needs group_names (the SID -> name map file)")
    if cfg.tcp:
        try:
            host, port = cfg.tcp_address()  # type: ignore[misc]
        except ValueError:
            raise ConfigError(f"--tcp must be HOST:PORT, not {cfg.tcp!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"--tcp port {port} out of range")
        if not cfg.tcp_allow_remote and not _is_loopback(host):
            raise ConfigError(f"--tcp {cfg.tcp} is not a loopback address: anyone who can reach it could use the "
                              "validator as an oracle. Use 127.0.0.1, or --tcp-allow-remote if that is intended.")
    from fastkrb.replay import parse_replay_spec

    spec = cfg.replay_spec()
    try:
        parse_replay_spec(spec)
    except ValueError:   # its text would echo the spec, and with it a Redis password
        raise ConfigError(f"unknown replay cache {redact_url(spec)!r} (memory, shm:/path, redis://..., none)") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(cfg: ServerConfig) -> list[str]:
    """Problems ``fastkrb serve --check`` reports (empty: the daemon would start). Warnings start with 'warning:'."""
    problems: list[str] = []
    from fastkrb.errors import KerberosError
    from fastkrb.keytab import Keytab

    try:
        kt = Keytab.load(cfg.keytab)
        problems += keytab_problems(kt, cfg)
    except KerberosError as exc:
        problems.append(f"keytab: {exc.cause}")
    if cfg.socket:
        d = os.path.dirname(os.path.abspath(cfg.socket)) or "."
        if not os.path.isdir(d):
            problems.append(f"socket: directory {d} does not exist")
        elif not os.access(d, os.W_OK | os.X_OK):
            problems.append(f"socket: directory {d} is not writable by this user")
        if cfg.socket_group:
            try:
                grp.getgrnam(cfg.socket_group)
            except KeyError:
                problems.append(f"socket_group: no group named {cfg.socket_group!r}")
    problems += policy_problems(cfg)
    from fastkrb.replay import parse_replay_spec

    rs = parse_replay_spec(cfg.replay_spec())
    if rs.kind == "none":
        problems.append("warning: replay_cache = none: a replayed token will be accepted")
    elif rs.kind == "memory" and cfg.workers > 1:
        problems.append(f"warning: replay_cache = memory with {cfg.workers} workers: each worker has its own "
                        "cache, so a token replayed to another worker is accepted; use shm:/path")
    elif rs.kind == "shm":
        d = os.path.dirname(os.path.abspath(rs.location)) or "."
        if not os.path.isdir(d) or not os.access(d, os.W_OK | os.X_OK):
            problems.append(f"replay_cache: directory {d} for the shared-memory file is missing or not writable")
    if cfg.allow_uids is None and cfg.allow_gids is None and cfg.socket and cfg.socket_mode & 0o006:
        problems.append("warning: the socket is open to every local user (mode grants 'other') and no "
                        "allow_uids/allow_gids is set")
    return problems


def keytab_problems(kt: Any, cfg: ServerConfig) -> list[str]:
    """Why a keytab cannot serve this configuration (used at start, on reload, and by --check): the
    Validator's own start-up checks (a usable key, the principals, the enctypes), each with its fix, and a
    dev-only keytab outside a dev run."""
    from fastkrb.errors import KerberosError
    from fastkrb.keytab import is_dev_only
    from fastkrb.validator import check_configuration

    if is_dev_only(kt) and not cfg.dev:
        return [f"keytab {cfg.keytab}: a `fastkrb dev init` keytab (throwaway keys no KDC knows) refused outside "
                "a dev run. Fix: give the service's real keytab, or --dev / dev = true if this is a dev run."]
    try:
        check_configuration(kt, cfg.principals or None, tuple(cfg.enctypes))
    except KerberosError as exc:
        return [f"keytab {cfg.keytab}: {exc.cause} Fix: {exc.fix}"]
    return []


def policy_problems(cfg: ServerConfig) -> list[str]:
    """Why the group map or a named policy cannot be loaded (used at start and by --check)."""
    if not cfg.group_names and not cfg.policies:
        return []
    from fastkrb.sidecar.policies import PolicyBook

    try:
        PolicyBook.from_config(cfg)
    except ValueError as exc:   # GroupNameError, PolicyError
        return [f"policies: {exc}"]
    return []


def main_check(cfg: ServerConfig, out: Any = None) -> int:
    """Print the effective configuration and every problem; 0 when none is fatal."""
    import json

    out = out or sys.stdout
    problems = check(cfg)
    fatal = [p for p in problems if not p.startswith("warning:")]
    print(json.dumps(cfg.public_dict(), indent=2, sort_keys=True), file=out)
    for p in problems:
        print(p, file=out)
    print("configuration ok" if not fatal else f"configuration has {len(fatal)} problem(s)", file=out)
    return 0 if not fatal else 2


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastkrb serve")
    add_arguments(p)
    return p.parse_args(list(argv))
