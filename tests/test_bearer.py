"""Bearer tokens (fastkrb.sessions.bearer): a Kerberos ticket exchanged for an ES256 JWT.

The proof the issue asks for: a token issued for a real ticket is verified by an independent verifier
(jwcrypto, not PyJWT, which fastkrb signs with) given only the JWKS document that ``fastkrb keys signing
jwks`` prints; it is refused after it expires and after its key is removed from the key file, by that
verifier and by fastkrb's own. Then the attacks: ``none``, HMAC keyed with the public key, other keys,
altered claims, other issuers and audiences.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import stat
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from fastkrb import (
    BearerExpired,
    BearerInvalid,
    ConfigurationError,
    Forbidden,
    Policy,
    TokenIssuer,
    TokenVerifier,
    Validator,
)
from fastkrb.errors import error_for_code
from fastkrb.sessions.bearer import (
    ALGORITHM,
    SigningKey,
    jwks,
    new_signing_key,
    new_signing_key_file,
    parse_signing_keys,
    rotate_signing_key_file,
    thumbprint,
)
from fastkrb.sessions.keyfile import KeyFileError
from fastkrb.testing import make_keytab, mint
from fastkrb.tools import sessionkeys

DOM = "S-1-5-21-1004336348-1177238915-682003330"
SERVICE = "HTTP/api.corp.example@CORP.EXAMPLE"
ISS, AUD = "https://auth.corp.example", "api.corp.example"


@pytest.fixture(scope="module")
def ad_keytab() -> Any:
    return make_keytab((SERVICE,), rng=random.Random(17))


def ad_result(keytab: Any, groups: tuple[int, ...] = (513, 1200), endtime: int | None = None,
              now: float | None = None, client: str = "alice@CORP.EXAMPLE") -> Any:
    t = time.time() if now is None else now
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1104, "group_rids": groups, "logon_domain_name": "CORP",
                          "user_name": client.partition("@")[0]}}
    token = mint(keytab, client=client, server=SERVICE, pac=pac, now=t, endtime=endtime).header
    return Validator(keytab, cold_start=False, replay_cache="none").validate(token, now=t)


def jwks_by_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The JWKS document exactly as an operator publishes it: `fastkrb keys signing jwks FILE`."""
    assert sessionkeys.main(["keys", "signing", "jwks", str(path)]) == 0
    return capsys.readouterr().out


def independent_verify(token: str, jwks_json: str) -> dict[str, Any]:
    """jwcrypto, given nothing but the JWKS JSON: signature, alg, iss, aud, exp (its own clock)."""
    keyset = jc_jwk.JWKSet.from_json(jwks_json)
    t = jc_jwt.JWT(jwt=token, key=keyset, algs=["ES256"], check_claims={"iss": ISS, "aud": AUD, "exp": None})
    return json.loads(t.claims)  # type: ignore[no-any-return]


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64u(sign(signing_input.encode()))}"


# -- the proof: issue, verify with only the JWKS, refuse after expiry and key removal ----------------------------

