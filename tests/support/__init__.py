"""Helpers of the test suite (and of benches/), imported as ``support.<module>``; tests/ is on sys.path.

Real KDCs (the independent side of the interop tests: nothing here imports fastkrb):
  krb5conf     enctype names, krb5 profiles (krb5.conf / kdc.conf rendering)
  keytabfile   keytab files read and written raw
  apreq        an AP-REQ's fields and ciphertexts read from the wire; tampering
  mitgss       MIT's GSSAPI initiator and reference acceptor (python-gssapi)
  realm        Realm, the base of every KDC kind (client side, server-side interface); Lab and populate
  mit, heimdal the KDC kinds; crossrealm: two MIT realms joined by a trust
  samba_dc     Samba's AD DC in its own network namespace (users, groups, service accounts, keytabs, the
               directory's truth); not yet a Realm kind
  kinds        the registry the ``realm`` fixture is parametrized over

Test-side helpers:
  procs        free loopback ports, waiting for a child to listen, stopping it (every fixture's processes)
  interop      the Validator as the interop tests configure it, and the outcome of one validation
  http_clients real Negotiate clients (curl, requests-gssapi, httpx-gssapi) and threaded servers
  sidecar      a real ``fastkrb serve`` in a subprocess, and raw HTTP to it
  redis_server a throwaway redis-server / Redis Cluster on loopback
  refcrypto    an independent reference of the RFC 3961 profiles (on ``cryptography``)
  pac_checks   comparisons of decoded PACs with the published values of tests/vectors
"""
