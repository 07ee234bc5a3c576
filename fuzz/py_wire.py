"""atheris target: the sidecar's binary frame codec (fastkrb.sidecar.protocol, docs/protocol.md).

Input: [max_frame: 2 bytes BE (scaled)][split point: 2 bytes][stream...]. The stream is what a client
(or anything that connects to the socket) sends, and what a client reads back from a sidecar:
- split_frames never raises; every frame lies inside the bytes it consumed, frames are contiguous,
  lengths respect max_frame, and an error is reported only for an impossible length;
- feeding the stream in two chunks, keeping the unconsumed tail as the server does (WireHandler.feed),
  yields the same frames as feeding it whole;
- a VALIDATE payload splits into channel bindings and token, or is refused the way the server refuses;
  encode_validate of those parts gives back the same frame bytes;
- decode_accepted / decode_rejected (the client reading a reply) raise only ValueError (FrameError or
  a text/JSON decoding error), and what they accept re-encodes to the same payload.
"""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace

from _pyfuzz import instrumented, main

with instrumented():
    from fastkrb.sidecar import protocol


def _frames(stream: bytes, max_frame: int) -> tuple[list[tuple[int, int, bytes]], int, str | None]:
    frames, used, err = protocol.split_frames(stream, max_frame)
    assert 0 <= used <= len(stream)
    off = 0
    out = []
    for kind, rid, a, b in frames:
        n = struct.unpack_from(">I", stream, off)[0]
        assert a == off + 9 and b == off + 4 + n and 5 <= n <= max_frame, "frame bounds"
        assert stream[off + 4] == kind and struct.unpack_from(">I", stream, off + 5)[0] == rid
        out.append((kind, rid, stream[a:b]))
        off = b
    assert off == used, "frames are not contiguous"
    if err is not None:
        n = int.from_bytes(stream[used:used + 4], "big")
        assert n < 5 or n > max_frame, "error for a possible length"
    else:
        rest = len(stream) - used
        if rest >= 4:
            n = int.from_bytes(stream[used:used + 4], "big")
            assert 5 <= n <= max_frame and rest < 4 + n, "a complete frame was left behind"
    return out, used, err


def _validate_payload(payload: bytes) -> None:
    """The server's VALIDATE split (sidecar/binary.py WireHandler.feed), and the encoder's inverse."""
    if len(payload) < 2:
        return
    ncb = (payload[0] << 8) | payload[1]
    if 2 + ncb > len(payload):
        return
    cb = payload[2:2 + ncb] or None
    token = payload[2 + ncb:]
    frame = protocol.encode_validate(7, token, cb)
    assert frame[9:] == payload, "encode_validate does not invert the server's split"


def _reply(kind: int, payload: bytes) -> None:
    try:
        if kind == protocol.ACCEPTED:
            acc = protocol.decode_accepted(payload)
            again = protocol.encode_accepted(1, SimpleNamespace(
                client=acc.client, server=acc.server, short_name=acc.short_name, client_realm=acc.client_realm,
                framing=acc.framing, response_token=acc.response_token, mutual=acc.mutual,
                delegated=b"" if acc.delegated else None, pac_verified=acc.pac_verified, enctype=acc.enctype,
                session_enctype=acc.session_enctype, kvno=acc.kvno, flags=acc.flags, gss_flags=acc.gss_flags,
                auth_time=acc.auth_time, start_time=acc.start_time, end_time=acc.end_time, ctime=acc.ctime,
                skew=acc.skew))
            if not any(math.isnan(x) for x in (acc.auth_time, acc.start_time, acc.end_time, acc.ctime, acc.skew)):
                assert protocol.decode_accepted(again[9:]) == acc, "ACCEPTED does not round-trip"
        elif kind == protocol.REJECTED:
            rej = protocol.decode_rejected(payload)
            assert isinstance(rej.code, str) and isinstance(rej.cause, str)
    except ValueError:
        pass  # FrameError, or text/JSON that does not decode: the client reports a broken sidecar


def test_one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    max_frame = 5 + int.from_bytes(data[:2], "big") * 4
    cut = int.from_bytes(data[2:4], "big")
    stream = data[4:]
    whole, used, err = _frames(stream, max_frame)
    # incremental, as the server keeps the unconsumed tail of one read for the next
    cut = cut % (len(stream) + 1)
    first, used1, err1 = _frames(stream[:cut], max_frame)
    if err1 is None:
        tail = stream[used1:]
        second, used2, err2 = _frames(tail, max_frame)
        if err is None:
            assert first + second == whole and used1 + used2 == used, "chunking changes the frames"
        else:
            assert err2 is not None and first + second == whole, "chunking changes where the error is"
    for kind, _rid, payload in whole:
        if kind == protocol.VALIDATE:
            _validate_payload(payload)
        _reply(kind, payload)
    # the budget: at most `limit` frames, the rest left for later
    if len(whole) > 1:
        some, used_l, _ = protocol.split_frames(stream, max_frame, limit=1)
        assert len(some) == 1 and used_l == 4 + len(whole[0][2]) + 5


if __name__ == "__main__":
    main(test_one_input)
