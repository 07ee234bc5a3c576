"""Sessions after one Negotiate: what a service hands a client that authenticated with a Kerberos ticket, so
that its next requests need no new AP-REQ.

* ``cookie``: an encrypted, authenticated session cookie (AES-256-GCM) for browsers, sealed with a key from a
  file the replicas share (:class:`~fastkrb.sessions.cookie.SessionCookies`).
* ``bearer``: a short-lived signed JWT (ES256) for HTTP/2, gRPC and service chains, and the JWKS document
  that lets any verifier check it (:class:`~fastkrb.sessions.bearer.TokenIssuer`,
  :class:`~fastkrb.sessions.bearer.TokenVerifier`).
* ``principal``: what opening either one gives, a :class:`~fastkrb.sessions.principal.Principal` that a
  :class:`~fastkrb.policy.Policy` checks exactly as it checks an ``AuthResult``.
* ``keyfile``: the key files both read, re-read when they change.

Both are bearer credentials: whoever holds one is the client until it expires (docs/security.md, "Sessions
and bearer tokens"). Neither is on unless configured. Nothing here loads the native core.
"""
