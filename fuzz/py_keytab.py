"""atheris target: the keytab reader (fastkrb.keytab, MIT's file format versions 0x501/0x502).

Any input either parses or raises KeytabError (a KerberosError); a parsed keytab writes back to bytes
that parse to the same bytes again; its repr never shows a key.
"""

from __future__ import annotations

from _pyfuzz import assert_no_secret, instrumented, main

with instrumented():
    from fastkrb.errors import KerberosError
    from fastkrb.keytab import Keytab


def test_one_input(data: bytes) -> None:
    try:
        kt = Keytab.from_bytes(data)
    except KerberosError as exc:
        assert_no_secret(str(exc) + repr(exc.details))
        return
    out = kt.to_bytes()
    assert Keytab.from_bytes(out).to_bytes() == out, "keytab does not round-trip"
    text = repr(kt) + "".join(repr(e) for e in kt.entries)
    for e in kt.entries:
        if len(e.key) >= 8:
            assert e.key.hex() not in text.lower(), "a key appears in a keytab's repr"
        e.principal  # noqa: B018 - the property decodes names; it must not raise


if __name__ == "__main__":
    main(test_one_input)
