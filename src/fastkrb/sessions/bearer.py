"""Bearer tokens for HTTP/2, gRPC and service chains: a Kerberos ticket exchanged for a short-lived JWT
(RFC 7519) signed with ES256 (ECDSA P-256 and SHA-256, RFC 7518 §3.4), which any verifier checks with the
public keys of a JWKS document (RFC 7517 §5) and fastkrb's ``/auth`` accepts as ``Authorization: Bearer``
(RFC 6750 §2.1).

    issuer = TokenIssuer("/etc/fastkrb/signing-keys.json", issuer="https://auth.corp.example",
                         audience="api.corp.example", ttl=300)
    token = issuer.issue(result).token                 # after validate() and the policy
    verifier = TokenVerifier("/etc/fastkrb/signing-keys.json", issuer=..., audience="api.corp.example")
    principal = verifier.authenticate(authorization)   # a Principal, None without a Bearer header, or raises
    jwks(verifier.ring.keys())                         # the JWKS document for other verifiers

**Claims**: ``iss``, ``sub`` (the client principal, ``alice@REALM``), ``aud``, ``iat``, ``nbf``, ``exp`` =
min(ticket end time, now + ``ttl``), ``jti`` (random), ``srv`` (the service principal that accepted the
ticket: a Policy's bare user names match in its realm) and, when the ticket's PAC had logon information,
``sid`` (the user SID) and ``groups`` (group SIDs, the primary group first). The header names the key
(``kid``: its RFC 7638 thumbprint) and ``alg`` ES256.

**Verification** accepts exactly ES256 (never ``none``, never an HMAC whose secret an attacker would take
from the public key), a ``kid`` of the key file, the signature, ``iss`` and ``aud``, and the times with
``leeway`` seconds of clock difference; the claims it needs must be there. Signature, issuer and audience
are PyJWT's checks; the times are checked here against an injectable clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastkrb.errors import BearerExpired, BearerInvalid, ConfigurationError, utc_iso
from fastkrb.sessions.keyfile import KeyFileError, KeyRing, dump_key_file, read_key_file, write_key_file
from fastkrb.sessions.principal import IdentityFacts, Principal

__all__ = ["ALGORITHM", "Issued", "SigningKey", "TokenIssuer", "TokenVerifier", "dump_signing_keys", "jwks",
           "new_signing_key", "new_signing_key_file", "parse_signing_keys", "rotate_signing_key_file"]

KIND = "signing-keys"
ALGORITHM = "ES256"
_MAX_TOKEN = 65536   # as Validator(max_token_size=): a user in hundreds of groups makes a large token
_REQUIRED = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "srv")


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# -- keys -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    """One EC P-256 private key; ``kid`` is the RFC 7638 thumbprint of its public JWK."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: int

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7518 §6.2.1): what a JWKS lists, never the private part."""
        return {**_ec_members(self.public_key), "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def __repr__(self) -> str:   # never the key
        return f"SigningKey(kid={self.kid!r}, created={utc_iso(self.created)})"


def _ec_members(pub: ec.EllipticCurvePublicKey) -> dict[str, str]:
    n = pub.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _b64u(n.x.to_bytes(32, "big")), "y": _b64u(n.y.to_bytes(32, "big"))}


def thumbprint(pub: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 §3: SHA-256 of the required members in lexicographic order, no whitespace."""
    canon = json.dumps(_ec_members(pub), separators=(",", ":"), sort_keys=True).encode()
    return _b64u(hashlib.sha256(canon).digest())


def new_signing_key(now: float | None = None) -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(thumbprint(key.public_key()), key, int(time.time() if now is None else now))


def parse_signing_keys(data: bytes, where: str = "signing key file") -> tuple[SigningKey, ...]:
    """The keys of a signing key file's bytes; ``KeyFileError`` (a ``ConfigurationError``) names what is wrong."""
    out = []
    for entry in read_key_file(data, KIND, where):
        kid = entry["kid"]
        if entry.get("alg", ALGORITHM) != ALGORITHM:
            raise KeyFileError(f"{where}: key {kid!r} is for {entry.get('alg')!r}; fastkrb signs with {ALGORITHM} "
                               "only.")
        pem = entry.get("private_key")
        try:
            key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else b"", password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{where}: key {kid!r} is not an unencrypted PEM private key ({exc}).") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"{where}: key {kid!r} is not an EC P-256 key ({ALGORITHM} needs one).")
        out.append(SigningKey(kid, key, int(entry.get("created", 0))))
    return tuple(out)


def dump_signing_keys(keys: Sequence[SigningKey]) -> bytes:
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return dump_key_file(KIND, [{"kid": k.kid, "alg": ALGORITHM, "created": k.created,
                                 "private_key": k.private_key.private_bytes(pem, pkcs8, none).decode()}
                                for k in keys])


