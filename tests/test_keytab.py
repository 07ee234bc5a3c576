"""Keytab reading and writing: published files, MIT's klist/ktutil as the reference, damage and fuzzing."""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastkrb.errors import KerberosError
from fastkrb.keytab import Keytab, KeytabEntry, KeytabError, parse_principal, unparse_principal

VEC = Path(__file__).parent / "vectors" / "keytabs"
FACTS = json.loads((VEC / "keytabs.json").read_text())
FILES = [f["file"] for f in FACTS["files"]]

MIT_ENCTYPES = {
    "des-cbc-crc": 1, "des-cbc-md5": 3, "arcfour-hmac": 23, "aes128-cts-hmac-sha1-96": 17,
    "aes256-cts-hmac-sha1-96": 18, "aes128-cts-hmac-sha256-128": 19, "aes256-cts-hmac-sha384-192": 20,
}
needs_mit = pytest.mark.skipif(shutil.which("klist") is None or shutil.which("ktutil") is None,
                               reason="MIT krb5-user (klist, ktutil) not installed")


def _facts(name: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in FACTS["files"] if f["file"] == name)


def _mit_env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "krb5.conf"
    conf.write_text("[libdefaults]\n  default_realm = EXAMPLE.TEST\n  allow_weak_crypto = true\n")
    return {**os.environ, "KRB5_CONFIG": str(conf), "TZ": "UTC", "LC_ALL": "C"}


