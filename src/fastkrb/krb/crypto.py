"""Kerberos crypto (RFC 3961 profiles) for enctypes 17, 18, 19, 20 and 23: the typed face of the native core.

The validator calls the C layer directly; this module serves tools, tests, keytab creation and
``fastkrb.testing``. Keys are raw bytes of the enctype's length. Errors:

- an enctype or checksum type fastkrb does not implement -> ``EnctypeNotPermitted``;
- a key of the wrong length, bad string-to-key parameters -> ``KerberosError``;
- a MAC that does not verify -> ``IntegrityError``; a ciphertext too short to hold the confounder and
  MAC -> ``MalformedToken``;
- nonsensical call arguments (n-fold width, derived length, confounder size) -> ``ValueError``.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import fastkrb._native as _native
from fastkrb import enctypes
from fastkrb.errors import EnctypeNotPermitted, KerberosError

__all__ = [
    "ENCTYPES",
    "CKSUMTYPES",
    "BytesLike",
    "enctype_name",
    "key_length",
    "encrypt",
    "decrypt",
    "checksum",
    "verify_checksum",
    "derive",
    "derive_key",
    "nfold",
    "aes_cts_encrypt",
    "aes_cts_decrypt",
    "prf",
    "random_key",
    "string_to_key",
    "default_salt",
]

BytesLike = bytes | bytearray | memoryview

#: Enctypes fastkrb implements (IANA number -> RFC name): the table in fastkrb.enctypes.
ENCTYPES: dict[int, str] = enctypes.IMPLEMENTED

#: Keyed checksum types fastkrb implements (each is the mandatory checksum of one enctype above).
CKSUMTYPES: dict[int, str] = {
    15: "hmac-sha1-96-aes128",
    16: "hmac-sha1-96-aes256",
    19: "hmac-sha256-128-aes128",
    20: "hmac-sha384-192-aes256",
    -138: "hmac-md5",
}

_DK_TAG: dict[str, int] = {"Kc": 0x99, "Ke": 0xAA, "Ki": 0x55}  # RFC 3961 §5.3

# RFC 3962 §4 and RFC 8009 §4 default PBKDF2 iteration counts, and the digest each uses.
_S2K_DEFAULT_ITERATIONS: dict[int, int] = {17: 4096, 18: 4096, 19: 32768, 20: 32768}
_S2K_DIGEST: dict[int, str] = {17: "sha1", 18: "sha1", 19: "sha256", 20: "sha384"}
_S2K_MAX_ITERATIONS = 0x1000000  # MIT's ceiling: larger counts are a denial of service, not a key


def _check_enctype(enctype: int) -> None:
    if enctype not in ENCTYPES:
        raise EnctypeNotPermitted(
            f"enctype {enctype} ({enctype_name(enctype)}) is not implemented by fastkrb",
            details={"enctype": enctype, "supported": sorted(ENCTYPES)},
        )


def enctype_name(enctype: int) -> str:
    """The RFC name of an enctype number (also for ones fastkrb does not implement)."""
    return enctypes.name(enctype)


def key_length(enctype: int) -> int:
    """Length in bytes of a protocol key of this enctype."""
    _check_enctype(enctype)
    keylen: int = _native.crypto_enctype_info(enctype)[0]
    return keylen


def encrypt(enctype: int, key: BytesLike, usage: int, plaintext: BytesLike,
            confounder: BytesLike | None = None) -> bytes:
    """RFC 3961 encrypt with the derived keys of ``usage``. ``confounder`` fixes the random prefix
    (known-answer tests only: a repeated confounder leaks plaintext equality)."""
    _check_enctype(enctype)
    out: bytes = _native.crypto_encrypt(enctype, key, usage, plaintext, confounder)
    return out


def decrypt(enctype: int, key: BytesLike, usage: int, ciphertext: BytesLike) -> bytes:
    """Verify and decrypt; the confounder is removed. Raises IntegrityError or MalformedToken."""
    _check_enctype(enctype)
    out: bytes = _native.crypto_decrypt(enctype, key, usage, ciphertext)
    return out


def _check_cksumtype(cksumtype: int) -> None:
    if cksumtype not in CKSUMTYPES:
        raise EnctypeNotPermitted(
            f"checksum type {cksumtype} is not implemented by fastkrb",
            details={"cksumtype": cksumtype, "supported": sorted(CKSUMTYPES)},
        )


def checksum(cksumtype: int, key: BytesLike, usage: int, data: BytesLike) -> bytes:
    """Keyed checksum (RFC 3961 get_mic) of ``data`` with the Kc of ``usage``."""
    _check_cksumtype(cksumtype)
    out: bytes = _native.crypto_checksum(cksumtype, key, usage, data)
    return out


def verify_checksum(cksumtype: int, key: BytesLike, usage: int, data: BytesLike, mac: BytesLike) -> bool:
    """Constant-time check of a keyed checksum; False when it does not match (or has the wrong length)."""
    _check_cksumtype(cksumtype)
    ok: bool = _native.crypto_verify_checksum(cksumtype, key, usage, data, mac)
    return ok


def derive(enctype: int, key: BytesLike, constant: BytesLike, length: int | None = None) -> bytes:
    """DK(key, constant) (RFC 3961 §5.1, for 17/18) or KDF-HMAC-SHA2(key, constant, length*8)
    (RFC 8009 §3, for 19/20). ``length`` defaults to the enctype's key length."""
    if enctype not in (17, 18, 19, 20):
        _check_enctype(enctype)
        raise EnctypeNotPermitted(f"{enctype_name(enctype)} has no RFC 3961 key derivation",
                                  details={"enctype": enctype})
    n = key_length(enctype) if length is None else length
    out: bytes = _native.crypto_derive(enctype, key, constant, n)
    return out