def new_signing_key_file(path: str | os.PathLike[str], *, now: float | None = None) -> SigningKey:
    """Write a new signing key file with one key (mode 0600); an existing file is not overwritten."""
    if os.path.lexists(path):
        raise KeyFileError(f"Signing key file {os.fspath(path)} exists already.",
                           "Rotate it (`fastkrb keys signing rotate FILE`) or remove it first.")
    key = new_signing_key(now)
    write_key_file(path, dump_signing_keys([key]))
    return key


def rotate_signing_key_file(path: str | os.PathLike[str], *, keep: int = 1, now: float | None = None) -> SigningKey:
    """Put a new key first and keep the ``keep`` newest old ones: tokens they signed verify until they expire
    (the JWKS keeps listing them); older keys are gone, and so is every token they signed."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            old = parse_signing_keys(fh.read(), where)
    except OSError as exc:
        raise KeyFileError(f"Signing key file {where} cannot be read ({exc.strerror or exc}).",
                           "Create it with `fastkrb keys signing new FILE`.") from None
    key = new_signing_key(now)
    write_key_file(where, dump_signing_keys([key, *old[:max(0, keep)]]))
    return key


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """The JWKS document (RFC 7517 §5) of the keys' public halves, for verifiers (``/.well-known/jwks.json``)."""
    return {"keys": [k.public_jwk() for k in keys]}


def _ring(keys: str | os.PathLike[str] | Sequence[SigningKey] | KeyRing[SigningKey],
          reload_interval: float) -> KeyRing[SigningKey]:
    if isinstance(keys, KeyRing):
        return keys
    if isinstance(keys, (str, os.PathLike)):
        return KeyRing(parse_signing_keys, path=keys, reload_interval=reload_interval)
    return KeyRing(parse_signing_keys, keys=tuple(keys))


# -- issuing --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    """An issued token, its id, key id and times (Unix seconds)."""

    token: str
    jti: str
    kid: str
    issued_at: int
    expires_at: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of ``POST /token`` (RFC 6749 §5.1's field names)."""
        return {"access_token": self.token, "token_type": "Bearer",
                "expires_in": self.expires_at - self.issued_at}


def _check_settings(issuer: str, ttl_or_leeway: float, what: str) -> None:
    if not isinstance(issuer, str) or not issuer:
        raise ConfigurationError(f"Bearer tokens: the issuer {issuer!r} is empty.",
                                 "Give the issuer a name, e.g. the service's https:// URL.")
    if ttl_or_leeway < 0 or (what == "ttl" and ttl_or_leeway < 1):
        raise ConfigurationError(f"Bearer tokens: {what} {ttl_or_leeway!r} is out of range.",
                                 f"Give {what} in seconds ({'at least 1' if what == 'ttl' else '0 or more'}).")


class TokenIssuer:
    """Issue tokens for accepted tickets with the newest key of ``keys`` (a key file's path, re-read when it
    changes, or :class:`SigningKey` objects)."""

    def __init__(self, keys: str | os.PathLike[str] | Sequence[SigningKey] | KeyRing[SigningKey], *, issuer: str,
                 audience: str, ttl: int = 300, reload_interval: float = 1.0) -> None:
        _check_settings(issuer, ttl, "ttl")
        if not isinstance(audience, str) or not audience:
            raise ConfigurationError("Bearer tokens: the audience is empty.",
                                     "Name the service (or services) the tokens are for.")
        self.issuer, self.audience, self.ttl = issuer, audience, int(ttl)
        self.ring = _ring(keys, reload_interval)

    def claims(self, result: Any, now: float | None = None) -> dict[str, Any]:
        t = time.time() if now is None else now
        iat = int(t)
        exp = int(min(float(result.end_time), t + self.ttl))
        if exp <= iat:
            raise BearerExpired(f"The ticket of {result.client} ends at {utc_iso(result.end_time)}: too soon for a "
                                "bearer token.", details={"client": result.client, "end_time": result.end_time})
        c: dict[str, Any] = {"iss": self.issuer, "sub": result.client, "aud": self.audience, "iat": iat, "nbf": iat,
                             "exp": exp, "jti": secrets.token_urlsafe(16), "srv": result.server}
        ident = result.identity
        if ident is not None:
            primary = str(ident.primary_group_sid)
            c["sid"] = str(ident.user_sid)
            c["groups"] = [primary, *(str(s) for s in ident.group_sids if s != primary)]
        return c

    def issue(self, result: Any, now: float | None = None) -> Issued:
        """A token for ``result`` (an ``AuthResult`` the validator and the policy accepted). ``BearerExpired``
        when its ticket ends within a second."""
        key = self.ring.keys()[0]
        c = self.claims(result, now)
        token = jwt.encode(c, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})
        return Issued(token, c["jti"], key.kid, c["iat"], c["exp"])


# -- verifying ------------------------------------------------------------------------------------------------

