"""Differential tests: the native crypto against the independent reference in tests/support/refcrypto.py.

Random keys, usages and lengths 0..300; encryption with a fixed confounder must match byte for byte,
and each side must decrypt what the other made.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkrb import _native
from fastkrb.errors import IntegrityError
from fastkrb.krb import crypto
from support import refcrypto as ref

ENCTYPES = (17, 18, 19, 20, 23)
AES = (17, 18, 19, 20)

usages = st.integers(min_value=0, max_value=0xFFFFFFFF) | st.integers(min_value=0, max_value=70)


@st.composite
def keyed(draw: st.DrawFn, enctypes: tuple[int, ...] = ENCTYPES) -> tuple[int, bytes]:
    enctype = draw(st.sampled_from(enctypes))
    key = draw(st.binary(min_size=ref.KEYLEN[enctype], max_size=ref.KEYLEN[enctype]))
    return enctype, key


def confounder_len(enctype: int) -> int:
    return 8 if enctype == 23 else 16


@settings(max_examples=400, deadline=None)
@given(keyed(), usages, st.binary(max_size=300), st.data())
def test_encrypt_matches_reference(ek: tuple[int, bytes], usage: int, pt: bytes, data: st.DataObject) -> None:
    enctype, key = ek
    n = confounder_len(enctype)
    conf = data.draw(st.binary(min_size=n, max_size=n))
    ct = crypto.encrypt(enctype, key, usage, pt, conf)
    assert ct == ref.encrypt(enctype, key, usage, pt, conf)
    assert crypto.decrypt(enctype, key, usage, ct) == pt


@settings(max_examples=300, deadline=None)
@given(keyed(), usages, st.binary(max_size=300))
def test_decrypt_round_trips(ek: tuple[int, bytes], usage: int, pt: bytes) -> None:
    enctype, key = ek
    ct = crypto.encrypt(enctype, key, usage, pt)  # random confounder
    conf, back = ref.decrypt(enctype, key, usage, ct)
    assert back == pt
    assert len(conf) == confounder_len(enctype)
    assert crypto.decrypt(enctype, key, usage, ref.encrypt(enctype, key, usage, pt, conf)) == pt


@settings(max_examples=200, deadline=None)
@given(keyed(), usages, st.binary(min_size=1, max_size=300), st.data())
def test_tampering_agrees_with_reference(ek: tuple[int, bytes], usage: int, pt: bytes, data: st.DataObject) -> None:
    enctype, key = ek
    ct = bytearray(crypto.encrypt(enctype, key, usage, pt))
    pos = data.draw(st.integers(min_value=0, max_value=len(ct) - 1))
    ct[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(IntegrityError):
        crypto.decrypt(enctype, key, usage, bytes(ct))
    with pytest.raises(ref.BadIntegrity):
        ref.decrypt(enctype, key, usage, bytes(ct))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([15, 16, 19, 20, -138]), usages, st.binary(max_size=300), st.data())
def test_checksum_matches_reference(cksumtype: int, usage: int, msg: bytes, data: st.DataObject) -> None:
    enctype = ref.CKSUM_ENCTYPE[cksumtype]
    key = data.draw(st.binary(min_size=ref.KEYLEN[enctype], max_size=ref.KEYLEN[enctype]))
    mac = crypto.checksum(cksumtype, key, usage, msg)
    assert mac == ref.checksum(cksumtype, key, usage, msg)
    assert crypto.verify_checksum(cksumtype, key, usage, msg, mac)


@settings(max_examples=200, deadline=None)
@given(keyed(AES), st.binary(max_size=300))
def test_prf_matches_reference(ek: tuple[int, bytes], msg: bytes) -> None:
    enctype, key = ek
    assert crypto.prf(enctype, key, msg) == ref.prf(enctype, key, msg)


@settings(max_examples=300, deadline=None)
@given(keyed(AES), st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_derive_matches_reference(ek: tuple[int, bytes], constant: bytes, length: int) -> None:
    enctype, key = ek
    assert crypto.derive(enctype, key, constant, length) == ref.derive(enctype, key, constant, length)


@settings(max_examples=300, deadline=None)
@given(keyed(AES), usages, st.sampled_from(["Kc", "Ke", "Ki"]))
def test_derive_key_matches_reference(ek: tuple[int, bytes], usage: int, kind: str) -> None:
    enctype, key = ek
    ke, ki, kc = ref.usage_keys(enctype, key, usage)
    want = {"Ke": ke, "Ki": ki, "Kc": kc}[kind]
    assert crypto.derive_key(enctype, key, usage, kind) == want  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_nfold_matches_reference(data: bytes, nbytes: int) -> None:
    assert crypto.nfold(data, nbytes) == ref.nfold(data, nbytes)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([16, 32]), st.data())
def test_aes_cts_matches_reference(keylen: int, data: st.DataObject) -> None:
    key = data.draw(st.binary(min_size=keylen, max_size=keylen))
    iv = data.draw(st.binary(min_size=16, max_size=16))
    msg = data.draw(st.binary(min_size=16, max_size=300))
    ct = crypto.aes_cts_encrypt(key, iv, msg)
    assert ct == ref.cts_encrypt(key, iv, msg)
    assert crypto.aes_cts_decrypt(key, iv, ct) == msg
    assert ref.cts_decrypt(key, iv, ct) == msg


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_md4_matches_reference(data: bytes) -> None:
    assert _native.crypto_md4(data) == ref._md4(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([(1, "sha1"), (2, "sha256"), (3, "sha384"), (4, "md5")]), st.binary(max_size=300),
       st.binary(max_size=300))
def test_hmac_states_match_reference(md: tuple[int, str], key: bytes, msg: bytes) -> None:
    """Precomputed inner/outer states, including keys longer than the hash block."""
    import hashlib
    import hmac

    assert _native.crypto_hmac(md[0], key, msg) == hmac.new(key, msg, getattr(hashlib, md[1])).digest()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([17, 18, 19, 20]), st.text(max_size=20), st.binary(max_size=20),
       st.integers(min_value=1, max_value=50))
def test_string_to_key_matches_reference(enctype: int, password: str, salt: bytes, iterations: int) -> None:
    got = crypto.string_to_key(enctype, password, salt, iterations.to_bytes(4, "big"), allow_weak_iterations=True)
    assert got == ref.string_to_key(enctype, password.encode("utf-8"), salt, iterations)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_rc4_string_to_key_matches_reference(password: str) -> None:
    assert crypto.string_to_key(23, password, b"ignored") == ref.string_to_key(23, password.encode("utf-8"), b"", 0)