def mit_klist(path: Path, tmp_path: Path) -> list[tuple[int, int, str, int, bytes]]:
    """(kvno, timestamp, principal, enctype, key) per entry, as MIT's klist -k -t -e -K prints them."""
    out = subprocess.run(["klist", "-k", "-t", "-e", "-K", str(path)], env=_mit_env(tmp_path),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    rows = []
    for line in out.splitlines()[3:]:
        kvno, date, clock, principal, etype, key = line.split()
        ts = calendar.timegm(time.strptime(f"{date} {clock}", "%m/%d/%y %H:%M:%S"))  # klist ran with TZ=UTC
        etype = etype.strip("()").removeprefix("DEPRECATED:")
        rows.append((int(kvno), ts, principal, MIT_ENCTYPES[etype], bytes.fromhex(key.strip("()")[2:])))
    return rows


# --- the published files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_vector_file_is_the_published_one(name: str) -> None:
    data = (VEC / name).read_bytes()
    f = _facts(name)
    assert len(data) == f["size"]
    assert hashlib.sha256(data).hexdigest() == f["sha256"]


@pytest.mark.parametrize("name", FILES)
def test_vector_entries_match_facts(name: str) -> None:
    f = _facts(name)
    kt = Keytab.load(VEC / name)
    assert len(kt) == f["entry_count"] == len(f["entries"])
    for e, x in zip(kt, f["entries"], strict=True):
        assert e.principal == x["principal"]
        assert e.components == tuple(x["components"])
        assert e.realm == x["realm"]
        assert e.name_type == x["name_type"]
        assert e.timestamp == x["timestamp"]
        assert e.kvno == x["kvno_effective"]
        assert e.enctype == x["enctype"]
        assert e.key.hex() == x["key_hex"]
        assert len(e.key) == x["key_length"]


def test_kerberos_net_assertions() -> None:
    assert len(Keytab.load(VEC / "sample.keytab")) == 5
    assert Keytab.load(VEC / "sample_with_32_bit_version_override.keytab").entries[0].kvno == 2
    pad = Keytab.load(VEC / "sample_with_padding.keytab")
    assert len(pad) == 15
    assert pad.entries[0].enctype == 1
    assert pad.entries[-1].enctype == 23
    assert len(pad.principals()) == 3


@pytest.mark.parametrize("name", FILES)
def test_vector_round_trip(name: str) -> None:
    kt = Keytab.load((VEC / name).read_bytes())
    again = Keytab.from_bytes(kt.to_bytes())
    assert again == kt
    assert list(again) == list(kt)


def test_exact_bytes_when_the_file_already_has_a_32_bit_kvno() -> None:
    data = (VEC / "sample_with_32_bit_version_override.keytab").read_bytes()
    assert Keytab.from_bytes(data).to_bytes() == data


@needs_mit
@pytest.mark.parametrize("name", FILES)
def test_vectors_agree_with_mit_klist(name: str, tmp_path: Path) -> None:
    ours = [(e.kvno, e.timestamp, e.principal, e.enctype, e.key) for e in Keytab.load(VEC / name)]
    assert ours == mit_klist(VEC / name, tmp_path)


# --- format details, hand-built from the format description ----------------------------------------------------


def _counted(b: bytes, order: str) -> bytes:
    return struct.pack(order + "H", len(b)) + b


def _record_v1(comps: list[bytes], realm: bytes, ts: int, kvno: int, etype: int, key: bytes) -> bytes:
    """0x0501: native (little-endian) integers, count includes the realm, no name type."""
    body = struct.pack("<H", len(comps) + 1) + _counted(realm, "<") + b"".join(_counted(c, "<") for c in comps)
    body += struct.pack("<IBH", ts, kvno, etype) + _counted(key, "<")
    return struct.pack("<i", len(body)) + body


def _record_v2(comps: list[bytes], realm: bytes, nt: int, ts: int, kvno8: int, etype: int, key: bytes,
               tail: bytes = b"") -> bytes:
    body = struct.pack(">H", len(comps)) + _counted(realm, ">") + b"".join(_counted(c, ">") for c in comps)
    body += struct.pack(">IIBH", nt, ts, kvno8, etype) + _counted(key, ">") + tail
    return struct.pack(">i", len(body)) + body


def test_version_0501_little_endian(tmp_path: Path) -> None:
    k1, k2 = bytes(range(32)), bytes(range(16, 32))
    data = (b"\x05\x01" + _record_v1([b"HTTP", b"web.example.test"], b"EXAMPLE.TEST", 1_600_000_000, 7, 18, k1)
            + _record_v1([b"alice"], b"EXAMPLE.TEST", 1_600_000_001, 9, 17, k2))
    kt = Keytab.from_bytes(data)
    assert [(e.principal, e.name_type, e.timestamp, e.kvno, e.enctype, e.key) for e in kt] == [
        ("HTTP/web.example.test@EXAMPLE.TEST", 0, 1_600_000_000, 7, 18, k1),
        ("alice@EXAMPLE.TEST", 0, 1_600_000_001, 9, 17, k2),
    ]
    if shutil.which("klist"):
        path = tmp_path / "v1.keytab"
        path.write_bytes(data)
        assert [(e.kvno, e.timestamp, e.principal, e.enctype, e.key) for e in kt] == mit_klist(path, tmp_path)
    # We always write 0x0502; the entries survive.
    again = Keytab.from_bytes(kt.to_bytes())
    assert again.to_bytes()[:2] == b"\x05\x02"
    assert [(e.principal, e.kvno, e.key) for e in again] == [(e.principal, e.kvno, e.key) for e in kt]


def test_kvno32_rules() -> None:
    key = b"k" * 16
    rec = lambda kvno8, tail: _record_v2([b"a"], b"R", 1, 0, kvno8, 17, key, tail)  # noqa: E731
    data = (b"\x05\x02" + rec(5, b"") + rec(5, struct.pack(">I", 0)) + rec(4, struct.pack(">I", 260))
            + rec(6, b"\x00\x00\x01"))
    assert [e.kvno for e in Keytab.from_bytes(data)] == [5, 5, 260, 6]  # 3 bytes: too short for a kvno32


def test_holes_and_padding_are_skipped(tmp_path: Path) -> None:
    a = _record_v2([b"HTTP", b"h"], b"EXAMPLE.TEST", 1, 100, 1, 18, b"A" * 32, struct.pack(">I", 1) + bytes(8))
    b = _record_v2([b"HTTP", b"h"], b"EXAMPLE.TEST", 1, 100, 2, 18, b"B" * 32, struct.pack(">I", 2))
    hole = struct.pack(">i", -40) + b"\xff" * 40
    data = b"\x05\x02" + hole + a + hole + b
    kt = Keytab.from_bytes(data)
    assert [(e.kvno, e.key) for e in kt] == [(1, b"A" * 32), (2, b"B" * 32)]
    if shutil.which("klist"):
        path = tmp_path / "holes.keytab"
        path.write_bytes(data)
        assert [(e.kvno, e.timestamp, e.principal, e.enctype, e.key) for e in kt] == mit_klist(path, tmp_path)


def test_zero_length_record_ends_the_table() -> None:
    a = _record_v2([b"a"], b"R", 1, 0, 1, 17, b"x" * 16)
    assert len(Keytab.from_bytes(b"\x05\x02" + a + b"\x00\x00\x00\x00" + b"garbage")) == 1


def test_empty_keytab() -> None:
    assert len(Keytab.from_bytes(b"\x05\x02")) == 0
    assert Keytab().to_bytes() == b"\x05\x02"


# --- damage ---------------------------------------------------------------------------------------------------


def _bad(data: bytes) -> KeytabError:
    with pytest.raises(KeytabError) as ei:
        Keytab.from_bytes(data)
    err = ei.value
    assert isinstance(err, KerberosError)
    assert err.code == "bad_keytab"
    assert "offset" in err.details and f"offset {err.details['offset']}" in err.cause
    assert err.fix
    return err


def test_damaged_files_name_the_offset() -> None:
    good = (VEC / "sample.keytab").read_bytes()
    assert _bad(b"").details["offset"] == 0
    assert _bad(b"\x05\x03" + good[2:]).details["offset"] == 0
    assert _bad(b"\x06\x02").details["version"] == "0x0602"
    # the first record claims more bytes than the file holds
    assert _bad(good[:50]).details["offset"] == 2
    # stray bytes after a record, too few for a length
    assert _bad(good[:89] + b"\x00\x00").details["offset"] == 89
    # a hole past the end
    assert _bad(b"\x05\x02" + struct.pack(">i", -100) + bytes(10)).details["offset"] == 2
    assert _bad(b"\x05\x02" + struct.pack(">i", -(2**31))).details["offset"] == 2
    # a record whose key length runs past the record's end
    body = struct.pack(">H", 1) + _counted(b"R", ">") + _counted(b"a", ">") + struct.pack(">IIBH", 1, 0, 1, 17)
    body += struct.pack(">H", 200) + b"k" * 16
    err = _bad(b"\x05\x02" + struct.pack(">i", len(body)) + body)
    assert err.details["field"] == "key"
    # 0x0501 with a component count of zero cannot even hold its realm
    _bad(b"\x05\x01" + struct.pack("<i", 4) + b"\x00\x00\x00\x00")


def test_keys_never_appear_in_errors_or_reprs() -> None:
    kt = Keytab.load(VEC / "sample_with_32_bit_version_override.keytab")
    key = kt.entries[0].key
    for text in (repr(kt.entries[0]), str(kt.entries[0])):
        assert key.hex() not in text and repr(key) not in text
        assert "key=<32 bytes>" in text
    assert key.hex() not in repr(kt) and repr(key) not in repr(kt)
    data = kt.to_bytes()
    try:
        Keytab.from_bytes(data[:-6])
    except KeytabError as exc:
        assert key.hex() not in str(exc) and key.hex() not in json.dumps(exc.to_dict())
    else:
        pytest.fail("truncated keytab accepted")


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(KeytabError) as ei:
        Keytab.load(tmp_path / "missing.keytab")
    assert ei.value.code == "bad_keytab" and ei.value.details["path"].endswith("missing.keytab")
    bad = tmp_path / "bad.keytab"
    bad.write_bytes(b"\x05\x02\x00")
    with pytest.raises(KeytabError) as ei:
        Keytab.load(bad)
    assert ei.value.details["path"] == str(bad)


GOOD = [(VEC / n).read_bytes() for n in FILES]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(GOOD) - 1), data=st.data())
def test_truncation_gives_a_prefix_or_a_keytab_error(which: int, data: st.DataObject) -> None:
    raw = GOOD[which]
    cut = data.draw(st.integers(0, len(raw) - 1))
    full = Keytab.from_bytes(raw).entries
    try:
        got = Keytab.from_bytes(raw[:cut]).entries
    except KeytabError as exc:
        assert "offset" in exc.details
    else:
        assert full[:len(got)] == got and len(got) < len(full)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(GOOD) - 1), data=st.data())
