"""Which policy a request asks for: named ones from the configuration, or one built from the /auth query.

Both front doors name a policy the same way, with oauth2-proxy's parameter names:

* ``policy=NAME``: a ``[policies.NAME]`` table of the configuration file;
* ``allowed_users=a,b``, ``allowed_groups=...``, ``allowed_realms=...`` (comma-separated, repeatable): a
  policy made for this query. Made once: a bounded LRU keeps the last ``QUERY_CACHE`` of them, keyed by the
  raw query bytes, so the hot path never parses a query it has seen.

HTTP reads the query of ``/auth?...`` (nginx, Traefik), or the path ``/auth/policy/NAME[/...]`` (Envoy's
``path_prefix``, which appends the client's own path and query: those are never read). The binary protocol
carries the same query text in VALIDATE_EX. Parameters other than these are ignored, except that one
starting with ``allow`` or ``polic`` that is none of them is an error: a misspelt rule must not silently
allow everyone. An unknown policy name or a bad rule is the operator's fault, answered as ``internal``
(500), never as a verdict on the token.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from fastkrb.groups import GroupNameError, GroupNames
from fastkrb.policy import Policy

__all__ = ["POLICY_KEYS", "PolicyBook", "PolicyError", "canonical_query", "parse_policy_query"]

log = logging.getLogger("fastkrb")

POLICY_KEYS = ("allowed_users", "allowed_groups", "allowed_realms")
QUERY_CACHE = 256
METRIC_LABELS = 64        # distinct policy labels a worker reports; the rest count as "other"
_SAFE = "@/\\-._"   # kept as they are in a canonical query: principals and DOMAIN\\name stay readable


class PolicyError(ValueError):
    """The request names a policy that does not exist or cannot be built."""


def parse_policy_query(query: str) -> tuple[str | None, dict[str, list[str]]]:
    """``(policy name or None, {allowed_*: [values]})`` from a query string; PolicyError when it is wrong."""
    name: str | None = None
    rules: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "policy":
            if name is not None and name != value:
                raise PolicyError("policy= given twice")
            name = value
        elif key in POLICY_KEYS:
            rules.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif key.startswith(("allow", "polic")):
            raise PolicyError(f"unknown /auth parameter {key!r} (policy, {', '.join(POLICY_KEYS)})")
    if name is not None and rules:
        raise PolicyError("give policy=NAME or allowed_*=..., not both")
    if name == "":
        raise PolicyError("policy= is empty")
    return name, rules


def canonical_query(rules: Mapping[str, list[str]]) -> str:
    """The rules as one query string (fixed key order): a query-built policy's name, label and X-Remote-Policy."""
    return "&".join(k + "=" + ",".join(quote(v, safe=_SAFE) for v in rules[k]) for k in POLICY_KEYS if rules.get(k))


class PolicyBook:
    """The worker's policies: the named ones, a bounded cache of query-built ones, and the group map."""

    def __init__(self, named: Mapping[str, Mapping[str, Any]] | None = None, names: GroupNames | None = None) -> None:
        self.names = names
        self.named: dict[str, Policy] = {n: self._build(t, n) for n, t in (named or {}).items()}
        self._queries: OrderedDict[bytes, Policy | None] = OrderedDict()
        self._labels: set[str] = set()

    @classmethod
    def from_config(cls, cfg: Any, *, reload_interval: float = 0.0) -> PolicyBook:
        """From a ServerConfig: ``group_names`` (a map file) and ``policies``. Raises ValueError when a policy
        cannot be built (a group name the map lacks, a malformed SID) or the map does not load."""
        names = GroupNames.load(cfg.group_names, reload_interval=reload_interval) if cfg.group_names else None
        return cls(cfg.policies, names)

    def _build(self, rules: Mapping[str, Any], name: str) -> Policy:
        unknown = set(rules) - set(POLICY_KEYS)
        if unknown:
            raise PolicyError(f"policy {name!r}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"({', '.join(POLICY_KEYS)})")
        try:
            return Policy(rules.get("allowed_users", ()), rules.get("allowed_groups", ()),
                          rules.get("allowed_realms", ()), group_names=self.names, name=name)
        except (TypeError, ValueError, GroupNameError) as exc:
            msg = str(exc)
            raise PolicyError(msg if f"policy {name!r}" in msg else f"policy {name!r}: {msg}") from None

    def resolve(self, query: bytes) -> Policy | None:
        """The policy a query asks for (None: no policy); PolicyError for an unknown name or a bad rule."""
        cache = self._queries
        hit = cache.get(query, False)
        if hit is not False:
            cache.move_to_end(query)
            return hit   # type: ignore[return-value]
        name, rules = parse_policy_query(query.decode("utf-8", "replace"))
        if name is not None:
            pol = self.named.get(name)
            if pol is None:
                known = ", ".join(sorted(self.named)) or "none is configured"
                raise PolicyError(f"no policy named {name!r} ([policies.NAME] in the configuration; {known})")
        elif rules:
            pol = self._build(rules, canonical_query(rules))
        else:
            pol = None
        cache[query] = pol
        if len(cache) > QUERY_CACHE:
            cache.popitem(last=False)
        return pol

    def by_name(self, name: str) -> Policy:
        pol = self.named.get(name)
        if pol is None:
            raise PolicyError(f"no policy named {name!r} ([policies.NAME] in the configuration)")
        return pol

    def label(self, policy: Policy) -> str:
        """The metrics label of a policy: its name, or "other" past METRIC_LABELS distinct ones."""
        name = policy.name or "?"
        if name in self._labels:
            return name
        if len(self._labels) >= METRIC_LABELS:
            return "other"
        self._labels.add(name)
        return name

    def reload_names(self) -> bool:
        """Reread the group map if its file changed (the policies re-resolve their names on next use)."""
        return self.names is not None and self.names.check_file()
