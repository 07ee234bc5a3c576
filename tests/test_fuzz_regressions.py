"""Every input a fuzzer ever crashed on stays fixed (tests/fuzz_regressions/<target>/<name>).

C targets (der, crypto, validate, pac, rcache, shm): the harness from fuzz/ is compiled with clang under
ASan+UBSan and libFuzzer and run on the saved inputs, so the regression is checked by the same
sanitizers and invariants that found it (skipped when clang or its fuzzer runtime is missing:
docs/fuzzing.md). Atheris targets (py_*): the target's test_one_input runs in-process on the normal
build. Each finding is also described in docs/fuzzing.md with its fix.

The atheris targets' invariants (only KerberosError escapes, no key in any message or result, a replay
is refused, the acceptor's own answer is not a request, keytabs round-trip) are also checked on the
whole committed corpus (fuzz/seeds, fuzz/corpus) in every ordinary test run.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REG = ROOT / "tests" / "fuzz_regressions"
NATIVE = ["native/der.c", "native/kcrypto.c", "native/pac.c", "native/validate.c", "native/rcache.c", "native/rtab.c",
          "native/shm.c"]
C_TARGETS = ("der", "crypto", "validate", "pac", "rcache", "shm")
PY_TARGETS = ("py_keytab", "py_pac", "py_validate", "py_wire")


def _inputs(target: str) -> list[Path]:
    d = REG / target
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


CASES = [(t, p) for t in C_TARGETS + PY_TARGETS for p in _inputs(t)]


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> object:
    cc = shutil.which("clang")
    if cc is None:
        pytest.skip("clang not installed (apt-get install clang libclang-rt-14-dev): docs/fuzzing.md")
    out = tmp_path_factory.mktemp("fuzz-bin")
    built: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in built:
            exe = out / f"fuzz_{target}"
            proc = subprocess.run(
                [cc, "-std=c11", "-D_GNU_SOURCE", "-DOPENSSL_API_COMPAT=0x10101000L", "-g", "-O1",
                 "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined", "-Inative", "-Ifuzz",
                 f"fuzz/fuzz_{target}.c", *NATIVE, "-lcrypto", "-lpthread", "-o", str(exe)],
                cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0 and "fuzzer" in proc.stderr:
                pytest.skip(f"clang's libFuzzer runtime is missing: {proc.stderr[-300:]}")
            assert proc.returncode == 0, proc.stderr
            built[target] = exe
        return built[target]

    return get


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_saved_input_stays_fixed(target: str, path: Path, harness: object, monkeypatch: pytest.MonkeyPatch) -> None:
    if target in C_TARGETS:
        exe = harness(target)  # type: ignore[operator]
        proc = subprocess.run([str(exe), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                                   "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        monkeypatch.syspath_prepend(str(ROOT / "fuzz"))
        mod = importlib.import_module(target)
        mod.test_one_input(path.read_bytes())
        sys.modules.pop(target, None)


def test_rcache_model_holds_on_the_committed_corpus(harness: object, tmp_path: Path) -> None:
    """The in-process cache agrees with the model (fz_rcmodel.h) on every committed rcache input, once with
    a table that holds the capacity and once with one that starts at 2 entries and grows and shrinks."""
    exe = harness("rcache")  # type: ignore[operator]
    dirs = [str(ROOT / "fuzz" / d / "rcache") for d in ("seeds", "corpus")]
    # a failing input is written to tmp_path (the crash file), not into the tree
    proc = subprocess.run([str(exe), "-runs=0", f"-artifact_prefix={tmp_path}/", *dirs], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr and "INITED" in proc.stderr


def test_every_target_has_a_regression_directory_name_it_can_use() -> None:
    """Saved inputs live under a directory named after an existing target (a typo would skip them)."""
    for d in REG.iterdir():
        assert d.is_dir() and d.name in C_TARGETS + PY_TARGETS, d
        assert (ROOT / "fuzz" / (f"fuzz_{d.name}.c" if d.name in C_TARGETS else f"{d.name}.py")).exists()


@pytest.mark.parametrize("target", PY_TARGETS)
def test_atheris_invariants_hold_on_the_committed_corpus(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [p for d in ("seeds", "corpus") if (ROOT / "fuzz" / d / target).is_dir()
             for p in sorted((ROOT / "fuzz" / d / target).iterdir())]
    assert len(files) >= 4, f"no committed corpus for {target}"
    monkeypatch.syspath_prepend(str(ROOT / "fuzz"))
    quiet = logging.getLogger("fastkrb")
    level = quiet.level   # a harness quiets the logger at import (its own process in a fuzz run): put it back
    mod = importlib.import_module(target)
    try:
        for p in files:
            mod.test_one_input(p.read_bytes())
    finally:
        sys.modules.pop(target, None)
        quiet.setLevel(level)