def test_corruption_never_crashes(which: int, data: st.DataObject) -> None:
    raw = bytearray(GOOD[which])
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        kt = Keytab.from_bytes(bytes(raw))
    except KeytabError:
        return
    for e in kt:  # whatever parsed must be internally consistent and re-encodable
        assert isinstance(e, KeytabEntry)
        assert Keytab.from_bytes(Keytab([e]).to_bytes()).entries[0].key == e.key


_name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_entry = st.builds(
    lambda comps, realm, nt, ts, kvno, et, key: KeytabEntry(
        unparse_principal(comps, realm), tuple(comps), realm, nt, ts, kvno, et, key),
    st.lists(_name, min_size=1, max_size=3), _name, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(1, 2**32 - 1), st.integers(0, 0xFFFF), st.binary(max_size=64),
)


@given(st.lists(_entry, max_size=6))
def test_round_trip_any_entries(entries: list[KeytabEntry]) -> None:
    kt = Keytab(entries)
    assert Keytab.from_bytes(kt.to_bytes()).entries == tuple(entries)


@given(st.lists(_name, min_size=1, max_size=4), _name)
def test_principal_escaping_round_trips(comps: list[str], realm: str) -> None:
    assert parse_principal(unparse_principal(comps, realm)) == (tuple(comps), realm)


