"""The client as a session cookie or a bearer token carries it: the facts a :class:`~fastkrb.policy.Policy`
reads from an ``AuthResult``, and no more.

``Policy.check`` reads ``client``, ``client_realm``, ``server`` (a bare user name matches in the service's
realm only) and ``identity`` (``member_of(SidSet)``, ``user_sid``, ``group_count``); :class:`PolicySubject`
and :class:`PolicyIdentity` name that contract. An ``AuthResult`` satisfies it, and so does a
:class:`Principal`, so one Policy object gives the same verdict on a session as on the ticket it came from
without a second implementation of its rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["IdentityFacts", "PolicyIdentity", "PolicySubject", "Principal"]


@runtime_checkable
class PolicyIdentity(Protocol):
    """What a Policy reads of an identity (``fastkrb._native.Identity`` and :class:`IdentityFacts` both are)."""

    @property
    def user_sid(self) -> str: ...

    @property
    def group_count(self) -> int: ...

    def member_of(self, sids: Any) -> bool: ...


@runtime_checkable
class PolicySubject(Protocol):
    """What a Policy reads of an authenticated client (``AuthResult`` and :class:`Principal` both are)."""

    @property
    def client(self) -> str: ...

    @property
    def client_realm(self) -> str: ...

    @property
    def server(self) -> str: ...

    @property
    def identity(self) -> Any: ...


@dataclass(frozen=True)
class IdentityFacts:
    """The PAC identity's facts, kept as text: the SIDs a Policy compares and the names the answer headers
    carry. ``group_sids`` keeps the PAC's order; names are None when the carrier (a bearer token) omits them."""

    user_sid: str
    primary_group_sid: str
    group_sids: tuple[str, ...]
    group_count: int
    logon_name: str | None = None
    logon_domain: str | None = None
    dns_domain: str | None = None
    upn: str | None = None
    upn_implicit: bool = False

    @classmethod
    def of(cls, identity: Any) -> IdentityFacts:
        """Copy the facts of a ``fastkrb._native.Identity`` (or anything with its attributes)."""
        return cls(user_sid=str(identity.user_sid), primary_group_sid=str(identity.primary_group_sid),
                   group_sids=tuple(str(s) for s in identity.group_sids), group_count=int(identity.group_count),
                   logon_name=identity.logon_name, logon_domain=identity.logon_domain,
                   dns_domain=identity.dns_domain, upn=identity.upn, upn_implicit=bool(identity.upn_implicit))

    def member_of(self, sids: Any) -> bool:
        """True when the user SID, the primary group SID or any group SID is in ``sids`` (a ``SidSet``, which
        parses each string and compares binary SIDs as ``Identity.member_of`` does, or any set of strings)."""
        return any(s in sids for s in self.all_sids())

    def all_sids(self) -> Iterable[str]:
        yield self.user_sid
        yield self.primary_group_sid
        yield from self.group_sids

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["group_sids"] = list(self.group_sids)
        return d


@dataclass(frozen=True)
class Principal:
    """An authenticated client from a session cookie or a bearer token (``via``), with when it was issued and
    when it ends. ``kid`` names the key that sealed or signed it; ``token_id`` is a bearer token's ``jti``."""

    client: str
    client_realm: str
    server: str
    identity: IdentityFacts | None
    issued_at: int
    expires_at: int
    via: Literal["cookie", "bearer"]
    kid: str
    token_id: str | None = None
    audience: str | None = None

    @property
    def short_name(self) -> str:
        """The client's name without the realm (the REMOTE_USER convention, as ``AuthResult.short_name``)."""
        return self.client.rsplit("@", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["identity"] = self.identity.to_dict() if self.identity is not None else None
        d["short_name"] = self.short_name
        return d
