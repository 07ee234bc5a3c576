"""Who may in, once the ticket is valid: users, groups (Active Directory SIDs) and realms.

    readers = Policy(allowed_groups=["CORP\\\\api-readers", "S-1-5-21-1004336348-1177238915-682003330-1107"],
                     group_names=GroupNames.load("/etc/fastkrb/groups.json"), name="readers")
    v = Validator(keytab, policy=readers)      # or readers.check(result) after validate()

Semantics:

* Three kinds of rule, combined with **AND**: the client must satisfy every kind that is given. Within a
  kind, **any** entry suffices. An empty kind constrains nothing; ``Policy()`` allows every authenticated
  client.
* ``allowed_realms``: the client's realm, exactly (``CORP.EXAMPLE``; case-sensitive, as Kerberos compares).
* ``allowed_users``: ``alice@REALM`` matches that principal exactly; a bare ``alice`` matches ``alice`` in
  the service's own realm (the realm of the key that decrypted the ticket), never in another realm; a SID
  (``S-1-5-21-...-1104``) matches the user SID of the ticket's PAC. Names are compared case-sensitively,
  as Kerberos does: ``Alice@REALM`` is not ``alice@REALM``. Active Directory is case-insensitive about
  account names and a client may ask for a ticket as ``ALICE``; for AD users prefer the SID or a group.
* ``allowed_groups``: group SIDs, or names resolved through a :class:`~fastkrb.groups.GroupNames` map
  (``CORP\\\\api-readers`` or ``api-readers``, any case). The client passes when its user SID, primary
  group SID or any group SID of the ticket's PAC is in the set. A ticket without PAC logon information (from
  an MIT or Heimdal KDC, or from AD for a service account with NO_AUTH_DATA_REQUIRED) is refused by a
  policy that has group rules: nothing in it says which groups the client is in.

Groups are the PAC's, which the KDC copied from the user's TGT: a change in the directory reaches a ticket
only with a new logon (a new TGT). The ``forbidden`` error's fix says so.

The SIDs (literal and resolved) are compiled into one ``fastkrb._native.SidSet`` at construction; names
are resolved again when the map's file changes (its ``generation`` moves). A name the map does not know is
an error at construction; after a reload it is logged and matches nothing until the map has it again
(fail closed), and a refusal lists it in ``details["unresolved_groups"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastkrb import _native
from fastkrb.errors import GROUP_CHANGE_FIX, Forbidden
from fastkrb.groups import GroupNameError, GroupNames, is_sid

__all__ = ["Policy", "identity_of"]

log = logging.getLogger("fastkrb")

_LIST_AT_MOST = 5   # entries of a rule a refusal's cause lists


def identity_of(result: Any) -> Any:
    """The result's PAC identity (``fastkrb._native.Identity``), or None when the ticket had no LOGON_INFO."""
    return result.identity


