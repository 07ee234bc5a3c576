"""Every input gets an AuthResult or a KerberosError: never a crash, a hang, another exception, or an
accepted forgery. Hypothesis mutates real MIT tokens and minted ones (truncation, bit flips, splices,
insertions, length rewrites), and hand-made hostile shapes probe the bounds (deep nesting, lying
lengths, huge claims). The native decoder is also compared with the independent pyasn1 decoder.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastkrb import KerberosError, Validator, _native
from fastkrb.krb.asn1 import ApReq
from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def corpus(mit_lab: Any) -> Any:
    """Real tokens from MIT's initiator (both mechs, with/without mutual) and minted ones, with keytabs."""
    real = [mit_lab.get_token("svc18", mech=m, mutual=mu)[0] for m in ("krb5", "spnego") for mu in (False, True)]
    real += [mit_lab.get_token(s)[0] for s in ("svc17", "svc19", "svc20")]
    kt = make_keytab(principals=(SPN,), enctypes=(18, 17, 20, 19), kvno=2, rng=random.Random(5))
    minted = [mint(kt, server=SPN, now=NOW, framing=f, pac=True, rng=random.Random(i)).token_bytes
              for i, f in enumerate(("spnego", "krb5", "raw", "spnego-ms"))]
    rv = Validator(str(mit_lab.keytabs["all"]), replay_cache="none", cold_start=False)
    mv = Validator(kt, replay_cache="none", cold_start=False)
    known = {(r.client, r.server, r.session_key) for r in [rv.validate(t) for t in real] +
             [mv.validate(t, now=NOW) for t in minted]}
    return _Corpus({"real": real, "real_validator": rv, "minted": minted, "minted_validator": mv, "known": known})


class _Corpus(dict):  # type: ignore[type-arg]
    """The corpus, with a short repr so that hypothesis reports stay readable."""

    def __repr__(self) -> str:
        return f"<corpus: {len(self['real'])} real, {len(self['minted'])} minted tokens>"


def _outcome(v: Validator, token: bytes, now: float | None) -> Any:
    try:
        return v.validate(token, now=now)
    except KerberosError as exc:
        assert exc.code and exc.cause and exc.fix
        return exc


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 4000)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 4000), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 4000), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.integers(0, 4000), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("splice"), st.integers(0, 4000), st.integers(0, 4000)),
)


def _mutate(tok: bytes, m: tuple[Any, ...], other: bytes) -> bytes:
    b = bytearray(tok)
    kind = m[0]
    if kind == "truncate":
        return bytes(b[: m[1] % (len(b) + 1)])
    if kind == "flip":
        for pos, bit in m[1]:
            b[pos % len(b)] ^= 1 << bit
        return bytes(b)
    if kind == "insert":
        p = m[1] % (len(b) + 1)
        return bytes(b[:p] + m[2] + b[p:])
    if kind == "delete":
        p = m[1] % len(b)
        return bytes(b[:p] + b[p + m[2]:])
    if kind == "overwrite":
        p = m[1] % len(b)
        b[p:p + len(m[2])] = m[2]
        return bytes(b)
    p, q = m[1] % len(b), m[2] % len(other)
    return bytes(b[:p] + other[q:])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), m=mutation, other=st.integers(0, 100), real=st.booleans())
def test_mutations_never_escape_or_forge(corpus: dict[str, Any], which: int, m: tuple[Any, ...],
                                         other: int, real: bool) -> None:
    toks = corpus["real"] if real else corpus["minted"]
    v = corpus["real_validator"] if real else corpus["minted_validator"]
    now = None if real else NOW
    tok = toks[which % len(toks)]
    bad = _mutate(tok, m, toks[other % len(toks)])
    out = _outcome(v, bad, now)
    if not isinstance(out, KerberosError):
        # anything still accepted is one of the genuine tickets (same identity, same session key):
        # a mutation can at most reproduce a token that was already valid, never forge a new one
        assert (out.client, out.server, out.session_key) in corpus["known"]
    # the same bytes as header text and base64 take the same path
    import base64

    hdr = "Negotiate " + base64.b64encode(bad).decode()
    out2 = _outcome(v, hdr.encode(), now)
    assert type(out2) is type(out) or isinstance(out, KerberosError) == isinstance(out2, KerberosError)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    v = _VALIDATOR
    for prefix in (b"", b"\x60", b"\x6e", b"\xa0", b"\xa1", b"Negotiate "):
        out = _outcome(v, prefix + data, NOW)
        assert isinstance(out, KerberosError)


