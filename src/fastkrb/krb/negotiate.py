"""The one reader of ``Authorization: Negotiate <base64>`` (RFC 4559 §4.2) outside the native core.

The scheme is case-blind (RFC 7235 §2.1). The native validator reads the same forms on its own; this
module serves the Python layers that must look at a header before (or instead of) validating it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import AnyStr

from fastkrb.errors import MalformedToken

__all__ = ["negotiate_token", "token_bytes", "token_from_text", "token_from_bytes"]

# the first byte of a binary token: GSS InitialContextToken, bare AP-REQ, SPNEGO NegTokenInit / NegTokenResp
_BINARY_TAGS = (0x60, 0x6E, 0xA0, 0xA1)


def negotiate_token(value: AnyStr | None, schemes: Iterable[str] = ("negotiate",)) -> AnyStr | None:
    """The base64 text after ``Negotiate`` (or another of ``schemes``) in a header value, else None.

    Returns the type it was given, so the sidecar stays in bytes and the middleware in str.
    """
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, sep, rest = text.strip().partition(" ")
    if not sep or scheme.lower() not in schemes:
        return None
    rest = rest.strip()
    if not rest:
        return None
    return rest.encode("latin-1") if isinstance(value, bytes) else rest   # type: ignore[return-value]


def token_bytes(value: str | bytes, schemes: Iterable[str] = ("negotiate",)) -> bytes:
    """The raw token of a header value (``Negotiate <b64>``), of bare base64 text, or of raw bytes.

    Missing base64 padding is tolerated (some clients drop it). Raises MalformedToken for text that is
    not base64.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    text = negotiate_token(value, schemes) or value.strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken("The token is not base64.", details={"length": len(text)}) from exc


def token_from_text(text: str) -> str | bytes:
    """A token as a person pastes it, in the form the validator reads: a whole header line
    (``Authorization: Negotiate <b64>``, as ``fastkrb dev header`` and browser tools print it), the header
    value, bare base64, or hex (as Wireshark copies bytes). Header lines and values become ``Negotiate <b64>``,
    hex becomes bytes, anything else is returned stripped (the validator then says what is wrong with it)."""
    text = text.strip()
    name, sep, rest = text.partition(":")
    if sep and name.strip().lower() in ("authorization", "proxy-authorization"):
        text = rest.strip()
    compact = "".join(text.split())
    if compact and len(compact) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in compact) \
            and (int(compact[:2], 16) in _BINARY_TAGS or compact[:2].lower() == "4e"):   # 4e: "NTLMSSP"
        return bytes.fromhex(compact)
    return text


def token_from_bytes(data: bytes) -> str | bytes:
    """The token in a file's bytes: a binary token (cut out of a capture: GSS, SPNEGO, AP-REQ or NTLMSSP)
    as is, else text read as :func:`token_from_text`."""
    if (data and data[0] in _BINARY_TAGS) or data.startswith(b"NTLMSSP"):
        return data
    return token_from_text(data.decode("ascii", "replace"))
