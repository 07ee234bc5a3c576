"""Crypto micro-benchmarks: the per-ticket costs the validator pays.

Run: ``PYTHONPATH=src python -m pytest benches/bench_crypto.py --benchmark-enable``.

Two views of each operation:
- ``test_c_*``: 1000 calls timed inside C (``crypto_time_loop``), so the reported time *in microseconds
  per round equals nanoseconds per call*; ``extra_info["ns_per_call"]`` carries the same number. This is
  the validator's real cost.
- ``test_py_*``: one call through the Python API (adds ~0.1-0.3 µs of call and buffer overhead).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from fastkrb import _native
from fastkrb.krb import crypto

TICKET_LEN = 450  # a typical service-ticket enc-part (MIT, no PAC)
LOOP = 1000
AES = (17, 18, 19, 20)
ALL = (17, 18, 19, 20, 23)


def _ticket(enctype: int, key: bytes) -> bytes:
    _, maclen, conflen = _native.crypto_enctype_info(enctype)
    ct = crypto.encrypt(enctype, key, 2, os.urandom(TICKET_LEN - maclen - conflen))
    assert len(ct) == TICKET_LEN
    return ct


def _c_loop(benchmark: Any, op: str, enctype: int, key: bytes, usage: int, data: bytes) -> None:
    per_call = benchmark.pedantic(_native.crypto_time_loop, args=(op, enctype, key, usage, data, LOOP),
                                  rounds=300, warmup_rounds=20)
    benchmark.extra_info["ns_per_call"] = round(per_call, 1)
    benchmark.extra_info["calls_per_round"] = LOOP


@pytest.mark.parametrize("enctype", ALL)
def test_c_decrypt_ticket(benchmark: Any, enctype: int) -> None:
    """fk_decrypt of a 450-byte ticket with a ready fk_ekey (the long-term key, specialised once)."""
    key = crypto.random_key(enctype)
    _c_loop(benchmark, "decrypt", enctype, key, 2, _ticket(enctype, key))


@pytest.mark.parametrize("enctype", ALL)
def test_c_ekey_init_session_key(benchmark: Any, enctype: int) -> None:
    """fk_ekey_init for a session key and usage 11 (authenticator): Ke, Ki and Kc."""
    _c_loop(benchmark, "ekey_init", enctype, crypto.random_key(enctype), 11, b"")


@pytest.mark.parametrize("enctype", ALL)
def test_c_ekey_init_no_checksum_key(benchmark: Any, enctype: int) -> None:
    """fk_ekey_init_flags(FK_EKEY_NO_CHECKSUM) for usage 11: Ke and Ki only."""
    _c_loop(benchmark, "ekey_init_nokc", enctype, crypto.random_key(enctype), 11, b"")


@pytest.mark.parametrize("enctype", ALL)
def test_c_checksum_pac(benchmark: Any, enctype: int) -> None:
    """Keyed checksum of 600 bytes with usage 17 (a PAC server signature)."""
    _c_loop(benchmark, "checksum", enctype, crypto.random_key(enctype), 17, os.urandom(600))


@pytest.mark.parametrize("enctype", ALL)
def test_c_encrypt_ap_rep(benchmark: Any, enctype: int) -> None:
    """fk_encrypt of a 40-byte EncAPRepPart (usage 12) with a random confounder."""
    _c_loop(benchmark, "encrypt", enctype, crypto.random_key(enctype), 12, os.urandom(40))


@pytest.mark.parametrize("enctype", AES)
def test_py_cryptokey_decrypt(benchmark: Any, enctype: int) -> None:
    key = crypto.random_key(enctype)
    ready = _native.CryptoKey(enctype, key, 2)
    ct = _ticket(enctype, key)
    assert len(benchmark(ready.decrypt, ct)) == TICKET_LEN - 16 - _native.crypto_enctype_info(enctype)[1]


@pytest.mark.parametrize("enctype", AES)
def test_py_decrypt_with_key_setup(benchmark: Any, enctype: int) -> None:
    key = crypto.random_key(enctype)
    ct = _ticket(enctype, key)
    benchmark(crypto.decrypt, enctype, key, 2, ct)
