"""Real Active Directory tokens (Kerberos.NET test data, Windows Server 2008) through the public API.

Six tokens: aes128, aes256 and rc4 tickets, each as a raw krb5 GSS token and wrapped in SPNEGO. They are
validated at the times ad_tokens.json gives, with a keytab built in memory from the raw service keys, and
the decoded PAC is compared with the values listed there. The json's ``expected[]`` entries (assertions of
the upstream C# tests) are used where they translate to fastkrb.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.krb.pac import Pac, verify_server_signature
from support.pac_checks import check_ad_pac

AD_JSON = json.loads((Path(__file__).parent / "vectors" / "ad_tokens.json").read_text())
TOKENS = {t["id"]: t for t in AD_JSON["tokens"]}
DECODED = AD_JSON["decoded"]
IDS = sorted(TOKENS)
SKEW = 300


def _expected(token: dict[str, Any], assertion: str) -> Any:
    """The upstream test's expected value for an assertion; KeyError when the json has none."""
    hits = [e["expected"] for e in token["expected"] if e["assertion"] == assertion]
    if not hits:
        raise KeyError(assertion)
    return hits[0]


def _keytab(token: dict[str, Any], key: bytes | None = None, *, enctype: int | None = None,
            kvno: int | None = None, principal: str | None = None) -> Keytab:
    kt = Keytab()
    kt.add(principal or token["service_principal"], key if key is not None else bytes.fromhex(token["service_key_hex"]),
           enctype=enctype if enctype is not None else token["service_key_enctype"],
           kvno=kvno if kvno is not None else token["service_key_kvno"])
    return kt


def _enctypes(token: dict[str, Any]) -> tuple[int, ...]:
    return (23,) if token["service_key_enctype"] == 23 else (18, 17)


def _validator(token: dict[str, Any], kt: Keytab | None = None, **kw: Any) -> Validator:
    args: dict[str, Any] = {"keytab": kt if kt is not None else _keytab(token), "enctypes": _enctypes(token),
                            "replay_cache": "none", "cold_start": False}
    args.update(kw)
    return Validator(**args)


def _token_bytes(token: dict[str, Any]) -> bytes:
    return bytes.fromhex(token["token_hex"])


def _unix(v: Any) -> float:
    return v.timestamp() if isinstance(v, datetime) else float(v)


def _code(token: dict[str, Any], v: Validator, now: float | None, data: Any = None) -> str:
    with pytest.raises(KerberosError) as info:
        v.validate(_token_bytes(token) if data is None else data, now=now)
    return info.value.code


@pytest.mark.parametrize("tid", IDS)
def test_validates(tid: str) -> None:
    t = TOKENS[tid]
    d = DECODED[t["decoded"]]
    res = _validator(t).validate(_token_bytes(t), now=t["validation_time_unix"])
    assert res.client == t["client_principal"] == "user.test@DOMAIN.COM"
    assert res.client.lower() == _expected(t, "result.Name")  # Kerberos.NET lower-cases the realm
    assert res.server == t["service_principal"]
    assert res.enctype == t["service_key_enctype"] == _expected(t, "validator.Data.EType (ticket enc-part etype)")
    assert res.kvno == t["service_key_kvno"]
    assert _unix(res.auth_time) == d["enc_ticket_part"]["authtime"]["unix"]
    assert _unix(res.end_time) == d["enc_ticket_part"]["endtime"]["unix"]
    # The AP-REQ asks for mutual authentication: an AP-REP comes back, framed like the request.
    assert "mutual-required" in d["ap_req"]["ap_options_names"]
    assert res.mutual is True
    assert res.response_token
    if t["framing"]["type"] == "spnego":
        assert res.www_authenticate is not None and res.www_authenticate.startswith("Negotiate ")


@pytest.mark.parametrize("tid", IDS)
def test_pac_of_result(tid: str) -> None:
    """result.pac is the ticket's PAC, verified with the service key and decoded to the listed values."""
    t = TOKENS[tid]
    exp = DECODED[t["decoded"]]["pac"]
    res = _validator(t).validate(_token_bytes(t), now=t["validation_time_unix"])
    assert isinstance(res.pac, Pac)
    assert res.pac.data == bytes.fromhex(exp["pac_hex"])
    check_ad_pac(res.pac, exp)
    assert verify_server_signature(res.pac, t["service_key_enctype"], bytes.fromhex(t["service_key_hex"]))


@pytest.mark.parametrize("tid", IDS)
def test_header_and_base64_forms(tid: str) -> None:
    t = TOKENS[tid]
    b64 = base64.b64encode(_token_bytes(t)).decode()
    v = _validator(t)
    for form in (f"Negotiate {b64}", b64):
        assert v.validate(form, now=t["validation_time_unix"]).client == t["client_principal"]


@pytest.mark.parametrize("tid", ["rc4-kerberos", "rc4-spnego"])
def test_rc4_needs_to_be_permitted(tid: str) -> None:
    t = TOKENS[tid]
    kt = _keytab(t)   # RC4 only: beside it an AES key, or a Validator permitting only AES is refused at construction
    kt.add("HTTP/unrelated.example.test@" + t["service_principal"].rsplit("@", 1)[1], bytes(32), enctype=18, kvno=1)
    v = _validator(t, kt, enctypes=(18, 17))
    assert _code(t, v, t["validation_time_unix"]) == "enctype_not_permitted"


