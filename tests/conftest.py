"""Session fixtures for the real-KDC tests: each realm is built once per session by tests/kdc.py.

Tests that use ``mit_lab``/``cross_lab`` are marked ``kdc``, those that use ``heimdal_lab`` also ``heimdal``
(so ``-m "not kdc"`` runs the rest). They skip only when the KDC programs are absent, and say how to get
them (tests/install_kdc_deps.sh, which ``make test`` runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_KDC_FIXTURES = {"mit_lab", "cross_lab", "heimdal_lab", "get_token", "mit_accept"}
_HEIMDAL_FIXTURES = {"heimdal_lab"}
_INSTALL_HINT = "run tests/install_kdc_deps.sh (make test does)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _KDC_FIXTURES:
            item.add_marker(pytest.mark.kdc)
        if names & _HEIMDAL_FIXTURES:
            item.add_marker(pytest.mark.heimdal)


def _require_mit() -> None:
    import kdc

    missing = kdc.mit_missing()
    if missing:
        pytest.skip(f"MIT krb5 KDC programs not installed ({', '.join(missing)}): {_INSTALL_HINT}")


def _build(builder: Callable[[Path], Any], path: Path) -> Any:
    start = time.monotonic()
    lab = builder(path)
    lab.extra["build_seconds"] = time.monotonic() - start
    return lab


@pytest.fixture(scope="session")
def mit_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The MIT realm FASTKRB.TEST with the services, keytab variants and ccaches of kdc.build_mit_lab."""
    _require_mit()
    import kdc

    lab = _build(kdc.build_mit_lab, tmp_path_factory.mktemp("mit-realm"))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def cross_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """ALPHA.TEST (alice) and BETA.TEST (HTTP/api.beta.test) joined by krbtgt/BETA.TEST@ALPHA.TEST."""
    _require_mit()
    import kdc

    lab = _build(kdc.build_cross_lab, tmp_path_factory.mktemp("cross-realm"))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def heimdal_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """HEIMDAL.TEST served by Heimdal's kdc (unpacked in build/heimdal); MIT's client makes the AP-REQs."""
    _require_mit()
    import kdc

    if kdc.heimdal_dir() is None:
        pytest.skip(f"Heimdal KDC not unpacked in build/heimdal (or $FASTKRB_HEIMDAL_DIR): {_INSTALL_HINT}")
    lab = _build(kdc.build_heimdal_lab, tmp_path_factory.mktemp("heimdal-realm"))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def faketime() -> str:
    """libfaketime, for MIT's verdict at a moved clock (the acceptor has no `now` parameter)."""
    import kdc

    lib = kdc.faketime_lib()
    if lib is None:
        pytest.skip(f"libfaketime not installed: {_INSTALL_HINT}")
    return lib


@pytest.fixture
def get_token(mit_lab: Any) -> Callable[..., Any]:
    """get_token(service, *, mech="krb5"|"spnego", mutual=False, channel_bindings=None, delegate=False,
    ccache=None) -> (token bytes, InitContext), from MIT's initiator as alice@FASTKRB.TEST."""
    return mit_lab.get_token  # type: ignore[no-any-return]


@pytest.fixture
def mit_accept(mit_lab: Any) -> Callable[..., Any]:
    """mit_accept(token, keytab, channel_bindings=None, *, now=None) -> (ok, error, output_token)."""
    return mit_lab.mit_accept  # type: ignore[no-any-return]
