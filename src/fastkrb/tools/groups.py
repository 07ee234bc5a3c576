"""``fastkrb groups sync``: the SID -> name map of a directory's groups, read over LDAP, written atomically.

    fastkrb groups sync --ldap-url ldaps://dc1.corp.example --base-dn DC=corp,DC=example \\
        --bind-dn 'CN=fastkrb-sync,OU=Service Accounts,DC=corp,DC=example' --password-file /etc/fastkrb/ldap.pw \\
        --out /etc/fastkrb/groups.json
    fastkrb groups sync --ldap-url ldap://dc1.corp.example --start-tls --base-dn DC=corp,DC=example \\
        --keytab /etc/fastkrb/sync.keytab --out /etc/fastkrb/groups.json          # GSSAPI (SASL) bind

Every ``(objectClass=group)`` object under the base (paged, so the 1,000-entry page limit of AD does not
cut the list) gives ``objectSid -> DOMAIN\\sAMAccountName``, where DOMAIN is the NetBIOS name of the
domain (read from its crossRef in the configuration partition, or ``--domain``); groups of the BUILTIN
domain (S-1-5-32-...) are named ``BUILTIN\\...``. The map is written with a temporary file and a rename:
a sidecar or application watching it reads the old map or the new one, never a part. An empty result
is refused (a wrong base DN must not wipe a good map) unless ``--allow-empty``.

Transport security: a simple bind sends the password as is, so it is refused without TLS (``ldaps://``
or ``--start-tls``); certificates are always verified (``--ca-file`` for a private CA, ``--tls-name``
when the URL's host is not a name in the certificate, e.g. an IP address). AD and Samba refuse simple
binds without TLS anyway (``ldap server require strong auth``). The GSSAPI bind (``--keytab``) takes the
keytab's first principal unless ``--principal``, and asks for ``ldap/<host>`` (``--sasl-host`` to name
the DC when the URL has an IP address).

The LDAP client is ldap3 (pure Python): ``pip install 'fastkrb[ad]'``.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastkrb.groups import GroupNameError, check_group_name, write_map
from fastkrb.krb.pac import sid_to_str

__all__ = ["SyncError", "SyncOptions", "add_arguments", "fetch_groups", "main", "sync"]

BUILTIN_PREFIX = "S-1-5-32-"


class SyncError(Exception):
    """The directory could not be read (connection, TLS, bind, search); the message says which step failed."""


@dataclass
class SyncOptions:
    ldap_url: str
    base_dn: str
    out: str | None = None
    bind_dn: str | None = None
    password: str | None = None
    keytab: str | None = None
    principal: str | None = None
    sasl_host: str | None = None
    start_tls: bool = False
    ca_file: str | None = None
    tls_name: str | None = None
    domain: str | None = None
    search_filter: str = "(objectClass=group)"
    timeout: float = 10.0
    allow_empty: bool = False


def _ldap3() -> Any:
    try:
        import ldap3
    except ImportError:
        raise SyncError("the LDAP client is not installed: pip install 'fastkrb[ad]' (ldap3)") from None
    return ldap3


def _connect(o: SyncOptions) -> Any:
    ldap3 = _ldap3()
    url = urlsplit(o.ldap_url)
    if url.scheme not in ("ldap", "ldaps") or not url.hostname:
        raise SyncError(f"--ldap-url must be ldap://HOST[:PORT] or ldaps://HOST[:PORT], not {o.ldap_url!r}")
    use_tls = url.scheme == "ldaps" or o.start_tls
    if o.keytab is None and o.bind_dn is None:
        raise SyncError("give --bind-dn with --password-file (simple bind) or --keytab (GSSAPI bind)")
    if o.keytab is None and not use_tls:
        raise SyncError("a simple bind over ldap:// would send the password in clear: use ldaps:// or --start-tls "
                        "(or --keytab for a GSSAPI bind)")
    tls = None
    if use_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=o.ca_file,
                        valid_names=[o.tls_name] if o.tls_name else None)
    port = url.port or (636 if url.scheme == "ldaps" else 389)
    server = ldap3.Server(url.hostname, port=port, use_ssl=url.scheme == "ldaps", tls=tls, get_info=ldap3.NONE,
                          connect_timeout=o.timeout)
    kw: dict[str, Any] = {"receive_timeout": max(1, math.ceil(o.timeout)),   # ldap3 packs it as an integer
                          "auto_referrals": False, "raise_exceptions": True,
                          "read_only": True}
    if o.keytab is not None:
        host = o.sasl_host or url.hostname
        kw.update(authentication=ldap3.SASL, sasl_mechanism=ldap3.KERBEROS,
                  sasl_credentials=(host, None, _keytab_credentials(o.keytab, o.principal, host)))
    else:
        kw.update(user=o.bind_dn, password=o.password or "", authentication=ldap3.SIMPLE)
    conn = ldap3.Connection(server, **kw)
    step = "connect"
    try:
        conn.open()
        if o.start_tls and url.scheme != "ldaps":
            step = "StartTLS"
            conn.start_tls()
        step = "bind"
        conn.bind()
    except Exception as exc:
        conn.unbind()
        hint = ""
        if "Sign or Seal are required" in str(exc):
            hint = (" (the DC wants a SASL signing layer on GSSAPI binds even over TLS, which ldap3 does not "
                    "offer: Samba before 4.20 does so unless smb.conf has 'ldap server require strong auth = "
                    "allow_sasl_over_tls'; or use a simple bind over TLS)")
        raise SyncError(f"{step} to {o.ldap_url} failed: {type(exc).__name__}: {exc}{hint}") from None
    return conn


def _keytab_credentials(path: str, principal: str | None, host: str) -> Any:
    """Initiator credentials from a client keytab, in a private memory ccache (no file written), with the
    service ticket for ldap/HOST already in it: a Kerberos failure is reported as such (ldap3 would report
    only the aborted bind)."""
    try:
        import gssapi
    except ImportError:
        raise SyncError("--keytab needs python-gssapi (pip install gssapi)") from None
    if principal is None:
        from fastkrb.keytab import Keytab

        names = Keytab.load(path).principals()
        if not names:
            raise SyncError(f"keytab {path} holds no principal")
        principal = names[0]
    from gssapi.raw.misc import GSSError

    try:
        creds = gssapi.Credentials(name=gssapi.Name(principal, gssapi.NameType.kerberos_principal), usage="initiate",
                                   store={"client_keytab": path, "ccache": f"MEMORY:fastkrb-groups-{os.getpid()}"})
    except GSSError as exc:
        raise SyncError(f"cannot use keytab {path} as {principal}: {exc}") from None
    try:
        gssapi.SecurityContext(name=gssapi.Name(f"ldap@{host}", gssapi.NameType.hostbased_service),
                               mech=gssapi.MechType.kerberos, creds=creds, usage="initiate").step()
    except GSSError as exc:
        raise SyncError(f"as {principal}, cannot get a service ticket for ldap/{host}: {exc} (--sasl-host names "
                        "the DC when the URL's host is not its name)") from None
    return creds


def _netbios_name(conn: Any, base_dn: str) -> str | None:
    """The domain's NetBIOS name, from its crossRef object in CN=Partitions of the configuration partition."""
    ldap3 = _ldap3()
    try:
        conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["configurationNamingContext"])
        config = conn.response[0]["raw_attributes"]["configurationNamingContext"][0].decode()
        conn.search(f"CN=Partitions,{config}", f"(&(objectClass=crossRef)(nCName={_escape(base_dn)}))",
                    ldap3.LEVEL, attributes=["nETBIOSName"])
        for r in conn.response:
            if r.get("type") == "searchResEntry" and r["raw_attributes"].get("nETBIOSName"):
                return str(r["raw_attributes"]["nETBIOSName"][0].decode())
    except Exception:
        return None
    return None


