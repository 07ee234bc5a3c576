"""atheris target: the PAC decoder (fastkrb.krb.pac: MS-PAC buffers, NDR LOGON_INFO, UPN_DNS_INFO, ...).

Any input either decodes or raises MalformedToken (a KerberosError), lazily too: every accessor and
to_dict() of a Pac that was accepted may only raise a KerberosError, and to_dict() is JSON-safe.
"""

from __future__ import annotations

import json

from _pyfuzz import instrumented, main

with instrumented():
    from fastkrb.errors import KerberosError
    from fastkrb.krb.pac import Pac

ACCESSORS = ("logon_info", "client_info", "upn_dns_info", "server_checksum", "kdc_checksum", "ticket_checksum",
             "full_checksum", "attributes_info", "requestor_sid", "client_claims", "device_info", "device_claims")


def test_one_input(data: bytes) -> None:
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
