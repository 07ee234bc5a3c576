"""The Kerberos protocol pieces the library and the tools share, in Python: pyasn1 models (asn1), GSS and
SPNEGO framing (gss), the Negotiate header (negotiate), the PAC (pac), RFC 3961 crypto on the native core
(crypto), and the KDC exchanges that `fastkrb doctor` sends (kdc). The hot path never comes here."""
