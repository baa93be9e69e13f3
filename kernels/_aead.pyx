# AES-256-GCM through OpenSSL's EVP interface (libcrypto), one call per record or per batch.
#
# Each call re-keys one cipher context of this module (AES-NI key expansion: tens of ns), so a
# key object is 32 bytes, not a context; the GIL is held throughout, so the contexts are never
# used by two threads at once. Output and input formats are those of
# `cryptography.hazmat.primitives.ciphers.aead.AESGCM` (ciphertext then the 16-byte tag, 12-byte
# nonces), which is the reference (`kernels.aead`).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from cryptography.exceptions import InvalidTag


cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    const EVP_CIPHER* EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG

cdef enum:
    KEY = 32
    NONCE = 12
    TAG = 16

cdef EVP_CIPHER_CTX* _enc = EVP_CIPHER_CTX_new()
cdef EVP_CIPHER_CTX* _dec = EVP_CIPHER_CTX_new()
if _enc == NULL or _dec == NULL:
    raise MemoryError("EVP_CIPHER_CTX_new")
if EVP_EncryptInit_ex(_enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 \
        or EVP_DecryptInit_ex(_dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1:
    raise RuntimeError("AES-256-GCM is not available in this libcrypto")
cdef unsigned char _empty[1]


cdef int _seal(const unsigned char* key, const unsigned char* nonce, const unsigned char* data,
               int n, const unsigned char* aad1, int n1, const unsigned char* aad2, int n2,
               unsigned char* out) except -1:
    """AES-GCM of `data` under `key` with associated data aad1 | aad2: n bytes then the tag."""
    cdef int outl = 0, fin = 0
    if EVP_EncryptInit_ex(_enc, NULL, NULL, key, nonce) != 1 \
            or (n1 and EVP_EncryptUpdate(_enc, NULL, &outl, aad1, n1) != 1) \
            or (n2 and EVP_EncryptUpdate(_enc, NULL, &outl, aad2, n2) != 1) \
            or EVP_EncryptUpdate(_enc, out, &outl, data if n else _empty, n) != 1 \
            or EVP_EncryptFinal_ex(_enc, out + outl, &fin) != 1 \
            or EVP_CIPHER_CTX_ctrl(_enc, EVP_CTRL_GCM_GET_TAG, TAG, out + n) != 1:
        raise RuntimeError("AES-GCM encryption failed")
    return 0


cdef int _open(const unsigned char* key, const unsigned char* nonce, const unsigned char* sealed,
               int n, const unsigned char* aad1, int n1, const unsigned char* aad2, int n2,
               unsigned char* out) except -1:
    """Inverse of `_seal` (`n`: ciphertext bytes, the tag after them); InvalidTag if forged."""
    cdef int outl = 0, fin = 0
    if EVP_DecryptInit_ex(_dec, NULL, NULL, key, nonce) != 1 \
            or (n1 and EVP_DecryptUpdate(_dec, NULL, &outl, aad1, n1) != 1) \
            or (n2 and EVP_DecryptUpdate(_dec, NULL, &outl, aad2, n2) != 1) \
            or EVP_DecryptUpdate(_dec, out, &outl, sealed if n else _empty, n) != 1 \
            or EVP_CIPHER_CTX_ctrl(_dec, EVP_CTRL_GCM_SET_TAG, TAG,
                                   <void*>(sealed + n)) != 1:
        raise RuntimeError("AES-GCM decryption failed")
    if EVP_DecryptFinal_ex(_dec, out + outl, &fin) != 1:
        raise InvalidTag()
    return 0


cdef class AesGcm:
    """`AESGCM` of one 256-bit key: `encrypt(nonce, data, aad)`, `decrypt(nonce, data, aad)`."""

    cdef readonly bytes key

    def __init__(self, bytes key):
        if len(key) != KEY:
            raise ValueError(f"key: {len(key)} bytes, AES-256-GCM takes {KEY}")
        self.key = key

    def encrypt(self, bytes nonce, bytes data, bytes aad):
        _check_nonce(nonce)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        out = PyBytes_FromStringAndSize(NULL, n + TAG)
        _seal(<const unsigned char*>PyBytes_AS_STRING(self.key),
              <const unsigned char*>PyBytes_AS_STRING(nonce),
              <const unsigned char*>PyBytes_AS_STRING(data), <int>n,
              <const unsigned char*>PyBytes_AS_STRING(aad), <int>PyBytes_GET_SIZE(aad),
              NULL, 0, <unsigned char*>PyBytes_AS_STRING(out))
        return out

    def decrypt(self, bytes nonce, bytes data, bytes aad):
        _check_nonce(nonce)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data) - TAG
        if n < 0:
            raise InvalidTag()
        out = PyBytes_FromStringAndSize(NULL, n)
        _open(<const unsigned char*>PyBytes_AS_STRING(self.key),
              <const unsigned char*>PyBytes_AS_STRING(nonce),
              <const unsigned char*>PyBytes_AS_STRING(data), <int>n,
              <const unsigned char*>PyBytes_AS_STRING(aad), <int>PyBytes_GET_SIZE(aad),
              NULL, 0, <unsigned char*>PyBytes_AS_STRING(out))
        return out


cdef inline int _check_nonce(bytes nonce) except -1:
    if PyBytes_GET_SIZE(nonce) != NONCE:
        raise ValueError(f"nonce: {PyBytes_GET_SIZE(nonce)} bytes, {NONCE} expected")
    return 0


def seal_records(list ciphers, list keys, list values, bytes head, bytes aad, bytes nonces):
    """For each i: `head | nonce_i | AES-GCM(values[i])` under ciphers[i] (an `AesGcm`) with
    associated data `aad | keys[i]`, nonce_i = nonces[12 i:12 i + 12]; ciphers[i] None: the value
    as it is."""
    cdef Py_ssize_t i, m = len(values), h = PyBytes_GET_SIZE(head), n
    if len(ciphers) != m or len(keys) != m or PyBytes_GET_SIZE(nonces) < NONCE * m:
        raise ValueError("seal_records: ciphers, keys, values and nonces must line up")
    cdef const unsigned char* pn = <const unsigned char*>PyBytes_AS_STRING(nonces)
    cdef const unsigned char* pa = <const unsigned char*>PyBytes_AS_STRING(aad)
    cdef int na = <int>PyBytes_GET_SIZE(aad)
    cdef unsigned char* po
    cdef bytes value, key, out
    cdef AesGcm c
    result = [None] * m
    for i in range(m):
        value = values[i]
        if ciphers[i] is None:
            result[i] = value
            continue
        c, key, n = ciphers[i], keys[i], PyBytes_GET_SIZE(value)
        out = PyBytes_FromStringAndSize(NULL, h + NONCE + n + TAG)
        po = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(po, <const unsigned char*>PyBytes_AS_STRING(head), h)
        memcpy(po + h, pn + NONCE * i, NONCE)
        _seal(<const unsigned char*>PyBytes_AS_STRING(c.key), pn + NONCE * i,
              <const unsigned char*>PyBytes_AS_STRING(value), <int>n, pa, na,
              <const unsigned char*>PyBytes_AS_STRING(key), <int>PyBytes_GET_SIZE(key),
              po + h + NONCE)
        result[i] = out
    return result


def open_records(list ciphers, list keys, list values, Py_ssize_t body, bytes aad):
    """Inverse of `seal_records` (`body` = len(head) + 12: where the ciphertext starts; the
    nonce is the 12 bytes before it): values[i] opened under ciphers[i] with associated data
    `aad | keys[i]`; None where values[i] or ciphers[i] is None. InvalidTag on a forged or
    misplaced value."""
    cdef Py_ssize_t i, m = len(values), n
    if len(ciphers) != m or len(keys) != m or body < NONCE:
        raise ValueError("open_records: ciphers, keys and values must line up")
    cdef const unsigned char* pa = <const unsigned char*>PyBytes_AS_STRING(aad)
    cdef int na = <int>PyBytes_GET_SIZE(aad)
    cdef const unsigned char* pv
    cdef bytes value, key, out
    cdef AesGcm c
    result = [None] * m
    for i in range(m):
        if values[i] is None or ciphers[i] is None:
            continue
        value = bytes(values[i]) if type(values[i]) is not bytes else values[i]
        c, key, n = ciphers[i], keys[i], PyBytes_GET_SIZE(value) - body - TAG
        if n < 0:
            raise InvalidTag()
        pv = <const unsigned char*>PyBytes_AS_STRING(value)
        out = PyBytes_FromStringAndSize(NULL, n)
        _open(<const unsigned char*>PyBytes_AS_STRING(c.key), pv + body - NONCE, pv + body,
              <int>n, pa, na, <const unsigned char*>PyBytes_AS_STRING(key),
              <int>PyBytes_GET_SIZE(key), <unsigned char*>PyBytes_AS_STRING(out))
        result[i] = out
    return result
