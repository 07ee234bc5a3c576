"""`fastkrb` command line: validate, inspect, keytab list, demo.

Exit codes: 0 accepted / ok, 1 rejected (the error's code, cause and fix are printed), 2 usage or I/O.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from fastkrb.errors import KerberosError

__all__ = ["main"]


def _read_token(arg: str) -> str:
    if arg == "-":
        return sys.stdin.read().strip()
    return arg.strip()


def _print(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return
    width = max(len(k) for k in obj) if obj else 0
    for k, v in obj.items():
        print(f"{k:<{width}}  {v}")


def _cmd_validate(a: argparse.Namespace) -> int:
    from fastkrb.validator import Validator

    v = Validator(a.keytab, principals=a.principal or None, clock_skew=a.clock_skew,
                  replay_cache="none" if a.no_replay else "memory",
                  enctypes=tuple(a.enctypes), cold_start=False)
    cb = bytes.fromhex(a.channel_bindings) if a.channel_bindings else None
    try:
        res = v.validate(_read_token(a.token), now=a.now, channel_bindings=cb)
    except KerberosError as exc:
        out = exc.to_dict()
        if a.json:
            print(json.dumps({"ok": False, **out}, indent=2, default=str))
        else:
            print(f"REJECTED [{exc.code}]\ncause: {exc.cause}\nfix:   {exc.fix}")
            for k, val in out["details"].items():
                print(f"  {k}: {val}")
        return 1
    d = res.to_dict()
    if a.json:
        print(json.dumps({"ok": True, **d, "www_authenticate": res.www_authenticate}, indent=2, default=str))
    else:
        print(f"ACCEPTED {res.client} -> {res.server}")
        _print(d, False)
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    from fastkrb.inspect import inspect_token

    report = inspect_token(_read_token(a.token), keytab=a.keytab, show_keys=a.show_keys, now=a.now)
    _print(report, a.json) if a.json else _print_nested(report)
    return 0 if report.get("ok", True) else 1


def _print_nested(d: dict[str, Any], indent: int = 0) -> None:
    pad = " " * indent
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print_nested(v, indent + 2)
        else:
            print(f"{pad}{k}: {v}")


def _cmd_keytab_list(a: argparse.Namespace) -> int:
    from fastkrb.diagnose import enctype_name
    from fastkrb.keytab import Keytab

    kt = Keytab.load(a.file)
    rows = [{"principal": e.principal, "kvno": e.kvno, "enctype": enctype_name(e.enctype),
             "timestamp": e.timestamp, **({"key": e.key.hex()} if a.show_keys else {})} for e in kt.entries]
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['kvno']:>5}  {r['enctype']:<32}  {r['principal']}" + (f"  {r['key']}" if a.show_keys else ""))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from fastkrb.demo import run_demo

    return run_demo(seconds=a.seconds)


def _cmd_bench(a: argparse.Namespace) -> int:
    from fastkrb.bench import main as bench_main

    return bench_main(a)


def _cmd_serve(a: argparse.Namespace) -> int:
    from fastkrb.server import main as serve_main

    return serve_main(a)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastkrb", description="Fast, exact Kerberos ticket validation.")
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="validate a token against a keytab")
    v.add_argument("token", help="'Negotiate <b64>', base64, or - for stdin")
    v.add_argument("--keytab", required=True)
    v.add_argument("--now", type=float, default=None, help="unix time to validate at (recorded tokens)")
    v.add_argument("--principal", action="append", help="accepted server principal (repeatable)")
    v.add_argument("--channel-bindings", help="channel-binding application data, hex")
    v.add_argument("--clock-skew", type=float, default=300.0)
    v.add_argument("--enctypes", type=int, nargs="+", default=[20, 19, 18, 17])
    v.add_argument("--no-replay", action="store_true", help="no replay cache (one-shot checks)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_cmd_validate)

    i = sub.add_parser("inspect", help="explain a token (without a key: framing, SPN, kvno, enctypes)")
    i.add_argument("token")
    i.add_argument("--keytab", help="decrypt ticket and authenticator with this keytab")
    i.add_argument("--now", type=float, default=None)
    i.add_argument("--show-keys", action="store_true", help="print session keys (secret!)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_inspect)

    k = sub.add_parser("keytab", help="keytab tools")
    ksub = k.add_subparsers(dest="kcmd", required=True)
    kl = ksub.add_parser("list", help="principals, kvnos and enctypes of a keytab")
    kl.add_argument("file")
    kl.add_argument("--show-keys", action="store_true")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=_cmd_keytab_list)

    d = sub.add_parser("demo", help="a throwaway realm keytab, minted tokens, verdicts and a throughput figure")
    d.add_argument("--seconds", type=float, default=2.0)
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="capacity planning: validations/s per core, latency, sizing, vs MIT")
    b.add_argument("--keytab", help="your keytab (with --tokens or --kdc); default: a throwaway one")
    b.add_argument("--tokens", help="file of recorded tokens, one per line (base64 or 'Negotiate <b64>')")
    b.add_argument("--kdc", action="store_true", help="get fresh tickets with your credentials (needs gssapi)")
    b.add_argument("--principal", help="service principal for --kdc")
    b.add_argument("--kdc-tokens", type=int, default=20_000)
    b.add_argument("--seconds", type=float, default=3.0, help="per scenario")
    b.add_argument("--replay", nargs="+", default=["memory", "shm"], help="replay backends (memory shm redis://...)")
    b.add_argument("--enctype", type=int, default=18, help="enctype of the embedded tokens")
    b.add_argument("--no-mit", action="store_true", help="skip the MIT krb5 baseline")
    b.add_argument("--no-sidecar", action="store_true", help="skip the sidecar scenarios")
    b.add_argument("--workers", type=int, nargs="+", default=None,
                   help="sidecar worker counts (default: 1 and all cores)")
    b.add_argument("--target-rps", type=float, default=None, help="size the host for this load")
    b.add_argument("--json", action="store_true")
    b.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    b.add_argument("--report", help="write report.md, report.json and PNG plots into this directory")
    b.set_defaults(func=_cmd_bench)

    srv = sub.add_parser("serve", help="the sidecar auth daemon (HTTP for proxies, binary for fastkrb.client)")
    from fastkrb.server.config import add_arguments as _serve_arguments

    _serve_arguments(srv)
    srv.set_defaults(func=_cmd_serve)

    a = p.parse_args(argv)
    try:
        return int(a.func(a))
    except KerberosError as exc:
        print(f"error [{exc.code}]: {exc.cause}\nfix: {exc.fix}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
