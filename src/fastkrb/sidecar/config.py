"""Sidecar configuration: flags, then a TOML file, then ``FASTKRB_*`` variables, then defaults.

One table of options drives all three sources, so a setting has the same name everywhere
(``--max-connections`` / ``max_connections = ...`` / ``FASTKRB_MAX_CONNECTIONS``). ``check()`` is what
``fastkrb serve --check`` runs: everything that can be known before binding a socket.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import grp
import ipaddress
import os
import pwd
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastkrb.errors import ConfigurationError

__all__ = ["CheckReport", "ConfigError", "ServerConfig", "SocketAccess", "StartupError", "add_arguments", "check",
           "challenge_problems", "load_config", "policy_problems", "redact_url", "session_problems", "shm_file_size"]

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
    socket_dir_mode: int = 0o755             # the socket's directory, when fastkrb serve creates it
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
    # sessions after one Negotiate (docs/sessions.md): off unless a key file is given
    session_keys: str | None = None          # session cookie key file: a 200 at /auth sets a cookie
    session_cookie_name: str = "fastkrb_session"
    session_max_age: int = 3600
    session_secure: bool = True
    session_samesite: str | None = "Lax"     # Strict, Lax, None, or None (Python): no attribute
    session_path: str = "/"
    session_cache: int = 10000               # opened session cookies remembered per worker (0: none)
    signing_keys: str | None = None          # signing key file: POST /token, the JWKS, Bearer at /auth
    token_issuer: str | None = None
    token_audience: str | None = None
    token_ttl: int = 300
    # honest challenges (docs/sidecar.md#honest-challenges): whom /auth offers Negotiate; off unless set
    challenge_networks: list[str] | None = None          # CIDRs of the clients offered Negotiate
    trusted_proxies: list[str] | None = None             # CIDRs (or "unix") whose X-Forwarded-For is believed
    challenge_user_agents: list[str] | None = None       # regexes: only these User-Agents are offered
    never_challenge_user_agents: list[str] | None = None  # regexes: these User-Agents never are
    challenge_tried_cookie: str | None = None            # the "tried" cookie's name (off: None)
    challenge_tried_max_age: int = 600
    challenge_tried_secure: bool = True
    challenge_fallback: str | None = None                # page file, or an http(s):// URL to redirect to
    challenge_fallback_status: int = 401                 # 401/403 (page); 401, 302, 303, 307 (redirect)
    ntlm_page: str | None = None                         # page file (or "default") for an NTLM token
    check: bool = False

    def challenge_on(self) -> bool:
        """Whether a challenge rule applies (any option that can withhold the offer or answer NTLM)."""
        return bool(self.challenge_networks or self.challenge_user_agents or self.never_challenge_user_agents
                    or self.challenge_tried_cookie or self.ntlm_page)

    def cookie_settings(self) -> Any:
        """The ``CookieSettings`` of the session_* options (a ``ConfigurationError`` names a bad one)."""
        from fastkrb.sessions.cookie import CookieSettings

        return CookieSettings(name=self.session_cookie_name, max_age=self.session_max_age,
                              secure=self.session_secure, same_site=self.session_samesite,  # type: ignore[arg-type]
                              path=self.session_path)

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
        d["socket_dir_mode"] = oct(self.socket_dir_mode)
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


def _uid(x: str) -> int:
    if x.isdigit():
        return int(x)
    try:
        return pwd.getpwnam(x).pw_uid
    except KeyError:
        raise ValueError(f"there is no user named {x!r} on this host; give an existing user or a uid") from None


def _gid_of(x: str) -> int:
    if x.isdigit():
        return int(x)
    try:
        return grp.getgrnam(x).gr_gid
    except KeyError:
        raise ValueError(f"there is no group named {x!r} on this host; give an existing group or a gid") from None


def _uids(v: Any) -> list[int]:
    return [_uid(x) for x in _strs(v)]


def _gids(v: Any) -> list[int]:
    return [_gid_of(x) for x in _strs(v)]


def _remote_groups(v: Any) -> str:
    s = str(v).strip().lower()
    if s not in ("sid", "name", "off"):
        raise ValueError("want sid, name or off")
    return s


def _opt_str(v: Any) -> str | None:
    s = str(v)
    return None if s.lower() in ("", "none") else s


def _patterns(v: Any) -> list[str]:
    """Regular expressions: an array in TOML, one per flag or environment value (a comma is part of a regex)."""
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [str(v)] if str(v) else []


def _samesite(v: Any) -> str | None:
    s = str(v).strip().lower()
    if s in ("", "off"):
        return None
    if s not in ("strict", "lax", "none"):
        raise ValueError("want Strict, Lax, None or off")
    return s.capitalize()


# name -> (converter, flag help). Lists take repeatable flags, comma lists in the environment, arrays in TOML.
_OPTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "keytab": (str, "the service keytab (reloaded when the file changes, and on SIGHUP)"),
    "socket": (_opt_str, f"Unix socket to listen on (default {DEFAULT_SOCKET}; 'none' for TCP only)"),
    "socket_mode": (_mode, "octal mode of the socket file (default 0660)"),
    "socket_group": (_opt_str, "group owning the socket file: the proxy's (nginx: www-data or nginx), or it "
                               "cannot connect"),
    "socket_dir_mode": (_mode, "octal mode of the socket's directory when fastkrb serve creates it (default 0755)"),
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
    "session_keys": (_opt_str, "session cookie key file (fastkrb keys session new FILE): a 200 at /auth sets a "
                               "session cookie, and a request with a valid one needs no Negotiate (default off)"),
    "session_cookie_name": (str, "the session cookie's name (default fastkrb_session)"),
    "session_max_age": (int, "longest life of a session cookie in seconds, never past the ticket's end "
                             "(default 3600)"),
    "session_secure": (_bool, "the session cookie's Secure attribute: sent over HTTPS only (default true)"),
    "session_samesite": (_samesite, "the session cookie's SameSite attribute: Strict, Lax, None or off "
                                    "(default Lax)"),
    "session_path": (str, "the session cookie's Path (default /)"),
    "session_cache": (int, "opened session cookies each worker remembers, and answers from in native code until "
                           "they end or the key file changes (default 10000; 0: every cookie opened in full)"),
    "signing_keys": (_opt_str, "signing key file (fastkrb keys signing new FILE): POST /token exchanges a "
                               "Negotiate token for a bearer token, /.well-known/jwks.json serves the public keys, "
                               "/auth accepts Authorization: Bearer (default off)"),
    "token_issuer": (_opt_str, "the bearer tokens' iss claim, e.g. the service's https:// URL (needed with "
                               "signing_keys)"),
    "token_audience": (_opt_str, "the bearer tokens' aud claim, the service they are for (needed with "
                                 "signing_keys)"),
    "token_ttl": (int, "longest life of a bearer token in seconds, never past the ticket's end (default 300)"),
    "challenge_networks": (_strs, "client networks (CIDR, repeatable) that /auth offers WWW-Authenticate: Negotiate; "
                                  "others get the fallback without the offer, so no password dialog (default: all)"),
    "trusted_proxies": (_strs, "proxies (CIDR, or 'unix' for a peer on the Unix socket) whose X-Forwarded-For "
                               "names the client for challenge_networks (repeatable; default none)"),
    "challenge_user_agents": (_patterns, "regular expression a User-Agent must match to be offered Negotiate "
                                         "(repeatable)"),
    "never_challenge_user_agents": (_patterns, "regular expression of User-Agents never offered Negotiate "
                                               "(repeatable)"),
    "challenge_tried_cookie": (_opt_str, "name of the cookie the first offer sets: a client back without a token "
                                         "gets the fallback instead of a second offer (default off)"),
    "challenge_tried_max_age": (int, "life of the tried cookie in seconds (default 600)"),
    "challenge_tried_secure": (_bool, "the tried cookie's Secure attribute (default true)"),
    "challenge_fallback": (_opt_str, "what a client not offered Negotiate gets: an HTML page file, or an "
                                     "http(s):// URL to send it to (default: a built-in page)"),
    "challenge_fallback_status": (int, "the fallback's status: 401 (default; what nginx auth_request passes) or "
                                       "403 for a page; 302, 303 or 307 to redirect directly (Envoy, Traefik)"),
    "ntlm_page": (_opt_str, "HTML page file (or 'default') answered, 401 without a new offer, to an NTLM token "
                            "(X-Auth-Error: unsupported_mechanism stays; default off)"),
}
_LISTS = {"principals", "allowed_realms", "allow_uids", "allow_gids", "enctypes", "challenge_networks",
          "trusted_proxies", "challenge_user_agents", "never_challenge_user_agents"}
_PATTERNS = {"challenge_user_agents", "never_challenge_user_agents"}   # repeatable flags, never split at commas
_BOOLS = {"tcp_allow_remote", "cold_start", "log_decisions", "dev", "native_front", "session_secure",
          "challenge_tried_secure"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``fastkrb serve`` flags; every default is None so that unset flags fall through to the file."""
    p.add_argument("--config", help="TOML file ([serve] table or top level); also $FASTKRB_CONFIG")
    p.add_argument("--check", action="store_true", help="check the configuration on this host, bind nothing, and "
                   "exit: 0 without errors (warnings allowed), 2 with")
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
                    raw = list(raw) if name in _PATTERNS else [x for item in raw for x in _strs(item)]
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
    if cfg.session_keys:
        try:
            cfg.cookie_settings()
        except ConfigurationError as exc:
            raise ConfigError(exc.cause) from None
    if not 0 <= cfg.session_cache <= 1 << 24:
        raise ConfigError("session_cache must be between 0 and 16777216 (opened session cookies remembered)")
    if cfg.signing_keys:
        missing = [n for n in ("token_issuer", "token_audience") if not getattr(cfg, n)]
        if missing:
            raise ConfigError(f"signing_keys needs {' and '.join(missing)}: the claims every bearer token carries "
                              "and every verifier checks")
        if cfg.token_ttl < 1:
            raise ConfigError("token_ttl must be >= 1")
    if cfg.challenge_on() or cfg.challenge_fallback:
        from fastkrb.sidecar.challenge import rule_problem

        problem = rule_problem(cfg, files=False)
        if problem is not None:
            raise ConfigError(problem)
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