class TokenVerifier:
    """Verify this service's own tokens (``Authorization: Bearer``) with the keys of ``keys``; ``audience``:
    one audience or several that this verifier accepts."""

    def __init__(self, keys: str | os.PathLike[str] | Sequence[SigningKey] | KeyRing[SigningKey], *, issuer: str,
                 audience: str | Sequence[str], leeway: float = 10.0, reload_interval: float = 1.0) -> None:
        _check_settings(issuer, leeway, "leeway")
        auds = (audience,) if isinstance(audience, str) else tuple(audience)
        if not auds or not all(isinstance(a, str) and a for a in auds):
            raise ConfigurationError("Bearer tokens: no audience to accept.",
                                     "Name the audience (or audiences) this service accepts.")
        self.issuer, self.audiences, self.leeway = issuer, auds, float(leeway)
        self.ring = _ring(keys, reload_interval)

    def jwks(self) -> dict[str, Any]:
        return jwks(self.ring.keys())

    @staticmethod
    def token_from(authorization: str | None) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` value (the scheme is case-insensitive, RFC 6750
        §2.1), or None when the header is absent or another scheme (Negotiate)."""
        if not authorization:
            return None
        scheme, _, rest = authorization.strip().partition(" ")
        return rest.strip() if scheme.lower() == "bearer" else None

    def authenticate(self, authorization: str | None, now: float | None = None) -> Principal | None:
        """The client of an ``Authorization`` header: None when it is not a Bearer one; a refusal raises."""
        token = self.token_from(authorization)
        return None if token is None else self.verify(token, now)

    def verify(self, token: str, now: float | None = None) -> Principal:
        """The :class:`Principal` of a token this service issued, or ``BearerInvalid`` / ``BearerExpired``."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            raise _invalid("malformed", "is not a JWT (empty or longer than 64 KiB)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed", "is not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg != ALGORITHM:
            raise _invalid("algorithm", f"is signed with {alg!r}; this service accepts {ALGORITHM} only",
                           {"alg": str(alg)})
        key = next((k for k in self.ring.keys() if k.kid == kid), None) if isinstance(kid, str) else None
        if key is None:
            where = f" of {self.ring.path}" if self.ring.path else ""
            raise BearerInvalid(f"The bearer token was signed with key {kid!r}, which the signing key file{where} "
                                "no longer holds (rotated out or revoked), or was never this service's.",
                                "Get a new token from POST /token.", {"reason": "unknown_kid", "kid": str(kid)})
        try:
            claims = jwt.decode(token, key.public_key, algorithms=[ALGORITHM], audience=list(self.audiences),
                                issuer=self.issuer,
                                options={"require": list(_REQUIRED), "verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False})
        except jwt.InvalidSignatureError:
            raise _invalid("signature", "does not verify with its key", {"kid": kid}) from None
        except jwt.InvalidAudienceError:
            raise _invalid("audience", f"is not for this service ({', '.join(self.audiences)})", {"kid": kid}) from None
        except jwt.InvalidIssuerError:
            raise _invalid("issuer", f"was not issued by {self.issuer}", {"kid": kid}) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid("claims", f"lacks the claim {exc.claim!r}", {"kid": kid}) from None
        except jwt.PyJWTError as exc:
            raise _invalid("malformed", f"does not decode ({exc})", {"kid": kid}) from None
        return self._principal(claims, key.kid, time.time() if now is None else now)

    def _principal(self, c: dict[str, Any], kid: str, now: float) -> Principal:
        for k in ("iat", "nbf", "exp"):
            if not isinstance(c[k], int) or isinstance(c[k], bool):
                raise _invalid("claims", f"has a non-integer {k!r}", {"kid": kid})
        sub, srv = c["sub"], c["srv"]
        if not isinstance(sub, str) or "@" not in sub or not isinstance(srv, str):
            raise _invalid("claims", "has no principal@REALM subject", {"kid": kid})
        if now > c["exp"] + self.leeway:
            raise BearerExpired(f"The bearer token of {sub} expired at {utc_iso(c['exp'])}.",
                                details={"client": sub, "expired_at": c["exp"], "kid": kid, "jti": c["jti"]})
        if now < c["nbf"] - self.leeway:
            raise _invalid("not_yet_valid", f"of {sub} is not valid before {utc_iso(c['nbf'])} (clocks differ?)",
                           {"kid": kid, "client": sub})
        ident = None
        if "sid" in c:
            groups = c.get("groups") or []
            if not isinstance(c["sid"], str) or not isinstance(groups, list) or not groups \
                    or not all(isinstance(g, str) for g in groups):
                raise _invalid("claims", "has malformed sid or groups claims", {"kid": kid})
            ident = IdentityFacts(user_sid=c["sid"], primary_group_sid=groups[0], group_sids=tuple(groups),
                                  group_count=len(groups))
        aud = c["aud"]
        return Principal(client=sub, client_realm=sub.rpartition("@")[2], server=srv, identity=ident,
                         issued_at=c["iat"], expires_at=c["exp"], via="bearer", kid=kid, token_id=str(c["jti"]),
                         audience=aud if isinstance(aud, str) else None)


def _invalid(reason: str, what: str, facts: dict[str, Any] | None = None) -> BearerInvalid:
    return BearerInvalid(f"The bearer token {what}.", None, {**(facts or {}), "reason": reason})
