"""The C core's base64 decoder (native/der.c, fk_b64_decode: the RFC 4559 Negotiate header) against Python's
strict base64 (RFC 4648): the same bytes for every text both accept, and a refusal for every character
outside the alphabet, wherever it sits (in a 16-character SIMD block or in the scalar tail).

The decoder's one documented leniency: the '=' padding is optional (up to two are stripped; some clients
send none), so the reference pads what remains before handing it to ``base64.b64decode(validate=True)``.
"""

from __future__ import annotations

import base64
import binascii
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from fastkrb import Validator, _native
from fastkrb.testing import make_keytab, mint

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BODY = re.compile(rb"[A-Za-z0-9+/]*")


def reference(text: bytes) -> bytes | None:
    """Python's strict decoder with the header's rule: up to two trailing '=' optional."""
    body = text
    for _ in range(2):
        if body.endswith(b"="):
            body = body[:-1]
    if not _BODY.fullmatch(body) or len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        return None


def test_known_answers() -> None:
    assert _native.b64decode(b"") == b""
    assert _native.b64decode(b"TWFu") == b"Man"
    assert _native.b64decode(b"TWE=") == _native.b64decode(b"TWE") == b"Ma"
    assert _native.b64decode(b"TQ==") == _native.b64decode(b"TQ=") == _native.b64decode(b"TQ") == b"M"
    assert _native.b64decode(b"=") == _native.b64decode(b"==") == b""   # padding alone: empty, as before
    for bad in (b"T", b"TWFuT", b"TQ===", b"===", b"T=Q=", b"TW-u", b"TW_u", b"TWFu\n", b" TWFu", b"TWFu\x00"):
        assert _native.b64decode(bad) is None, bad
    # 16-character blocks and the tail agree on the same data
    data = bytes(range(256))
    assert _native.b64decode(base64.b64encode(data)) == data


def test_every_byte_outside_the_alphabet_is_refused_at_every_position() -> None:
    valid = base64.b64encode(bytes(random.Random(1).randbytes(36)))   # 48 characters: 3 SIMD blocks
    assert _native.b64decode(valid) == base64.b64decode(valid)
    for pos in range(len(valid)):
        for ch in range(256):
            text = valid[:pos] + bytes([ch]) + valid[pos + 1:]
            got = _native.b64decode(text)
            if ch in ALPHABET:
                assert got == base64.b64decode(text), (pos, ch)
            elif ch == ord("=") and pos >= len(valid) - 2:
                assert got == reference(text), (pos, ch)
            else:
                assert got is None, (pos, ch)


def _mutated(data: bytes, pad: int, edits: list[tuple[int, int]]) -> bytes:
    text = bytearray(base64.b64encode(data))
    while pad and text.endswith(b"="):
        text.pop()
        pad -= 1
    for pos, ch in edits:
        if text:
            text[pos % len(text)] = ch
    return bytes(text)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2),
       st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(list(range(256)) + list(ALPHABET) * 4)),
                max_size=3))
def test_matches_python_on_encodings_and_their_mutations(data: bytes, pad: int, edits: list[tuple[int, int]]) -> None:
    text = _mutated(data, pad, edits)
    assert _native.b64decode(text) == reference(text)
    if not edits:
        assert _native.b64decode(text) == data


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=120) | st.text(alphabet=ALPHABET.decode() + "=", max_size=120).map(str.encode))
def test_matches_python_on_any_text(text: bytes) -> None:
    """Arbitrary lengths (n % 4 == 1 refused), '=' anywhere (accepted only as up to two at the end)."""
    assert _native.b64decode(text) == reference(text)


def test_header_and_raw_forms_validate_alike() -> None:
    """A 508-byte SPNEGO token as bytes, as bare base64 and as the Negotiate header (padded or not)."""
    spn = "HTTP/api.example.test@EXAMPLE.TEST"
    kt = make_keytab(principals=(spn,), enctypes=(18,), kvno=1, rng=random.Random(2))
    v = Validator(kt, replay_cache=None, cold_start=False)
    raw = mint(kt, server=spn, now=1_800_000_000.0, rng=random.Random(3)).token
    assert isinstance(raw, bytes) and len(raw) == 508
    b64 = base64.b64encode(raw).decode()
    want = v.validate(raw, now=1_800_000_000.0).client
    for form in (b64, "Negotiate " + b64, "negotiate  " + b64.rstrip("=") + "\r\n", ("Negotiate " + b64).encode()):
        assert v.validate(form, now=1_800_000_000.0).client == want
