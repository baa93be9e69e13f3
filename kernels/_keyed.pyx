# HMAC-SHA256 (RFC 2104) under one key, its padded key blocks hashed once: a digest is then two
# SHA-256 states copied (a struct copy) and two short updates through OpenSSL's SHA-256 (SHA-NI
# where the CPU has it), with no Python object per step. `kernels.keyed` holds the reference
# (hashlib, the same precomputed states) and `hmac` checks both.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII

cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED
    """

cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX* c)
    int SHA256_Update(SHA256_CTX* c, const void* data, size_t n)
    int SHA256_Final(unsigned char* md, SHA256_CTX* c)

cdef enum:
    BLOCK = 64
    DIGEST = 32
    NOGIL_TOKENS = 64  # `tokens(..., release=True)` of fewer keeps the GIL (not worth a switch)
    CHUNK = 1024  # tokens made between two releases of the GIL (~0.1 ms of allocations)

cdef struct Job:
    const char* body
    Py_ssize_t n
    char* out

cdef const char* _HEX = b"0123456789abcdef"

API = 2
"""This kernel's interface (2: `tokens(..., release)`); `kernels.keyed` serves its reference
from a build older than the one it expects."""


cdef class KeyedHash:
    """HMAC-SHA256 under `block`, the key as one 64-byte block (shorter keys padded with zeros,
    longer ones hashed first: the caller's part, as RFC 2104 says)."""
    cdef SHA256_CTX inner
    cdef SHA256_CTX outer

    def __cinit__(self, bytes block not None):
        cdef unsigned char pad[BLOCK]
        cdef const unsigned char* k
        cdef int i
        if PyBytes_GET_SIZE(block) != BLOCK:
            raise ValueError(f"block: {PyBytes_GET_SIZE(block)} bytes, the key's block is {BLOCK}")
        k = <const unsigned char*>PyBytes_AS_STRING(block)
        for i in range(BLOCK):
            pad[i] = k[i] ^ 0x36
        if SHA256_Init(&self.inner) != 1 or SHA256_Update(&self.inner, pad, BLOCK) != 1:
            raise RuntimeError("SHA-256")
        for i in range(BLOCK):
            pad[i] = k[i] ^ 0x5C
        if SHA256_Init(&self.outer) != 1 or SHA256_Update(&self.outer, pad, BLOCK) != 1:
            raise RuntimeError("SHA-256")

    cdef void _digest(self, const char* head, Py_ssize_t n1, const char* body, Py_ssize_t n2,
                      unsigned char* md) noexcept nogil:
        """HMAC of head | body into `md` (32 bytes)."""
        cdef SHA256_CTX c = self.inner
        SHA256_Update(&c, head, n1)
        SHA256_Update(&c, body, n2)
        SHA256_Final(md, &c)
        c = self.outer
        SHA256_Update(&c, md, DIGEST)
        SHA256_Final(md, &c)

    cdef void _hex(self, const char* head, Py_ssize_t n1, const char* body, Py_ssize_t n2,
                   char* out, Py_ssize_t chars) noexcept nogil:
        """The first `chars` (<= 64) hex characters of the HMAC of head | body into `out`."""
        cdef unsigned char md[DIGEST]
        cdef Py_ssize_t i
        self._digest(head, n1, body, n2, md)
        for i in range(chars):
            out[i] = _HEX[(md[i >> 1] >> 4) if i % 2 == 0 else (md[i >> 1] & 15)]

    cdef bytes _token(self, bytes head, bytes body, Py_ssize_t chars):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, chars)
        self._hex(PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), PyBytes_AS_STRING(body),
                  PyBytes_GET_SIZE(body), PyBytes_AS_STRING(out), chars)
        return out

    def hexdigest(self, bytes message not None) -> str:
        """The HMAC of `message`, 64 hex characters (as `hmac.new(...).hexdigest()`)."""
        cdef bytes hexed = self._token(b"", message, 2 * DIGEST)
        return PyUnicode_DecodeASCII(PyBytes_AS_STRING(hexed), 2 * DIGEST, NULL)

    def token(self, bytes head not None, bytes body not None, Py_ssize_t chars) -> bytes:
        """The first `chars` (0..64) hex characters of the HMAC of head | body, as bytes."""
        if not 0 <= chars <= 2 * DIGEST:
            raise ValueError(f"chars: {chars}, a digest has 0 to {2 * DIGEST} hex characters")
        return self._token(head, body, chars)

    def tokens(self, bytes head not None, list bodies not None, Py_ssize_t chars,
               bint release=False) -> list:
        """`token(head, body, chars)` of each of `bodies` (bytes). `release`: hash without the
        GIL, `CHUNK` tokens at a time (a loading thread's many ids, so the event loop runs
        meanwhile; the loop's own calls keep it, as docs/kernels.md says)."""
        if not 0 <= chars <= 2 * DIGEST:
            raise ValueError(f"chars: {chars}, a digest has 0 to {2 * DIGEST} hex characters")
        cdef tuple held = tuple(bodies)  # the bodies, alive and fixed while the GIL is released
        cdef Py_ssize_t start, m = len(held)
        cdef list result = []
        cdef Job jobs[CHUNK]
        for start in range(0, m, CHUNK):
            self._chunk(head, held, start, min(start + CHUNK, m), chars, result, jobs,
                        release and m >= NOGIL_TOKENS)
        return result

    cdef int _chunk(self, bytes head, tuple held, Py_ssize_t start, Py_ssize_t stop,
                    Py_ssize_t chars, list result, Job* jobs, bint release) except -1:
        """Tokens of held[start:stop] (at most `CHUNK`) appended to `result`."""
        cdef Py_ssize_t i
        cdef const char* h = PyBytes_AS_STRING(head)
        cdef Py_ssize_t n1 = PyBytes_GET_SIZE(head)
        for i in range(start, stop):
            body = held[i]
            if type(body) is not bytes:
                raise TypeError(f"bodies: {type(body).__name__} among them, bytes expected")
            out = PyBytes_FromStringAndSize(NULL, chars)
            result.append(out)  # holds `out` (and `held` the body) while the GIL is released
            jobs[i - start] = Job(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body),
                                  PyBytes_AS_STRING(out))
        if release:
            with nogil:
                self._hex_all(h, n1, jobs, stop - start, chars)
        else:
            self._hex_all(h, n1, jobs, stop - start, chars)
        return 0

    cdef void _hex_all(self, const char* head, Py_ssize_t n1, Job* jobs, Py_ssize_t m,
                       Py_ssize_t chars) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(m):
            self._hex(head, n1, jobs[i].body, jobs[i].n, jobs[i].out, chars)
