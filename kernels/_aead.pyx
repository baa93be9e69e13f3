# AES-256-GCM through OpenSSL 3's default provider (libcrypto), one call per record or per batch.
#
# The provider's AES-256-GCM functions are taken from its dispatch table once
# (`OSSL_PROVIDER_query_operation`, public since OpenSSL 3.0) and called directly: they are
# the functions the EVP interface calls, without EVP's per-call bookkeeping (each
# `EVP_EncryptInit_ex` asks the provider for the key and IV lengths through named parameters,
# each tag through `EVP_CIPHER_CTX_ctrl`: about half of a small record's cost in OpenSSL 3.0).
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
from libc.string cimport memcpy, strlen, strncmp

from cryptography.exceptions import InvalidTag


ctypedef void (*ossl_fn)() noexcept nogil

cdef extern from "openssl/core.h" nogil:
    ctypedef struct OSSL_DISPATCH:
        int function_id
        ossl_fn function
    ctypedef struct OSSL_ALGORITHM:
        const char* algorithm_names
        const char* property_definition
        const OSSL_DISPATCH* implementation
        const char* algorithm_description
    ctypedef struct OSSL_PARAM:
        pass

cdef extern from "openssl/core_dispatch.h" nogil:
    int OSSL_OP_CIPHER
    int OSSL_FUNC_CIPHER_NEWCTX
    int OSSL_FUNC_CIPHER_ENCRYPT_INIT
    int OSSL_FUNC_CIPHER_DECRYPT_INIT
    int OSSL_FUNC_CIPHER_UPDATE
    int OSSL_FUNC_CIPHER_FINAL
    int OSSL_FUNC_CIPHER_FREECTX
    int OSSL_FUNC_CIPHER_GET_CTX_PARAMS
    int OSSL_FUNC_CIPHER_SET_CTX_PARAMS

cdef extern from "openssl/params.h" nogil:
    OSSL_PARAM OSSL_PARAM_construct_octet_string(const char* key, void* buf, size_t bsize)
    OSSL_PARAM OSSL_PARAM_construct_end()

cdef extern from "openssl/provider.h" nogil:
    ctypedef struct OSSL_PROVIDER:
        pass
    ctypedef struct OSSL_LIB_CTX:
        pass
    OSSL_PROVIDER* OSSL_PROVIDER_load(OSSL_LIB_CTX* libctx, const char* name)
    const OSSL_ALGORITHM* OSSL_PROVIDER_query_operation(const OSSL_PROVIDER* prov,
                                                        int operation_id, int* no_cache)
    void* OSSL_PROVIDER_get0_provider_ctx(const OSSL_PROVIDER* prov)

ctypedef void* (*newctx_f)(void* provctx) noexcept nogil
ctypedef int (*init_f)(void* ctx, const unsigned char* key, size_t keylen,
                       const unsigned char* iv, size_t ivlen,
                       const OSSL_PARAM* params) noexcept nogil
ctypedef int (*update_f)(void* ctx, unsigned char* out, size_t* outl, size_t outsize,
                         const unsigned char* inp, size_t inl) noexcept nogil
ctypedef int (*final_f)(void* ctx, unsigned char* out, size_t* outl, size_t outsize) noexcept nogil
ctypedef int (*params_f)(void* ctx, OSSL_PARAM* params) noexcept nogil
ctypedef void (*free_f)(void* ctx) noexcept nogil

cdef enum:
    KEY = 32
    NONCE = 12
    TAG = 16
    FAILED = -1
    FORGED = -2
    NOGIL_RECORDS = 32
    AAD_JOINED = 256

cdef struct Gcm:
    void* provctx
    newctx_f newctx
    init_f einit
    init_f dinit
    update_f update
    final_f final
    params_f get_params
    params_f set_params
    free_f freectx

cdef Gcm _gcm
cdef const char* _NAME = b"AES-256-GCM"
cdef char* _TAG_PARAM = b"tag"


cdef bint _named(const char* names) noexcept:
    """Whether the first of an algorithm's ':'-separated names is `_NAME`."""
    cdef size_t n = strlen(_NAME)
    return strncmp(names, _NAME, n) == 0 and (names[n] == b':' or names[n] == 0)


