"""atheris target: the PAC decoder (fastkrb.krb.pac: MS-PAC buffers, NDR LOGON_INFO, UPN_DNS_INFO, ...).

Any input either decodes or raises MalformedToken (a KerberosError), lazily too: every accessor and
to_dict() of a Pac that was accepted may only raise a KerberosError, and to_dict() is JSON-safe. The native
identity decoder (fastkrb._native.Identity.from_pac, native/pac.c) runs on the same input and must agree with
the Python one on LOGON_INFO (tests/test_identity.py states the rule).
"""

from __future__ import annotations

import json

from _pyfuzz import instrumented, main

with instrumented():
    from fastkrb._native import Identity, SidSet
    from fastkrb.errors import KerberosError
    from fastkrb.krb.pac import Pac

ACCESSORS = ("logon_info", "client_info", "upn_dns_info", "server_checksum", "kdc_checksum", "ticket_checksum",
             "full_checksum", "attributes_info", "requestor_sid", "client_claims", "device_info", "device_claims")


def identity(data: bytes) -> None:
    """Native and Python decoders agree on the identity (or both refuse it)."""
    try:
        ident = Identity.from_pac(data)
    except KerberosError:
        ident = False
    try:
        pac = Pac(data)
    except KerberosError:
        assert ident is False, "the PACTYPE rules are the same in both decoders"
        return
    try:
        li = pac.logon_info
        upn = pac.upn_dns_info
    except KerberosError:
        if ident:
            json.dumps(ident.to_dict())   # Python refused a part the identity does not read (UPN S fields)
        return
    if li is None:
        assert ident is None
        return
    ok = li.logon_domain_id is not None and not (li.resource_group_ids and li.resource_group_domain_sid is None)
    assert (ident is not False) == ok, (ident, li)
    if ident:
        assert ident.user_sid == li.user_sid and ident.upn == (upn.upn if upn else None)
        assert ident.group_count == len(li.group_sids) + len(li.extra_sids) + len(li.resource_group_sids)
        if li.primary_group_sid is not None and li.primary_group_sid.count("-") <= 17:  # <= 15 sub-authorities
            assert ident.member_of(SidSet([li.primary_group_sid]))


def test_one_input(data: bytes) -> None:
    identity(data)
    try:
        pac = Pac(data)
    except KerberosError:
        return
    repr(pac)
    for name in ACCESSORS:
        try:
            value = getattr(pac, name)
            if hasattr(value, "to_dict"):
                json.dumps(value.to_dict())
        except KerberosError:
            pass
    try:
        pac.zeroed_for_server_signature()
    except KerberosError:
        pass
    try:
        json.dumps(pac.to_dict())
    except KerberosError:
        pass


if __name__ == "__main__":
    main(test_one_input)
