"""MIT keytab files: read (0x0502 and the old 0x0501), write (0x0502), look up service keys.

Format (MIT src/lib/krb5/keytab/kt_file.c, as documented in its header comment): a 2-byte version
``05 02`` (integers big-endian) or ``05 01`` (integers in the writer's native order, in practice
little-endian; the component count includes the realm; no name type). Then records, each an int32
length followed by that many bytes; a negative length is a hole of ``-length`` bytes (a deleted
entry), a zero length or the end of the file ends the table. A record is: uint16 component count,
counted realm, counted components, uint32 name type (0x0502 only), uint32 timestamp, uint8 kvno,
uint16 enctype, counted key, and, when at least 4 bytes remain in the record, a uint32 kvno that
replaces the 8-bit one when non-zero. Bytes left after that are padding and ignored.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastkrb.enctypes import IMPLEMENTED
from fastkrb.enctypes import label as enctype_label
from fastkrb.errors import KerberosError
from fastkrb.files import replace_file

__all__ = [
    "KeytabError",
    "NoUsableKeys",
    "KEY_LENGTHS",
    "DEV_MARKER",
    "unusable_reason",
    "is_dev_only",
    "DEFAULT_MAX_KEY_AGE_DAYS",
    "entry_report",
    "KeytabEntry",
    "Keytab",
    "parse_principal",
    "unparse_principal",
]

_VNO_1 = 0x0501
_VNO_2 = 0x0502
_NT_PRINCIPAL = 1


class KeytabError(KerberosError):
    """The keytab cannot be read: damaged, truncated, not a keytab, or not readable at all."""

    code = "bad_keytab"
    krb_error = None
    default_fix = ("Export the keytab again (kadmin ktadd / ktpass / ktutil) and check that it was copied as "
                   "binary, completely; `klist -k -t -e FILE` shows whether MIT can read it.")


class NoUsableKeys(KeytabError):
    """The keytab parses, but not one of its entries holds a key fastkrb can use (each one's reason is in
    ``details["unusable"]``)."""

    code = "keytab_unusable"
    default_fix = ("Export the service key again with an AES enctype (MIT: kadmin ktadd -e aes256-cts:normal; "
                   "Heimdal: kadmin ext_keytab after the principal has current AES keys; AD: ktpass /crypto "
                   "AES256-SHA1). `fastkrb keytab list` marks every entry fastkrb cannot use and says why.")


#: Key length in bytes of each enctype fastkrb implements (RFC 3962, RFC 4757, RFC 8009).
KEY_LENGTHS: dict[int, int] = {17: 16, 18: 32, 19: 16, 20: 32, 23: 16}

#: The principal `fastkrb dev init` writes into every throwaway keytab (tools/dev.py): a keytab holding it
#: has random keys no KDC knows, and must never replace a production keytab.
DEV_MARKER = "fastkrb-dev-only/DO-NOT-USE-IN-PRODUCTION"


def unusable_reason(entry: KeytabEntry) -> str | None:
    """Why fastkrb cannot use this entry's key (None: it can). Worded for logs, `keytab list` and diagnoses."""
    et = entry.enctype
    if not 1 <= len(entry.components) <= 8:
        return f"the principal has {len(entry.components)} name components (fastkrb handles 1 to 8)"
    if et in (1, 2, 3):
        return f"{enctype_label(et)} is single DES, broken and not implemented by fastkrb"
    if et not in IMPLEMENTED:
        return f"{enctype_label(et)} is not an enctype fastkrb implements (it has {', '.join(IMPLEMENTED.values())})"
    n, want = len(entry.key), KEY_LENGTHS[et]
    if n == 0:
        return "the key is empty (0 bytes)"
    if n != want:
        sealed = (" — a key still encrypted under the KDC's master key (Heimdal's ext_keytab writes old keys "
                  "kept by `cpw --keepold` that way)" if n > want else "")
        return f"the key is {n} bytes, {enctype_label(et)} keys are {want}{sealed}"
    return None


#: The rotation period `fastkrb keytab list` and `doctor` warn past (days), unless --max-key-age says otherwise:
#: 90 days, a common service-account password policy (and well inside AD's 30-day machine password default x 3).
DEFAULT_MAX_KEY_AGE_DAYS = 90.0


