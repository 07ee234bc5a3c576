"""``fastkrb keys``: the key files of session cookies and bearer tokens (fastkrb.sessions).

    fastkrb keys session new /etc/fastkrb/session-keys.json      # one AES-256 key, mode 0600
    fastkrb keys session rotate /etc/fastkrb/session-keys.json   # a new key first, the previous one kept
    fastkrb keys signing new /etc/fastkrb/signing-keys.json      # one EC P-256 key for ES256
    fastkrb keys signing rotate /etc/fastkrb/signing-keys.json
    fastkrb keys signing jwks /etc/fastkrb/signing-keys.json     # the public JWKS document, for verifiers

``register(subparsers)`` adds the command to the ``fastkrb`` parser; ``main(argv)`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fastkrb.errors import KerberosError
from fastkrb.files import replace_file
from fastkrb.sessions import bearer, cookie
from fastkrb.sessions.keyfile import KeyFileError

__all__ = ["main", "register"]


def _keep(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("--keep is a number of old keys, 0 or more")
    return n


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``keys`` (``session new|rotate``, ``signing new|rotate|jwks``) to a subparsers object."""
    k = subparsers.add_parser("keys", help="key files of session cookies and bearer tokens (new, rotate, jwks)")
    ksub = k.add_subparsers(dest="keys_kind", required=True)
    for kind, what in (("session", "AES-256 keys that seal session cookies"),
                       ("signing", "EC P-256 keys that sign bearer tokens (ES256)")):
        p = ksub.add_parser(kind, help=what)
        psub = p.add_subparsers(dest="keys_cmd", required=True)
        n = psub.add_parser("new", help="write a new key file with one key (mode 0600); refuses to overwrite")
        n.add_argument("file", help="the key file to write")
        n.set_defaults(func=_cmd, keys_kind=kind, keys_cmd="new")
        r = psub.add_parser("rotate", help="put a new key first and keep the previous one (--keep), so that what it "
                            "sealed or signed stays valid for one more period; older keys are removed")
        r.add_argument("file", help="the key file to rotate in place (atomically)")
        r.add_argument("--keep", type=_keep, default=1, help="old keys to keep (default 1)")
        r.set_defaults(func=_cmd, keys_kind=kind, keys_cmd="rotate")
        if kind == "signing":
            j = psub.add_parser("jwks", help="print (or --out) the JWKS document of the file's public keys")
            j.add_argument("file", help="the signing key file")
            j.add_argument("--out", help="write the JWKS here (atomically, mode 0644) instead of printing it")
            j.set_defaults(func=_cmd, keys_kind=kind, keys_cmd="jwks")
    return k


def _cmd(a: argparse.Namespace) -> int:
    path: str = a.file
    try:
        if a.keys_cmd == "jwks":
            try:
                with open(path, "rb") as fh:
                    keys = bearer.parse_signing_keys(fh.read(), path)
            except OSError as exc:
                raise KeyFileError(f"Signing key file {path} cannot be read ({exc.strerror or exc}).",
                                   "Check the path, or create it with `fastkrb keys signing new FILE`.") from None
            doc = (json.dumps(bearer.jwks(keys), indent=2) + "\n").encode()
            if a.out:
                replace_file(a.out, doc, mode=0o644)
                print(f"wrote {a.out}: the public keys {', '.join(k.kid for k in keys)}")
            else:
                sys.stdout.write(doc.decode())
            return 0
        if a.keys_kind == "session":
            kid = (cookie.new_session_key_file(path) if a.keys_cmd == "new"
                   else cookie.rotate_session_key_file(path, keep=a.keep)).kid
        else:
            kid = (bearer.new_signing_key_file(path) if a.keys_cmd == "new"
                   else bearer.rotate_signing_key_file(path, keep=a.keep)).kid
    except KerberosError as exc:
        print(f"fastkrb keys: {exc.cause} {exc.fix}", file=sys.stderr)
        return 2
    except OSError as exc:
        target = a.out if a.keys_cmd == "jwks" else path
        print(f"fastkrb keys: cannot write {target} ({exc.strerror or exc}): check that its directory exists and is "
              "writable, or give another path.", file=sys.stderr)
        return 2
    kept = f", keeping {a.keep} previous" if a.keys_cmd == "rotate" else ""
    use = "seals session cookies" if a.keys_kind == "session" else "signs bearer tokens"
    print(f"wrote {path} (mode 0600): key {kid} {use} from now on{kept}; give every replica this file")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``fastkrb keys ...`` on its own (tests, or before the command is wired into ``fastkrb``)."""
    p = argparse.ArgumentParser(prog="fastkrb")
    register(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
