# Python-callable crypto (fastkrb.krb.crypto) over the C contract declared in kcrypto.pxd.
#
# Python-visible names carry a `crypto_` prefix (plus the CryptoKey class); the GIL is released around
# every C call. Errors are fastkrb.errors types; keys never appear in messages.

from libc.stdint cimport uint8_t, uint32_t, int64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from kcrypto cimport *

from fastkrb import errors as _fk_errors


cdef int _crypto_raise(int rc, str op, int enctype, Py_ssize_t size) except -1:
    """Turn an FK_ERR_* into the error vocabulary (facts only: no key bytes)."""
    details = {"operation": op, "enctype": enctype, "length": size}
    if rc == FK_ERR_INTEGRITY:
        raise _fk_errors.IntegrityError(
            f"{op}: integrity check failed (wrong key, wrong key usage, or altered data)", None, details)
    if rc == FK_ERR_LENGTH:
        raise _fk_errors.MalformedToken(
            f"{op}: {size} bytes is an impossible length for enctype {enctype}",
            "The encrypted data is truncated or not Kerberos ciphertext.", details)
    if rc == FK_ERR_ENCTYPE:
        raise _fk_errors.EnctypeNotPermitted(
            f"{op}: enctype/checksum type {enctype} is not supported by fastkrb "
            "(17, 18, 19, 20, 23; checksums 15, 16, 19, 20, -138)", None, details)
    if rc == FK_ERR_KEYSIZE:
        raise _fk_errors.KerberosError(
            f"{op}: a key of {size} bytes does not fit enctype {enctype}",
            "The key material does not match its enctype: check the keytab entry.", details)
    raise RuntimeError(f"{op}: OpenSSL libcrypto failed (code {rc})")


cdef inline int _crypto_getbuf(object obj, Py_buffer *view) except -1:
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)


cdef int _crypto_ekey(fk_ekey *k, int enctype, object key, uint32_t usage, unsigned flags=0) except -1:
    cdef Py_buffer kb
    cdef int rc
    cdef Py_ssize_t n
    _crypto_getbuf(key, &kb)
    try:
        n = kb.len
        with nogil:
            rc = fk_ekey_init_flags(k, enctype, <const uint8_t *>kb.buf, <size_t>kb.len, usage, flags)
    finally:
        PyBuffer_Release(&kb)
    if rc != FK_OK:
        _crypto_raise(rc, "key setup", enctype, n)
    return 0


cdef object _crypto_decrypt(const fk_ekey *k, object ciphertext):
    cdef Py_buffer b
    cdef uint8_t small[512]
    cdef uint8_t *out = NULL
    cdef size_t outlen = 0
    cdef int rc
    _crypto_getbuf(ciphertext, &b)
    try:
        if b.len <= 512:
            out = &small[0]
        else:
            out = <uint8_t *>PyMem_Malloc(b.len)
        if out == NULL:
            raise MemoryError()
        with nogil:
            rc = fk_decrypt(k, <const uint8_t *>b.buf, <size_t>b.len, out, &outlen)
        if rc != FK_OK:
            _crypto_raise(rc, "decrypt", k.enctype, b.len)
        return PyBytes_FromStringAndSize(<char *>out, <Py_ssize_t>outlen)
    finally:
        if out != NULL and out != &small[0]:
            PyMem_Free(out)
        PyBuffer_Release(&b)


cdef object _crypto_encrypt(const fk_ekey *k, object plaintext, object confounder):
    cdef Py_buffer p
    cdef Py_buffer c
    cdef const uint8_t *conf = NULL
    cdef size_t outlen = 0
    cdef int rc
    cdef bytes out
    _crypto_getbuf(plaintext, &p)
    try:
        if confounder is not None:
            _crypto_getbuf(confounder, &c)
            try:
                if <size_t>c.len != k.conflen:
                    raise ValueError(f"confounder must be {k.conflen} bytes for enctype {k.enctype}")
                return _crypto_encrypt_into(k, <const uint8_t *>c.buf, &p)
            finally:
                PyBuffer_Release(&c)
        return _crypto_encrypt_into(k, NULL, &p)
    finally:
        PyBuffer_Release(&p)


cdef object _crypto_encrypt_into(const fk_ekey *k, const uint8_t *conf, Py_buffer *p):
    cdef size_t n = fk_encrypt_len(k, <size_t>p.len)
    cdef size_t outlen = 0
    cdef int rc
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        rc = fk_encrypt(k, conf, <const uint8_t *>p.buf, <size_t>p.len, o, &outlen)
    if rc != FK_OK:
        _crypto_raise(rc, "encrypt", k.enctype, p.len)
    return out


