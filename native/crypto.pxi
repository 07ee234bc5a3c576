# Python-callable crypto (fastkrb.crypto): owned by the crypto work; see kcrypto.h.