def _escape(value: str) -> str:
    """RFC 4515 escaping of a filter value."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\0" else c for c in value)


def _fallback_domain(base_dn: str) -> str:
    for rdn in base_dn.split(","):
        k, _, v = rdn.strip().partition("=")
        if k.strip().lower() == "dc" and v:
            return v.strip().upper()
    return "DOMAIN"


def fetch_groups(conn: Any, o: SyncOptions) -> tuple[dict[str, str], str]:
    """({SID: name}, NetBIOS domain) of every group under the base DN."""
    ldap3 = _ldap3()
    domain = o.domain or _netbios_name(conn, o.base_dn) or _fallback_domain(o.base_dn)
    groups: dict[str, str] = {}
    try:
        pages = conn.extend.standard.paged_search(o.base_dn, o.search_filter, ldap3.SUBTREE,
                                                  attributes=["objectSid", "sAMAccountName"], paged_size=500,
                                                  generator=True)
        for entry in pages:
            if entry.get("type") != "searchResEntry":
                continue   # referrals to other partitions
            raw = entry["raw_attributes"]
            if not raw.get("objectSid") or not raw.get("sAMAccountName"):
                continue
            sid = sid_to_str(bytes(raw["objectSid"][0]))
            sam = raw["sAMAccountName"][0].decode("utf-8")
            prefix = "BUILTIN" if sid.startswith(BUILTIN_PREFIX) else domain
            try:
                groups[sid] = check_group_name(f"{prefix}\\{sam}")
            except GroupNameError as exc:
                print(f"fastkrb groups sync: skipped {sid}: {exc}", file=sys.stderr)
    except Exception as exc:
        raise SyncError(f"search under {o.base_dn!r} failed: {type(exc).__name__}: {exc}") from None
    return groups, domain


def sync(o: SyncOptions, connect: Any = None) -> dict[str, str]:
    """Read the groups and, with ``o.out``, write the map; returns it. ``connect(o)`` opens the bound
    connection (default: the real one; tests pass ldap3's offline mock)."""
    conn = (connect or _connect)(o)
    try:
        groups, domain = fetch_groups(conn, o)
    finally:
        conn.unbind()
    if not groups and not o.allow_empty:
        raise SyncError(f"no group found under {o.base_dn!r} with {o.search_filter}: the map is left as it was "
                        "(check the base DN and the bind account's rights; --allow-empty writes an empty map)")
    if o.out:
        write_map(o.out, groups, source=o.ldap_url, domain=domain)
    return groups


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``fastkrb groups sync``."""
    p.add_argument("--ldap-url", required=True, help="ldap://HOST[:PORT] or ldaps://HOST[:PORT] of a domain controller")
    p.add_argument("--base-dn", required=True, help="search base, e.g. DC=corp,DC=example")
    p.add_argument("--out", required=True, help="the map file to write (atomically); '-' prints it instead")
    p.add_argument("--bind-dn", help="simple bind as this DN (needs TLS: ldaps:// or --start-tls)")
    p.add_argument("--password-file", help="file whose first line is the bind password")
    p.add_argument("--password-env", help="environment variable holding the bind password")
    p.add_argument("--keytab", help="GSSAPI (SASL) bind with a client keytab instead of a password")
    p.add_argument("--principal", help="the keytab's principal to bind as (default: its first)")
    p.add_argument("--sasl-host", help="the DC's host name for the GSSAPI service ticket ldap/HOST (default: the "
                   "URL's host)")
    p.add_argument("--start-tls", action="store_true", help="StartTLS on an ldap:// connection")
    p.add_argument("--ca-file", help="CA certificates (PEM) to verify the server with (default: the system's)")
    p.add_argument("--tls-name", help="a name the server certificate must carry when the URL's host is not one "
                   "(an IP address)")
    p.add_argument("--domain", help="NetBIOS domain name to prefix (default: read from the directory)")
    p.add_argument("--filter", default="(objectClass=group)", help="LDAP filter of the objects to map "
                   "(default: (objectClass=group))")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for connecting and for each answer")
    p.add_argument("--allow-empty", action="store_true", help="write the map even when no group was found")


def main(a: argparse.Namespace) -> int:
    """``fastkrb groups sync``: 0 written, 1 the directory could not be read, 2 usage."""
    password = None
    if a.password_env:
        password = os.environ.get(a.password_env)
        if password is None:
            print(f"fastkrb groups sync: --password-env {a.password_env}: the variable is not set", file=sys.stderr)
            return 2
    elif a.password_file:
        try:
            with open(a.password_file, encoding="utf-8") as fh:
                password = fh.readline().rstrip("\r\n")
        except OSError as exc:
            print(f"fastkrb groups sync: --password-file: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if a.bind_dn and a.keytab:
        print("fastkrb groups sync: give --bind-dn or --keytab, not both", file=sys.stderr)
        return 2
    if a.bind_dn and password is None:
        print("fastkrb groups sync: --bind-dn needs --password-file or --password-env", file=sys.stderr)
        return 2
    o = SyncOptions(ldap_url=a.ldap_url, base_dn=a.base_dn, out=None if a.out == "-" else a.out, bind_dn=a.bind_dn,
                    password=password, keytab=a.keytab, principal=a.principal, sasl_host=a.sasl_host,
                    start_tls=a.start_tls, ca_file=a.ca_file, tls_name=a.tls_name, domain=a.domain,
                    search_filter=a.filter, timeout=a.timeout, allow_empty=a.allow_empty)
    try:
        groups = sync(o)
    except SyncError as exc:
        print(f"fastkrb groups sync: {exc}", file=sys.stderr)
        return 1
    if o.out is None:
        import json

        print(json.dumps(groups, indent=1, ensure_ascii=False, sort_keys=True))
    else:
        print(f"wrote {len(groups)} groups to {o.out}")
    return 0