cdef object _crypto_checksum(const fk_ekey *k, int cksumtype, object data):
    cdef Py_buffer b
    cdef uint8_t out[FK_MAX_DIGEST]
    cdef size_t outlen = 0
    cdef int rc
    _crypto_getbuf(data, &b)
    try:
        with nogil:
            rc = fk_checksum(k, cksumtype, <const uint8_t *>b.buf, <size_t>b.len, out, &outlen)
    finally:
        PyBuffer_Release(&b)
    if rc != FK_OK:
        _crypto_raise(rc, "checksum", cksumtype, 0)
    return PyBytes_FromStringAndSize(<char *>out, <Py_ssize_t>outlen)


cdef bint _crypto_verify(const fk_ekey *k, int cksumtype, object data, object mac) except -1:
    cdef Py_buffer b
    cdef Py_buffer m
    cdef int rc
    _crypto_getbuf(data, &b)
    try:
        _crypto_getbuf(mac, &m)
        try:
            with nogil:
                rc = fk_checksum_verify(k, cksumtype, <const uint8_t *>b.buf, <size_t>b.len,
                                        <const uint8_t *>m.buf, <size_t>m.len)
        finally:
            PyBuffer_Release(&m)
    finally:
        PyBuffer_Release(&b)
    if rc == FK_OK:
        return True
    if rc == FK_ERR_INTEGRITY:
        return False
    _crypto_raise(rc, "verify checksum", cksumtype, 0)
    return False


cdef class CryptoKey:
    """A key specialised for one key usage (fk_ekey): Ke, Ki and Kc are derived once, here."""

    cdef fk_ekey k

    def __cinit__(self, int enctype, key, uint32_t usage, *, bint with_checksum=True):
        _crypto_ekey(&self.k, enctype, key, usage, 0 if with_checksum else FK_EKEY_NO_CHECKSUM)

    def __dealloc__(self):
        fk_ekey_clear(&self.k)

    @property
    def enctype(self):
        return self.k.enctype

    @property
    def usage(self):
        return self.k.usage

    @property
    def cksumtype(self):
        return self.k.cksumtype

    def decrypt(self, ciphertext):
        """Verify and decrypt; raises IntegrityError / MalformedToken."""
        return _crypto_decrypt(&self.k, ciphertext)

    def encrypt(self, plaintext, confounder=None):
        """Encrypt (confounder random unless given: tests and vectors only)."""
        return _crypto_encrypt(&self.k, plaintext, confounder)

    def checksum(self, data):
        """The enctype's mandatory keyed checksum of data with this usage."""
        return _crypto_checksum(&self.k, self.k.cksumtype, data)

    def verify_checksum(self, data, mac):
        """Constant-time check of the enctype's mandatory keyed checksum."""
        return _crypto_verify(&self.k, self.k.cksumtype, data, mac)


def crypto_enctype_info(int enctype):
    """(key length, MAC length, confounder length) of a supported enctype."""
    cdef size_t keylen = 0, hlen = 0, conflen = 0
    cdef int rc = fk_enctype_info(enctype, &keylen, &hlen, &conflen)
    if rc != FK_OK:
        _crypto_raise(rc, "enctype lookup", enctype, 0)
    return keylen, hlen, conflen


def crypto_cksumtype_info(int cksumtype):
    """(enctype of the keys that make it, checksum length) of a supported keyed checksum type."""
    cdef int enctype = 0
    cdef size_t n = 0
    cdef int rc = fk_cksumtype_info(cksumtype, &enctype, &n)
    if rc != FK_OK:
        _crypto_raise(rc, "checksum type lookup", cksumtype, 0)
    return enctype, n


def crypto_encrypt(int enctype, key, uint32_t usage, plaintext, confounder=None):
    cdef fk_ekey k
    _crypto_ekey(&k, enctype, key, usage)
    try:
        return _crypto_encrypt(&k, plaintext, confounder)
    finally:
        fk_ekey_clear(&k)


def crypto_decrypt(int enctype, key, uint32_t usage, ciphertext):
    cdef fk_ekey k
    _crypto_ekey(&k, enctype, key, usage)
    try:
        return _crypto_decrypt(&k, ciphertext)
    finally:
        fk_ekey_clear(&k)