def entry_report(kt: Keytab, max_key_age_days: float = DEFAULT_MAX_KEY_AGE_DAYS,
                 now: float | None = None) -> list[dict[str, Any]]:
    """One row per entry, file order: principal, kvno, enctype, timestamp, ``age_days`` (None when the entry
    carries no timestamp), ``usable`` and ``reason`` (why not), ``current`` (of the principal's newest kvno),
    and ``stale``: a current, usable key older than ``max_key_age_days`` (older kvnos are kept on purpose
    during a rotation and are not judged by age)."""
    t = time.time() if now is None else now
    newest: dict[str, int] = {}
    for e in kt.entries:
        newest[e.principal] = max(newest.get(e.principal, 0), e.kvno)
    rows = []
    for e in kt.entries:
        why = unusable_reason(e)
        age = None if e.timestamp == 0 else max(0.0, (t - e.timestamp) / 86400.0)
        current = e.kvno == newest[e.principal]
        rows.append({"principal": e.principal, "kvno": e.kvno, "enctype": e.enctype, "timestamp": e.timestamp,
                     "age_days": age, "usable": why is None, "reason": why, "current": current,
                     "stale": bool(why is None and current and age is not None and age > max_key_age_days)})
    return rows


def is_dev_only(kt: Keytab) -> bool:
    """True for a `fastkrb dev init` keytab (it holds the dev-only marker principal)."""
    return any(e.components and "/".join(e.components) == DEV_MARKER for e in kt.entries)


# --- principal names -------------------------------------------------------------------------------------------

_UNESCAPE = {"n": "\n", "t": "\t", "b": "\b", "0": "\0"}
_ESCAPE = {"/": "\\/", "@": "\\@", "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\b": "\\b", "\0": "\\0"}


