#!/usr/bin/env bash
# What fuzzing and the sanitized round need beyond .ci/system-deps: clang with its libFuzzer/ASan
# runtimes and llvm-cov (Debian), and atheris in the venv given as $1 (a python). Idempotent.
set -euo pipefail
PY=${1:-python3}
if ! command -v clang >/dev/null || ! command -v llvm-cov >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends clang llvm >/dev/null
fi
major=$(clang -dumpversion | cut -d. -f1)
if [ -z "$(find "$(clang -print-resource-dir)" -name 'libclang_rt.fuzzer-x86_64.a' 2>/dev/null | head -1)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "libclang-rt-${major}-dev" >/dev/null
fi
"$PY" -c "import atheris" 2>/dev/null || "$PY" -m pip install -q atheris