def crypto_checksum(int cksumtype, key, uint32_t usage, data):
    cdef fk_ekey k
    enctype, _ = crypto_cksumtype_info(cksumtype)
    _crypto_ekey(&k, enctype, key, usage)
    try:
        return _crypto_checksum(&k, cksumtype, data)
    finally:
        fk_ekey_clear(&k)


def crypto_verify_checksum(int cksumtype, key, uint32_t usage, data, mac):
    cdef fk_ekey k
    enctype, _ = crypto_cksumtype_info(cksumtype)
    _crypto_ekey(&k, enctype, key, usage)
    try:
        return _crypto_verify(&k, cksumtype, data, mac)
    finally:
        fk_ekey_clear(&k)


def crypto_derive(int enctype, key, constant, size_t length):
    """RFC 3961 DK (17, 18) or RFC 8009 KDF-HMAC-SHA2 (19, 20) of `length` bytes."""
    cdef Py_buffer kb
    cdef Py_buffer cb
    cdef int rc
    if length == 0 or length > 1024:
        raise ValueError("derived length must be 1..1024 bytes")
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    _crypto_getbuf(key, &kb)
    try:
        _crypto_getbuf(constant, &cb)
        try:
            with nogil:
                rc = fk_derive(enctype, <const uint8_t *>kb.buf, <size_t>kb.len, <const uint8_t *>cb.buf,
                               <size_t>cb.len, o, length)
        finally:
            PyBuffer_Release(&cb)
        if rc != FK_OK:
            _crypto_raise(rc, "derive", enctype, kb.len if rc == FK_ERR_KEYSIZE else cb.len)
    finally:
        PyBuffer_Release(&kb)
    return out


def crypto_nfold(data, size_t nbytes):
    """RFC 3961 §5.1 n-fold of data to nbytes bytes."""
    cdef Py_buffer b
    if nbytes == 0 or nbytes > FK_NFOLD_MAX:
        raise ValueError(f"n-fold output must be 1..{FK_NFOLD_MAX} bytes")
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>nbytes)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    _crypto_getbuf(data, &b)
    try:
        if b.len == 0:
            raise ValueError("n-fold input must not be empty")
        with nogil:
            fk_nfold(<const uint8_t *>b.buf, <size_t>b.len, o, nbytes)
    finally:
        PyBuffer_Release(&b)
    return out


def crypto_aes_cts(bint encrypt, key, iv, data):
    """Raw AES-CBC-CTS (RFC 3962 §5) with the given 16-byte IV."""
    cdef Py_buffer kb
    cdef Py_buffer ib
    cdef Py_buffer db
    cdef int rc
    cdef uint8_t *o
    _crypto_getbuf(key, &kb)
    try:
        _crypto_getbuf(iv, &ib)
        try:
            if ib.len != 16:
                raise ValueError("AES-CTS IV must be 16 bytes")
            _crypto_getbuf(data, &db)
            try:
                out = PyBytes_FromStringAndSize(NULL, db.len)
                o = <uint8_t *>PyBytes_AS_STRING(out)
                with nogil:
                    rc = fk_aes_cts(encrypt, <const uint8_t *>kb.buf, <size_t>kb.len, <const uint8_t *>ib.buf,
                                    <const uint8_t *>db.buf, <size_t>db.len, o)
                if rc != FK_OK:
                    _crypto_raise(rc, "aes-cts", 0, kb.len if rc == FK_ERR_KEYSIZE else db.len)
                return out
            finally:
                PyBuffer_Release(&db)
        finally:
            PyBuffer_Release(&ib)
    finally:
        PyBuffer_Release(&kb)


def crypto_prf(int enctype, key, data):
    """RFC 3961 PRF: RFC 3962 §6 (17, 18: 16 bytes) or RFC 8009 §5 (19: 32, 20: 48 bytes)."""
    cdef Py_buffer kb
    cdef Py_buffer db
    cdef uint8_t out[64]
    cdef size_t outlen = 0
    cdef int rc
    _crypto_getbuf(key, &kb)
    try:
        _crypto_getbuf(data, &db)
        try:
            with nogil:
                rc = fk_prf(enctype, <const uint8_t *>kb.buf, <size_t>kb.len, <const uint8_t *>db.buf,
                            <size_t>db.len, out, &outlen)
        finally:
            PyBuffer_Release(&db)
        if rc != FK_OK:
            _crypto_raise(rc, "prf", enctype, kb.len)
    finally:
        PyBuffer_Release(&kb)
    return PyBytes_FromStringAndSize(<char *>out, <Py_ssize_t>outlen)