def parse_principal(principal: str) -> tuple[tuple[str, ...], str]:
    """Split ``"comp1/comp2@REALM"`` into components and realm, honouring MIT's backslash escapes."""
    comps: list[str] = []
    cur: list[str] = []
    realm: str | None = None
    i, n = 0, len(principal)
    while i < n:
        ch = principal[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError(f"principal {principal!r} ends with a lone backslash")
            nxt = principal[i + 1]
            cur.append(_UNESCAPE.get(nxt, nxt))
            i += 2
            continue
        if ch == "/" and realm is None:
            comps.append("".join(cur))
            cur = []
        elif ch == "@" and realm is None:
            comps.append("".join(cur))
            cur = []
            realm = ""
        elif ch in "/@":
            raise ValueError(f"principal {principal!r} has an unescaped {ch!r} in its realm")
        else:
            cur.append(ch)
        i += 1
    if realm is None:
        raise ValueError(f"principal {principal!r} has no realm (expected name@REALM)")
    realm = "".join(cur)
    if not realm:
        raise ValueError(f"principal {principal!r} has an empty realm")
    return tuple(comps), realm


def _escape(s: str) -> str:
    return "".join(_ESCAPE.get(c, c) for c in s)


def unparse_principal(components: Iterable[str], realm: str) -> str:
    """The inverse of :func:`parse_principal` (MIT ``krb5_unparse_name`` spelling)."""
    return "/".join(_escape(c) for c in components) + "@" + _escape(realm)


# --- entries ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeytabEntry:
    """One key of one principal. ``kvno`` is the effective key version (32-bit field when present)."""

    principal: str
    components: tuple[str, ...]
    realm: str
    name_type: int
    timestamp: int
    kvno: int
    enctype: int
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        # Never show key material, not even a prefix.
        return (f"KeytabEntry(principal={self.principal!r}, kvno={self.kvno}, enctype={self.enctype}, "
                f"name_type={self.name_type}, timestamp={self.timestamp}, key=<{len(self.key)} bytes>)")


def _text(b: bytes) -> str:
    # Names are octet strings to MIT; UTF-8 in practice. surrogateescape keeps odd bytes round-trippable.
    return b.decode("utf-8", "surrogateescape")


def _octets(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


class _Reader:
    """A bounds-checked cursor over one record; every overrun names the absolute offset."""

    def __init__(self, data: bytes, start: int, end: int, fmt16: str, fmt32: str) -> None:
        self.data, self.pos, self.end = data, start, end
        self.f16, self.f32 = fmt16, fmt32

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.end:
            raise KeytabError(
                f"Damaged keytab: the {what} at offset {self.pos} needs {n} bytes but its record ends at "
                f"offset {self.end}.",
                details={"offset": self.pos, "field": what, "needed": n, "record_end": self.end},
            )

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self, what: str) -> int:
        self.need(2, what)
        (v,) = struct.unpack_from(self.f16, self.data, self.pos)
        self.pos += 2
        return int(v)

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = struct.unpack_from(self.f32, self.data, self.pos)
        self.pos += 4
        return int(v)

    def counted(self, what: str) -> bytes:
        n = self.u16(what + " length")
        self.need(n, what)
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(v)


def _parse(data: bytes) -> list[KeytabEntry]:
    if len(data) < 2:
        raise KeytabError("Not a keytab: the file is shorter than its 2-byte version header (offset 0).",
                          details={"offset": 0, "size": len(data)})
    version = (data[0] << 8) | data[1]
    if version == _VNO_2:
        f16, f32, fs32 = ">H", ">I", ">i"
    elif version == _VNO_1:
        f16, f32, fs32 = "<H", "<I", "<i"
    else:
        raise KeytabError(
            f"Not a keytab: the version header at offset 0 is 0x{version:04x}, not 0x0502 or 0x0501.",
            details={"offset": 0, "version": f"0x{version:04x}"},
        )
    entries: list[KeytabEntry] = []
    pos, size = 2, len(data)
    while pos < size:
        if pos + 4 > size:
            raise KeytabError(
                f"Damaged keytab: {size - pos} stray bytes at offset {pos}, too few for a record length.",
                details={"offset": pos, "size": size},
            )
        (length,) = struct.unpack_from(fs32, data, pos)
        if length == 0:  # MIT: a zero length ends the table (space preallocated, never written)
            break
        start = pos + 4
        if length < 0:
            if length == -(2**31):
                raise KeytabError(f"Damaged keytab: impossible hole length at offset {pos}.",
                                  details={"offset": pos, "length": length})
            if start - length > size:
                raise KeytabError(
                    f"Damaged keytab: the hole at offset {pos} claims {-length} bytes, past the end of the file.",
                    details={"offset": pos, "length": length, "size": size},
                )
            pos = start - length
            continue
        end = start + length
        if end > size:
            raise KeytabError(
                f"Damaged or truncated keytab: the record at offset {pos} claims {length} bytes but only "
                f"{size - start} remain.",
                details={"offset": pos, "length": length, "size": size},
            )
        entries.append(_parse_record(data, start, end, version, f16, f32))
        pos = end
    return entries


def _parse_record(data: bytes, start: int, end: int, version: int, f16: str, f32: str) -> KeytabEntry:
    r = _Reader(data, start, end, f16, f32)
    count = r.u16("component count")
    if version == _VNO_1:
        if count == 0:
            raise KeytabError(f"Damaged keytab: record at offset {start - 4} counts no realm (version 0x0501).",
                              details={"offset": start - 4})
        count -= 1
    realm = _text(r.counted("realm"))
    comps = tuple(_text(r.counted(f"component {i}")) for i in range(count))
    name_type = r.u32("name type") if version == _VNO_2 else 0
    timestamp = r.u32("timestamp")
    kvno = r.u8("kvno")
    enctype = r.u16("enctype")
    key = r.counted("key")
    if r.end - r.pos >= 4:
        kvno32 = r.u32("32-bit kvno")
        if kvno32:
            kvno = kvno32
    # Anything after this is record padding, which MIT and Kerberos.NET skip too.
    return KeytabEntry(unparse_principal(comps, realm), comps, realm, name_type, timestamp, kvno, enctype, key)


def _pack_counted(b: bytes, what: str) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError(f"{what} is longer than a keytab can hold (65535 bytes)")
    return struct.pack(">H", len(b)) + b


def _pack_entry(e: KeytabEntry) -> bytes:
    body = bytearray(struct.pack(">H", len(e.components)))
    body += _pack_counted(_octets(e.realm), "realm")
    for c in e.components:
        body += _pack_counted(_octets(c), "principal component")
    # MIT writes the low 8 bits of the kvno, then the full 32-bit kvno.
    body += struct.pack(">IIBH", e.name_type & 0xFFFFFFFF, e.timestamp & 0xFFFFFFFF, e.kvno & 0xFF, e.enctype & 0xFFFF)
    body += _pack_counted(e.key, "key")
    body += struct.pack(">I", e.kvno & 0xFFFFFFFF)
    return struct.pack(">i", len(body)) + bytes(body)


# --- the table -------------------------------------------------------------------------------------------------


class Keytab:
    """An in-memory keytab: the keys a service may decrypt its tickets with."""

    def __init__(self, entries: Iterable[KeytabEntry] = ()) -> None:
        self._entries: list[KeytabEntry] = list(entries)

    # loading and saving

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Keytab:
        """Parse keytab bytes; :class:`KeytabError` names the offset of any damage."""
        return cls(_parse(bytes(data)))

    @classmethod
    def load(cls, source: str | os.PathLike[str] | bytes | bytearray | memoryview | Keytab) -> Keytab:
        """A path, the file's bytes, or a Keytab (returned as is)."""
        if isinstance(source, Keytab):
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls.from_bytes(source)
        path = os.fspath(source)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise KeytabError(
                f"Cannot read keytab file {path!r}: {exc.strerror or exc}.",
                fix="Check the path and that this process may read the file (owner, mode, SELinux/AppArmor).",
                details={"path": path, "errno": exc.errno},
            ) from exc
        try:
            return cls.from_bytes(data)
        except KeytabError as exc:
            exc.details.setdefault("path", path)
            raise

    def to_bytes(self) -> bytes:
        """The 0x0502 encoding, with the 32-bit kvno written for every entry (as MIT does)."""
        return b"\x05\x02" + b"".join(_pack_entry(e) for e in self._entries)

    def save(self, path: str | os.PathLike[str], mode: int = 0o600) -> None:
        """Write atomically (fastkrb.files.replace_file): a reader sees the old keytab or the new one."""
        replace_file(path, self.to_bytes(), mode=mode, prefix=".keytab-")

    # building

    def add(self, principal: str, key: bytes, *, enctype: int, kvno: int, timestamp: int | None = None,
            name_type: int = _NT_PRINCIPAL) -> KeytabEntry:
        """Append one key; returns the new entry."""
        comps, realm = parse_principal(principal)
        if not 0 <= kvno <= 0xFFFFFFFF:
            raise ValueError("kvno must fit in 32 bits")
        if not 0 <= enctype <= 0xFFFF:
            raise ValueError("enctype must fit in 16 bits")
        ts = int(time.time()) if timestamp is None else int(timestamp)
        entry = KeytabEntry(unparse_principal(comps, realm), comps, realm, name_type, ts, kvno, enctype, bytes(key))
        self._entries.append(entry)
        return entry

    def add_password(self, principal: str, password: str | bytes, *, kvno: int,
                     enctypes: Iterable[int] = (18, 17, 20, 19), salt: str | bytes | None = None,
                     timestamp: int | None = None) -> list[KeytabEntry]:
        """Derive one key per enctype from a password (RFC 3961 string-to-key) and append them.

        The default salt is RFC 4120 §4's: the realm followed by the components, no separators.
        """
        from fastkrb.krb import crypto  # floor 1; imported late so reading keytabs never needs the extension

        if salt is None:
            salt_b = crypto.default_salt(principal)
        else:
            salt_b = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
        pw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
        return [
            self.add(principal, crypto.string_to_key(et, pw, salt_b), enctype=et, kvno=kvno, timestamp=timestamp)
            for et in enctypes
        ]

    # reading

    @property
    def entries(self) -> tuple[KeytabEntry, ...]:
        return tuple(self._entries)

    def principals(self) -> list[str]:
        """Distinct principal names, in file order."""
        return list(dict.fromkeys(e.principal for e in self._entries))

    def find(self, principal: str, kvno: int | None = None, enctype: int | None = None) -> list[KeytabEntry]:
        """Entries of ``principal`` (any escaping accepted), optionally one kvno and/or enctype, file order."""
        comps, realm = parse_principal(principal)
        return [
            e for e in self._entries
            if e.components == comps and e.realm == realm
            and (kvno is None or e.kvno == kvno) and (enctype is None or e.enctype == enctype)
        ]

    def usable(self) -> list[KeytabEntry]:
        """Entries whose key fastkrb can use, file order."""
        return [e for e in self._entries if unusable_reason(e) is None]

    def unusable(self) -> list[tuple[KeytabEntry, str]]:
        """Entries fastkrb skips, each with the reason, file order."""
        out = []
        for e in self._entries:
            why = unusable_reason(e)
            if why is not None:
                out.append((e, why))
        return out

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KeytabEntry]:
        return iter(tuple(self._entries))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Keytab) and self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Keytab {len(self._entries)} entries, principals={self.principals()!r}>"
