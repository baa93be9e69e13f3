# AES-256-GCM through OpenSSL's EVP interface (libcrypto), one call per record or per batch.
#
# Each call re-keys a cipher context (AES-NI key expansion: tens of ns), so a key object is 32
# bytes, not a context. Single records use this module's two contexts with the GIL held (never
# two threads at once); a batch of at least `NOGIL_RECORDS` records is prepared with the GIL
# (output objects, pointers), then sealed or opened without it on a context of its own, so other
# threads (the event loop parsing the next batch) run meanwhile. Output and input formats are those of
# `cryptography.hazmat.primitives.ciphers.aead.AESGCM` (ciphertext then the 16-byte tag, 12-byte
# nonces), which is the reference (`kernels.aead`).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
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
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
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
    int EVP_CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                         const unsigned char* inp, int inl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG

cdef enum:
    KEY = 32
    NONCE = 12
    TAG = 16
    FAILED = -1
    FORGED = -2
    NOGIL_RECORDS = 32
    AAD_JOINED = 256

cdef EVP_CIPHER_CTX* _enc = EVP_CIPHER_CTX_new()
cdef EVP_CIPHER_CTX* _dec = EVP_CIPHER_CTX_new()
if _enc == NULL or _dec == NULL:
    raise MemoryError("EVP_CIPHER_CTX_new")
if EVP_EncryptInit_ex(_enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 \
        or EVP_DecryptInit_ex(_dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1:
    raise RuntimeError("AES-256-GCM is not available in this libcrypto")
cdef unsigned char _empty[1]


cdef int _aad(EVP_CIPHER_CTX* ctx, const unsigned char* aad1, int n1, const unsigned char* aad2,
              int n2) noexcept nogil:
    """The associated data aad1 | aad2 into an initialised context, in one EVP call when it fits
    `AAD_JOINED` bytes (each call costs ~0.1 us of OpenSSL 3's dispatch). 0, or FAILED."""
    cdef int outl = 0
    cdef unsigned char joined[AAD_JOINED]
    if n1 and n2 and n1 + n2 <= AAD_JOINED:
        memcpy(joined, aad1, n1)
        memcpy(joined + n1, aad2, n2)
        aad1, n1, n2 = joined, n1 + n2, 0
    if (n1 and EVP_CipherUpdate(ctx, NULL, &outl, aad1, n1) != 1) \
            or (n2 and EVP_CipherUpdate(ctx, NULL, &outl, aad2, n2) != 1):
        return FAILED
    return 0


cdef int _seal(EVP_CIPHER_CTX* ctx, const unsigned char* key, const unsigned char* nonce,
               const unsigned char* data, int n, const unsigned char* aad1, int n1,
               const unsigned char* aad2, int n2, unsigned char* out) noexcept nogil:
    """AES-GCM of `data` under `key` with associated data aad1 | aad2: n bytes then the tag.
    0, or FAILED."""
    cdef int outl = 0, fin = 0
    if EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 or _aad(ctx, aad1, n1, aad2, n2) \
            or EVP_EncryptUpdate(ctx, out, &outl, data if n else _empty, n) != 1 \
            or EVP_EncryptFinal_ex(ctx, out + outl, &fin) != 1 \
            or EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, out + n) != 1:
        return FAILED
    return 0


cdef int _open(EVP_CIPHER_CTX* ctx, const unsigned char* key, const unsigned char* nonce,
               const unsigned char* sealed, int n, const unsigned char* aad1, int n1,
               const unsigned char* aad2, int n2, unsigned char* out) noexcept nogil:
    """Inverse of `_seal` (`n`: ciphertext bytes, the tag after them). 0, FAILED or FORGED."""
    cdef int outl = 0, fin = 0
    if EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 or _aad(ctx, aad1, n1, aad2, n2) \
            or EVP_DecryptUpdate(ctx, out, &outl, sealed if n else _empty, n) != 1 \
            or EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG,
                                   <void*>(sealed + n)) != 1:
        return FAILED
    if EVP_DecryptFinal_ex(ctx, out + outl, &fin) != 1:
        return FORGED
    return 0


cdef int _check(int rc) except -1:
    """Raise for a `_seal`/`_open` result."""
    if rc == FORGED:
        raise InvalidTag()
    if rc != 0:
        raise RuntimeError("AES-GCM failed in libcrypto")
    return 0


cdef struct Job:
    const unsigned char* key
    const unsigned char* nonce
    const unsigned char* data
    int n
    const unsigned char* aad2
    int n2
    unsigned char* out


