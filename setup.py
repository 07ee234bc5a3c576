"""Builds the native core (native/*.pyx + native/*.c) into fastkrb._native, linked to OpenSSL libcrypto.

Environment switches (msgspec style): FASTKRB_DEBUG=1 (-O0 -g), FASTKRB_SANITIZE=1 (ASan+UBSan),
FASTKRB_COVERAGE=1 (gcov + Cython line tracing off). Warnings are errors in every mode.
"""

import glob
import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError as exc:  # pragma: no cover
    raise SystemExit("building fastkrb needs Cython>=3.0 (pip install cython)") from exc

CFLAGS = [
    "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
    "-Wno-missing-field-initializers", "-fvisibility=hidden",
    # OpenSSL 3 deprecates the low-level SHA/MD5/RC4 structs we keep as precomputed HMAC states;
    # target the 1.1.1 API level so they stay declared without deprecation attributes.
    "-DOPENSSL_API_COMPAT=0x10101000L",
]
LDFLAGS: list[str] = []

if os.environ.get("FASTKRB_DEBUG"):
    CFLAGS += ["-O0", "-g3", "-UNDEBUG"]
else:
    CFLAGS += ["-O2", "-g0"]
# FASTKRB_SANITIZE=1: ASan+UBSan (gcc or clang); the interpreter then needs the ASan runtime preloaded
# (LD_PRELOAD=$(cc -print-file-name=libasan.so), see `make test-asan`). FASTKRB_SANITIZE=fuzzer (clang):
# also libFuzzer's edge counters, so atheris sees the native code (fuzz/run.py, docs/fuzzing.md).
# Build either into its own directory (--build-lib build/asan --build-temp build/asan-tmp).
SANITIZE = os.environ.get("FASTKRB_SANITIZE", "")
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    CFLAGS += san + ["-O1", "-g"]   # -g: file:line in sanitizer reports
    LDFLAGS += san
    if "clang" in os.environ.get("CC", ""):
        # clang's UBSan flags NULL + 0 in Cython's generated code; that file only (fuzz/ubsan-ignore.txt)
        CFLAGS += ["-fsanitize-ignorelist=" + os.path.abspath("fuzz/ubsan-ignore.txt")]
    if SANITIZE == "fuzzer":
        CFLAGS += ["-fsanitize=fuzzer-no-link"]
# FASTKRB_COVERAGE=1: gcov counters (.gcda next to the objects in --build-temp; `gcov -b` reads them).
if os.environ.get("FASTKRB_COVERAGE"):
    CFLAGS += ["--coverage", "-O0"]
    LDFLAGS += ["--coverage"]

ext = Extension(
    "fastkrb._native",
    sources=["native/_native.pyx", *sorted(c for c in glob.glob("native/*.c") if not c.endswith("_native.c"))],
    include_dirs=["native"],
    libraries=["crypto", "pthread"],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
    depends=sorted(glob.glob("native/*.h") + glob.glob("native/*.pxi") + glob.glob("native/*.pxd")),
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        include_path=["native"],
    ),
)
