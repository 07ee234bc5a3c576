"""`fastkrb` command line: validate, inspect, keytab list/rotate/prune, doctor, dev, demo, bench, groups sync, serve.

Exit codes: 0 accepted / ok, 1 rejected (the error's code, cause and fix are printed), 2 usage or I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from fastkrb import __version__
from fastkrb.errors import KerberosError

__all__ = ["main"]


def _print(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return
    width = max(len(k) for k in obj) if obj else 0
    for k, v in obj.items():
        print(f"{k:<{width}}  {v}")


def _time_arg(text: str) -> float:
    """--now: ISO 8601 or Unix seconds; argparse prints the sentence of a bad value."""
    from fastkrb.tools.present import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_validate(a: argparse.Namespace) -> int:
    import time

    from fastkrb.replay import parse_replay_spec
    from fastkrb.tools.present import read_token_arg, show_value
    from fastkrb.validator import Validator

    token = read_token_arg(a.token, a.file)
    spec = "none" if a.no_replay else a.replay
    parse_replay_spec(spec)   # a bad spec is a one-sentence ValueError before anything is opened
    v = Validator(a.keytab, principals=a.principal or None, clock_skew=a.clock_skew, replay_cache=spec,
                  enctypes=tuple(a.enctypes), cold_start=False)
    cb = bytes.fromhex(a.channel_bindings) if a.channel_bindings else None
    now = time.time() if a.now is None else a.now
    try:
        res = v.validate(token, now=now, channel_bindings=cb)
    except KerberosError as exc:
        out = exc.to_dict()
        if a.json:
            print(json.dumps({"ok": False, **out}, indent=2, default=str))
        else:
            print(f"REJECTED [{exc.code}]\ncause: {exc.cause}\nfix:   {exc.fix}")
            for k, val in out["details"].items():
                print(f"  {k}: {show_value(k, val, now)}")
        return 1
    finally:
        if v.replay_cache is not None:
            v.replay_cache.close()
    d = res.to_dict()
    if a.json:
        print(json.dumps({"ok": True, **d, "www_authenticate": res.www_authenticate}, indent=2, default=str))
    else:
        print(f"ACCEPTED {res.client} -> {res.server}")
        _print({"now": show_value("now", now, now), **{k: show_value(k, val, now) for k, val in d.items()}}, False)
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    from fastkrb.tools.inspect_token import inspect_token
    from fastkrb.tools.present import read_token_arg

    cb = bytes.fromhex(a.channel_bindings) if a.channel_bindings else None
    report = inspect_token(read_token_arg(a.token), keytab=a.keytab, show_keys=a.show_keys, now=a.now,
                           channel_bindings=cb, enctypes=tuple(a.enctypes), allowed_realms=a.allowed_realm,
                           clock_skew=a.clock_skew)
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
    from fastkrb.keytab import Keytab, entry_report

    kt = Keytab.load(a.file)
    rows = entry_report(kt, a.max_key_age)
    for r, e in zip(rows, kt.entries, strict=True):
        r["enctype_number"], r["enctype"] = r["enctype"], enctype_name(r["enctype"])
        if a.show_keys:
            r["key"] = e.key.hex()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        age = "-" if r["age_days"] is None else f"{r['age_days']:.0f}d"
        if not r["usable"]:
            note = f"  UNUSABLE: {r['reason']}"
        elif r["stale"]:
            note = f"  WARNING: key older than --max-key-age {a.max_key_age:g} days: rotate it"
        else:
            note = ""
        print(f"{r['kvno']:>5}  {r['enctype']:<32}  {age:>6}  {r['principal']}" + (f"  {r['key']}" if a.show_keys
                                                                                   else "") + note)
    return 0


def _cmd_doctor(a: argparse.Namespace) -> int:
    import os

    from fastkrb.tools.doctor import DoctorConfig, format_report, run_doctor

    password = None
    if a.password_env:
        password = os.environ.get(a.password_env)
        if password is None:
            raise ValueError(f"--password-env {a.password_env}: the variable is not set")
    elif a.password_file:
        with open(a.password_file, encoding="utf-8") as fh:
            password = fh.readline().rstrip("\n")
    cfg = DoctorConfig(keytab=a.keytab, principals=a.principal or (), kdcs=a.kdc or (), realm=a.realm,
                       krb5_conf=a.krb5_conf, clock_skew=a.clock_skew, timeout=a.timeout, check_dns=not a.no_dns,
                       user=a.user, password=password, client_keytab=a.client_keytab,
                       max_key_age_days=a.max_key_age)
    rep = run_doctor(cfg)
    print(format_report(rep, a.json))
    return 0 if rep.ok else 1


def _cmd_dev_init(a: argparse.Namespace) -> int:
    from fastkrb.tools.dev import dev_init, init_instructions

    kt = dev_init(a.spn, a.keytab, realm=a.realm, force=a.force)
    spn = next(p for p in kt.principals() if not p.startswith("fastkrb-dev-only/"))
    print(init_instructions(a.keytab, spn))
    return 0


def _cmd_dev_header(a: argparse.Namespace) -> int:
    from fastkrb.tools.dev import dev_header

    value = dev_header(a.user, a.keytab, spn=a.spn, skew=a.skew, expired=a.expired, mutual=not a.no_mutual)
    print(value if a.value else f"Authorization: {value}")
    return 0


def _cmd_dev_realm(a: argparse.Namespace) -> int:
    from fastkrb.tools.dev import run_realm

    return run_realm(workdir=a.dir, realm=a.realm, spn=a.spn, user=a.user, password=a.password, port=a.port,
                     as_json=a.json, keep=a.keep)


def _cmd_demo(a: argparse.Namespace) -> int:
    from fastkrb.tools.demo import run_demo

    return run_demo(seconds=a.seconds)


def _cmd_bench(a: argparse.Namespace) -> int:
    from fastkrb.capacity.planner import main as bench_main

    return bench_main(a)


def _cmd_groups_sync(a: argparse.Namespace) -> int:
    from fastkrb.tools.groups import main as groups_main

    return groups_main(a)


def _cmd_serve(a: argparse.Namespace) -> int:
    from fastkrb.sidecar import main as serve_main

    return serve_main(a)


def _cmd_keytab_rotate(a: argparse.Namespace) -> int:
    from fastkrb.keytab import Keytab
    from fastkrb.tools.kdcclient import parse_kdc
    from fastkrb.tools.rotate import rotate

    principal = a.principal
    if not principal:
        names = Keytab.load(a.file).principals()
        if len(names) != 1:
            print(f"error: the keytab holds {len(names)} principals ({', '.join(names)}); name one with --principal",
                  file=sys.stderr)
            return 2
        principal = names[0]
    kdc = parse_kdc(a.kdc)
    kp = parse_kdc(a.kpasswd_server, 464) if a.kpasswd_server else None
    res = rotate(a.file, principal, kdc, kpasswd_addr=kp, proto=a.proto, salt=a.salt, timeout=a.timeout)
    info = {"principal": res.principal, "old_kvno": res.old_kvno, "new_kvno": res.new_kvno,
            "enctypes": list(res.enctypes), "salt": res.salt, "kdc": res.kdc, "kpasswd": res.kpasswd,
            "seconds": round(res.seconds, 3), "steps": res.steps, "also": res.also}
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        also = f" (also for {', '.join(res.also)})" if res.also else ""
        print(f"rotated {res.principal}: kvno {res.old_kvno} -> {res.new_kvno} in {res.seconds:.2f} s; the keytab "
              f"holds both{also}. Prune kvno {res.old_kvno} once the KDC's maximum ticket lifetime has passed "
              f"(`fastkrb keytab prune {a.file} --keep-newest --older-than 10h`, with your realm's max_life).")
    return 0


def _cmd_keytab_prune(a: argparse.Namespace) -> int:
    from fastkrb.tools.rotate import parse_duration, prune

    if not a.keep_newest:
        print("error: --keep-newest is required (the only pruning rule)", file=sys.stderr)
        return 2
    try:
        older = parse_duration(a.older_than)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = prune(a.file, older, principals=a.principal or (), dry_run=a.dry_run)
    if a.json:
        print(json.dumps({"removed": res.removed, "kept": res.kept}, indent=2))
    else:
        verb = "would remove" if a.dry_run else "removed"
        for p, kv in res.removed:
            print(f"{verb} kvno {kv} of {p}")
        for p, kv, why in res.kept:
            print(f"kept kvno {kv} of {p}: {why}")
        if not res.removed and not res.kept:
            print("nothing to prune: one kvno per principal")
    return 0


def _add_keytab_rotation(ksub: Any) -> None:
    kr = ksub.add_parser("rotate", help="change the service's key at the KDC with its current key (kpasswd, RFC "
                         "3244) and add the new kvno beside the old ones")
    kr.add_argument("file", help="the keytab file (rewritten atomically, same owner and mode)")
    kr.add_argument("--principal", help="the principal to rotate (default: the keytab's only principal)")
    kr.add_argument("--kdc", required=True, help="the KDC, host[:port] (port default 88)")
    kr.add_argument("--kpasswd-server", help="the password server, host[:port] (default: the KDC's host, port 464)")
    kr.add_argument("--proto", choices=("tcp", "udp"), default="tcp", help="transport (default %(default)s)")
    kr.add_argument("--salt", help="the salt of the new keys, if the KDC does not send ETYPE-INFO2 and it is not "
                    "REALM+components (AD: REALMhost<name>.<domain> for a computer account)")
    kr.add_argument("--timeout", type=float, default=5.0, help="seconds per network exchange (default %(default)s)")
    kr.add_argument("--json", action="store_true", help="print the result as JSON")
    kr.set_defaults(func=_cmd_keytab_rotate)
    kp = ksub.add_parser("prune", help="remove kvnos older than the newest once the KDC's maximum ticket lifetime "
                         "has passed since the rotation")
    kp.add_argument("file", help="the keytab file (rewritten atomically, same owner and mode)")
    kp.add_argument("--keep-newest", action="store_true",
                    help="keep each principal's newest kvno, remove the older ones (required: the only rule)")
    kp.add_argument("--older-than", required=True, metavar="DURATION",
                    help="the KDC's maximum ticket lifetime (e.g. 10h, 1d): older kvnos go once the newest is "
                    "this old (by its keytab timestamp)")
    kp.add_argument("--principal", action="append", help="only this principal (repeatable; default: all)")
    kp.add_argument("--dry-run", action="store_true", help="say what would be removed, change nothing")
    kp.add_argument("--json", action="store_true", help="print the result as JSON")
    kp.set_defaults(func=_cmd_keytab_prune)


def _os_error(exc: OSError) -> str:
    """An OSError as a sentence naming its file and the user, never a bare ``[Errno N]``."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    import getpass

    where = os.fspath(exc.filename)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.geteuid()}"
    return (f"{where}: {exc.strerror.lower()}; check that the path exists and that user {user} may use it "
            f"(owner, mode, the directories above it)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastkrb", description="Fast, exact Kerberos ticket validation.")
    p.add_argument("--version", action="version", version=f"fastkrb {__version__}",
                   help="print the version (fastkrb <version>) and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="validate a token against a keytab: the verdict, or the error's cause and fix",
                       description="Validate one token as the library and the sidecar would. The token may be "
                       "given in any form the other commands print: the header line `fastkrb dev header` prints "
                       "(Authorization: Negotiate <b64>), the header value (Negotiate <b64>), bare base64 or hex, "
                       "- for stdin, or @FILE / --file FILE (text, or the binary GSS/SPNEGO/AP-REQ token).")
    v.add_argument("token", nargs="?", help="the header line, 'Negotiate <b64>', base64, hex, - for stdin, or @FILE "
                   "(binary or text)")
    v.add_argument("--file", metavar="FILE", help="read the token from FILE (- for stdin): the binary token or text")
    v.add_argument("--keytab", required=True, help="the service keytab (MIT format)")
    v.add_argument("--now", type=_time_arg, default=None, metavar="TIME",
                   help="validate at this time instead of the clock (recorded tokens): ISO 8601 such as "
                   "2026-12-06T14:00:00Z (no zone: UTC), or Unix seconds")
    v.add_argument("--principal", action="append", help="accepted server principal (repeatable)")
    v.add_argument("--channel-bindings", help="channel-binding application data, hex")
    v.add_argument("--clock-skew", type=float, default=300.0,
                   help="seconds of clock difference tolerated (default %(default)s)")
    v.add_argument("--enctypes", type=int, nargs="+", default=[20, 19, 18, 17],
                   help="permitted enctype numbers (default 20 19 18 17; 23 = RC4 only when listed)")
    v.add_argument("--replay", default="memory", metavar="SPEC",
                   help="the replay cache: 'memory' (default: private to this run, so a run never sees another "
                   "run's tokens), 'shm:/path' (a file that runs share: a second run of the same token is "
                   "refused as a replay; the sidecar's file works too), 'redis://host:port/db', or 'none'")
    v.add_argument("--no-replay", action="store_true", help="no replay cache (the same as --replay none)")
    v.add_argument("--json", action="store_true", help="print the result or the error as JSON (raw values: Unix "
                   "times, flag integers, enctype numbers)")
    v.set_defaults(func=_cmd_validate)

    i = sub.add_parser("inspect", help="explain a token: mechs (NTLM named), SPN, kvno, enctypes; with --keytab the "
                       "decrypted ticket, authenticator, PAC and the verdict at --now")
    i.add_argument("token", help="'Negotiate <b64>', base64, hex, - for stdin, or @FILE (binary or text)")
    i.add_argument("--keytab", help="decrypt ticket and authenticator with this keytab")
    i.add_argument("--now", type=_time_arg, default=None, metavar="TIME",
                   help="time of the verdict: ISO 8601 such as 2026-12-06T14:00:00Z (no zone: UTC), or Unix "
                   "seconds (default: now)")
    i.add_argument("--channel-bindings", help="the acceptor's channel-binding application data, hex")
    i.add_argument("--enctypes", type=int, nargs="+", default=[20, 19, 18, 17, 23],
                   help="enctypes the verdict permits (default: all fastkrb implements)")
    i.add_argument("--allowed-realm", action="append", help="client realms the verdict allows (default: any)")
    i.add_argument("--clock-skew", type=float, default=300.0,
                   help="seconds of clock difference the verdict tolerates (default %(default)s)")
    i.add_argument("--show-keys", action="store_true", help="print session keys (secret!)")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(func=_cmd_inspect)

    k = sub.add_parser("keytab", help="keytab tools")
    ksub = k.add_subparsers(dest="kcmd", required=True, metavar="COMMAND")
    kl = ksub.add_parser("list", help="principals, kvnos and enctypes of a keytab")
    kl.add_argument("file", help="the keytab file")
    kl.add_argument("--show-keys", action="store_true", help="also print each key in hex (secret!)")
    kl.add_argument("--json", action="store_true", help="print the entries as JSON")
    kl.add_argument("--max-key-age", type=float, default=90.0, metavar="DAYS",
                    help="warn when a principal's current key is older than this (days, default %(default)s)")
    kl.set_defaults(func=_cmd_keytab_list)
    _add_keytab_rotation(ksub)

    dr = sub.add_parser("doctor", help="check keytab, DNS, KDC reachability, clock and keys against the KDC")
    dr.add_argument("--keytab", help="the service keytab to check")
    dr.add_argument("--principal", action="append", help="the SPN to check, HTTP/host[@REALM] (repeatable; "
                    "default: every principal in the keytab)")
    dr.add_argument("--kdc", action="append", help="KDC host[:port] (repeatable; default: krb5.conf)")
    dr.add_argument("--realm", help="realm (default: the principal's, else krb5.conf default_realm)")
    dr.add_argument("--krb5-conf", help="krb5.conf to read (default: $KRB5_CONFIG, else /etc/krb5.conf)")
    dr.add_argument("--clock-skew", type=float, default=None, help="seconds (default: krb5.conf clockskew or 300)")
    dr.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each KDC reply")
    dr.add_argument("--no-dns", action="store_true", help="skip the DNS checks of the SPN's host")
    dr.add_argument("--user", help="also do the full round trip as this user (with a password or --client-keytab)")
    dr.add_argument("--password-env", help="environment variable holding the user's password")
    dr.add_argument("--password-file", help="file whose first line is the user's password")
    dr.add_argument("--client-keytab", help="keytab with the user's key")
    dr.add_argument("--max-key-age", type=float, default=90.0, metavar="DAYS",
                    help="warn when a principal's current key is older than this (days, default %(default)s)")
    dr.add_argument("--json", action="store_true", help="print the report as JSON")
    dr.set_defaults(func=_cmd_doctor)

    dv = sub.add_parser("dev", help="throwaway Kerberos for development: dev keytab, minted headers, a local realm")
    dsub = dv.add_subparsers(dest="dcmd", required=True, metavar="COMMAND")
    di = dsub.add_parser("init", help="write a DEV-ONLY keytab of random keys for an SPN")
    di.add_argument("--spn", required=True, help="e.g. HTTP/api.example.test (realm default DEV.TEST)")
    di.add_argument("--realm", default="DEV.TEST", help="realm of the SPN when it names none (default %(default)s)")
    di.add_argument("--keytab", default="fastkrb-dev.keytab", help="file to write (default %(default)s)")
    di.add_argument("--force", action="store_true", help="overwrite an existing file")
    di.set_defaults(func=_cmd_dev_init)
    dh = dsub.add_parser("header", help="print a valid minted 'Authorization: Negotiate ...' for the dev keytab")
    dh.add_argument("--user", required=True, help="the client principal, e.g. alice (without @REALM: the SPN's realm)")
    dh.add_argument("--keytab", default="fastkrb-dev.keytab",
                    help="the dev keytab from `fastkrb dev init` (default %(default)s)")
    dh.add_argument("--spn", help="the SPN (default: the dev keytab's)")
    dh.add_argument("--skew", type=float, default=0.0, help="move the client's clock by this many seconds")
    dh.add_argument("--expired", action="store_true", help="a ticket that ended an hour ago")
    dh.add_argument("--no-mutual", action="store_true", help="do not ask for mutual authentication")
    dh.add_argument("--value", action="store_true", help="print only the header value")
    dh.set_defaults(func=_cmd_dev_header)
    dre = dsub.add_parser("realm", help="run a throwaway MIT realm on loopback until Ctrl-C")
    dre.add_argument("--dir", help="work directory (kept); default: a temporary one, deleted at the end")
    dre.add_argument("--realm", default="DEV.TEST", help="realm name (default %(default)s)")
    dre.add_argument("--spn", default="HTTP/localhost", help="service principal to create (default %(default)s)")
    dre.add_argument("--user", default="alice", help="user principal to create (default %(default)s)")
    dre.add_argument("--password", help="the user's password (default: random, printed)")
    dre.add_argument("--port", type=int, default=0, help="KDC port on 127.0.0.1 (default: a free one)")
    dre.add_argument("--keep", action="store_true", help="do not delete the temporary directory")
    dre.add_argument("--json", action="store_true", help="print one JSON line when ready")
    dre.set_defaults(func=_cmd_dev_realm)

    d = sub.add_parser("demo", help="a throwaway realm keytab, minted tokens, verdicts and a throughput figure")
    d.add_argument("--seconds", type=float, default=2.0, help="length of the throughput run (default %(default)s)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="capacity planning: validations/s per core, latency, sizing, vs MIT",
                       description="Measure this host: in-process validations per second per replay backend, "
                       "MIT krb5 beside it, the sidecar under load; each scenario --repeat times, in rounds. "
                       "Figures are medians over the runs, with the best run and the spread; the sizing uses "
                       "the median. Every option is checked before anything is measured; temporary files "
                       "(under $TMPDIR) and child processes are removed on every way out. The defaults take "
                       "about 2-3 minutes on two cores; --repeat 1 --no-sidecar takes about 15 seconds.")
    b.add_argument("--keytab", help="your keytab (with --tokens or --kdc); default: a throwaway one")
    b.add_argument("--tokens", help="file of recorded tokens, one per line (base64 or 'Negotiate <b64>')")
    b.add_argument("--kdc", action="store_true", help="get fresh tickets with your credentials (needs gssapi)")
    b.add_argument("--principal", help="service principal for --kdc")
    b.add_argument("--kdc-tokens", type=int, default=20_000,
                   help="tickets to get from the KDC with --kdc (default %(default)s)")
    b.add_argument("--seconds", type=float, default=1.0,
                   help="timed seconds per scenario and run (default %(default)s; the sidecar's at most 2)")
    b.add_argument("--repeat", type=int, default=3,
                   help="runs of each scenario, in rounds: figures are medians, with best and spread "
                   "(default %(default)s)")
    b.add_argument("--replay", nargs="+", default=["memory", "shm"],
                   help="replay backends: memory, shm, shm:/path/file, redis://... (default: memory shm; the "
                   "no-cache crypto path always runs)")
    b.add_argument("--enctype", type=int, choices=(17, 18, 19, 20), default=None,
                   help="enctype of the embedded tokens (default 18, aes256-cts-hmac-sha1-96)")
    b.add_argument("--no-mit", action="store_true", help="skip the MIT krb5 baseline")
    b.add_argument("--no-sidecar", action="store_true", help="skip the sidecar scenarios")
    b.add_argument("--workers", type=int, nargs="+", default=None,
                   help="sidecar worker counts (default: 1 and all cores)")
    b.add_argument("--target-rps", type=float, default=None, help="size the host for this load")
    b.add_argument("--json", action="store_true", help="print every figure as JSON instead of the table")
    b.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    b.add_argument("--report", help="write report.md, report.json and PNG plots into this directory (made if "
                   "missing; checked before the run)")
    b.set_defaults(func=_cmd_bench)

    g = sub.add_parser("groups", help="group names for policies and X-Remote-Groups (SID -> name map)")
    gsub = g.add_subparsers(dest="gcmd", required=True)
    gs = gsub.add_parser("sync", help="write the SID -> name map of a directory's groups, read over LDAP")
    from fastkrb.tools.groups import add_arguments as _groups_arguments

    _groups_arguments(gs)
    gs.set_defaults(func=_cmd_groups_sync)

    from fastkrb.tools.sessionkeys import register as _keys_commands

    _keys_commands(sub)

    srv = sub.add_parser("serve", help="the sidecar auth daemon (HTTP for proxies, binary for fastkrb.client)")
    from fastkrb.sidecar.config import add_arguments as _serve_arguments

    _serve_arguments(srv)
    srv.set_defaults(func=_cmd_serve)

    a = p.parse_args(argv)
    try:
        return int(a.func(a))
    except KerberosError as exc:
        print(f"error [{exc.code}]: {exc.cause}\nfix: {exc.fix}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