def derive_key(enctype: int, key: BytesLike, usage: int, kind: Literal["Kc", "Ke", "Ki"]) -> bytes:
    """The checksum (Kc), encryption (Ke) or integrity (Ki) key for a key usage.

    For 20 (RFC 8009) Kc and Ki are 192 bits and Ke 256; for 19 all are 128; for 17/18 all are the key length.
    """
    if kind not in _DK_TAG:
        raise ValueError(f"kind must be one of {sorted(_DK_TAG)}")
    if not 0 <= usage <= 0xFFFFFFFF:
        raise ValueError("usage must fit in 32 bits")
    constant = usage.to_bytes(4, "big") + bytes([_DK_TAG[kind]])
    length = 24 if enctype == 20 and kind != "Ke" else None
    return derive(enctype, key, constant, length)


def nfold(data: BytesLike, nbytes: int) -> bytes:
    """RFC 3961 §5.1 n-fold of ``data`` to ``nbytes`` bytes (1..256)."""
    out: bytes = _native.crypto_nfold(data, nbytes)
    return out


def aes_cts_encrypt(key: BytesLike, iv: BytesLike, data: BytesLike) -> bytes:
    """AES-CBC with ciphertext stealing as RFC 3962 §5 defines it (last two blocks swapped); len >= 16."""
    out: bytes = _native.crypto_aes_cts(True, key, iv, data)
    return out


def aes_cts_decrypt(key: BytesLike, iv: BytesLike, data: BytesLike) -> bytes:
    """Inverse of :func:`aes_cts_encrypt`."""
    out: bytes = _native.crypto_aes_cts(False, key, iv, data)
    return out


def prf(enctype: int, key: BytesLike, data: BytesLike) -> bytes:
    """The enctype's pseudo-random function: RFC 3962 §6 (16 bytes) or RFC 8009 §5 (32 / 48 bytes)."""
    if enctype == 23:
        raise EnctypeNotPermitted("fastkrb does not implement a PRF for arcfour-hmac", details={"enctype": 23})
    _check_enctype(enctype)
    out: bytes = _native.crypto_prf(enctype, key, data)
    return out