def test_principal_parsing() -> None:
    assert parse_principal("HTTP/web.example.test@EXAMPLE.TEST") == (("HTTP", "web.example.test"), "EXAMPLE.TEST")
    assert parse_principal(r"a\/b\@c/d@R") == (("a/b@c", "d"), "R")
    assert unparse_principal(["a/b@c", "d"], "R") == r"a\/b\@c/d@R"
    for bad in ("noreal", "a@", "a@B@C", "a@B/C", "x\\"):
        with pytest.raises(ValueError):
            parse_principal(bad)


# --- the API -------------------------------------------------------------------------------------------------


def test_add_find_principals_iter() -> None:
    kt = Keytab()
    e1 = kt.add("HTTP/a.example.test@EXAMPLE.TEST", b"1" * 32, enctype=18, kvno=1, timestamp=10)
    kt.add("HTTP/a.example.test@EXAMPLE.TEST", b"2" * 32, enctype=18, kvno=2, timestamp=20)
    kt.add("HTTP/a.example.test@EXAMPLE.TEST", b"3" * 16, enctype=17, kvno=2, timestamp=20)
    kt.add("host/b@EXAMPLE.TEST", b"4" * 16, enctype=17, kvno=300, name_type=3)
    assert e1.principal == "HTTP/a.example.test@EXAMPLE.TEST" and e1.components == ("HTTP", "a.example.test")
    assert len(kt) == 4 and [e.kvno for e in kt] == [1, 2, 2, 300]
    assert kt.principals() == ["HTTP/a.example.test@EXAMPLE.TEST", "host/b@EXAMPLE.TEST"]
    assert [e.key for e in kt.find("HTTP/a.example.test@EXAMPLE.TEST", enctype=18)] == [b"1" * 32, b"2" * 32]
    assert [e.key for e in kt.find("HTTP/a.example.test@EXAMPLE.TEST", kvno=2)] == [b"2" * 32, b"3" * 16]
    assert kt.find("HTTP/a.example.test@EXAMPLE.TEST", kvno=2, enctype=17)[0].key == b"3" * 16
    assert kt.find("HTTP/a.example.test@OTHER.TEST") == []
    assert kt.find("host/b@EXAMPLE.TEST")[0].name_type == 3
    assert abs(kt.find("host/b@EXAMPLE.TEST")[0].timestamp - time.time()) < 60
    # the 32-bit kvno survives a round trip even though the 8-bit field wraps
    assert Keytab.from_bytes(kt.to_bytes()).find("host/b@EXAMPLE.TEST")[0].kvno == 300
    with pytest.raises(ValueError):
        kt.add("x@R", b"k", enctype=17, kvno=2**32)


