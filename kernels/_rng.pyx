"""The kernels' seeded random numbers: `Rng`, a xoshiro256** generator seeded through splitmix64.
The generator and its samplers are inline functions of `_rng.pxd`; this module holds the class
and the ziggurat tables the normal sampler reads.

Normals use the 128-layer ziggurat (32-bit resolution, independent layer and value bits),
Gamma(a) the Marsaglia-Tsang squeeze (a < 1 boosted by U**(1/a)), Beta(a, b) = Ga / (Ga + Gb).
One `Rng` per caller (server process / thread): it is not locked. Streams are pinned by
`tests/kernels/test_bandits.py::test_seeded_streams_are_pinned`.
"""
from libc.math cimport exp, log, sqrt
from libc.stdint cimport uint64_t

from kernels._splitmix cimport splitmix64
from kernels._types cimport intp_t


# Ziggurat tables (Marsaglia & Tsang 2000, 128 layers), filled once at import by _zig_init.
cdef ziggurat_t _ZIG


cdef void _zig_init(ziggurat_t* z) noexcept:
    cdef double m1 = 2147483648.0, dn = 3.442619855899, tn = 3.442619855899, q
    cdef double vn = 9.91256303526217e-3
    cdef int i
    z.r = dn
    q = vn / exp(-0.5 * dn * dn)
    z.k[0] = (dn / q) * m1
    z.k[1] = 0.0
    z.w[0] = q / m1
    z.w[127] = dn / m1
    z.f[0] = 1.0
    z.f[127] = exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = sqrt(-2.0 * log(vn / dn + exp(-0.5 * dn * dn)))
        z.k[i + 1] = (dn / tn) * m1
        tn = dn
        z.f[i] = exp(-0.5 * dn * dn)
        z.w[i] = dn / m1


_zig_init(&_ZIG)


cdef class Rng:
    """Seeded xoshiro256** generator owned by one caller.

    Parameters
    ----------
    seed : int
        Any integer; expanded to 256 bits of state with splitmix64.
    """
    def __cinit__(self, uint64_t seed=0):
        cdef uint64_t x = seed
        cdef int i
        for i in range(4):
            self.state.s[i] = splitmix64(&x)
        self.state.zig = &_ZIG

    def uniform(self):
        """One uniform on [0, 1): the next value `random` would give. The GIL stays held (a
        few ns of work: releasing it would hand it to a waiting thread for up to a switch
        interval)."""
        return rng_uniform(&self.state)

    def random(self, intp_t n):
        """`n` uniforms on [0, 1) as a float64 array."""
        out = _empty(n)
        cdef double[::1] o = out
        cdef intp_t i
        with nogil:
            for i in range(n):
                o[i] = rng_uniform(&self.state)
        return out

    def normal(self, intp_t n):
        """`n` standard normals."""
        out = _empty(n)
        cdef double[::1] o = out
        cdef intp_t i
        with nogil:
            for i in range(n):
                o[i] = rng_normal(&self.state)
        return out

    def gamma(self, double shape, intp_t n):
        """`n` draws of Gamma(shape, scale=1)."""
        if not shape > 0:
            raise ValueError(f"shape must be > 0, got {shape}")
        out = _empty(n)
        cdef double[::1] o = out
        cdef intp_t i
        with nogil:
            for i in range(n):
                o[i] = rng_gamma(&self.state, shape)
        return out

    def beta(self, double a, double b, intp_t n):
        """`n` draws of Beta(a, b)."""
        if not (a > 0 and b > 0):
            raise ValueError(f"a and b must be > 0, got {a}, {b}")
        out = _empty(n)
        cdef double[::1] o = out
        cdef intp_t i
        with nogil:
            for i in range(n):
                o[i] = rng_beta(&self.state, a, b)
        return out

    def integers(self, uint64_t high):
        """One integer uniform on [0, high) (Lemire-free modulo; bias < high / 2**64)."""
        return <intp_t>(rng_next_u64(&self.state) % high)


cdef object _empty(intp_t n):
    import numpy as np
    return np.empty(n, dtype=np.float64)
