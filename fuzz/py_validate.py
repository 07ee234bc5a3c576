"""atheris target: Validator.validate through the Cython boundary (native/validator.pxi -> validate.c).

Input: the C validate target's format ([now: 4 bytes BE][options][token]), so both share seeds. Option
bits as fz_common.h FZ_OPT_*, plus 0x40: the token is given as str, 0x80: as a memoryview. With
FZ_OPT_RCACHE a Python replay backend (the hook path) is used and the same token validated twice must
be a replay; the answer (response_token) sent back as a request is refused (AP-REP reflection). Only
KerberosError may come out; no message, details dict or result dict shows a key.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import fuzzkeys
from _pyfuzz import assert_no_secret, instrumented, main

with instrumented():
    from fastkrb import Validator
    from fastkrb.errors import InternalError, KerberosError, Replay

OPT_CB, OPT_REALMS, OPT_COLD, OPT_NO_PAC, OPT_RCACHE, OPT_NO_RC4, OPT_STR, OPT_VIEW = (1 << i for i in range(8))
logging.getLogger("fastkrb").setLevel(logging.ERROR)  # replay_cache="none" is deliberate here


class DictReplay:
    """A Python replay backend (Validator's hook path), emptied for every input."""

    def __init__(self) -> None:
        self.seen: dict[bytes, float] = {}
        self.started = 0.0

    def insert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        if key in self.seen:
            return False, self.seen[key]
        self.seen[key] = now
        return True, None


_validators: dict[int, tuple[Validator, DictReplay | None]] = {}


def validator(opts: int) -> tuple[Validator, DictReplay | None]:
    key = opts & (OPT_REALMS | OPT_NO_PAC | OPT_RCACHE | OPT_NO_RC4)
    if key not in _validators:
        rc = DictReplay() if opts & OPT_RCACHE else None
        v = Validator(fuzzkeys.keytab(), principals=fuzzkeys.accepted_principals(),
                      replay_cache=rc if rc is not None else "none", cold_start=False,
                      enctypes=(17, 18, 19, 20) if opts & OPT_NO_RC4 else (17, 18, 19, 20, 23),
                      allowed_realms=fuzzkeys.ALLOWED_REALMS if opts & OPT_REALMS else ("*",),
                      verify_pac=not opts & OPT_NO_PAC)
        _validators[key] = (v, rc)
    return _validators[key]


def check_error(exc: KerberosError) -> None:
    assert not isinstance(exc, InternalError), "the validator failed internally"
    assert isinstance(exc.code, str) and exc.code
    assert_no_secret(str(exc) + repr(exc.details) + repr(exc))
    json.dumps(exc.details, default=str)


def test_one_input(data: bytes) -> None:
    if len(data) < 5:
        return
    now = float(int.from_bytes(data[:4], "big"))
    opts = data[4]
    raw = data[5:]
    token: Any = raw
    if opts & OPT_STR:
        token = raw.decode("latin-1")
    elif opts & OPT_VIEW:
        token = memoryview(raw)
    cb = fuzzkeys.CHANNEL_BINDINGS if opts & OPT_CB else None
    v, rc = validator(opts)
    if rc is not None:
        rc.seen.clear()
    try:
        res = v.validate(token, now=now, channel_bindings=cb)
    except KerberosError as exc:
        check_error(exc)
        return
    facts = res.to_dict()
    json.dumps(facts)
    assert_no_secret(json.dumps(facts) + repr(res) + str(res.www_authenticate), (res.session_key,))
    try:
        pac = res.pac
        if pac is not None:
            json.dumps(pac.to_dict())
    except KerberosError:
        pass
    if res.response_token is not None:
        # reflection: our own AP-REP / SPNEGO answer sent back is not a request
        try:
            v.validate(res.response_token, now=now, channel_bindings=cb)
        except KerberosError as exc:
            assert exc.code == "malformed", exc.code
        else:
            raise AssertionError("the acceptor's answer was accepted as a request")
    if rc is not None:
        try:
            v.validate(token, now=now, channel_bindings=cb)
        except Replay:
            pass
        else:
            raise AssertionError("a token was accepted twice")


if __name__ == "__main__":
    main(test_one_input)