_VALIDATOR = Validator(make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(1)),
                       replay_cache="none", cold_start=False)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + body


@pytest.mark.parametrize("shape", ["deep_seq", "deep_app", "lying_len", "huge_len", "indefinite", "deep_adif"])
def test_hostile_shapes(shape: str) -> None:
    if shape == "deep_seq":
        tok = b"\x30\x00"
        for _ in range(5000):
            tok = _tlv(0x30, tok)
        tok = _tlv(0x60, b"\x06\x06+\x06\x01\x05\x05\x02" + _tlv(0xA0, tok))
    elif shape == "deep_app":
        tok = b""
        for _ in range(3000):
            tok = _tlv(0x6E, tok)
    elif shape == "lying_len":
        tok = b"\x6e\x84\x7f\xff\xff\xff" + b"\x30" * 100
    elif shape == "huge_len":
        tok = b"\x60\x88" + b"\xff" * 8 + b"\x00" * 50
    elif shape == "indefinite":
        tok = b"\x60\x80\x06\x06+\x06\x01\x05\x05\x02\xa0\x80\x30\x80\x00\x00\x00\x00\x00\x00"
    else:
        # AD-IF-RELEVANT nested beyond the bound, inside a real ticket: decoded with an explicit stack
        kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(2))
        from fastkrb.krb.asn1 import ADEntry, encode_authorization_data

        ad = encode_authorization_data([ADEntry(5, b"x")])
        for _ in range(50):
            ad = encode_authorization_data([ADEntry(1, ad)])
        m = mint(kt, server=SPN, now=NOW, authorization_data=[(1, ad)], rng=random.Random(3))
        v = Validator(kt, replay_cache="none", cold_start=False)
        out = _outcome(v, m.token_bytes, NOW)
        # no PAC inside: the bounded walk gives up on the nesting and says the data is malformed
        assert isinstance(out, KerberosError) and out.code == "malformed"
        return
    out = _outcome(_VALIDATOR, tok, NOW)
    assert isinstance(out, KerberosError) and out.code == "malformed"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), m=mutation)
@example(which=0, m=("flip", [(116, 7)]))   # the ticket's kvno 1 becomes INTEGER -127: two's complement, kept
def test_native_decoder_agrees_with_pyasn1(corpus: dict[str, Any], which: int, m: tuple[Any, ...]) -> None:
    """Differential: where both decoders accept a (mutated) AP-REQ they must read the same fields."""
    toks = corpus["real"] + corpus["minted"]
    ap = _native.decode_token(toks[which % len(toks)])["ap_req"]
    bad = _mutate(ap, m, ap)
    try:
        mine = _native.decode_token(bad)
    except ValueError:
        mine = None
    why = ""
    try:
        ref = ApReq.from_der(bad)
    except Exception as exc:
        ref, why = None, str(exc)
    # The native decoder may refuse what pyasn1's BER-tolerant decoder takes. The reverse is allowed in two
    # deliberate cases only: 8-bit bytes in names (AD issues UTF-8 principal names; pyasn1's GeneralString
    # refuses them), and a UInt32 (kvno, seq-number) written as a negative INTEGER, which Windows does and MIT
    # reads as its two's complement (native/der.c field_uint32); pyasn1's UInt32 range refuses it.
    if mine is not None and ref is None:
        if "UInt32Asn1" in why and "ValueConstraintError(-" in why:
            assert mine["ticket_kvno"] is None or 0 <= mine["ticket_kvno"] <= 0xFFFFFFFF
            return
        assert not (mine["server"] + mine["realm"]).isascii(), "native decoder accepted what pyasn1 rejects"
        return
    if mine is None or ref is None:
        return
    assert mine["ticket_enctype"] == ref.ticket.enc_part.etype
    assert mine["ticket_kvno"] == ref.ticket.enc_part.kvno
    assert mine["realm"] == ref.ticket.realm
    assert mine["authenticator_enctype"] == ref.authenticator.etype
    assert mine["ap_options"] == ref.ap_options