def _strings(kind: str, values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{kind} must be a list of strings, not one string")
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not v or v != v.strip():
            raise ValueError(f"{kind}: {v!r} is not a name")
    return out


def _is_full_principal(user: str) -> bool:
    """``alice@REALM`` (an unescaped @ before a realm) as opposed to a bare ``alice`` (``a\\@b`` is bare)."""
    i = user.rfind("@")
    while i > 0 and user[i - 1] == "\\":
        i = user.rfind("@", 0, i - 1)
    return i > 0 and i < len(user) - 1


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    head = ", ".join(items[:_LIST_AT_MOST])
    return head + (f" and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else "")


def _sid_set(sids: Iterable[str]) -> _native.SidSet:
    return _native.SidSet(sids)


class Policy:
    """Allowed users, groups and realms; ``check(result)`` raises :class:`~fastkrb.errors.Forbidden` or returns.

    Thread-safe: ``check`` reads only, apart from swapping in a recompiled SID set after a map reload.
    """

    __slots__ = ("_bare", "_by_name", "_full", "_gen", "_literal_sids", "_realms", "_sids", "_user_sids",
                 "allowed_groups", "allowed_realms", "allowed_users", "group_names", "name", "resolved",
                 "unresolved")

    def __init__(self, allowed_users: Iterable[str] = (), allowed_groups: Iterable[str] = (),
                 allowed_realms: Iterable[str] = (), *, group_names: GroupNames | None = None,
                 name: str | None = None) -> None:
        self.name = name
        self.allowed_users = _strings("allowed_users", allowed_users)
        self.allowed_groups = _strings("allowed_groups", allowed_groups)
        self.allowed_realms = _strings("allowed_realms", allowed_realms)
        self.group_names = group_names
        self._realms = frozenset(self.allowed_realms) if self.allowed_realms else None
        self._user_sids = frozenset(u for u in self.allowed_users if is_sid(u))
        people = [u for u in self.allowed_users if not is_sid(u)]
        self._full = frozenset(u for u in people if _is_full_principal(u))
        self._bare = frozenset(u for u in people if not _is_full_principal(u))
        for entry in (*self.allowed_groups, *self.allowed_users):
            if entry[:4].upper() == "S-1-" and not is_sid(entry):
                raise ValueError(f"{entry!r} is not a well-formed SID (S-1-5-21-...-RID)")
        self._literal_sids = tuple(g for g in self.allowed_groups if is_sid(g))
        self._by_name = tuple(g for g in self.allowed_groups if not is_sid(g))
        if self._by_name and group_names is None:
            raise ValueError(f"allowed_groups: {_listing(repr(n) for n in self._by_name)} are names, not SIDs: give "
                             "group_names=GroupNames.load(map file) (fastkrb groups sync writes one), or the SIDs")
        self._compile(strict=True)

    def _compile(self, strict: bool) -> None:
        sids = dict.fromkeys(self._literal_sids)
        unresolved: list[str] = []
        gen = 0
        if self._by_name:
            names = self.group_names
            assert names is not None
            gen = names.generation
            for n in self._by_name:
                try:
                    sids.update(dict.fromkeys(names.sids_for(n)))
                except GroupNameError as exc:
                    if strict:
                        raise ValueError(f"allowed_groups of {self._label()}: {exc}") from None
                    unresolved.append(n)
            if unresolved:
                log.warning("fastkrb: %s: group names no longer in the map, matching nothing until they are: %s",
                            self._label(), ", ".join(unresolved))
        self.resolved = tuple(sids)
        self.unresolved = tuple(unresolved)
        self._sids = _sid_set(self.resolved) if self.allowed_groups else None
        self._gen = gen

    def _label(self) -> str:
        return f"policy {self.name!r}" if self.name else "the policy"

    # -- the check --------------------------------------------------------------------------------------------

    def check(self, result: Any) -> None:
        """Return if the policy allows the result's client, else raise Forbidden (code ``forbidden``)."""
        if self._by_name:
            names = self.group_names
            assert names is not None
            if names.reload_interval:
                names.maybe_reload()
            if names.generation != self._gen:
                self._compile(strict=False)
        if self._realms is not None and result.client_realm not in self._realms:
            raise self._refuse(result, "realms")
        if self.allowed_users and not self._user_allowed(result):
            raise self._refuse(result, "users")
        sids = self._sids
        if sids is not None:
            ident = result.identity
            if ident is None or not ident.member_of(sids):
                raise self._refuse(result, "groups")

    def allows(self, result: Any) -> bool:
        try:
            self.check(result)
        except Forbidden:
            return False
        return True

    def _user_allowed(self, result: Any) -> bool:
        client: str = result.client
        if client in self._full:
            return True
        if self._bare:
            realm: str = result.client_realm
            if realm == result.server.rpartition("@")[2] and client[:len(client) - len(realm) - 1] in self._bare:
                return True
        if self._user_sids:
            ident = result.identity
            if ident is not None and ident.user_sid in self._user_sids:
                return True
        return False

    def _refuse(self, result: Any, constraint: str) -> Forbidden:
        client: str = result.client
        realm: str = result.client_realm
        ident = identity_of(result)
        count = int(ident.group_count) if ident is not None else 0
        details: dict[str, Any] = {"client": client, "realm": realm, "constraint": constraint, "group_count": count,
                                   "has_identity": ident is not None}
        if self.name:
            details["policy"] = self.name
        if ident is not None:
            details["user_sid"] = ident.user_sid
        who = f"{client} is refused by {self._label()}"
        if constraint == "realms":
            return Forbidden(f"{who}: realm {realm} is not one of its allowed realms "
                             f"({_listing(self.allowed_realms)}).", None, details)
        if constraint == "users":
            return Forbidden(f"{who}: not one of its allowed users ({_listing(self.allowed_users)}).", None, details)
        if self.unresolved:
            details["unresolved_groups"] = list(self.unresolved)
        groups = _listing(self.allowed_groups)
        if ident is None:
            return Forbidden(
                f"{who}: it allows members of certain groups ({groups}) only, and this ticket carries no PAC logon "
                "information, so no group SIDs: MIT and Heimdal KDCs issue none (only Active Directory and Samba "
                "AD do).",
                "Restrict clients of MIT or Heimdal realms with allowed_users or allowed_realms instead. From Active "
                "Directory, a ticket without a PAC means the service account has NO_AUTH_DATA_REQUIRED set in "
                "userAccountControl: clear it. " + GROUP_CHANGE_FIX, details)
        missing = f" (not in the group map: {', '.join(self.unresolved)})" if self.unresolved else ""
        return Forbidden(
            f"{who}: a member of none of its allowed groups ({groups}){missing}; the ticket carried {count} group "
            "SIDs.",
            GROUP_CHANGE_FIX + " Otherwise add the user to one of the allowed groups, or change the policy.", details)

    # -- description ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The rules as given, and the SIDs they resolve to now (for --check, logs and tests)."""
        d: dict[str, Any] = {"allowed_users": list(self.allowed_users), "allowed_groups": list(self.allowed_groups),
                             "allowed_realms": list(self.allowed_realms), "group_sids": list(self.resolved)}
        if self.name:
            d["name"] = self.name
        if self.unresolved:
            d["unresolved_groups"] = list(self.unresolved)
        return d

    def __repr__(self) -> str:
        parts = [f"{k}={list(v)!r}" for k, v in (("allowed_users", self.allowed_users),
                                                 ("allowed_groups", self.allowed_groups),
                                                 ("allowed_realms", self.allowed_realms)) if v]
        if self.name:
            parts.append(f"name={self.name!r}")
        return f"Policy({', '.join(parts)})"
