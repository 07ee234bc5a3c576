"""An independent, deliberately plain reference of the RFC 3961 profiles fastkrb implements.

Built only on ``cryptography`` (AES-ECB/CBC, HMAC, hashes, ARC4, PBKDF2) and written from the RFC text
in the most literal way (n-fold on a big integer, CTS as padded CBC with the last two blocks swapped),
so that a shared misreading with the native code is unlikely. Slow; for tests only.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

BLOCK = 16
ZERO_IV = bytes(BLOCK)

KEYLEN = {17: 16, 18: 32, 19: 16, 20: 32, 23: 16}
MACLEN = {17: 12, 18: 12, 19: 16, 20: 24, 23: 16}
NAMES = {19: b"aes128-cts-hmac-sha256-128", 20: b"aes256-cts-hmac-sha384-192"}
CKSUM_ENCTYPE = {15: 17, 16: 18, 19: 19, 20: 20, -138: 23}


def _hash(enctype: int) -> hashes.HashAlgorithm:
    return {17: hashes.SHA1(), 18: hashes.SHA1(), 19: hashes.SHA256(), 20: hashes.SHA384(), 23: hashes.MD5()}[enctype]


def hmac_digest(algorithm: hashes.HashAlgorithm, key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, algorithm)
    h.update(data)
    return h.finalize()


def digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


# --- RFC 3961 §5.1 n-fold, straight from the definition ---------------------------------------------

def nfold(data: bytes, nbytes: int) -> bytes:
    inbits, outbits = len(data) * 8, nbytes * 8
    a, b = inbits, outbits
    while b:
        a, b = b, a % b
    lcm = inbits * outbits // a
    value = int.from_bytes(data, "big")
    mask = (1 << inbits) - 1
    big = 0
    for i in range(lcm // inbits):  # copy i rotated right by 13*i bits
        r = (13 * i) % inbits
        rotated = ((value >> r) | (value << (inbits - r))) & mask
        big = (big << inbits) | rotated
    total = 0
    omask = (1 << outbits) - 1
    for j in range(lcm // outbits):
        total += (big >> (outbits * j)) & omask
        while total > omask:  # one's-complement: fold the carry back in
            total = (total & omask) + (total >> outbits)
    return total.to_bytes(nbytes, "big")


# --- AES ------------------------------------------------------------------------------------------

def aes_ecb(key: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(data) + e.finalize()


def cts_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """RFC 3962 §5: CBC over the zero-padded input, swap the last two blocks, drop the padding length."""
    assert len(data) >= BLOCK
    pad = (-len(data)) % BLOCK
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    c = e.update(data + bytes(pad)) + e.finalize()
    if len(data) == BLOCK:
        return c
    head, c_prev, c_last = c[:-2 * BLOCK], c[-2 * BLOCK:-BLOCK], c[-BLOCK:]
    return head + c_last + c_prev[:BLOCK - pad]


def cts_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    assert len(data) >= BLOCK
    if len(data) == BLOCK:
        d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        return d.update(data) + d.finalize()
    r = len(data) % BLOCK or BLOCK
    head, c_n, c_tail = data[:-(BLOCK + r)], data[-(BLOCK + r):-r], data[-r:]
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    d_n = dec.update(c_n) + dec.finalize()
    c_prev = c_tail + d_n[r:]  # Pn was zero padded, so D(Cn) ends with the stolen bytes
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    front = d.update(head + c_prev) + d.finalize()  # plain CBC over C1 .. C(n-1)
    p_last = bytes(x ^ y for x, y in zip(d_n[:r], c_prev[:r], strict=True))
    return front + p_last


# --- key derivation -------------------------------------------------------------------------------

def dk(key: bytes, constant: bytes, length: int) -> bytes:
    """RFC 3961 §5.1 DK for AES: E(K, n-fold(constant)) chained until length bytes (random-to-key = id)."""
    block = nfold(constant, BLOCK) if len(constant) != BLOCK else constant
    out = b""
    while len(out) < length:
        block = aes_ecb(key, block)
        out += block
    return out[:length]


def kdf_sha2(enctype: int, key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """RFC 8009 §3 KDF-HMAC-SHA2, counter mode."""
    out = b""
    i = 1
    while len(out) < length:
        msg = i.to_bytes(4, "big") + label + b"\x00" + context + (length * 8).to_bytes(4, "big")
        out += hmac_digest(_hash(enctype), key, msg)
        i += 1
    return out[:length]


def derive(enctype: int, key: bytes, constant: bytes, length: int) -> bytes:
    if enctype in (17, 18):
        return dk(key, constant, length)
    return kdf_sha2(enctype, key, constant, b"", length)


def usage_keys(enctype: int, key: bytes, usage: int) -> tuple[bytes, bytes, bytes]:
    """(Ke, Ki, Kc) for an AES enctype."""
    u = usage.to_bytes(4, "big")
    if enctype in (17, 18):
        n = KEYLEN[enctype]
        return dk(key, u + b"\xaa", n), dk(key, u + b"\x55", n), dk(key, u + b"\x99", n)
    mac = MACLEN[enctype]
    return (kdf_sha2(enctype, key, u + b"\xaa", b"", KEYLEN[enctype]), kdf_sha2(enctype, key, u + b"\x55", b"", mac),
            kdf_sha2(enctype, key, u + b"\x99", b"", mac))


# --- RC4 (RFC 4757) -------------------------------------------------------------------------------

def rc4_usage(usage: int) -> int:
    return {3: 8, 23: 13}.get(usage, usage)


def rc4(key: bytes, data: bytes) -> bytes:
    e = Cipher(ARC4(key), mode=None).encryptor()
    return e.update(data)


# --- profiles -------------------------------------------------------------------------------------

def encrypt(enctype: int, key: bytes, usage: int, plaintext: bytes, confounder: bytes) -> bytes:
    if enctype == 23:
        k1 = hmac_digest(hashes.MD5(), key, rc4_usage(usage).to_bytes(4, "little"))
        body = confounder + plaintext
        cksum = hmac_digest(hashes.MD5(), k1, body)
        k3 = hmac_digest(hashes.MD5(), k1, cksum)
        return cksum + rc4(k3, body)
    ke, ki, _ = usage_keys(enctype, key, usage)
    body = confounder + plaintext
    c = cts_encrypt(ke, ZERO_IV, body)
    if enctype in (17, 18):
        mac = hmac_digest(hashes.SHA1(), ki, body)  # RFC 3962: MAC over the plaintext
    else:
        mac = hmac_digest(_hash(enctype), ki, ZERO_IV + c)  # RFC 8009: MAC over IV | ciphertext
    return c + mac[:MACLEN[enctype]]


class BadIntegrity(Exception):
    pass


def decrypt(enctype: int, key: bytes, usage: int, ciphertext: bytes) -> tuple[bytes, bytes]:
    """(confounder, plaintext); raises BadIntegrity."""
    if enctype == 23:
        k1 = hmac_digest(hashes.MD5(), key, rc4_usage(usage).to_bytes(4, "little"))
        cksum, enc = ciphertext[:16], ciphertext[16:]
        body = rc4(hmac_digest(hashes.MD5(), k1, cksum), enc)
        if hmac_digest(hashes.MD5(), k1, body) != cksum:
            raise BadIntegrity
        return body[:8], body[8:]
    ke, ki, _ = usage_keys(enctype, key, usage)
    h = MACLEN[enctype]
    c, mac = ciphertext[:-h], ciphertext[-h:]
    if enctype in (19, 20) and hmac_digest(_hash(enctype), ki, ZERO_IV + c)[:h] != mac:
        raise BadIntegrity
    body = cts_decrypt(ke, ZERO_IV, c)
    if enctype in (17, 18) and hmac_digest(hashes.SHA1(), ki, body)[:h] != mac:
        raise BadIntegrity
    return body[:BLOCK], body[BLOCK:]


def checksum(cksumtype: int, key: bytes, usage: int, data: bytes) -> bytes:
    enctype = CKSUM_ENCTYPE[cksumtype]
    if enctype == 23:
        ksign = hmac_digest(hashes.MD5(), key, b"signaturekey\x00")
        inner = digest(hashes.MD5(), rc4_usage(usage).to_bytes(4, "little") + data)
        return hmac_digest(hashes.MD5(), ksign, inner)
    _, _, kc = usage_keys(enctype, key, usage)
    return hmac_digest(_hash(enctype), kc, data)[:MACLEN[enctype]]


def prf(enctype: int, key: bytes, data: bytes) -> bytes:
    if enctype in (17, 18):
        tmp = digest(hashes.SHA1(), data)[:BLOCK]
        return aes_ecb(dk(key, b"prf", KEYLEN[enctype]), tmp)
    return kdf_sha2(enctype, key, b"prf", data, 32 if enctype == 19 else 48)


def string_to_key(enctype: int, password: bytes, salt: bytes, iterations: int) -> bytes:
    if enctype == 23:
        return _md4(password.decode("utf-8").encode("utf-16-le"))
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if enctype in (17, 18) else _hash(enctype)
    if enctype in (19, 20):
        salt = NAMES[enctype] + b"\x00" + salt
    tkey = PBKDF2HMAC(algorithm, KEYLEN[enctype], salt, iterations).derive(password)
    return derive(enctype, tkey, b"kerberos", KEYLEN[enctype])


def _md4(data: bytes) -> bytes:
    """RFC 1320 MD4 (not in OpenSSL 3's default provider, so written out here)."""
    def rotl(x: int, n: int) -> int:
        x &= 0xFFFFFFFF
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    msg = data + b"\x80" + bytes((55 - len(data)) % 64) + (8 * len(data) & (2**64 - 1)).to_bytes(8, "little")
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = [int.from_bytes(msg[off + 4 * i: off + 4 * i + 4], "little") for i in range(16)]
        aa, bb, cc, dd = a, b, c, d
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            f = (b & c) | (~b & d)
            a, b, c, d = d, rotl(a + f + x[k], s), b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            g = (b & c) | (b & d) | (c & d)
            a, b, c, d = d, rotl(a + g + x[k] + 0x5A827999, s), b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            h = b ^ c ^ d
            a, b, c, d = d, rotl(a + h + x[k] + 0x6ED9EBA1, s), b, c
        a, b, c, d = (a + aa) & 0xFFFFFFFF, (b + bb) & 0xFFFFFFFF, (c + cc) & 0xFFFFFFFF, (d + dd) & 0xFFFFFFFF
    return b"".join(v.to_bytes(4, "little") for v in (a, b, c, d))
