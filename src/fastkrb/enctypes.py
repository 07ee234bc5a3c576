"""The one enctype table: IANA numbers, RFC names, which ones fastkrb implements and which it uses by
default. Crypto, keytab handling, the validator and every message take their names from here."""

from __future__ import annotations

__all__ = ["NAMES", "IMPLEMENTED", "SUPPORTED", "DEFAULT", "name", "label"]

#: Every enctype met in keytabs and tickets (RFC 3961 §8, RFC 3962, RFC 4757, RFC 6803, RFC 8009).
NAMES: dict[int, str] = {
    1: "des-cbc-crc",
    2: "des-cbc-md4",
    3: "des-cbc-md5",
    16: "des3-cbc-sha1",
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
    23: "arcfour-hmac",
    24: "arcfour-hmac-exp",
    25: "camellia128-cts-cmac",
    26: "camellia256-cts-cmac",
}

#: What the native core implements (IANA number -> RFC name).
IMPLEMENTED: dict[int, str] = {e: NAMES[e] for e in (17, 18, 19, 20, 23)}
#: What a Validator may be told to accept; RC4 (23) only when listed explicitly.
SUPPORTED: tuple[int, ...] = tuple(IMPLEMENTED)
#: What a Validator accepts when not told: the AES family, strongest first.
DEFAULT: tuple[int, ...] = (20, 19, 18, 17)


def name(enctype: int) -> str:
    """The RFC name of an enctype number, also for ones fastkrb does not implement."""
    return NAMES.get(enctype) or f"enctype-{enctype}"


def label(enctype: int | None) -> str:
    """``name(number)`` for messages: ``aes256-cts-hmac-sha1-96(18)``."""
    if enctype is None:
        return "unknown enctype"
    return f"{NAMES.get(enctype, 'enctype')}({enctype})"
