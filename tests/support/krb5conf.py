"""Kerberos names and configuration files shared by every KDC kind: the enctype table, krb5 profiles.

A profile (krb5.conf, kdc.conf, Heimdal's config) is rendered from nested mappings in the syntax MIT and
Heimdal share; ``client_profile`` is the krb5.conf MIT's client library and acceptor read for a lab realm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENCTYPES: dict[int, str] = {
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
}
ENCTYPE_BY_NAME: dict[str, int] = {v: k for k, v in ENCTYPES.items()}
# Strongest first: the order the KDCs offer and clients request.
ALL_ENCTYPES = (20, 19, 18, 17)


def enctype_list(enctypes: Sequence[int]) -> str:
    """Enctype names separated by spaces (permitted_enctypes and friends)."""
    return " ".join(ENCTYPES[e] for e in enctypes)


def keysalt_list(enctypes: Sequence[int], salt: str = "normal", sep: str = ",") -> str:
    """``name:salt`` pairs (kadmin ``-e``, supported_enctypes, Heimdal's default_keys)."""
    return sep.join(f"{ENCTYPES[e]}:{salt}" for e in enctypes)


@dataclass(frozen=True)
class RealmRef:
    """How a client reaches a realm: its name, KDC port and DNS domain."""

    name: str
    port: int
    domain: str


def render_profile(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a krb5 profile (MIT and Heimdal syntax: tab indentation, nested braces)."""
    lines: list[str] = []

    def emit(key: str, value: Any, depth: int) -> None:
        pad = "\t" * depth
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} = {{")
            for k, v in value.items():
                emit(k, v, depth + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)):
            for v in value:
                emit(key, v, depth)
        else:
            lines.append(f"{pad}{key} = {value}")

    for name, body in sections.items():
        lines.append(f"[{name}]")
        for k, v in body.items():
            emit(k, v, 1)
    return "\n".join(lines) + "\n"


def client_profile(default: RealmRef, others: Sequence[RealmRef] = (), *,
                   capaths: Mapping[str, Mapping[str, str]] | None = None,
                   libdefaults: Mapping[str, str] | None = None) -> str:
    """krb5.conf for MIT's clients and acceptor: loopback KDCs only, no DNS, AES enctypes (SHA-2 first)."""
    realms = [default, *others]
    lib = {
        "default_realm": default.name,
        "dns_lookup_kdc": "false",
        "dns_lookup_realm": "false",
        "dns_canonicalize_hostname": "false",
        "rdns": "false",
        "forwardable": "true",
        "udp_preference_limit": "1",
        "allow_weak_crypto": "false",
        "permitted_enctypes": enctype_list(ALL_ENCTYPES),
        "default_tkt_enctypes": enctype_list(ALL_ENCTYPES),
        "default_tgs_enctypes": enctype_list(ALL_ENCTYPES),
        "clockskew": "300",
        **(libdefaults or {}),
    }
    sections: dict[str, Mapping[str, Any]] = {
        "libdefaults": lib,
        "realms": {r.name: {"kdc": f"127.0.0.1:{r.port}"} for r in realms},
        "domain_realm": {k: v for r in realms for k, v in ((f".{r.domain}", r.name), (r.domain, r.name))},
    }
    if capaths:
        sections["capaths"] = capaths
    return render_profile(sections)