cdef int _run_all(EVP_CIPHER_CTX* ctx, Job* jobs, Py_ssize_t count, const unsigned char* aad,
                  int na, bint seal) noexcept nogil:
    """Every job in order, the context re-keyed only when the key changes (consecutive records
    of one user share its cipher object); the first failure's code, or 0."""
    cdef Py_ssize_t i
    cdef int rc = 0
    cdef const unsigned char* last = NULL
    cdef const unsigned char* key
    for i in range(count):
        key = jobs[i].key
        if key == last:
            key = NULL  # same key: only the nonce is set
        else:
            last = key
        rc = _seal(ctx, key, jobs[i].nonce, jobs[i].data, jobs[i].n, aad, na,
                   jobs[i].aad2, jobs[i].n2, jobs[i].out) if seal else \
            _open(ctx, key, jobs[i].nonce, jobs[i].data, jobs[i].n, aad, na,
                  jobs[i].aad2, jobs[i].n2, jobs[i].out)
        if rc:
            break
    return rc


cdef Job* _new_jobs(Py_ssize_t m) except NULL:
    """Room for `m` jobs (the caller frees it)."""
    cdef Job* jobs = <Job*>malloc(max(m, 1) * sizeof(Job))
    if jobs == NULL:
        raise MemoryError()
    return jobs


cdef int _run(Job* jobs, Py_ssize_t count, const unsigned char* aad, int na, bint seal) except -1:
    """`_run_all`, without the GIL when there are `NOGIL_RECORDS` jobs or more (on a context of
    the call's own), else on the module's context. Raises for the first failure."""
    cdef EVP_CIPHER_CTX* ctx
    cdef int rc = 0
    if count < NOGIL_RECORDS:
        return _check(_run_all(_enc if seal else _dec, jobs, count, aad, na, seal))
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) if seal else
                EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL)) != 1:
            raise RuntimeError("AES-256-GCM is not available in this libcrypto")
        with nogil:
            rc = _run_all(ctx, jobs, count, aad, na, seal)
        return _check(rc)
    finally:
        EVP_CIPHER_CTX_free(ctx)


cdef class AesGcm:
    """`AESGCM` of one 256-bit key: `encrypt(nonce, data, aad)`, `decrypt(nonce, data, aad)`."""

    cdef readonly bytes key

    def __init__(self, bytes key):
        if len(key) != KEY:
            raise ValueError(f"key: {len(key)} bytes, AES-256-GCM takes {KEY}")
        self.key = key

    def encrypt(self, bytes nonce, bytes data, bytes aad):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        out = PyBytes_FromStringAndSize(NULL, n + TAG)
        self._one(nonce, data, n, aad, out, True)
        return out

    def decrypt(self, bytes nonce, bytes data, bytes aad):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data) - TAG
        if n < 0:
            raise InvalidTag()
        out = PyBytes_FromStringAndSize(NULL, n)
        self._one(nonce, data, n, aad, out, False)
        return out

    cdef int _one(self, bytes nonce, bytes data, Py_ssize_t n, bytes aad, bytes out,
                  bint seal) except -1:
        """One record, sealed or opened as a batch of one (`_run`, on the module's context)."""
        _check_nonce(nonce)
        cdef Job job = Job(<const unsigned char*>PyBytes_AS_STRING(self.key),
                           <const unsigned char*>PyBytes_AS_STRING(nonce),
                           <const unsigned char*>PyBytes_AS_STRING(data), <int>n, NULL, 0,
                           <unsigned char*>PyBytes_AS_STRING(out))
        return _run(&job, 1, <const unsigned char*>PyBytes_AS_STRING(aad),
                    <int>PyBytes_GET_SIZE(aad), seal)


cdef inline int _check_nonce(bytes nonce) except -1:
    if PyBytes_GET_SIZE(nonce) != NONCE:
        raise ValueError(f"nonce: {PyBytes_GET_SIZE(nonce)} bytes, {NONCE} expected")
    return 0


def user_tokens(list keys, Py_ssize_t size, unsigned char sep, list values=None):
    """keys[i][:size] where byte `size` of keys[i] is `sep` (a per-user record key) and, given
    `values`, values[i] is not None; else None."""
    cdef Py_ssize_t i, m = len(keys)
    cdef bytes key
    if values is not None and len(values) != m:
        raise ValueError("user_tokens: keys and values must line up")
    result = [None] * m
    for i in range(m):
        key = keys[i]
        if PyBytes_GET_SIZE(key) > size and (<unsigned char*>PyBytes_AS_STRING(key))[size] == sep \
                and (values is None or values[i] is not None):
            result[i] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(key), size)
    return result


