"""Session fixtures for the real-KDC tests: each realm is built once per session by tests/support.

``mit_lab``, ``heimdal_lab`` (one per KDC kind of support/kinds.py) and ``cross_lab`` are the labs; ``realm``
is the lab of each KDC kind in turn, for the tests that must hold whatever KDC issued the ticket. Tests that
use a lab are marked ``kdc``, those that use Heimdal's also ``heimdal`` (so ``-m "not kdc"`` runs the
rest). They skip only when the KDC programs are absent, and say how to get them (tests/install_kdc_deps.sh,
which ``make test`` runs).

``samba_dc`` is Samba's AD DC (tests/support/samba_dc.py), one per session for every module that uses it
(~15 s to build); tests using it are marked ``samba``, and fail (not skip) without root and Debian's samba.
Tests that change the directory use accounts of their own (the password of ``svc-rot`` changes), so the
modules sharing the DC pass in any order.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import samba_dc as sdc
from support.crossrealm import build_cross_lab
from support.kinds import INSTALL_HINT, KINDS, KdcKind, mit_unavailable
from support.realm import Lab, faketime_lib

_KDC_FIXTURES = {"realm", "cross_lab", "get_token", "mit_accept", *(f"{k}_lab" for k in KINDS)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "produces(code, ...): the error codes a test_inspect case must produce")


# Under CI (CI=true, as .ci/run is run) every program and package the suite needs is installed by the
# project's own files, so a skip there is a missing install step, not an absent option: it fails. The one
# kind of skip kept is a published vector of an enctype or checksum fastkrb does not implement.
_CI_STRICT = bool(os.environ.get("CI"))
_ALLOWED_SKIP = "not implemented"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip_under_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if _CI_STRICT and report.skipped and _ALLOWED_SKIP not in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true ({_skip_reason(report)}): CI installs everything the suite "
                           "needs (make test, .ci/system-deps), so this skip is a missing install step")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _KDC_FIXTURES:
            item.add_marker(pytest.mark.kdc)
        for kind in KINDS.values():
            if kind.marker and f"{kind.name}_lab" in names:
                item.add_marker(kind.marker)
        if "samba_dc" in names:
            item.add_marker(pytest.mark.samba)


def _build(why: str | None, builder: Callable[[Path], Lab], path: Path) -> Lab:
    if why is not None:
        pytest.skip(why)
    start = time.monotonic()
    lab = builder(path)
    lab.extra["build_seconds"] = time.monotonic() - start
    return lab


def _kind_lab(kind: KdcKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = _build(kind.missing(), kind.build, tmp_path_factory.mktemp(f"{kind.name}-realm"))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def mit_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The MIT realm FASTKRB.TEST with the services, keytab variants and ccaches of support.realm.populate."""
    yield from _kind_lab(KINDS["mit"], tmp_path_factory)


@pytest.fixture(scope="session")
def heimdal_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """HEIMDAL.TEST served by Heimdal's kdc (unpacked in build/heimdal), populated like the MIT lab."""
    yield from _kind_lab(KINDS["heimdal"], tmp_path_factory)


@pytest.fixture(params=[pytest.param(k.name, marks=[getattr(pytest.mark, k.marker)] if k.marker else [])
                        for k in KINDS.values()])
def realm(request: pytest.FixtureRequest) -> Lab:
    """The lab of each KDC kind in turn (``test_x[mit]``, ``test_x[heimdal]``): the same services, keytabs and
    ccaches whatever KDC issued the tickets; ``realm.kind`` and ``realm.issues_pac`` say which it is."""
    lab: Lab = request.getfixturevalue(f"{request.param}_lab")
    return lab


@pytest.fixture(scope="session")
def cross_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """ALPHA.TEST (alice) and BETA.TEST (HTTP/api.beta.test) joined by krbtgt/BETA.TEST@ALPHA.TEST."""
    lab = _build(mit_unavailable(), build_cross_lab, tmp_path_factory.mktemp("cross-realm"))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def samba_dc() -> Iterator[sdc.SambaDC]:
    """Samba's AD DC for CORP.EXAMPLE: provisioned, populated, running in its own network namespace, keytabs
    exported; stopped (namespace gone, directory removed) at session end. FASTKRB_KEEP_SAMBA=1 keeps its
    directory for a post-mortem. Its LDAP takes ldap3's GSSAPI bind (the DC account has ldap/dc1.corp.example,
    smb.conf says ``ldap server require strong auth = allow_sasl_over_tls``)."""
    with sdc.running_dc(keep=os.environ.get("FASTKRB_KEEP_SAMBA") == "1") as dc:
        print(f"\nSamba DC up in {dc.timings['total']:.1f}s: "
              + ", ".join(f"{k} {v:.1f}s" for k, v in dc.timings.items() if k != "total"), file=sys.stderr)
        yield dc


@pytest.fixture(scope="session")
def faketime() -> str:
    """libfaketime, for MIT's verdict at a moved clock (the acceptor has no `now` parameter)."""
    lib = faketime_lib()
    if lib is None:
        pytest.skip(f"libfaketime not installed: {INSTALL_HINT}")
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