def crypto_hmac(int md, key, data):
    """HMAC through the precomputed-state path (md: 1 SHA-1, 2 SHA-256, 3 SHA-384, 4 MD5)."""
    cdef fk_hmac_key h
    cdef Py_buffer kb
    cdef Py_buffer db
    cdef uint8_t out[FK_MAX_DIGEST]
    cdef size_t n = 0
    cdef int rc
    _crypto_getbuf(key, &kb)
    try:
        rc = fk_hmac_init(&h, md, <const uint8_t *>kb.buf, <size_t>kb.len)
    finally:
        PyBuffer_Release(&kb)
    if rc != FK_OK:
        raise ValueError(f"unknown digest {md}")
    _crypto_getbuf(data, &db)
    try:
        with nogil:
            n = fk_hmac(&h, <const uint8_t *>db.buf, <size_t>db.len, NULL, 0, out)
    finally:
        PyBuffer_Release(&db)
    return PyBytes_FromStringAndSize(<char *>out, <Py_ssize_t>n)


def crypto_random(size_t n):
    """n random bytes from OpenSSL's DRBG."""
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    cdef int rc
    with nogil:
        rc = fk_random(o, n)
    if rc != FK_OK:
        _crypto_raise(rc, "random", 0, <Py_ssize_t>n)
    return out


def crypto_md4(data):
    """MD4 (for the RC4 string-to-key, RFC 4757 §4)."""
    cdef Py_buffer b
    cdef uint8_t out[16]
    cdef int rc
    _crypto_getbuf(data, &b)
    try:
        with nogil:
            rc = fk_md4(<const uint8_t *>b.buf, <size_t>b.len, out)
    finally:
        PyBuffer_Release(&b)
    if rc != FK_OK:
        _crypto_raise(rc, "md4", 0, 0)
    return PyBytes_FromStringAndSize(<char *>out, 16)


cdef inline int64_t _crypto_now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def crypto_time_loop(str op, int enctype, key, uint32_t usage, data, long iterations):
    """Nanoseconds per call of one C operation, timed in C (benches): op is "decrypt" (data = ciphertext,
    key specialised once), "ekey_init", "ekey_init_nokc" (FK_EKEY_NO_CHECKSUM), "encrypt" (data =
    plaintext, random confounder) or "checksum" (data = message)."""
    cdef fk_ekey k
    cdef Py_buffer db
    cdef Py_buffer kb
    cdef uint8_t *out = NULL
    cdef size_t outlen = 0
    cdef long i
    cdef int rc = FK_OK
    cdef int which
    cdef int64_t t0 = 0, t1 = 0
    if op == "decrypt":
        which = 0
    elif op == "ekey_init":
        which = 1
    elif op == "encrypt":
        which = 2
    elif op == "checksum":
        which = 3
    elif op == "ekey_init_nokc":
        which = 4
    else:
        raise ValueError(f"unknown op {op!r}")
    if iterations <= 0:
        raise ValueError("iterations must be positive")
    _crypto_ekey(&k, enctype, key, usage)
    _crypto_getbuf(key, &kb)
    _crypto_getbuf(data, &db)
    try:
        out = <uint8_t *>PyMem_Malloc(<size_t>db.len + 128)
        if out == NULL:
            raise MemoryError()
        with nogil:
            t0 = _crypto_now_ns()
            for i in range(iterations):
                if which == 0:
                    rc = fk_decrypt(&k, <const uint8_t *>db.buf, <size_t>db.len, out, &outlen)
                elif which == 1:
                    rc = fk_ekey_init(&k, enctype, <const uint8_t *>kb.buf, <size_t>kb.len, usage)
                elif which == 4:
                    rc = fk_ekey_init_flags(&k, enctype, <const uint8_t *>kb.buf, <size_t>kb.len, usage,
                                            FK_EKEY_NO_CHECKSUM)
                elif which == 2:
                    rc = fk_encrypt(&k, NULL, <const uint8_t *>db.buf, <size_t>db.len, out, &outlen)
                else:
                    rc = fk_checksum(&k, k.cksumtype, <const uint8_t *>db.buf, <size_t>db.len, out, &outlen)
                if rc != FK_OK:
                    break
            t1 = _crypto_now_ns()
        if rc != FK_OK:
            _crypto_raise(rc, op, enctype, db.len)
        return (t1 - t0) / <double>iterations
    finally:
        fk_ekey_clear(&k)
        PyMem_Free(out)
        PyBuffer_Release(&db)
        PyBuffer_Release(&kb)