def test_a_real_ticket_exchanged_and_verified_with_only_the_jwks(mit_lab: Any, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "signing-keys.json"
    key = new_signing_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token, _ = mit_lab.get_token("svc18")
    res = Validator(str(mit_lab.keytabs["svc18"]), cold_start=False).validate(token)
    issued = TokenIssuer(path, issuer=ISS, audience=AUD, ttl=300).issue(res)
    doc = jwks_by_cli(path, capsys)
    assert "private" not in doc and '"d"' not in doc   # public halves only
    claims = independent_verify(issued.token, doc)
    assert claims["sub"] == res.client and claims["srv"] == res.server and claims["iss"] == ISS
    assert claims["aud"] == AUD and claims["exp"] <= res.end_time and claims["exp"] - claims["iat"] <= 300
    assert "sid" not in claims and "groups" not in claims   # MIT's PAC has no logon information
    assert pyjwt.get_unverified_header(issued.token) == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    p = TokenVerifier(path, issuer=ISS, audience=AUD).authenticate(f"Bearer {issued.token}")
    assert p is not None and (p.client, p.client_realm, p.server, p.via) == (res.client, res.client_realm,
                                                                             res.server, "bearer")
    assert p.token_id == claims["jti"] and p.kid == key.kid and p.audience == AUD
    assert issued.to_dict() == {"access_token": issued.token, "token_type": "Bearer",
                                "expires_in": issued.expires_at - issued.issued_at}


def test_refused_after_expiry(ad_keytab: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    new_signing_key_file(path)
    issuer = TokenIssuer(path, issuer=ISS, audience=AUD, ttl=300)
    verifier = TokenVerifier(path, issuer=ISS, audience=AUD, leeway=10)
    now = float(int(time.time()))
    fresh = issuer.issue(ad_result(ad_keytab, now=now), now=now)
    assert fresh.expires_at == now + 300
    verifier.verify(fresh.token, now=now + 310)      # inside the leeway
    with pytest.raises(BearerExpired) as ei:
        verifier.verify(fresh.token, now=now + 311)
    assert ei.value.code == "bearer_expired" and ei.value.details["expired_at"] == now + 300
    # the independent verifier, on its own clock: a token whose exp has passed
    then = now - 3600
    old = issuer.issue(ad_result(ad_keytab, now=then), now=then)
    with pytest.raises(jc_jwt.JWTExpired):
        independent_verify(old.token, jwks_by_cli(path, capsys))
    with pytest.raises(BearerExpired):
        verifier.verify(old.token)
    # the ticket's end time bounds the token
    short = issuer.issue(ad_result(ad_keytab, endtime=int(now) + 100, now=now), now=now)
    assert short.expires_at == now + 100
    with pytest.raises(BearerExpired):
        issuer.issue(ad_result(ad_keytab, endtime=int(now) + 100, now=now), now=now + 100)


def test_refused_after_its_key_is_removed(ad_keytab: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    first = new_signing_key_file(path)
    issuer = TokenIssuer(path, issuer=ISS, audience=AUD, reload_interval=0)
    verifier = TokenVerifier(path, issuer=ISS, audience=AUD, reload_interval=0)
    res = ad_result(ad_keytab)
    old = issuer.issue(res)
    second = rotate_signing_key_file(path)              # rotation: the previous key still verifies
    new = issuer.issue(res)
    assert (old.kid, new.kid) == (first.kid, second.kid)
    both = jwks_by_cli(path, capsys)
    assert [k["kid"] for k in json.loads(both)["keys"]] == [second.kid, first.kid]
    for t in (old, new):
        independent_verify(t.token, both)
        verifier.verify(t.token)
    rotate_signing_key_file(path)                       # the first key leaves the file
    with pytest.raises(BearerInvalid) as ei:
        verifier.verify(old.token)
    assert ei.value.details == {"reason": "unknown_kid", "kid": first.kid} and str(path) in ei.value.cause
    after = jwks_by_cli(path, capsys)
    assert first.kid not in after
    with pytest.raises(jc_jwt.JWTMissingKey):
        independent_verify(old.token, after)
    verifier.verify(new.token)
    # removed by hand (revocation): the second key goes too
    doc = json.loads(path.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["kid"] != second.kid]
    path.write_text(json.dumps(doc))
    with pytest.raises(BearerInvalid):
        verifier.verify(new.token)
    with pytest.raises(jc_jwt.JWTMissingKey):
        independent_verify(new.token, jwks_by_cli(path, capsys))


# -- claims and the policy --------------------------------------------------------------------------------------

def test_pac_claims_and_policy_parity(ad_keytab: Any) -> None:
    key = new_signing_key()
    issuer = TokenIssuer([key], issuer=ISS, audience=AUD)
    verifier = TokenVerifier([key], issuer=ISS, audience=[AUD, "other"])
    policies = [Policy(allowed_groups=[f"{DOM}-1200"]), Policy(allowed_groups=[f"{DOM}-1201"]),
                Policy(allowed_groups=[f"{DOM}-513"]), Policy(allowed_users=[f"{DOM}-1104"]),
                Policy(allowed_users=["alice"]), Policy(allowed_users=["bob"]),
                Policy(allowed_realms=["CORP.EXAMPLE"]), Policy(allowed_realms=["X.TEST"])]
    seen = set()
    for groups in ((513, 1200), (513, 1201, 1202)):
        res = ad_result(ad_keytab, groups=groups)
        claims = pyjwt.decode(issuer.issue(res).token, key.public_key, algorithms=["ES256"], audience=AUD)
        assert claims["sid"] == f"{DOM}-1104" and claims["groups"] == [f"{DOM}-{g}" for g in groups]
        p = verifier.verify(issuer.issue(res).token)
        assert p.identity is not None and p.identity.group_sids == res.identity.group_sids
        for policy in policies:
            ok = policy.allows(res)
            seen.add(ok)
            assert policy.allows(p) == ok, policy
            if not ok:
                with pytest.raises(Forbidden) as a:
                    policy.check(res)
                with pytest.raises(Forbidden) as b:
                    policy.check(p)
                assert b.value.details == a.value.details
    assert seen == {True, False}


# -- attacks -----------------------------------------------------------------------------------------------------

def test_algorithm_confusion_is_refused(ad_keytab: Any) -> None:
    key = new_signing_key()
    verifier = TokenVerifier([key], issuer=ISS, audience=AUD)
    good = TokenIssuer([key], issuer=ISS, audience=AUD).issue(ad_result(ad_keytab)).token
    claims = pyjwt.decode(good, options={"verify_signature": False})
    claims["sub"] = "administrator@CORP.EXAMPLE"
    pem = key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = json.dumps(key.public_jwk()).encode()
    forged = {
        "none": forge({"alg": "none", "kid": key.kid}, claims, lambda _m: b""),
        "None": forge({"alg": "None", "kid": key.kid}, claims, lambda _m: b""),
        "HS256 keyed with the public PEM": forge({"alg": "HS256", "kid": key.kid}, claims,
                                                 lambda m: hmac.new(pem, m, hashlib.sha256).digest()),
        "HS256 keyed with the JWK": forge({"alg": "HS256", "kid": key.kid}, claims,
                                          lambda m: hmac.new(jwk_json, m, hashlib.sha256).digest()),
        "HS512": forge({"alg": "HS512", "kid": key.kid}, claims, lambda m: hmac.new(pem, m, hashlib.sha512).digest()),
    }
    for what, token in forged.items():
        with pytest.raises(BearerInvalid) as ei:
            verifier.verify(token)
        assert ei.value.details["reason"] == "algorithm", what
    # ES256 in the header, but another key under our kid
    mallory = ec.generate_private_key(ec.SECP256R1())
    other = pyjwt.encode(claims, mallory, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(BearerInvalid) as ei:
        verifier.verify(other)
    assert ei.value.details["reason"] == "signature"
    # RS256 with a key of its own
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BearerInvalid) as ei:
        verifier.verify(pyjwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": key.kid}))
    assert ei.value.details["reason"] == "algorithm"


def test_altered_tokens_and_wrong_parties_are_refused(ad_keytab: Any) -> None:
    key = new_signing_key()
    verifier = TokenVerifier([key], issuer=ISS, audience=AUD)
    token = TokenIssuer([key], issuer=ISS, audience=AUD).issue(ad_result(ad_keytab)).token
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["groups"].append(f"{DOM}-512")   # Domain Admins
    independent_verify(token, json.dumps(jwks([key])))
    with pytest.raises(jc_jwt.JWTMissingKey):   # jwcrypto's word for "no key of the set verifies it"
        independent_verify(f"{head}.{b64u(json.dumps(claims).encode())}.{sig}", json.dumps(jwks([key])))
    for bad in (f"{head}.{b64u(json.dumps(claims).encode())}.{sig}", f"{head}.{body}.{sig[:-4]}AAAA",
                f"{head}.{body}.", f"{head}.{body}"):
        with pytest.raises(BearerInvalid):
            verifier.verify(bad)

    def reason(token: str, v: TokenVerifier = verifier) -> str:
        with pytest.raises(BearerInvalid) as ei:
            v.verify(token)
        return str(ei.value.details["reason"])

    assert reason(TokenIssuer([key], issuer="https://evil", audience=AUD).issue(ad_result(ad_keytab)).token) \
        == "issuer"
    assert reason(TokenIssuer([key], issuer=ISS, audience="payroll").issue(ad_result(ad_keytab)).token) \
        == "audience"
    base = {"iss": ISS, "sub": "alice@CORP.EXAMPLE", "aud": AUD, "iat": int(time.time()), "nbf": int(time.time()),
            "exp": int(time.time()) + 60, "jti": "x", "srv": SERVICE}
    for missing in ("srv", "jti", "exp", "sub"):
        c = {k: v for k, v in base.items() if k != missing}
        assert reason(pyjwt.encode(c, key.private_key, algorithm="ES256", headers={"kid": key.kid})) == "claims"
    early = {**base, "nbf": int(time.time()) + 600, "exp": int(time.time()) + 900}
    assert reason(pyjwt.encode(early, key.private_key, algorithm="ES256", headers={"kid": key.kid})) \
        == "not_yet_valid"
    for junk in ("", "x", "a.b.c", "." * 3, "e" * 70000):
        assert reason(junk) in ("malformed", "algorithm")
    assert reason(pyjwt.encode(base, key.private_key, algorithm="ES256")) == "unknown_kid"   # no kid at all


def test_the_authorization_header() -> None:
    key = new_signing_key()
    verifier = TokenVerifier([key], issuer=ISS, audience=AUD)
    assert verifier.authenticate(None) is None
    assert verifier.authenticate("Negotiate YIIB...") is None
    assert TokenVerifier.token_from("bearer abc") == "abc" and TokenVerifier.token_from("BEARER  abc ") == "abc"
    with pytest.raises(BearerInvalid):
        verifier.authenticate("Bearer abc")


# -- keys ------------------------------------------------------------------------------------------------------

def test_kid_is_the_rfc7638_thumbprint_and_jwks_is_public() -> None:
    key = new_signing_key()
    assert key.kid == thumbprint(key.public_key)
    # RFC 7638 §3.1's recipe, computed with jwcrypto
    assert jc_jwk.JWK(**{k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x", "y")}).thumbprint() \
        == key.kid
    doc = jwks([key])
    assert set(doc["keys"][0]) == {"kty", "crv", "x", "y", "kid", "use", "alg"} and doc["keys"][0]["alg"] == ALGORITHM
    assert "SigningKey(kid=" in repr(key) and "PRIVATE" not in repr(key)


def test_signing_key_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    for entry, says in (({"kid": "a", "private_key": rsa_pem}, "not an EC P-256 key"),
                        ({"kid": "a", "private_key": p384}, "not an EC P-256 key"),
                        ({"kid": "a", "private_key": "junk"}, "not an unencrypted PEM private key"),
                        ({"kid": "a", "alg": "HS256", "private_key": "x"}, "fastkrb signs with ES256 only")):
        path.write_text(json.dumps({"fastkrb": "signing-keys", "version": 1, "keys": [entry]}))
        with pytest.raises(KeyFileError) as ei:
            TokenVerifier(path, issuer=ISS, audience=AUD)
        assert says in ei.value.cause and str(path) in ei.value.cause
    with pytest.raises(ConfigurationError):
        TokenIssuer([new_signing_key()], issuer="", audience=AUD)
    with pytest.raises(ConfigurationError):
        TokenIssuer([new_signing_key()], issuer=ISS, audience=AUD, ttl=0)
    with pytest.raises(ConfigurationError):
        TokenVerifier([new_signing_key()], issuer=ISS, audience=[])


def test_the_signing_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "g.json", tmp_path / "jwks.json"
    assert sessionkeys.main(["keys", "signing", "new", str(path)]) == 0
    first = parse_signing_keys(path.read_bytes())[0]
    assert isinstance(first, SigningKey) and f"key {first.kid} signs bearer tokens" in capsys.readouterr().out
    assert sessionkeys.main(["keys", "signing", "rotate", str(path), "--keep", "0"]) == 0
    assert first.kid not in path.read_text()
    assert sessionkeys.main(["keys", "signing", "jwks", str(path), "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert json.loads(out.read_text())["keys"][0]["kid"] == parse_signing_keys(path.read_bytes())[0].kid
    assert sessionkeys.main(["keys", "signing", "jwks", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.json cannot be read" in err


def test_error_codes_round_trip() -> None:
    for cls in (BearerInvalid, BearerExpired):
        e = error_for_code(cls.code, "why")
        assert type(e) is cls and e.krb_error is None and e.fix
