"""Keytab files (MIT/Heimdal format 0x0502), read and written raw, independently of the code under test.

Used to build the negative-case variants (a keytab without one enctype, with several key generations) and
to state what a keytab holds without trusting fastkrb's own reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeytabEntry:
    principal: str  # "HTTP/svc.fastkrb.test@FASTKRB.TEST"
    kvno: int
    enctype: int
    key: bytes
    raw: bytes  # the record exactly as stored


def read_keytab(path: str | Path) -> list[KeytabEntry]:
    data = Path(path).read_bytes()
    if data[:2] != b"\x05\x02":
        raise ValueError(f"{path}: not a v2 keytab")
    out: list[KeytabEntry] = []
    off = 2
    while off + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, off)
        off += 4
        if size < 0:  # a hole left by a deleted entry
            off += -size
            continue
        rec = data[off:off + size]
        off += size
        p = 0
        (ncomp,) = struct.unpack_from(">H", rec, p)
        p += 2
        (rlen,) = struct.unpack_from(">H", rec, p)
        realm = rec[p + 2:p + 2 + rlen].decode()
        p += 2 + rlen
        comps = []
        for _ in range(ncomp):
            (clen,) = struct.unpack_from(">H", rec, p)
            comps.append(rec[p + 2:p + 2 + clen].decode())
            p += 2 + clen
        p += 4 + 4  # name type, timestamp
        kvno = rec[p]
        p += 1
        enctype, klen = struct.unpack_from(">HH", rec, p)
        p += 4
        key = rec[p:p + klen]
        p += klen
        if len(rec) - p >= 4:  # 32-bit kvno extension
            (kvno32,) = struct.unpack_from(">I", rec, p)
            if kvno32:
                kvno = kvno32
        out.append(KeytabEntry("/".join(comps) + "@" + realm, kvno, enctype, bytes(key), bytes(rec)))
    return out


def write_keytab(path: str | Path, entries: Iterable[KeytabEntry]) -> Path:
    buf = bytearray(b"\x05\x02")
    for e in entries:
        buf += struct.pack(">i", len(e.raw)) + e.raw
    Path(path).write_bytes(bytes(buf))
    return Path(path)


def keytab_kvnos(path: str | Path, principal: str | None = None) -> list[int]:
    return sorted({e.kvno for e in read_keytab(path) if principal is None or e.principal == principal})


def keytab_enctypes(path: str | Path, principal: str | None = None) -> list[int]:
    return sorted({e.enctype for e in read_keytab(path) if principal is None or e.principal == principal})