# -- what the host makes of the configuration: --check, and the start-up's own checks ------------------

PROXY_USERS = ("www-data", "nginx")   # the users nginx's packages run their workers as (Debian, Red Hat)
_SHM_MAGIC = b"FKBRBRC\x01"           # native/shm.c MAGIC, as the file stores it (little-endian)


class StartupError(ConfigurationError):
    """``fastkrb serve`` cannot start on this host: ``cause`` names the object (path, address, group, user),
    ``fix`` says what to change; printed as one sentence, never as a traceback."""

    def sentence(self) -> str:
        return f"{self.cause}; {self.fix}"


def user_name(uid: int) -> str:
    """The user name of ``uid``, or the number when the host has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def whoami() -> str:
    """``user fastkrb (uid 998)``: the daemon's identity as the messages name it."""
    uid = os.geteuid()
    return f"user {user_name(uid)} (uid {uid})"


def _owner_text(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {user_name(st.st_uid)}, group {_group(st.st_gid)}"


def _gids_of(pw: pwd.struct_passwd) -> set[int]:
    """The groups a process of this user has (primary and supplementary, as initgroups gives them)."""
    return {pw.pw_gid, *os.getgrouplist(pw.pw_name, pw.pw_gid)}


def _permits(uid: int, gids: set[int], owner: int, group: int, mode: int, bit: int) -> bool:
    """Whether the class the kernel picks for (uid, gids) (owner, else group, else other) has ``bit``
    (4 read, 2 write, 1 search); root passes (CAP_DAC_OVERRIDE)."""
    if uid == 0:
        return True
    if uid == owner:
        return bool(mode & (bit << 6))
    if group in gids:
        return bool(mode & (bit << 3))
    return bool(mode & bit)


def _existing_ancestor(path: str) -> str:
    d = os.path.abspath(path)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    return d


def _runtime_directory_hint(d: str) -> str:
    """systemd's RuntimeDirectory= creates /run/NAME for the unit's user at every start."""
    rel = os.path.relpath(d, "/run")
    if rel.startswith("..") or rel == ".":
        return ""
    return f", or set RuntimeDirectory={rel} in the unit"


def _read_only(d: str) -> bool:
    try:
        return bool(os.statvfs(d).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def cannot_create_dir(d: str, err: OSError | None = None) -> StartupError:
    """Why the socket's directory ``d`` cannot be created, naming the directory and the permission missing."""
    parent = os.path.dirname(d)
    who = whoami()
    if not os.path.exists(parent):
        return StartupError(f"cannot create {d}: its parent {parent} does not exist",
                            "create it, or choose another --socket", {"path": d})
    if not os.path.isdir(parent):
        return StartupError(f"cannot create {d}: {parent} is not a directory", "choose another --socket",
                            {"path": d})
    if _read_only(parent):
        return StartupError(f"cannot create {d}: the file system of {parent} is mounted read-only",
                            f"create {d} before the daemon starts{_runtime_directory_hint(d)}, or choose another "
                            "--socket", {"path": d})
    if err is None or err.errno in (errno.EACCES, errno.EPERM):
        return StartupError(f"cannot create {d}: {parent} is not writable by {who} ({_owner_text(os.stat(parent))})",
                            f"create it as root: install -d -o {user_name(os.geteuid())} {d}"
                            f"{_runtime_directory_hint(d)}", {"path": d})
    return StartupError(f"cannot create {d}: {err.strerror}", "choose another --socket", {"path": d})


def socket_dir_problem(cfg: ServerConfig) -> StartupError | None:
    """Why the socket's directory cannot be had (None: it exists and the socket can be made in it, or
    ``fastkrb serve`` can create it). Changes nothing."""
    assert cfg.socket
    d = os.path.dirname(os.path.abspath(cfg.socket))
    if os.path.isdir(d):
        if not os.access(d, os.W_OK | os.X_OK):
            return cannot_bind_in(d, cfg.socket)
        return None
    if os.path.exists(d):
        return StartupError(f"the socket directory {d} is not a directory", "choose another --socket", {"path": d})
    parent = os.path.dirname(d)
    if not os.path.isdir(parent) or _read_only(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return cannot_create_dir(d)
    return None


def cannot_bind_in(d: str, path: str, err: OSError | None = None) -> StartupError:
    """Why the socket file cannot be created in its (existing) directory ``d``."""
    code = err.errno if err is not None else errno.EACCES
    if code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _read_only(d)):
        return StartupError(f"cannot create the socket {path}: the file system of {d} is mounted read-only",
                            f"put the socket on a writable file system such as /run{_runtime_directory_hint(d)}",
                            {"path": path})
    if code in (errno.EACCES, errno.EPERM):
        return StartupError(f"cannot create the socket {path}: {d} is not writable by {whoami()} "
                            f"({_owner_text(os.stat(d))})",
                            f"give the directory to that user (chown {user_name(os.geteuid())} {d})"
                            f"{_runtime_directory_hint(d)}, or choose another --socket", {"path": path})
    if code == errno.ENOTDIR:
        return StartupError(f"the socket directory {d} is not a directory", "choose another --socket", {"path": path})
    why = err.strerror if err is not None and err.strerror else str(err)
    return StartupError(f"cannot create the socket {path}: {why}", "choose another --socket", {"path": path})


def socket_file_problem(path: str) -> StartupError | None:
    """A file at the socket's path that is not a socket, or a socket a running process listens on."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return StartupError(f"{path} exists and is not a socket (fastkrb serve would have to delete it)",
                            "remove it, or choose another --socket", {"path": path})
    if socket_is_live(path):
        return StartupError(f"{path} is in use by a running process (another fastkrb serve, or systemd's "
                            "fastkrb.socket)", "stop it, or choose another --socket", {"path": path})
    return None


def socket_is_live(path: str) -> bool:
    """Something accepts connections on the Unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


def unknown_group(name: str) -> StartupError:
    return StartupError(f"there is no group named {name!r} on this host (--socket-group)",
                        "give an existing group, the proxy's (e.g. --socket-group www-data), or create it "
                        f"(groupadd {name})", {"group": name})


_DENIED = "500 (connect() to unix:... failed (13: Permission denied))"


@dataclass(frozen=True)
class SocketAccess:
    """Who may connect to the Unix socket: its mode, owner and group, and the directories above it."""

    path: str
    mode: int
    uid: int
    gid: int
    existing: bool      # the facts of a socket file that exists; otherwise what fastkrb serve will create

    @classmethod
    def planned(cls, cfg: ServerConfig) -> SocketAccess | None:
        """The socket ``fastkrb serve`` creates: socket_mode, the daemon's user, socket_group (else the
        directory's group where it is set-group-ID, else the daemon's group). None: unknown group."""
        assert cfg.socket
        gid = os.getegid()
        if cfg.socket_group:
            try:
                gid = grp.getgrnam(cfg.socket_group).gr_gid
            except KeyError:
                return None
        else:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.dirname(os.path.abspath(cfg.socket)))
                if st.st_mode & stat.S_ISGID:
                    gid = st.st_gid
        return cls(os.path.abspath(cfg.socket), cfg.socket_mode, os.geteuid(), gid, existing=False)

    @classmethod
    def of_file(cls, path: str) -> SocketAccess:
        st = os.stat(path)
        return cls(os.path.abspath(path), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, existing=True)

    def describe(self, cfg: ServerConfig) -> str:
        """``socket PATH: mode 0660, owner fastkrb, group www-data: who can connect``."""
        who = []
        if self.mode & 0o002:
            who.append("every local user")
        else:
            if self.mode & 0o200 and self.uid != 0:
                who.append(f"user {user_name(self.uid)}")
            if self.mode & 0o020:
                who.append(f"members of group {_group(self.gid)}")
        who.append("root")
        text = (f"socket {self.path} ({'as it is now' if self.existing else 'as fastkrb serve creates it'}): "
                f"mode {self.mode:04o}, owner {user_name(self.uid)}, group {_group(self.gid)}: "
                f"{', '.join(who[:-1]) + ' and ' if len(who) > 1 else ''}{who[-1]} can connect")
        if cfg.allow_uids is not None or cfg.allow_gids is not None:
            text += (f"; then only uids {cfg.allow_uids or []} and gids {cfg.allow_gids or []} are served "
                     "(allow_uids, allow_gids)")
        return text

    def refusal(self, pw: pwd.struct_passwd, cfg: ServerConfig) -> tuple[str, str, str] | None:
        """(why, what nginx would answer, fix) when user ``pw`` could not use the socket; None when it can."""
        gids = _gids_of(pw)
        d = os.path.dirname(self.path)
        dirs = []
        while True:
            dirs.append(d)
            if d == os.path.dirname(d):
                break
            d = os.path.dirname(d)
        for d in reversed(dirs):
            try:
                st = os.stat(d)
                mode, owner, group = st.st_mode, st.st_uid, st.st_gid
            except OSError:   # the socket's directory fastkrb serve creates (socket_dir_mode)
                if d != os.path.dirname(self.path):
                    continue
                mode, owner, group = cfg.socket_dir_mode, os.geteuid(), os.getegid()
            if not _permits(pw.pw_uid, gids, owner, group, mode, 1):
                return (f"it may not enter {d} (mode {stat.S_IMODE(mode):04o}, owner {user_name(owner)}, group "
                        f"{_group(group)})", _DENIED,
                        f"chmod o+x {d} (socket_dir_mode 0755), or choose another --socket")
        if not _permits(pw.pw_uid, gids, self.uid, self.gid, self.mode, 2):
            return (f"the socket's mode {self.mode:04o} (owner {user_name(self.uid)}, group {_group(self.gid)}) "
                    "gives it no write permission, and connecting needs it", _DENIED,
                    f"give the socket the proxy's group: --socket-group {_group(pw.pw_gid)} "
                    f"(socket_group = \"{_group(pw.pw_gid)}\"; SocketGroup= in fastkrb.socket), keeping mode 0660")
        listed = (cfg.allow_uids and pw.pw_uid in cfg.allow_uids) or (cfg.allow_gids and pw.pw_gid in cfg.allow_gids)
        if (cfg.allow_uids is not None or cfg.allow_gids is not None) and not listed:
            return (f"neither its uid {pw.pw_uid} is in allow_uids nor its group {_group(pw.pw_gid)} in "
                    "allow_gids: the sidecar closes its connections", "502 (upstream prematurely closed connection)",
                    f"add it: --allow-gids {_group(pw.pw_gid)}")
        return None

    def proxy_warnings(self, cfg: ServerConfig) -> list[str]:
        """One warning for each of nginx's usual users on this host that could not use the socket."""
        out = []
        for name in PROXY_USERS:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            r = self.refusal(pw, cfg)
            if r is not None:
                out.append(f"user {name} (uid {pw.pw_uid}; nginx runs as it) could not connect to {self.path}: "
                           f"{r[0]}, so nginx would answer {r[1]}; {r[2]}")
        return out


def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_of(path: str) -> tuple[str, str]:
    """(mount point, file system type) holding ``path`` (or, when it does not exist yet, its nearest
    existing ancestor), from /proc/self/mounts."""
    target = os.path.realpath(_existing_ancestor(path))
    best, fstype = "/", "unknown"
    try:
        with open("/proc/self/mounts") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return best, fstype
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = _unescape_mount(parts[1])
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):   # the later of two equal mounts is the one on top
            best, fstype = mnt, parts[2]
    return best, fstype


