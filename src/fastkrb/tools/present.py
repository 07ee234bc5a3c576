"""What `fastkrb validate` and `fastkrb inspect` share: reading a token in every form the other commands print,
reading a time given on the command line, and wording times, flags and enctypes for people.

One reader and one formatter, so that a token `fastkrb dev header` printed, a value copied out of a browser, a
base64 string from a log or bytes cut out of a capture are read alike by both commands, and a time or a flag
word reads the same in both.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Iterable
from typing import Any

from fastkrb.enctypes import label as enctype_label
from fastkrb.errors import utc_iso
from fastkrb.krb.asn1 import GSS_FLAGS, flags_to_names
from fastkrb.krb.negotiate import token_from_bytes, token_from_text

__all__ = ["read_token_arg", "parse_time", "span", "when", "ticket_flag_names", "gss_flag_names", "show_value",
           "plural"]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}; give the path of a file that "
                         "holds the token (the header line, base64, hex, or the binary token)") from None


def read_token_arg(arg: str | None, file: str | None = None) -> str | bytes:
    """A token as given on the command line, in the form the validator reads.

    ``file`` (``--file PATH``, ``-`` for stdin) or ``arg``: ``-`` (stdin), ``@PATH``, or the text itself. Text
    may be a whole header line (``Authorization: Negotiate <b64>``), the header value, bare base64 or hex; a
    file or stdin may also hold the binary token (GSS, SPNEGO, a bare AP-REQ).
    """
    if file is not None and arg is not None:
        raise ValueError(f"two tokens were given ({arg[:20]}... and --file {file}): give the token once")
    if file is not None:
        where, data = f"--file {file}", _read(file)
    elif arg == "-":
        where, data = "standard input", _read("-")
    elif arg is not None and arg.startswith("@"):
        where, data = f"the file {arg[1:]}", _read(arg[1:])
    elif arg is not None:
        token = token_from_text(arg)
        if not token:
            raise ValueError("the token argument is empty: give the header line, the base64 token, - for stdin "
                             "or @FILE")
        return token
    else:
        raise ValueError("no token was given: pass it as an argument, - for stdin, @FILE or --file FILE")
    token = token_from_bytes(data)
    if not token:
        raise ValueError(f"{where} holds no token: put the header line, the base64 token or the binary token "
                         "in it")
    return token


def parse_time(text: str) -> float:
    """Unix seconds (``1796565600``, ``1796565600.5``) or an ISO 8601 time (``2026-12-06T14:00:00Z``, an offset
    such as ``+01:00``, or no zone: UTC). Raises ValueError with a sentence that says both forms."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (like 2026-12-06T14:00:00Z) nor Unix seconds "
                         "(like 1796565600): give the time in one of those forms") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def span(seconds: float) -> str:
    """A duration in the two largest units: ``9h59m``, ``2d3h``, ``5m12s``, ``42s``, ``350ms``."""
    s = abs(seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    whole = int(s)
    parts = [(whole // 86400, "d"), (whole % 86400 // 3600, "h"), (whole % 3600 // 60, "m"), (whole % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    parts = parts[:2]
    if len(parts) == 2 and parts[1][0] == 0:
        parts.pop()
    return "".join(f"{n}{u}" for n, u in parts)


def when(t: float | None, now: float | None) -> str:
    """A time as ISO 8601 UTC and relative to ``now``: ``2026-12-06T14:00:00Z (in 9h59m)``, ``... (3m ago)``."""
    if t is None:
        return "none"
    if now is None:
        return utc_iso(t)
    d = t - now
    rel = "now" if abs(d) < 0.5 else f"in {span(d)}" if d > 0 else f"{span(d)} ago"
    return f"{utc_iso(t)} ({rel})"


def ticket_flag_names(flags: int) -> list[str]:
    """The ticket's flags by name (RFC 4120 §5.3 TicketFlags): forwardable, renewable, pre-authent, ..."""
    return flags_to_names(flags)


def gss_flag_names(flags: int) -> list[str]:
    """The GSS flags of the 0x8003 checksum by name (RFC 4121 §4.1.1.1): mutual, integ, conf, deleg, ..."""
    return [n for n, bit in GSS_FLAGS.items() if flags & bit]


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 key``, ``2 keys``: the count and the word that agrees with it."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


_TIMES = frozenset({"auth_time", "start_time", "end_time", "renew_till", "ctime", "first_seen", "cache_started",
                    "pac_auth_time"})
_ENCTYPES = frozenset({"enctype", "session_enctype", "ticket_enctype", "authenticator_enctype", "subkey_enctype"})


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def show_value(key: str, value: Any, now: float | None) -> str:
    """One field of a result or of an error's details, worded for people (times, flags, enctypes, offsets);
    anything else as it is."""
    if value is None:
        return "none"
    if key == "now":
        return utc_iso(value)
    if key in _TIMES:
        return when(value, now)
    if key in _ENCTYPES:
        return enctype_label(value)
    if key == "keytab_enctypes" or key == "permitted":
        return _names(enctype_label(e) for e in value)
    if key in ("flags", "ticket_flags") and isinstance(value, int):
        return _names(ticket_flag_names(value))
    if key == "gss_flags" and isinstance(value, int):
        return _names(gss_flag_names(value))
    if key in ("skew", "skew_seconds", "offset_seconds"):
        v = float(value)
        return f"{v:+.3f} s (client {'ahead' if v > 0 else 'behind'})" if v else "0 s"
    if key == "first_seen_ago":
        return f"{span(value)} ago"
    if key == "clock_skew":
        return f"{value:g} s"
    if isinstance(value, (list, tuple)):
        return _names(str(v) for v in value)
    return str(value)