def random_key(enctype: int) -> bytes:
    """A fresh random protocol key (random-to-key is the identity for every enctype here)."""
    out: bytes = _native.crypto_random(key_length(enctype))
    return out


def _s2k_iterations(enctype: int, params: BytesLike | None, allow_weak: bool) -> int:
    default = _S2K_DEFAULT_ITERATIONS[enctype]
    if params is None or len(params) == 0:
        return default
    if len(params) != 4:
        raise KerberosError(f"string-to-key parameters for {enctype_name(enctype)} must be 4 bytes, not "
                            f"{len(params)}", details={"enctype": enctype})
    iterations = int.from_bytes(bytes(params), "big")
    # MIT's rule (KRB5_ERR_BAD_S2K_PARAMS): zero, or fewer than the enctype's default unless weak
    # counts are allowed, or more than its ceiling.
    if iterations == 0 or iterations >= _S2K_MAX_ITERATIONS or (iterations < default and not allow_weak):
        raise KerberosError(
            f"string-to-key iteration count {iterations} is not acceptable for {enctype_name(enctype)} "
            f"(minimum {default} unless weak counts are allowed, below {_S2K_MAX_ITERATIONS})",
            "Use the enctype's default iteration count, or allow_weak_iterations=True for test vectors.",
            {"enctype": enctype, "iterations": iterations},
        )
    return iterations


def string_to_key(enctype: int, password: str | bytes, salt: str | bytes, params: BytesLike | None = None,
                  *, allow_weak_iterations: bool = False) -> bytes:
    """The long-term key for a password (RFC 3962 §4, RFC 8009 §4, RFC 4757 §2).

    AES: PBKDF2 (HMAC-SHA1 for 17/18; HMAC-SHA256/384 over ``enctype-name | 0 | salt`` for 19/20), then
    DK/KDF with "kerberos". ``params`` is the 4-byte big-endian iteration count (default 4096 / 32768).
    arcfour-hmac: MD4 of the UTF-16LE password; salt ignored. ``password`` as bytes is UTF-8.
    """
    _check_enctype(enctype)
    if enctype == 23:
        if params:
            raise KerberosError("arcfour-hmac takes no string-to-key parameters", details={"enctype": 23})
        text = password if isinstance(password, str) else password.decode("utf-8")
        out: bytes = _native.crypto_md4(text.encode("utf-16-le"))
        return out
    pw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    s = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
    iterations = _s2k_iterations(enctype, params, allow_weak_iterations)
    if enctype in (19, 20):
        s = ENCTYPES[enctype].encode("ascii") + b"\x00" + s
    keylen = key_length(enctype)
    tkey = hashlib.pbkdf2_hmac(_S2K_DIGEST[enctype], pw, s, iterations, keylen)
    return derive(enctype, tkey, b"kerberos", keylen)


_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", "0": "\0"}


def default_salt(principal: str) -> bytes:
    """RFC 4120 §4 default salt: the realm then every name component, concatenated (UTF-8).

    ``principal`` is in MIT's text form, ``comp1/comp2@REALM``, with backslash escapes for ``/``, ``@``,
    ``\\`` and ``\\n \\t \\b \\0``.
    """
    comps: list[str] = []
    buf: list[str] = []
    in_realm = False
    i = 0
    while i < len(principal):
        ch = principal[i]
        i += 1
        if ch == "\\":
            if i == len(principal):
                raise KerberosError("principal name ends with a lone backslash", details={"principal": principal})
            buf.append(_ESCAPES.get(principal[i], principal[i]))
            i += 1
        elif ch in "/@" and not in_realm:
            comps.append("".join(buf))
            buf = []
            in_realm = ch == "@"
        elif ch in "/@":
            raise KerberosError(f"unescaped {ch!r} in the realm of a principal name", details={"principal": principal})
        else:
            buf.append(ch)
    realm = "".join(buf)
    if not in_realm or not realm or not comps or not all(comps):
        raise KerberosError("not a principal name of the form name[/instance]@REALM", details={"principal": principal})
    return (realm + "".join(comps)).encode("utf-8")
