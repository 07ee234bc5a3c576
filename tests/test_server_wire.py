"""The binary protocol codec (fastkrb.sidecar.protocol) against docs/protocol.md, and the server's framing rules."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest

from fastkrb import KerberosError, Validator
from fastkrb.errors import error_for_code
from fastkrb.sidecar import protocol
from fastkrb.testing import make_keytab, mint

SERVICE = "HTTP/api.example.test@EXAMPLE.TEST"


def test_validate_frame_layout_is_the_documented_one() -> None:
    f = protocol.encode_validate(0x01020304, b"TOKEN", b"CB")
    # u32 length | u8 kind | u32 id | u16 cb length | cb | token
    assert f == struct.pack(">IBIH", 5 + 2 + 2 + 5, 1, 0x01020304, 2) + b"CB" + b"TOKEN"
    assert f[0] == 0  # every legal frame starts with 0: how the server tells it from HTTP
    assert protocol.encode_validate(7, b"T") == struct.pack(">IBIH", 8, 1, 7, 0) + b"T"
    assert protocol.encode_ping(9) == struct.pack(">IBI", 5, 2, 9)


def test_split_frames_handles_partial_and_many() -> None:
    frames = b"".join(protocol.encode_validate(i, bytes([i]) * i) for i in range(1, 6))
    for cut in range(len(frames) + 1):
        got, used, err = protocol.split_frames(frames[:cut], 1000)
        assert err is None
        assert used <= cut
        # whole frames only, in order
        assert [rid for _, rid, _, _ in got] == list(range(1, len(got) + 1))
        rest, used2, _ = protocol.split_frames(frames[used:], 1000)
        assert len(got) + len(rest) == 5
        assert used + used2 == len(frames)


def test_split_frames_respects_the_budget() -> None:
    frames = b"".join(protocol.encode_ping(i) for i in range(10))
    got, used, err = protocol.split_frames(frames, 100, limit=3)
    assert [g[1] for g in got] == [0, 1, 2] and used == 27 and err is None


@pytest.mark.parametrize("length", [0, 4, 100_001, 0xFFFFFFFF])
def test_split_frames_refuses_impossible_lengths(length: int) -> None:
    good = protocol.encode_ping(1)
    got, used, err = protocol.split_frames(good + struct.pack(">I", length) + b"\x01" * 20, 100_000)
    assert [g[1] for g in got] == [1] and used == len(good)
    assert err is not None and "frame length" in err
    # even before the rest of the header has arrived
    _, _, err2 = protocol.split_frames(struct.pack(">I", length), 100_000)
    assert err2 is not None


@pytest.fixture(scope="module")
def validator_and_tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Validator, list[bytes], bytes]:
    kt = make_keytab((SERVICE,), rng=random.Random(3))
    m = mint(kt, client="bob@EXAMPLE.TEST", server=SERVICE, now=time.time())
    return Validator(kt, cold_start=False), m.variants(4), m.session_key


def test_accepted_round_trip_carries_every_fact(validator_and_tokens: tuple[Validator, list[bytes], bytes]) -> None:
    v, toks, session_key = validator_and_tokens
    res = v.validate(toks[0])
    frame = protocol.encode_accepted(42, res)
    ((kind, rid, payload),) = list(protocol.iter_frames(frame, 1 << 20))
    assert (kind, rid) == (protocol.ACCEPTED, 42)
    a = protocol.decode_accepted(payload)
    assert (a.client, a.server, a.client_realm, a.short_name) == (res.client, res.server, res.client_realm,
                                                                   res.short_name)
    assert (a.enctype, a.session_enctype, a.kvno, a.flags, a.gss_flags) == (res.enctype, res.session_enctype,
                                                                            res.kvno, res.flags, res.gss_flags)
    assert (a.auth_time, a.start_time, a.end_time, a.ctime) == (res.auth_time, res.start_time, res.end_time,
                                                                 res.ctime)
    assert a.mutual is res.mutual and a.framing == res.framing
    assert a.response_token == res.response_token
    assert abs(a.skew - res.skew) < 1e-3
    assert session_key not in frame  # the session key never leaves the sidecar


def test_rejected_round_trip_rebuilds_the_same_error(validator_and_tokens: tuple[Validator, list[bytes], bytes]
                                                     ) -> None:
    v, toks, _ = validator_and_tokens
    v.validate(toks[1])
    with pytest.raises(KerberosError) as ei:
        v.validate(toks[1])
    exc = ei.value
    frame = protocol.encode_rejected(7, exc.code, exc.cause, exc.fix, exc.to_dict()["details"])
    ((kind, rid, payload),) = list(protocol.iter_frames(frame, 1 << 20))
    assert (kind, rid) == (protocol.REJECTED, 7)
    r = protocol.decode_rejected(payload)
    again = error_for_code(r.code, r.cause, r.fix, r.details)
    assert type(again) is type(exc) and again.code == "replay"
    assert again.cause == exc.cause and again.fix == exc.fix
    assert again.details["first_seen_ago"] == pytest.approx(exc.details["first_seen_ago"])


def test_decoders_refuse_inconsistent_lengths() -> None:
    with pytest.raises(protocol.FrameError):
        protocol.decode_accepted(b"\x00" * 10)
    with pytest.raises(protocol.FrameError):
        protocol.decode_rejected(struct.pack(">BHHI", 5, 0, 0, 0) + b"abc")


def test_protocol_doc_names_every_kind() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for name in ("VALIDATE", "PING", "ACCEPTED", "REJECTED", "PONG", "PROTOCOL_ERROR", "VALIDATE_EX", "ACCEPTED_EX"):
        value = getattr(protocol, name)
        assert f"0x{value:02X}" in doc or f"0x{value:02x}" in doc, name


def test_protocol_doc_example_is_what_the_codec_writes() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    example = doc.split("## Example", 1)[1].split("```")[1]
    assert bytes.fromhex(example) == protocol.encode_validate(1, b"abc")
