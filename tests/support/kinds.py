"""The KDC kinds the interop tests run against: how to build each one's lab and why it may not run here.

tests/conftest.py makes a session fixture ``<name>_lab`` per kind and the ``realm`` fixture parametrized
over them all. A new kind (a Samba AD DC next) is a ``Realm`` subclass (support/realm.py: start,
add_services, export_many, rotate, kind, issues_pac) plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support.heimdal import build_heimdal_lab, heimdal_dir
from support.mit import build_mit_lab, mit_missing
from support.realm import Lab

INSTALL_HINT = "run tests/install_kdc_deps.sh (make test does)"


@dataclass(frozen=True)
class KdcKind:
    name: str
    build: Callable[[Path], Lab]
    missing: Callable[[], str | None]  # why this machine cannot run it (with how to fix that), or None
    marker: str | None = None  # a pytest marker besides ``kdc`` for the tests that use it


def mit_unavailable() -> str | None:
    """MIT's programs are needed by every kind: its clients make the tickets and tokens."""
    missing = mit_missing()
    return f"MIT krb5 KDC programs not installed ({', '.join(missing)}): {INSTALL_HINT}" if missing else None


def heimdal_unavailable() -> str | None:
    if (why := mit_unavailable()) is not None:
        return why
    if heimdal_dir() is None:
        return f"Heimdal KDC not unpacked in build/heimdal (or $FASTKRB_HEIMDAL_DIR): {INSTALL_HINT}"
    return None


KINDS: dict[str, KdcKind] = {
    "mit": KdcKind("mit", build_mit_lab, mit_unavailable),
    "heimdal": KdcKind("heimdal", build_heimdal_lab, heimdal_unavailable, marker="heimdal"),
}