def test_save_is_atomic_and_private(tmp_path: Path) -> None:
    kt = Keytab.load(VEC / "sample.keytab")
    path = tmp_path / "svc.keytab"
    path.write_bytes(b"old contents")
    kt.save(path)
    assert Keytab.load(path) == kt
    assert (path.stat().st_mode & 0o777) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["svc.keytab"]  # no temp file left behind
    kt.save(str(path), mode=0o640)
    assert (path.stat().st_mode & 0o777) == 0o640


@needs_mit
def test_mit_klist_reads_what_we_write(tmp_path: Path) -> None:
    kt = Keytab()
    kt.add("HTTP/api.example.test@EXAMPLE.TEST", bytes(range(32)), enctype=18, kvno=3, timestamp=1_700_000_000)
    kt.add("HTTP/api.example.test@EXAMPLE.TEST", bytes(range(16)), enctype=17, kvno=3, timestamp=1_700_000_000)
    kt.add("HTTP/api.example.test@EXAMPLE.TEST", bytes(range(1, 33)), enctype=20, kvno=1000, timestamp=1_700_000_001)
    kt.add("HTTP/api.example.test@EXAMPLE.TEST", bytes(range(2, 18)), enctype=19, kvno=256, timestamp=1_700_000_001)
    kt.add(r"we\/ird@EXAMPLE.TEST", b"\x99" * 16, enctype=23, kvno=1, timestamp=5)
    path = tmp_path / "ours.keytab"
    kt.save(path)
    assert mit_klist(path, tmp_path) == [(e.kvno, e.timestamp, e.principal, e.enctype, e.key) for e in kt]


@needs_mit
@pytest.mark.parametrize("enctypes", [(18, 17), (20, 19)])
def test_we_read_mit_ktutil_and_derive_the_same_keys(enctypes: tuple[int, int], tmp_path: Path) -> None:
    names = {v: k for k, v in MIT_ENCTYPES.items()}
    principal, password = "HTTP/api.example.test@EXAMPLE.TEST", "correct horse battery staple"
    path = tmp_path / "mit.keytab"
    script = "".join(f"addent -password -p {principal} -k 4 -e {names[et]}\n{password}\n" for et in enctypes)
    script += f"addent -password -p alice@EXAMPLE.TEST -k 1 -e {names[enctypes[0]]}\nhunter2\n"
    script += f"wkt {path}\nquit\n"
    subprocess.run(["ktutil"], input=script, env=_mit_env(tmp_path), capture_output=True, text=True,
                   check=True, timeout=60)
    mit = Keytab.load(path)
    assert [(e.principal, e.kvno, e.enctype) for e in mit] == [
        *((principal, 4, et) for et in enctypes), ("alice@EXAMPLE.TEST", 1, enctypes[0])]
    ours = Keytab()
    ours.add_password(principal, password, kvno=4, enctypes=enctypes)
    ours.add_password("alice@EXAMPLE.TEST", "hunter2", kvno=1, enctypes=enctypes[:1])
    assert [e.key for e in ours] == [e.key for e in mit]
    # and an explicit salt equal to the default gives the same keys
    again = Keytab()
    again.add_password(principal, password, kvno=4, enctypes=enctypes, salt="EXAMPLE.TESTHTTPapi.example.test")
    assert [e.key for e in again] == [e.key for e in mit][:2]


def test_add_password_reproduces_published_keys() -> None:
    """keytabs.json observations: the override file's key is string-to-key("test", default salt), the sample
    file's RC4 key is string-to-key("P@ssw0rd!") (RC4 ignores the salt)."""
    aes = Keytab.load(VEC / "sample_with_32_bit_version_override.keytab").entries[0]
    ours = Keytab().add_password(aes.principal, "test", kvno=2, enctypes=(18,))
    assert ours[0].key == aes.key and ours[0].kvno == 2
    rc4 = Keytab.load(VEC / "sample.keytab").find("HTTP/aadg.windows.net.nsatc.net@IDENTITYINTERVENTION.COM",
                                                   enctype=23)[0]
    assert Keytab().add_password(rc4.principal, "P@ssw0rd!", kvno=12, enctypes=(23,))[0].key == rc4.key
    assert Keytab().add_password(aes.principal, "test", kvno=2, enctypes=(18,), salt="x")[0].key != aes.key
