# fastkrb: `make demo` and `make test` each set up everything they need on a fresh machine.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.deps-stamp

.PHONY: demo test test-unit test-kdc bench lint build system-deps clean fuzz test-asan

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q -U pip setuptools wheel
	$(PIP) install -q cython cryptography pyasn1 pyjwt uvloop httptools prometheus-client redis hiredis matplotlib \
	    pytest pytest-benchmark hypothesis ruff mypy
	touch $(STAMP)

# The extension links to the system OpenSSL (libssl-dev); gssapi for the MIT baseline needs libkrb5-dev.
system-deps:
	bash .ci/system-deps

build: $(STAMP)
	$(VPY) setup.py -q build_ext --inplace
	$(PIP) install -q --no-build-isolation --no-deps -e .

demo: $(STAMP)
	@command -v cc >/dev/null || bash .ci/system-deps
	@test -f /usr/include/openssl/evp.h || bash .ci/system-deps
	$(MAKE) build
	$(VPY) -m fastkrb demo

test: system-deps $(STAMP)
	bash fuzz/deps.sh $(VPY)   # clang + atheris: the saved fuzz crash inputs run in the suite too
	$(PIP) install -q gssapi k5test pyyaml matplotlib starlette uvicorn fastapi flask django aiohttp \
	    httpx requests requests-gssapi httpx-gssapi pyspnego ldap3 pyjwt jwcrypto build
	$(MAKE) build
	$(MAKE) lint
	$(VPY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benches)
	$(VENV)/bin/mypy
	$(VPY) -m mypy.stubtest fastkrb._native

bench: system-deps build
	$(PIP) install -q gssapi k5test
	$(VPY) -m pytest benches -q -p no:cacheprovider --benchmark-enable --benchmark-only \
	    --benchmark-disable-gc --benchmark-sort=name --benchmark-columns=min,median,mean,stddev,rounds \
	    --benchmark-json=.benchmarks/latest.json
	$(VPY) benches/compare.py --json .benchmarks/compare.json

# Every fuzz target (libFuzzer on the C core, atheris on the Python parsers; ASan+UBSan) in turn for
# FUZZ_SECONDS each, one at a time under nice -n 19. Results: build/fuzz/results.jsonl; docs/fuzzing.md.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	bash fuzz/deps.sh $(VPY)
	$(VPY) fuzz/run.py build
	$(VPY) fuzz/run.py run --seconds $(FUZZ_SECONDS)

# The extension under ASan+UBSan in build/asan (the in-place build is untouched), the whole test suite
# on it, the saved crash inputs, and a fuzz round of FUZZ_SECONDS per target. CI runs .ci/asan-round.
test-asan: $(STAMP)
	PY=$(VPY) FUZZ_SECONDS=$(FUZZ_SECONDS) bash .ci/asan-round --full

clean:
	rm -rf build native/_native.c src/fastkrb/*.so .pytest_cache .mypy_cache .ruff_cache

# Every figure README.md and docs/performance.md quote, measured again and kept with the machine it ran on:
# benches/results/<UTC date>-<commit>/ (benches/record.py; --summary DIR prints the README's figures).
.PHONY: bench-record
bench-record: system-deps build
	$(PIP) install -q gssapi k5test
	$(VPY) benches/record.py