@pytest.mark.parametrize("tid", IDS)
def test_an_hour_later_is_clock_skew(tid: str) -> None:
    """An hour on, the authenticator is 3600 s old but the 10-hour ticket is still valid: skew, not expiry."""
    t = TOKENS[tid]
    d = DECODED[t["decoded"]]
    now = t["validation_time_unix"] + 3600
    ctime, endtime = d["authenticator"]["ctime"]["unix"], d["enc_ticket_part"]["endtime"]["unix"]
    assert now - ctime > SKEW and now < endtime - SKEW  # the premise, from the json
    assert _code(t, _validator(t), now) == "clock_skew"


@pytest.mark.parametrize("tid", ["rc4-kerberos"])
def test_real_clock_rejects(tid: str) -> None:
    """ValidatorTests.KerberosValidatorExpiredTicket: at today's clock the 2009 ticket is refused."""
    t = TOKENS[tid]
    assert _expected(t, "ValidationActions.All at the real clock") == "KerberosValidationException"
    # Both the authenticator (skew) and the ticket (expiry) are out of range; which is named first is the
    # validator's order of checks (MIT: skew first).
    assert _code(t, _validator(t), None) in ("clock_skew", "ticket_expired")


@pytest.mark.parametrize("tid", IDS)
def test_wrong_key_is_integrity(tid: str) -> None:
    t = TOKENS[tid]
    good = bytes.fromhex(t["service_key_hex"])
    wrong = [bytes([good[0] ^ 1]) + good[1:]]
    # The other tickets' key files, where the length fits the enctype (upstream *_IncorrectKey / BadKey).
    wrong += [bytes.fromhex(DECODED[o]["service_key"]["key_hex"]) for o in DECODED
              if o != t["decoded"] and len(bytes.fromhex(DECODED[o]["service_key"]["key_hex"])) == len(good)]
    assert len(wrong) >= (2 if len(good) == 16 else 1)
    for key in wrong:
        assert _code(t, _validator(t, _keytab(t, key)), t["validation_time_unix"]) == "integrity"


@pytest.mark.parametrize("tid", ["aes128-kerberos", "rc4-spnego"])
def test_key_selection_after_rotation(tid: str) -> None:
    """MIT semantics: the right key under another kvno still decrypts; a wrong key under a newer kvno is a
    kvno problem, not an integrity one; a missing enctype is named as such."""
    t = TOKENS[tid]
    kvno = t["service_key_kvno"]
    res = _validator(t, _keytab(t, kvno=kvno + 1)).validate(_token_bytes(t), now=t["validation_time_unix"])
    assert res.client == t["client_principal"]
    bad = bytes(len(bytes.fromhex(t["service_key_hex"])))
    assert _code(t, _validator(t, _keytab(t, bad, kvno=kvno + 1)), t["validation_time_unix"]) == \
        "key_version_mismatch"
    other = 18 if t["service_key_enctype"] != 18 else 17
    kt = _keytab(t, bytes(32 if other == 18 else 16), enctype=other)
    # RC4 is permitted only beside an RC4 key (a Validator refuses the configuration otherwise): another
    # principal's, so that the ticket's principal still lacks the ticket's enctype
    kt.add("HTTP/unrelated.example.test@" + t["service_principal"].rsplit("@", 1)[1], bytes(16), enctype=23, kvno=1)
    assert _code(t, _validator(t, kt, enctypes=(18, 17, 23)), t["validation_time_unix"]) == "enctype_not_in_keytab"


@pytest.mark.parametrize("tid", ["aes256-spnego", "rc4-kerberos"])
def test_other_service_principal(tid: str) -> None:
    """The service key under another name (an AD keytab names the account, the client asks for an SPN of it)
    is accepted as MIT's acceptor does; another name with another key is not this service."""
    t = TOKENS[tid]
    kt = _keytab(t, principal="HTTP/other.test.domain.com@DOMAIN.COM")
    res = _validator(t, kt).validate(_token_bytes(t), now=t["validation_time_unix"])
    assert res.server == "HTTP/other.test.domain.com@DOMAIN.COM"
    assert res.requested_server == t["service_principal"]
    wrong = bytes(len(bytes.fromhex(t["service_key_hex"])))
    kt = _keytab(t, wrong, principal="HTTP/other.test.domain.com@DOMAIN.COM")
    assert _code(t, _validator(t, kt), t["validation_time_unix"]) == "wrong_principal"


def test_replay_across_framings() -> None:
    """ValidatorTests.ValidatorReplayCache: the second presentation is a replay. The SPNEGO token carries the
    byte-identical AP-REQ, so it is the same authenticator and a replay too."""
    t, s = TOKENS["rc4-kerberos"], TOKENS["rc4-spnego"]
    assert "ReplayException" in _expected(
        t, "ValidationActions.All, Now = 1/9/2009 5:20:00 PM +00:00, Validate twice")
    assert s["framing"]["mech_token_equals_token_of"] == "rc4-kerberos"
    now = t["validation_time_unix"]
    v = _validator(t, replay_cache="memory")
    assert v.validate(_token_bytes(t), now=now).client == t["client_principal"]
    assert _code(t, v, now) == "replay"
    assert _code(s, v, now) == "replay"
    # A fresh cache accepts the SPNEGO form once.
    v2 = _validator(s, replay_cache="memory")
    assert v2.validate(_token_bytes(s), now=now).client == s["client_principal"]