cdef int _load() except -1:
    """Fill `_gcm` from the default provider's AES-256-GCM dispatch table."""
    cdef OSSL_PROVIDER* prov = OSSL_PROVIDER_load(NULL, b"default")
    cdef int no_cache = 0
    cdef const OSSL_ALGORITHM* alg
    cdef const OSSL_DISPATCH* fn
    if prov == NULL:
        raise RuntimeError("OpenSSL's default provider is not available")
    alg = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_cache)
    while alg != NULL and alg.algorithm_names != NULL and not _named(alg.algorithm_names):
        alg += 1
    if alg == NULL or alg.algorithm_names == NULL:
        raise RuntimeError("AES-256-GCM is not in OpenSSL's default provider")
    _gcm.provctx = OSSL_PROVIDER_get0_provider_ctx(prov)
    fn = alg.implementation
    while fn.function_id != 0:
        if fn.function_id == OSSL_FUNC_CIPHER_NEWCTX:
            _gcm.newctx = <newctx_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_ENCRYPT_INIT:
            _gcm.einit = <init_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_DECRYPT_INIT:
            _gcm.dinit = <init_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_UPDATE:
            _gcm.update = <update_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_FINAL:
            _gcm.final = <final_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_GET_CTX_PARAMS:
            _gcm.get_params = <params_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_SET_CTX_PARAMS:
            _gcm.set_params = <params_f>fn.function
        elif fn.function_id == OSSL_FUNC_CIPHER_FREECTX:
            _gcm.freectx = <free_f>fn.function
        fn += 1
    if not (_gcm.newctx and _gcm.einit and _gcm.dinit and _gcm.update and _gcm.final
            and _gcm.get_params and _gcm.set_params and _gcm.freectx):
        raise RuntimeError("OpenSSL's AES-256-GCM lacks a cipher function")
    return 0


cdef void* _new_ctx() except NULL:
    cdef void* ctx = _gcm.newctx(_gcm.provctx)
    if ctx == NULL:
        raise MemoryError("AES-256-GCM context")
    return ctx


_load()
cdef void* _enc = _new_ctx()
cdef void* _dec = _new_ctx()


cdef int _aad(void* ctx, const unsigned char* aad1, size_t n1, const unsigned char* aad2,
              size_t n2) noexcept nogil:
    """The associated data aad1 | aad2 into an initialised context, in one call when it fits
    `AAD_JOINED` bytes. 0, or FAILED."""
    cdef size_t outl = 0
    cdef unsigned char joined[AAD_JOINED]
    if n1 and n2 and n1 + n2 <= AAD_JOINED:
        memcpy(joined, aad1, n1)
        memcpy(joined + n1, aad2, n2)
        aad1, n1, n2 = joined, n1 + n2, 0
    if (n1 and _gcm.update(ctx, NULL, &outl, n1, aad1, n1) != 1) \
            or (n2 and _gcm.update(ctx, NULL, &outl, n2, aad2, n2) != 1):
        return FAILED
    return 0


cdef inline int _tag(void* ctx, unsigned char* tag, bint get) noexcept nogil:
    """The context's tag into `tag` (`get`, after sealing) or `tag` into the context (before
    the final call of an open): 1 on success."""
    cdef OSSL_PARAM params[2]
    params[0] = OSSL_PARAM_construct_octet_string(_TAG_PARAM, tag, TAG)
    params[1] = OSSL_PARAM_construct_end()
    return _gcm.get_params(ctx, params) if get else _gcm.set_params(ctx, params)


cdef int _seal(void* ctx, const unsigned char* key, const unsigned char* nonce,
               const unsigned char* data, int n, const unsigned char* aad1, int n1,
               const unsigned char* aad2, int n2, unsigned char* out) noexcept nogil:
    """AES-GCM of `data` under `key` (NULL: the context's key) with associated data aad1 |
    aad2: n bytes then the tag. 0, or FAILED."""
    cdef size_t outl = 0, fin = 0
    if _gcm.einit(ctx, key, KEY if key != NULL else 0, nonce, NONCE, NULL) != 1 \
            or _aad(ctx, aad1, n1, aad2, n2) \
            or (n and _gcm.update(ctx, out, &outl, n, data, n) != 1) \
            or _gcm.final(ctx, out + outl, &fin, 0) != 1 or _tag(ctx, out + n, True) != 1:
        return FAILED
    return 0


cdef int _open(void* ctx, const unsigned char* key, const unsigned char* nonce,
               const unsigned char* sealed, int n, const unsigned char* aad1, int n1,
               const unsigned char* aad2, int n2, unsigned char* out) noexcept nogil:
    """Inverse of `_seal` (`n`: ciphertext bytes, the tag after them). 0, FAILED or FORGED."""
    cdef size_t outl = 0, fin = 0
    if _gcm.dinit(ctx, key, KEY if key != NULL else 0, nonce, NONCE, NULL) != 1 \
            or _aad(ctx, aad1, n1, aad2, n2) \
            or (n and _gcm.update(ctx, out, &outl, n, sealed, n) != 1) \
            or _tag(ctx, <unsigned char*>(sealed + n), False) != 1:
        return FAILED
    if _gcm.final(ctx, out + outl, &fin, 0) != 1:
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


cdef int _run_all(void* ctx, Job* jobs, Py_ssize_t count, const unsigned char* aad,
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
    cdef void* ctx
    cdef int rc = 0
    if count < NOGIL_RECORDS:
        return _check(_run_all(_enc if seal else _dec, jobs, count, aad, na, seal))
    ctx = _new_ctx()
    try:
        with nogil:
            rc = _run_all(ctx, jobs, count, aad, na, seal)
        return _check(rc)
    finally:
        _gcm.freectx(ctx)


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
