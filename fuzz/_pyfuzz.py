"""Shared by the atheris targets: optional atheris, and the secrets no message may contain.

Each target module defines ``test_one_input(data)`` and can be imported without atheris (the
regression test replays saved inputs through it); run as a script it fuzzes under atheris.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

try:
    import atheris
except ImportError:  # the regression tests replay inputs without atheris
    atheris = None

if atheris is not None:
    # instrument every fastkrb module before anything (fuzzkeys included) imports one uninstrumented
    with atheris.instrument_imports(include=["fastkrb"]):
        import fastkrb.diagnose
        import fastkrb.keytab
        import fastkrb.krb.pac
        import fastkrb.validator  # noqa: F401

import fuzzkeys


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Instrument the Python modules imported inside (atheris coverage), when atheris is there."""
    if atheris is None:
        yield
    else:
        with atheris.instrument_imports(include=["fastkrb"]):
            yield


SECRET_HEX = [fuzzkeys.key_for(p, k, e, s).hex() for p, k, e, _, s in fuzzkeys.ENTRIES]


def assert_no_secret(text: str, extra: tuple[bytes, ...] = ()) -> None:
    """A service key (or a given session key) in a message, repr or log line is a finding."""
    low = text.lower()
    for h in SECRET_HEX + [b.hex() for b in extra if len(b) >= 8]:
        assert h not in low, "a key appears in a message"


def main(test_one_input: Callable[[bytes], Any]) -> None:
    if atheris is None:
        raise SystemExit("atheris is not installed (pip install atheris)")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