def pick(dict memo, list tokens, plain, bint strict, list missing=None):
    """memo[tokens[i]] (KeyError if memo lacks it and `strict`, else None, and the token is
    appended to `missing` when given); `plain` where tokens[i] is None."""
    cdef Py_ssize_t i, m = len(tokens)
    result = [plain] * m
    for i in range(m):
        token = tokens[i]
        if token is not None:
            found = memo[token] if strict else memo.get(token)
            result[i] = found
            if found is None and missing is not None:
                missing.append(token)
    return result


def seal_records(list ciphers, list keys, list values, bytes head, bytes aad, bytes nonces):
    """For each i: `head | nonce_i | AES-GCM(values[i])` under ciphers[i] (an `AesGcm`) with
    associated data `aad | keys[i]`, nonce_i = nonces[12 i:12 i + 12]; ciphers[i] None: the value
    as it is."""
    cdef Py_ssize_t i, m = len(values), h = PyBytes_GET_SIZE(head), n
    if len(ciphers) != m or len(keys) != m or PyBytes_GET_SIZE(nonces) < NONCE * m:
        raise ValueError("seal_records: ciphers, keys, values and nonces must line up")
    cdef const unsigned char* pn = <const unsigned char*>PyBytes_AS_STRING(nonces)
    cdef unsigned char* po
    cdef bytes value, key, out
    cdef AesGcm c
    cdef Py_ssize_t count = 0
    cdef Job* jobs = _new_jobs(m)
    result = [None] * m
    try:
        for i in range(m):
            value = values[i]
            if ciphers[i] is None:
                result[i] = value
                continue
            c, key, n = ciphers[i], keys[i], PyBytes_GET_SIZE(value)
            out = PyBytes_FromStringAndSize(NULL, h + NONCE + n + TAG)
            result[i] = out  # holds `out` (and the lists hold the rest) while the jobs run
            po = <unsigned char*>PyBytes_AS_STRING(out)
            memcpy(po, <const unsigned char*>PyBytes_AS_STRING(head), h)
            memcpy(po + h, pn + NONCE * i, NONCE)
            jobs[count] = Job(<const unsigned char*>PyBytes_AS_STRING(c.key), pn + NONCE * i,
                              <const unsigned char*>PyBytes_AS_STRING(value), <int>n,
                              <const unsigned char*>PyBytes_AS_STRING(key),
                              <int>PyBytes_GET_SIZE(key), po + h + NONCE)
            count += 1
        _run(jobs, count, <const unsigned char*>PyBytes_AS_STRING(aad), <int>PyBytes_GET_SIZE(aad),
             True)
    finally:
        free(jobs)
    return result


def open_records(list ciphers, list keys, list values, Py_ssize_t body, bytes aad,
                 plain=None):
    """Inverse of `seal_records` (`body` = len(head) + 12: where the ciphertext starts; the
    nonce is the 12 bytes before it): values[i] opened under ciphers[i] with associated data
    `aad | keys[i]`; None where values[i] or ciphers[i] is None. InvalidTag on a forged or
    misplaced value. Where ciphers[i] is `plain` (not None), values[i] as it is."""
    cdef Py_ssize_t i, m = len(values), n
    if len(ciphers) != m or len(keys) != m or body < NONCE:
        raise ValueError("open_records: ciphers, keys and values must line up")
    cdef const unsigned char* pv
    cdef bytes value, key, out
    cdef AesGcm c
    cdef Py_ssize_t count = 0
    cdef Job* jobs = _new_jobs(m)
    result, held = [None] * m, []
    try:
        for i in range(m):
            if values[i] is None or ciphers[i] is None:
                continue
            if plain is not None and ciphers[i] is plain:
                result[i] = values[i]
                continue
            raw = values[i]
            if type(raw) is bytes:
                value = raw
            else:
                value = bytes(raw)
                held.append(value)  # alive while the jobs run
            c, key, n = ciphers[i], keys[i], PyBytes_GET_SIZE(value) - body - TAG
            if n < 0:
                raise InvalidTag()
            pv = <const unsigned char*>PyBytes_AS_STRING(value)
            out = PyBytes_FromStringAndSize(NULL, n)
            result[i] = out
            jobs[count] = Job(<const unsigned char*>PyBytes_AS_STRING(c.key), pv + body - NONCE,
                              pv + body, <int>n, <const unsigned char*>PyBytes_AS_STRING(key),
                              <int>PyBytes_GET_SIZE(key), <unsigned char*>PyBytes_AS_STRING(out))
            count += 1
        _run(jobs, count, <const unsigned char*>PyBytes_AS_STRING(aad), <int>PyBytes_GET_SIZE(aad),
             False)
    finally:
        free(jobs)
    return result