MEMORY_FS = {"tmpfs", "ramfs", "hugetlbfs"}


def shm_file_size(capacity: int) -> int:
    """Bytes of the shared-memory replay file made for ``capacity`` live entries: native/shm.c's
    ``geometry_of`` (per slot a 2-byte tag and a 32-byte record, 1.3 slots per entry, shards 5 % larger than
    their share, a 16-byte expiry ring per entry), so that ``--check`` states the memory before the file
    exists. tests/test_serve_check.py holds it equal to the files the native code writes."""
    page = 4096

    def up(n: int) -> int:
        return (n + page - 1) // page * page

    shards = 1
    while shards < 64 and capacity // (2 * shards) >= 65536:
        shards *= 2
    shard_cap = capacity if shards == 1 else (capacity + shards - 1) // shards * 21 // 20 + 64
    slots = shards * ((shard_cap * 13 // 10 + 31) // 32 + 2) * 32
    return up(4096 + shards * 512) + up(slots * 2) + up(slots * 32) + up(shards * shard_cap * 16)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def shm_facts(cfg: ServerConfig, path: str) -> tuple[list[str], list[str]]:
    """(facts, warnings) about a shared-memory replay file: its size, the rate it holds, its file system."""
    facts: list[str] = []
    warnings: list[str] = []
    cap, skew = cfg.replay_capacity, cfg.clock_skew
    size = shm_file_size(cap)
    mnt, fstype = mount_of(path)
    rate = int(cap // max(2 * skew, 1.0))
    facts.append(f"replay cache {path}: {cap} live entries, enough for a peak of {rate:,} validations/s "
                 f"(capacity >= peak validations/s x 2 x clock_skew {skew:g} s; a full cache refuses tokens, "
                 f"fail closed); the file takes {size} bytes ({_mib(size)}) of "
                 f"{'memory' if fstype in MEMORY_FS else 'disk and page cache'} on {mnt} ({fstype})")
    if fstype not in MEMORY_FS:
        tmpfs = [d for d in ("/run", "/dev/shm") if mount_of(d)[1] in MEMORY_FS]
        where = " or ".join(tmpfs) if tmpfs else "/run or /dev/shm"
        warnings.append(f"the replay cache file {path} is on {mnt} ({fstype}), a disk file system, not tmpfs: the "
                        f"kernel keeps writing the table back to disk; put it on a tmpfs such as {where} "
                        f"(--replay-cache shm:{(tmpfs or ['/dev/shm'])[0]}/fastkrb-replay.shm)")
    existing = os.path.exists(path)
    d = os.path.dirname(os.path.abspath(path))
    if not existing:
        try:
            vfs = os.statvfs(_existing_ancestor(d))
            free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            free = size
        if free < size:
            warnings.append(f"the replay cache file {path} needs {_mib(size)} but {mnt} has {_mib(free)} free; "
                            "lower --replay-capacity, or make room on that file system")
    return facts, warnings


def replay_dir_problem(path: str) -> StartupError | None:
    """Why the shared-memory replay file cannot be made in its directory (None: it can). The directory
    beside the socket is fastkrb serve's own, made before this is asked at start."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        return StartupError(f"the directory {d} of the replay cache file does not exist",
                            "create it, or choose another path with --replay-cache", {"path": path})
    if not os.access(d, os.W_OK | os.X_OK) and not (os.path.exists(path) and os.access(path, os.R_OK | os.W_OK)):
        return StartupError(f"the directory {d} of the replay cache file is not writable by {whoami()} "
                            f"({_owner_text(os.stat(d))})", "give it to that user, or choose another path with "
                            "--replay-cache", {"path": path})
    return None


def replay_file_problem(path: str) -> StartupError | None:
    """A file at the replay cache's path that is not a fastkrb replay cache: opening it would overwrite it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SHM_MAGIC))
    except (FileNotFoundError, NotADirectoryError):   # nothing there (a bad directory is said elsewhere)
        return None
    except OSError as exc:
        return StartupError(f"cannot read the replay cache file {path}: {exc.strerror} ({whoami()})",
                            "give the daemon's user access to it, or choose another path with --replay-cache",
                            {"path": path})
    if head and head != _SHM_MAGIC:
        return StartupError(f"the replay cache file {path} exists and is not a fastkrb replay cache (opening it "
                            "would overwrite it)", "choose another path with --replay-cache", {"path": path})
    return None


def redis_unreachable(url: str, timeout: float = 1.0) -> str | None:
    """Why the Redis of a replay-cache URL does not answer a PING within ``timeout`` (None: it does).
    A plain client, not RedisReplayCache: --check must not write the cache's start marker."""
    from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

    import redis

    from fastkrb.replay.redis import _OUR_PARAMS

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    cluster = query.get("cluster", ["0"])[-1].strip().lower() in ("1", "true", "yes", "on")
    rest = {k: v[-1] for k, v in query.items()
            if k not in _OUR_PARAMS and k not in ("socket_timeout", "socket_connect_timeout")}
    clean = urlunsplit(parts._replace(query=urlencode(rest)))
    client: Any = None
    try:
        if cluster:
            from redis.cluster import RedisCluster

            client = RedisCluster.from_url(clean, socket_timeout=timeout, socket_connect_timeout=timeout)
        else:
            client = redis.Redis.from_url(clean, socket_timeout=timeout, socket_connect_timeout=timeout)
        client.ping()
    except Exception as exc:  # any failure: not reachable, as a validation would find it
        text = f"{type(exc).__name__}: {exc}".rstrip(".")
        return text.replace(parts.password, "***") if parts.password else text
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
    return None


def keytab_file_warnings(cfg: ServerConfig) -> list[str]:
    """A keytab others may read: whoever reads it can impersonate the service to every client."""
    try:
        st = os.stat(cfg.keytab)
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o004:
        return [f"keytab {cfg.keytab} is readable by every local user ({_owner_text(st)}): whoever reads it can "
                f"pose as the service; chmod 600 {cfg.keytab} (or 640 with the daemon's group)"]
    if mode & 0o040 and st.st_gid != os.getegid():
        return [f"keytab {cfg.keytab} is readable by group {_group(st.st_gid)} ({_owner_text(st)}), which is not "
                f"the daemon's group {_group(os.getegid())}: its members can pose as the service; "
                f"chmod 600 {cfg.keytab}, or chgrp {_group(os.getegid())} {cfg.keytab}"]
    return []


@dataclass
class CheckReport:
    """What ``fastkrb serve --check`` found: facts to state, warnings (it would start), errors (it would not)."""

    facts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check(cfg: ServerConfig, probe_network: bool = True) -> CheckReport:
    """Everything that can be known before binding a socket, without changing anything on the host."""
    r = CheckReport()
    from fastkrb.errors import KerberosError
    from fastkrb.keytab import Keytab, is_dev_only

    try:
        kt = Keytab.load(cfg.keytab)
        r.errors += keytab_problems(kt, cfg)
        if is_dev_only(kt) and cfg.dev:
            r.warnings.append(f"keytab {cfg.keytab} is a `fastkrb dev init` keytab (throwaway keys no KDC knows): "
                              "served because this is a dev run (--dev); never use it in production")
    except KerberosError as exc:
        r.errors.append(f"keytab {cfg.keytab}: {exc.cause} Fix: {exc.fix}")
    r.warnings += keytab_file_warnings(cfg)
    if cfg.socket:
        live = False
        problem: StartupError | None = None
        try:
            st = os.lstat(cfg.socket)
        except OSError:
            st = None
        if st is not None and not stat.S_ISSOCK(st.st_mode):
            problem = socket_file_problem(cfg.socket)
        elif st is not None and socket_is_live(cfg.socket):
            live = True   # systemd's socket (ExecStartPre=... --check) or a daemon already running
        if problem is None and not live:
            problem = socket_dir_problem(cfg)
            d = os.path.dirname(os.path.abspath(cfg.socket))
            if problem is None and not os.path.isdir(d):
                r.facts.append(f"socket directory {d} does not exist: fastkrb serve creates it "
                               f"(mode {cfg.socket_dir_mode:04o}, owner {user_name(os.geteuid())})")
        if problem is not None:
            r.errors.append(problem.sentence())
        if cfg.socket_group and _gid(cfg.socket_group) is None:
            r.errors.append(unknown_group(cfg.socket_group).sentence())
        access = SocketAccess.of_file(cfg.socket) if live else SocketAccess.planned(cfg)
        if access is not None:
            r.facts.append(access.describe(cfg))
            r.warnings += access.proxy_warnings(cfg)
    r.errors += policy_problems(cfg)
    r.errors += session_problems(cfg)
    r.facts += session_facts(cfg)
    r.errors += challenge_problems(cfg)
    if cfg.challenge_on():
        from fastkrb.sidecar.challenge import rule_facts, rule_warnings

        r.facts += rule_facts(cfg)
        r.warnings += rule_warnings(cfg)
    if cfg.session_keys and not cfg.session_secure:
        r.warnings.append(f"session_secure = false: the session cookie {cfg.session_cookie_name} is also sent over "
                          "plain HTTP, where anyone on the path can take it and be the client until it expires")
    from fastkrb.replay import parse_replay_spec

    rs = parse_replay_spec(cfg.replay_spec())
    if rs.kind == "none":
        r.warnings.append("replay_cache = none: a replayed token will be accepted")
    elif rs.kind == "memory" and cfg.workers > 1:
        r.warnings.append(f"replay_cache = memory with {cfg.workers} workers: each worker has its own "
                          "cache, so a token replayed to another worker is accepted; use shm:/path")
    elif rs.kind == "shm":
        d = os.path.dirname(os.path.abspath(rs.location))
        own = cfg.socket is not None and d == os.path.dirname(os.path.abspath(cfg.socket))
        for problem in (None if own and not os.path.isdir(d) else replay_dir_problem(rs.location),
                        replay_file_problem(rs.location)):
            if problem is not None:
                r.errors.append(problem.sentence())
        facts, warnings = shm_facts(cfg, rs.location)
        r.facts += facts
        r.warnings += warnings
    elif rs.kind == "redis" and probe_network:
        why = redis_unreachable(rs.location)
        if why is not None:
            r.warnings.append(f"the Redis replay cache {redact_url(rs.location)} does not answer ({why}): every "
                              "validation is refused (503 replay_cache_unavailable) until it does; start it, or "
                              "fix the URL")
    if cfg.allow_uids is None and cfg.allow_gids is None and cfg.socket and cfg.socket_mode & 0o006:
        r.warnings.append("the socket is open to every local user (mode grants 'other') and no "
                          "allow_uids/allow_gids is set")
    return r


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


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


def session_problems(cfg: ServerConfig) -> list[str]:
    """Why a session or signing key file cannot be used (used at start and by --check): each names the file
    and how to write one."""
    out: list[str] = []
    from fastkrb.sessions.bearer import parse_signing_keys
    from fastkrb.sessions.cookie import parse_session_keys
    from fastkrb.sessions.keyfile import KeyRing

    for opt, path, parse in (("session_keys", cfg.session_keys, parse_session_keys),
                             ("signing_keys", cfg.signing_keys, parse_signing_keys)):
        if not path:
            continue
        try:
            KeyRing(parse, path=path)   # type: ignore[arg-type]
        except ConfigurationError as exc:
            out.append(f"{opt} {path}: {exc.cause} Fix: {exc.fix}")
    return out


def challenge_problems(cfg: ServerConfig) -> list[str]:
    """Why the challenge rule cannot be built (used at start and by --check): a page file that cannot be read,
    an option the rule refuses; one sentence each."""
    if not cfg.challenge_on() and not cfg.challenge_fallback:
        return []
    from fastkrb.sidecar.challenge import rule_problem

    problem = rule_problem(cfg, files=True)
    return [] if problem is None else [problem]


def session_facts(cfg: ServerConfig) -> list[str]:
    """What --check says about sessions and bearer tokens when they are on."""
    out = []
    if cfg.session_keys:
        out.append(f"session cookies on: {cfg.session_cookie_name} (key file {cfg.session_keys}, at most "
                   f"{cfg.session_max_age} s, Secure {'on' if cfg.session_secure else 'off'}, SameSite "
                   f"{cfg.session_samesite or 'unset'}, Path {cfg.session_path}); {cfg.session_cache} opened cookies "
                   "remembered per worker")
    if cfg.signing_keys:
        out.append(f"bearer tokens on: POST /token issues ES256 tokens for {cfg.token_audience} (iss "
                   f"{cfg.token_issuer}, at most {cfg.token_ttl} s; key file {cfg.signing_keys}); "
                   "/.well-known/jwks.json serves the public keys")
    return out


def main_check(cfg: ServerConfig, out: Any = None) -> int:
    """Print the effective configuration, the facts, every warning and every error; 0 unless an error."""
    import json

    out = out or sys.stdout
    r = check(cfg)
    print(json.dumps(cfg.public_dict(), indent=2, sort_keys=True), file=out)
    for line in r.facts:
        print(line, file=out)
    for line in r.warnings:
        print(f"warning: {line}", file=out)
    for line in r.errors:
        print(f"error: {line}", file=out)
    if r.errors:
        print(f"configuration has {len(r.errors)} error(s) and {len(r.warnings)} warning(s)", file=out)
        return 2
    print("configuration ok" + (f", {len(r.warnings)} warning(s)" if r.warnings else ""), file=out)
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastkrb serve")
    add_arguments(p)
    return p.parse_args(list(argv))
